"""A ``--dtype uint8`` dataset read as floats: the manifest's rescale and offset applied, so that
it serves exactly what a float build of the same source stores, at half the disk."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import numpy as np
import pytest
from conftest import edit_manifest, one_error_line, run, write_image
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from imgshard import BuildConfig, ReaderError, ShardReader, build, mix
from imgshard.errors import ImgshardError

#: 7 noise images in two classes, read 4 a batch from shards of 3: batches that span shards
#: (the gather path) and, with batch_size=3, whole shards (the slice path).
COUNT, SHARD_SIZE = 7, 3


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    src = tmp_path_factory.mktemp("values") / "src"
    for number in range(COUNT):
        write_image(str(src / f"c{number % 2}" / f"{number}.png"), size=(7, 5), seed=number)
    return str(src)


def built(source: str, dtype: str, **options) -> str:
    """SRC built as ``dtype`` with ``options`` (once per test session and option set)."""
    name = f"{dtype}-{hashlib.sha256(repr(sorted(options.items())).encode()).hexdigest()[:12]}"
    out = os.path.join(os.path.dirname(source), name)
    if not os.path.exists(out):
        build(source, out, BuildConfig(size=(5, 6), shard_size=SHARD_SIZE, dtype=dtype,
                                       shuffle=False, **options), workers=1)
    return out


def epoch(directory: str, **options) -> tuple[np.ndarray, np.ndarray]:
    """Every image and label of one unshuffled epoch of the train split, concatenated."""
    options = {"shuffle": False, "prefetch": 0, "batch_size": 4, **options}
    batches = list(ShardReader(directory, **options))
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def stored_pixels(directory: str) -> np.ndarray:
    """The uint8 pixels of the train split, read with numpy alone, in reading order."""
    manifest = json.load(open(os.path.join(directory, "manifest.json")))
    return np.concatenate([np.load(os.path.join(directory, shard["images"]))
                           for shard in manifest["splits"]["train"]["shards"]])


@pytest.mark.parametrize("served", ["float16", "float32"])
@pytest.mark.parametrize("options", [{}, {"rescale": 2 / 255, "offset": -1.0},
                                     {"rescale": 0.5, "offset": 3.0}])
@pytest.mark.parametrize("batch_size", [3, 4])
def test_uint8_read_as_floats_is_the_float_build(source, served, options, batch_size, converter):
    uint8 = built(source, "uint8", **options)
    images, labels = epoch(uint8, dtype=served, batch_size=batch_size)
    floats, float_labels = epoch(built(source, served, **options), batch_size=batch_size)
    assert images.dtype == np.dtype(served)
    np.testing.assert_array_equal(images, floats)  # the very values the float build stores
    np.testing.assert_array_equal(labels, float_labels)
    rescale, offset = options.get("rescale", 1 / 255), options.get("offset", 0.0)
    reference = (stored_pixels(uint8).astype(np.float64) * rescale + offset).astype(served)
    np.testing.assert_array_equal(images, reference)


@pytest.mark.parametrize("served", ["float16", "float32"])
def test_uint8_batches_converted_by_two_threads_are_the_float_build(source, served,
                                                                     monkeypatch):
    """Batches of many bytes are looked up half in a helper thread: the same values."""
    from imgshard.reader import batches

    monkeypatch.setattr(batches, "SPLIT_BYTES", 0)
    for batch_size in (3, 4):
        images, _ = epoch(built(source, "uint8"), dtype=served, batch_size=batch_size)
        np.testing.assert_array_equal(images, epoch(built(source, served))[0])


def test_float32_of_uint8_is_the_float16_build_within_its_rounding(source):
    images, _ = epoch(built(source, "uint8"), dtype="float32")
    halves, _ = epoch(built(source, "float16"))
    assert np.abs(images - halves.astype(np.float32)).max() <= np.finfo(np.float16).eps / 2


def test_raw_pixels_and_integer_dtypes_serve_the_stored_values(source):
    uint8 = built(source, "uint8")
    pixels = stored_pixels(uint8)
    assert epoch(uint8)[0].dtype == np.uint8
    np.testing.assert_array_equal(epoch(uint8)[0], pixels)
    raw, _ = epoch(uint8, dtype="float32", raw_pixels=True)
    np.testing.assert_array_equal(raw, pixels.astype(np.float32))
    assert raw.max() > 1
    np.testing.assert_array_equal(epoch(uint8, dtype="int32")[0], pixels.astype(np.int32))
    with pytest.raises(ReaderError, match="raw_pixels must be True or False, got 'no'"):
        ShardReader(uint8, dtype="float32", raw_pixels="no")


def test_a_float_dataset_is_served_as_before(source):
    halves = built(source, "float16")
    stored = stored_pixels(halves)
    np.testing.assert_array_equal(epoch(halves)[0], stored)
    np.testing.assert_array_equal(epoch(halves, dtype="float32")[0], stored.astype(np.float32))
    np.testing.assert_array_equal(epoch(halves, dtype="float32", raw_pixels=True)[0],
                                  stored.astype(np.float32))


def test_flips_subsets_and_label_modes_serve_the_float_builds_values(source):
    uint8, floats = built(source, "uint8"), built(source, "float32")
    for options in ({"flip_horizontal": True, "shuffle": True, "seed": 3},
                    {"classes": ["c1"]}, {"label_mode": "categorical"}):
        mine, theirs = epoch(uint8, dtype="float32", **options), epoch(floats, **options)
        np.testing.assert_array_equal(mine[0], theirs[0])
        np.testing.assert_array_equal(mine[1], theirs[1])


def test_targets_and_multi_hot_labels_come_with_the_float_values(source, tmp_path):
    """The label modes of several labels and numeric targets (each file of the source named
    in a labels CSV with two classes, and given a target) beside a uint8 dataset's floats."""
    paths = sorted(os.path.relpath(os.path.join(folder, name), source)
                   for folder, _, names in os.walk(source) for name in names)
    labels, targets = tmp_path / "labels.csv", tmp_path / "targets.csv"
    labels.write_text("".join(f"{path},a|{'b' if n % 2 else 'c'}\n" for n, path in enumerate(paths)))
    targets.write_text("path,age\n" + "".join(f"{path},{n / 2}\n" for n, path in enumerate(paths)))
    options = {"labels": str(labels), "targets": str(targets)}
    mode = ("multi_hot", "targets")
    mine = list(ShardReader(built(source, "uint8", **options), dtype="float32", label_mode=mode,
                            shuffle=False, prefetch=0, batch_size=4))
    theirs = list(ShardReader(built(source, "float32", **options), label_mode=mode,
                              shuffle=False, prefetch=0, batch_size=4))
    assert len(mine) == len(theirs) > 1
    for (x, (hot, age)), (fx, (fhot, fage)) in zip(mine, theirs):
        np.testing.assert_array_equal(x, fx)
        np.testing.assert_array_equal(hot, fhot)
        np.testing.assert_array_equal(age, fage)
        assert x.dtype == np.float32 and x.max() <= 1


