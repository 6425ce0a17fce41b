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
