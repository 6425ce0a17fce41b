"""``--dtype uint8`` datasets read as floats (09438af..b65c938), attacked as a hostile user would:
a mix that must refuse readers whose pixel values differ, hostile manifests. Every test here
failed against b65c938."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import one_error_line, run, write_image

from imgshard import BuildConfig, ReaderError, ShardReader, build, mix
from imgshard.errors import ImgshardError

MIXED = {"shuffle": False, "prefetch": 0, "batch_size": 4, "num_replicas": 1, "rank": 0}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    src = tmp_path_factory.mktemp("attack-uint8") / "src"
    for number in range(6):
        write_image(str(src / f"c{number % 2}" / f"{number}.png"), size=(7, 5), seed=number)
    return str(src)


def built(source: str, dtype: str, **options) -> str:
    name = f"{dtype}-" + "-".join(f"{key}{value!r}" for key, value in sorted(options.items()))
    out = os.path.join(os.path.dirname(source), name)
    if not os.path.exists(out):
        build(source, out, BuildConfig(size=(5, 6), shard_size=4, dtype=dtype, shuffle=False,
                                       **options), workers=1)
    return out


def images(reader: ShardReader) -> np.ndarray:
    return np.concatenate([x for x, _ in reader])


def test_a_mix_refuses_a_rescale_that_differs_past_six_digits(source):
    """The mix compared ``f"{rescale:g}"``: 0.5 and 0.5000004 both showed as 0.5, and a uint8
    dataset read as float32 mixed with a float32 build serving other values."""
    mine = ShardReader(built(source, "uint8", rescale=0.5), dtype="float32", **MIXED)
    theirs = ShardReader(built(source, "float32", rescale=0.5000004), **MIXED)
    assert not np.array_equal(images(mine), images(theirs))
    with pytest.raises(ReaderError, match=r"reader 1 serves pixel values pixel \* 0.5000004 "):
        mix([mine, theirs], weights=[1, 1])


def test_a_mix_refuses_float16_values_read_as_float32_beside_a_uint8_datasets(source):
    """A float16 dataset read as float32 serves float16-rounded values; a uint8 one read as
    float32 serves float32 ones (up to 2.4e-4 apart at the default scale): not the same pixel
    values, though both were described as ``pixel * 0.00392157 + 0``."""
    mine = ShardReader(built(source, "uint8"), dtype="float32", **MIXED)
    halves = ShardReader(built(source, "float16"), dtype="float32", **MIXED)
    assert not np.array_equal(images(mine), images(halves))
    with pytest.raises(ReaderError, match="rounded to float32, reader 0 .* rounded to float16"):
        mix([halves, mine], weights=[1, 1])
    # the same values still mix: a uint8 dataset read as float16 beside a float16 build, and a
    # float32 build beside a uint8 dataset read as float32
    mix([ShardReader(built(source, "uint8"), dtype="float16", **MIXED),
         ShardReader(built(source, "float16"), **MIXED)], weights=[1, 1])
    mix([ShardReader(built(source, "float32"), **MIXED), mine], weights=[1, 1])


@pytest.mark.parametrize("key", ["rescale", "offset"])
def test_a_manifest_number_too_large_for_a_float_is_one_line(source, tmp_path, key):
    """JSON integers have no limit: ``"rescale": 1000...0`` (400 digits) made
    ``math.isfinite`` raise OverflowError, a traceback for the reader and ``verify``."""
    copy = tmp_path / "copy"
    shutil.copytree(built(source, "uint8"), copy)
    path = copy / "manifest.json"
    text = path.read_text()
    marker = '"offset": 0.0' if key == "offset" else '"rescale": 0.00392156862745098'
    assert marker in text
    path.write_text(text.replace(marker, f'"{key}": 1{"0" * 400}'))
    with pytest.raises(ImgshardError, match="finite") as caught:
        ShardReader(str(copy), dtype="float32")
    assert "\n" not in str(caught.value)
    one_error_line(run("verify", copy), "finite")


def test_a_config_files_rescale_too_large_for_a_float_is_one_line(source, tmp_path):
    config = tmp_path / "build.toml"
    config.write_text(f"dtype = 'uint8'\nrescale = 1{'0' * 400}\n")
    one_error_line(run("build", source, tmp_path / "out", "--config", config), "finite")


@pytest.mark.parametrize("options, message", [
    ({"rescale": 1000.0}, "overflow float16"),
    ({"rescale": 3e-8}, "the same stored value"),
])
def test_a_float32_dataset_read_as_float16_is_refused_as_a_uint8_one(source, options, message):
    """A uint8 dataset whose values overflow float16 (or merge in it) is refused as float16; a
    float32 build of the same values was cast to inf (or merged) silently."""
    for dtype in ("uint8", "float32"):
        with pytest.raises(ReaderError, match=f"{message}.*dtype=.float32.$" if dtype == "float32"
                           else message):
            ShardReader(built(source, dtype, **options), dtype="float16")


def test_dry_run_does_not_call_unreadable_headers_a_sample(tmp_path):
    """Every file of a small source is read, but a header that could not be read made the
    line say "sampled of", as if the dry run had only looked at some."""
    src = tmp_path / "src"
    write_image(str(src / "a" / "good.png"), size=(4, 4))
    (src / "a" / "text.png").write_text("not an image")
    (src / "b").mkdir()
    (src / "b" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0")
    result = run("build", src, tmp_path / "never", "--dry-run")
    assert result.exit_code == 0, result.output
    assert ("Bit depth: 1 image file with a readable header of 3 is 8 bits per channel "
            "(read from its header): uint8 loses nothing (read as float32 it serves a "
            "float32 build's values)") in [line.strip() for line in result.output.splitlines()]


@pytest.mark.parametrize("options", [{"rescale": 2.0**-140}, {"rescale": 2.0**-140,
                                                              "offset": 2.0**-120}])
def test_subnormal_float32_values_survive_tensorflows_flush_to_zero(source, options):
    """Pixel * 2**-140 is exact in float32 but subnormal, so the reader computed it (a multiply)
    instead of looking it up; ``to_tf_dataset`` runs the reader on a TensorFlow thread that
    flushes subnormals to zero, and served all zeros where the float32 build's values are
    copied. Subnormal values are looked up (their bits copied) like float16 ones."""
    from imgshard.reader.pixel_values import PixelValues

    values = PixelValues.of_scale(options["rescale"], options.get("offset", 0.0),
                                  np.dtype("float32"))
    assert values.scale is None
    pytest.importorskip("tensorflow")
    uint8 = ShardReader(built(source, "uint8", **options), dtype="float32", shuffle=False,
                        prefetch=0)
    expected = images(ShardReader(built(source, "float32", **options), shuffle=False, prefetch=0))
    assert len(np.unique(expected)) > 1
    served = np.concatenate([x.numpy() for x, _ in uint8.to_tf_dataset()])
    np.testing.assert_array_equal(served, expected)