def test_a_url_dataset_is_served_from_the_cache_as_the_float_build(source, tmp_path):
    from conftest import on_memory

    expected, labels = epoch(built(source, "float16"))
    with on_memory(built(source, "uint8")) as url:
        served, served_labels = epoch(url, dtype="float16", cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(served, expected)
    np.testing.assert_array_equal(served_labels, labels)
    cached = [name for name in os.listdir(tmp_path / "cache") if not name.startswith(".")]
    assert cached  # the uint8 files were downloaded and mapped from the cache


def test_keras_and_tf_serve_the_float_values(source):
    pytest.importorskip("tensorflow")
    uint8, floats = built(source, "uint8"), built(source, "float32")
    expected, _ = epoch(floats)
    reader = ShardReader(uint8, dtype="float32", shuffle=False, prefetch=0, batch_size=4)
    dataset = reader.to_tf_dataset()
    assert dataset.element_spec[0].dtype.name == "float32"
    served = np.concatenate([x.numpy() for x, _ in dataset])
    np.testing.assert_array_equal(served, expected)
    keras_batches = reader.to_keras(workers=1)
    np.testing.assert_array_equal(keras_batches[0][0], expected[:4])


def test_a_uint8_and_a_float16_dataset_of_the_same_options_mix(source):
    uint8, halves = built(source, "uint8"), built(source, "float16")
    options = {"shuffle": False, "prefetch": 0, "batch_size": 4, "num_replicas": 1, "rank": 0}
    mixed = mix([ShardReader(uint8, dtype="float16", **options), ShardReader(halves, **options)],
                weights=[1, 1])
    expected = epoch(halves)[0]
    for x, _ in mixed:
        assert any(np.array_equal(x, expected[i:i + len(x)]) for i in (0, 4))
    raw = ShardReader(uint8, dtype="float16", raw_pixels=True, **options)
    with pytest.raises(ReaderError, match=r"reader 1 serves pixel values pixel \* "
                       r"0.00392156862745098 \+ 0.0 rounded to float16, reader 0 raw pixels"):
        mix([raw, ShardReader(halves, **options)], weights=[1, 1])
    other = built(source, "float16", rescale=2 / 255, offset=-1.0)
    with pytest.raises(ReaderError, match="pixel values"):
        mix([ShardReader(halves, **options), ShardReader(other, **options)], weights=[1, 1])


@pytest.mark.parametrize("rescale, message", [
    (float("nan"), "NaN"), (float("inf"), "Infinity"), (1e300, "overflow float32"),
    ("0.5", "config.rescale must be a number"), (True, "config.rescale must be a number"),
    (0.0, "the same stored value"),
])
def test_a_hostile_rescale_is_refused_in_one_line(source, tmp_path, rescale, message):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built(source, "uint8"), copy)
    if isinstance(rescale, float) and not np.isfinite(rescale):
        text = (copy / "manifest.json").read_text()
        document = json.loads(text)
        document["config"]["rescale"] = "PLACEHOLDER"
        (copy / "manifest.json").write_text(json.dumps(document).replace(
            '"PLACEHOLDER"', "NaN" if np.isnan(rescale) else "Infinity"))
    else:
        edit_manifest(copy, lambda document: document["config"].update(rescale=rescale))
    with pytest.raises(ImgshardError, match=message) as caught:
        ShardReader(str(copy), dtype="float32")
    assert "\n" not in str(caught.value)
    one_error_line(run("verify", copy), message)


