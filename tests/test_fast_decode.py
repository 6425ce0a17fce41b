"""``--decoder fast``: which files it decodes, what the manifest records, the same bytes for any
worker count, and what a build without the extra says (the quality bar: test_quality.py)."""

from __future__ import annotations

import sys
from importlib.util import find_spec

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from imgshard import build, merge
from imgshard.cli import cli
from imgshard.config import BuildConfig, ConfigError
from imgshard.errors import ImgshardError
from imgshard.transform import SkipImage, load_pixels

pytestmark = pytest.mark.skipif(
    not all(find_spec(name) for name in ("simplejpeg", "cv2")),
    reason="--decoder fast needs simplejpeg and OpenCV (pip install 'imgshard[fast]')")

FAST = BuildConfig(size=(32, 48), decoder="fast", no_labels=True)


def gradient(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8))


def psnr(pixels: np.ndarray, reference: np.ndarray) -> float:
    error = np.mean((pixels.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255 ** 2 / error)


@pytest.mark.parametrize("color", ["rgb", "grayscale", "rgba"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_colour_and_grayscale_jpegs_in_every_colour_mode(tmp_path, color, mode):
    path = str(tmp_path / "photo.jpg")
    gradient((300, 200)).convert(mode).save(path, quality=95)
    pillow = load_pixels(path, BuildConfig(size=(32, 48), color=color))
    pixels = load_pixels(path, BuildConfig(size=(32, 48), color=color, decoder="fast"))
    assert pixels.dtype == np.uint8 and pixels.shape == pillow.shape
    assert psnr(pixels, pillow) >= 40
    if color == "rgba":
        assert (pixels[:, :, 3] == 255).all()


@pytest.mark.parametrize("name, mode", [("cmyk.jpg", "CMYK"), ("photo.png", "RGB"),
                                        ("photo.webp", "RGB")])
def test_files_simplejpeg_does_not_take_go_the_pillow_way(tmp_path, name, mode):
    path = str(tmp_path / name)
    gradient((120, 90)).convert(mode).save(path)
    assert np.array_equal(load_pixels(path, FAST), load_pixels(path, BuildConfig(size=(32, 48))))


def test_a_broken_jpeg_is_the_skip_pillow_records(tmp_path):
    path = tmp_path / "cut.jpg"
    gradient((120, 90)).save(path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(SkipImage, match="^truncated$"):
        load_pixels(str(path), FAST)
    with pytest.raises(SkipImage, match="^truncated$"):
        load_pixels(str(path), BuildConfig(size=(32, 48)))


@pytest.fixture
def source(tmp_path) -> str:
    src = tmp_path / "src"
    src.mkdir()
    for index in range(9):
        gradient((200 + 17 * index, 150), index).save(src / f"{index}.jpg", quality=90)
    Image.fromarray(np.full((40, 40, 3), 9, np.uint8)).save(src / "flat.png")
    return str(src)


def test_the_manifest_records_the_decoder_and_any_worker_count_writes_the_same_bytes(
        source, tmp_path):
    config = BuildConfig(size=(32, 48), decoder="fast", no_labels=True, shard_size=4)
    one = build(source, str(tmp_path / "one"), config, workers=1).manifest
    two = build(source, str(tmp_path / "two"), config, workers=2).manifest
    assert one.config["decoder"] == "fast"
    assert set(one.extra["decoder"]) >= {"simplejpeg", "opencv", "pillow"}
    assert one.dataset_id == two.dataset_id
    for shard in ("train-00000.npy", "train-00001.npy", "train-00002.npy"):
        assert (tmp_path / "one" / shard).read_bytes() == (tmp_path / "two" / shard).read_bytes()
    pillow = build(source, str(tmp_path / "pillow"), BuildConfig(
        size=(32, 48), no_labels=True, shard_size=4), workers=1).manifest
    assert "decoder" not in pillow.config  # the default keeps today's config and dataset_id
    with pytest.raises(ImgshardError, match="decoder"):
        merge([str(tmp_path / "one"), str(tmp_path / "pillow")], str(tmp_path / "merged"))


def test_resume_refuses_another_decoder(source, tmp_path):
    out = str(tmp_path / "out")
    build(source, out, BuildConfig(size=(32, 48), no_labels=True), workers=1)
    result = CliRunner().invoke(cli, ["build", source, out, "--size", "32x48", "--no-labels",
                                      "--decoder", "fast", "--resume"])
    assert result.exit_code == 1 and "other options: refusing to resume" in result.output


def test_other_filters_are_refused():
    for interpolation in ("area", "lanczos"):
        with pytest.raises(ConfigError, match="--decoder fast resizes with bilinear only"):
            BuildConfig(interpolation=interpolation, decoder="fast")


def test_a_build_without_the_extra_says_which_to_install(source, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # import simplejpeg fails
    result = CliRunner().invoke(cli, ["build", source, str(tmp_path / "out"), "--decoder", "fast",
                                      "--no-labels"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: --decoder fast needs the imgshard[fast] extra: pip install 'imgshard[fast]'")
    assert not (tmp_path / "out" / "manifest.json").exists()