def test_float16_is_refused_when_the_values_overflow_it(source):
    uint8 = built(source, "uint8", rescale=1000.0)
    np.testing.assert_array_equal(epoch(uint8, dtype="float32")[0],
                                  stored_pixels(uint8).astype(np.float32) * 1000)
    with pytest.raises(ReaderError, match="overflow float16.*dtype='float32'"):
        ShardReader(uint8, dtype="float16")


def test_a_uint8_build_records_its_rescale_and_refuses_one_overflowing_float32(source, tmp_path):
    uint8 = built(source, "uint8", rescale=0.5, offset=3.0)
    config = json.load(open(os.path.join(uint8, "manifest.json")))["config"]
    assert (config["rescale"], config["offset"]) == (0.5, 3.0)
    one_error_line(run("build", source, tmp_path / "out", "--dtype", "uint8", "--rescale", "1e300"),
                   "overflow float32")


@settings(max_examples=60, deadline=None)
@given(pixels=arrays(np.uint8, st.tuples(st.integers(1, 5), st.integers(1, 9), st.integers(1, 7),
                                         st.sampled_from([1, 3, 4])),
                    elements=st.integers(1, 255), fill=st.nothing()),  # every pixel drawn
       served=st.sampled_from(["float16", "float32", "float64"]),
       scale=st.sampled_from([(1 / 255, 0.0), (2 / 255, -1.0), (0.5, 3.0), (-1 / 255, 1.0)]),
       start=st.integers(0, 3))
def test_the_lookup_is_the_table_for_any_shape_and_alignment(pixels, served, scale, start):
    """Whichever way the values are made (arithmetic where it is exact, else the pair table)."""
    from imgshard.reader.pixel_values import PixelValues

    values = PixelValues.of_scale(*scale, np.dtype(served))
    table = (np.arange(256) * scale[0] + scale[1]).astype(served)
    out = np.zeros((len(pixels) + start, *pixels.shape[1:]), served)[start:]  # maybe unaligned
    given = pixels[:, ::-1] if start % 2 else pixels  # maybe not contiguous
    values.lookup(given, out[:, :, ::-1] if start == 2 else out)  # (written through a view)
    expected = table[given[:, :, ::-1] if start == 2 else given]
    assert np.array_equal(out.view(f"u{out.itemsize}"), expected.view(f"u{out.itemsize}"))


@pytest.mark.parametrize("served", ["float16", "float32"])
@pytest.mark.parametrize("scale", [(1 / 255, 0.0), (2 / 255, -1.0), (0.5, 3.0), (-1 / 255, 1.0),
                                   (1 / 127.5, -1.0), (0.1, 0.0), (3.0, 0.25)])
def test_opencv_makes_the_values_bit_for_bit_and_numpy_without_it(converter, served, scale):
    """With the fast extra every row is written by one OpenCV call (arithmetic where it gives
    every value of the table, else its table lookup), straight from a map; without it, numpy."""
    from imgshard.reader.pixel_values import PixelValues

    values = PixelValues.of_scale(*scale, np.dtype(served))
    assert (values.opencv is not None) == (converter == "opencv")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 37, 11, 3), dtype=np.uint8)
    pixels.reshape(-1)[:512] = np.arange(512) % 256  # every value, at odd and even places
    out = np.full(pixels.shape, -5, served)
    values.lookup(pixels, out)
    table = (np.arange(256) * scale[0] + scale[1]).astype(served)
    assert np.array_equal(out.view(f"u{out.itemsize}"), table[pixels].view(f"u{out.itemsize}"))


# -- build --dry-run --------------------------------------------------------------------------

def write_rgb48_png(path, pixels: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG, written by hand: Pillow reads such files (as 8-bit RGB)
    but does not write them."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def dry_run(src, *options) -> list[str]:
    result = run("build", src, os.path.join(src, "..", "never"), "--dry-run", *options)
    assert result.exit_code == 0, result.output
    return [line.strip() for line in result.output.splitlines()]


def test_dry_run_shows_the_bytes_of_each_dtype_and_that_8_bit_sources_lose_nothing(source):
    lines = dry_run(source, "--size", "100", "--shard-size", "4")
    # 7 images of 100x100x3, labels of 4 bytes, 2 files of 128 header bytes per shard (2 + 1)
    assert ("On disk: about 420.5 KB as float16 (this build); as float32: about 840.5 KB, as "
            "uint8: about 210.5 KB") in lines
    assert ("Bit depth: all 7 image files are 8 bits per channel (read from their headers): "
            "uint8 loses nothing (read as float32 it serves a float32 build's values)") in lines


def test_dry_run_says_that_uint8_rounds_deeper_sources(tmp_path):
    src = tmp_path / "src"
    write_image(str(src / "a" / "8bit.png"), size=(4, 4))
    Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).save(src / "a" / "g.png")
    write_rgb48_png(str(src / "b" / "rgb48.png"), np.full((3, 2, 3), 60000, np.uint16))
    assert Image.open(src / "b" / "rgb48.png").mode == "RGB"  # what makes the header's depth
    lines = dry_run(src, "--dtype", "uint8")
    assert ("Bit depth: 2 of 3 image files have more than 8 bits per channel (e.g. a/g.png, "
            "16 bits): uint8 rounds them to 8 bits") in lines


def test_dry_run_samples_the_headers_of_a_large_source(source, monkeypatch):
    from imgshard import source_depth

    monkeypatch.setattr(source_depth, "LOCAL_SAMPLE", 3)
    lines = dry_run(source)
    assert ("Bit depth: all 3 image files sampled of 7 are 8 bits per channel (read from their "
            "headers): uint8 loses nothing (read as float32 it serves a float32 build's values)"
            ) in lines


@pytest.mark.parametrize("mode, raw, bits", [
    ("RGB", "RGB", 8), ("RGB", "RGB;16B", 16), ("RGBA", "RGBA;16L", 16), ("I;16", "I;16", 16),
    ("I", "I;32S", 32), ("I", "", 32), ("F", "F;32F", 32), ("L", "L", 8), ("P", "P;4", 4),
    ("RGB", "BGR;16", 5), ("LA", "LA;16B", 16), ("1", "1;I", 8), ("CMYK", "CMYK", 8),
])
def test_bits_per_channel_from_a_header(mode, raw, bits):
    """A raw mode's number is per channel when an endianness letter follows (PNG, TIFF), else
    per pixel (a 5-6-5 BMP is 16 bits a pixel, not a 16-bit image)."""
    from imgshard.source_depth import bits_per_channel

    assert bits_per_channel(mode, raw) == bits
