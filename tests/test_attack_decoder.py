"""Hostile inputs for ``--decoder fast`` since DCT scaling down to 1.5x the output (2835df3):
JPEGs narrower than a DCT block, and 4:2:2 chroma, which libjpeg-turbo's square scaled IDCT
leaves at half the luma's horizontal resolution."""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest
from PIL import Image

from imgshard.config import BuildConfig
from imgshard.transform import load_pixels
from test_quality import MIN_PSNR, full_decode_reference, photo_like, psnr, stripes

pytestmark = pytest.mark.skipif(
    not all(find_spec(name) for name in ("simplejpeg", "cv2")),
    reason="--decoder fast needs simplejpeg and OpenCV (pip install 'imgshard[fast]')")


def ramp(size: tuple[int, int]) -> Image.Image:
    """Colour ramps down the image, the same across it: any part of it lost or moved along
    its long side shows (a sharp change across 3 pixels is beyond any 1-pixel-wide output)."""
    width, height = size
    y = np.mgrid[0:height, 0:width][0] / max(height - 1, 1)
    pixels = np.stack([y * 255, 255 - y * 255, 255 - np.abs(2 * y - 1) * 255], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.mark.parametrize("stored, size", [
    ((1, 9), (16, 16)),   # decoded in full: a width of 1 matched the scale 1/8 (6.0 dB)
    ((2, 9), (16, 16)),   # ... of 2: 5/8 (10.4 dB)
    ((4, 64), (32, 32)),  # ... of 4: 4/8 (19.8 dB)
    ((7, 50), (20, 20)),  # ... of 7: 7/8 (19.9 dB)
    ((3, 100), (30, 1)),  # decoded at 1/2 (2x50): a width of 2 matched 3/8 first (14.1 dB)
])
def test_a_jpeg_narrower_than_a_dct_block_is_neither_cropped_nor_stretched(
        tmp_path, stored, size):
    """The scale of the decode is told by both sides: a width under 8 pixels is the same at
    several scales (the top 1/8 of a 1x9 image was stretched over the whole output)."""
    path = str(tmp_path / "narrow.jpg")
    ramp(stored).save(path, quality=95)
    config = BuildConfig(size=size, decoder="fast")
    assert psnr(load_pixels(path, config), full_decode_reference(path, config)) >= MIN_PSNR


@pytest.mark.parametrize("stored, orientation, resize, size", [
    ((1600, 1200), 1, "crop", (160, 224)),     # test_quality's photos at 1/4: 38.1-38.2 dB
    ((1600, 1200), 6, "crop", (224, 160)),     # the chroma's coarse axis turned upright
    ((2689, 2687), 1, "stretch", (224, 224)),  # 1/8: 36.5-38.2 dB
])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_four_two_two_jpeg_keeps_the_bound(tmp_path, stored, orientation, resize, size, seed):
    """4:2:2 (chroma halved along x only, as many cameras write): libjpeg-turbo scales the
    chroma by the luma's factor along both axes, so along x it is decoded at half the scale
    the request asked for (asking twice the width for it: 43.5-52.2 dB; the Pillow decoder
    44.5-48.9)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = str(tmp_path / "camera.jpg")
    photo_like(stored, seed + 4).save(path, quality=90, subsampling=1, exif=exif.tobytes())
    config = BuildConfig(size=size, resize=resize, decoder="fast")
    assert psnr(load_pixels(path, config), full_decode_reference(path, config)) >= MIN_PSNR


@pytest.mark.parametrize("stored", [(248, 257), (252, 261)])
@pytest.mark.parametrize("period", [5.0, 6.0])
@pytest.mark.parametrize("angle", [0.0, 0.5])
def test_fine_detail_reduced_by_little_more_than_cubic_from_keeps_the_bound(
        tmp_path, stored, period, angle):
    """Reductions of 1.1-1.15 along both axes, which no photo of the corpus has at 224x224:
    its photos cropped to such squares fell to 38.8 dB (the roof tiles of ``china``), and
    these stripes to 37.4-39.9 (bicubic counted as 0.05 of the variance left too little blur
    there; 0.02 from 1.08: 40.9-42.7)."""
    path = str(tmp_path / "stripes.jpg")
    stripes(stored, period, angle).save(path, quality=90)
    config = BuildConfig(size=(224, 224), decoder="fast")
    assert psnr(load_pixels(path, config), full_decode_reference(path, config)) >= MIN_PSNR


@pytest.mark.parametrize("stored, orientation", [((13, 400), 1), ((9, 400), 3), ((13, 400), 4)])
def test_the_pillow_decoder_tells_the_draft_scale_of_a_narrow_jpeg_by_both_sides(
        tmp_path, stored, orientation):
    """The same defect in ``transform._draft_scales``: a 9x400 JPEG drafted at 1/4 to 3x100
    read as 1/round(9/3) = 1/3 along x, and the reversal of a flip (taken from x's scale) moved
    its box 100 pixels off the image (8.3 dB; 13x400 upright: 22.4)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = str(tmp_path / "narrow.jpg")
    ramp(stored).save(path, quality=95, exif=exif.tobytes())
    config = BuildConfig(size=(25, 1))
    assert psnr(load_pixels(path, config), full_decode_reference(path, config)) >= MIN_PSNR


@pytest.mark.parametrize("stored, resize, size", [((1345, 1343), "stretch", (224, 224)),
                                                  ((1600, 1200), "crop", (160, 224))])
def test_a_four_one_one_jpeg_keeps_the_bound(tmp_path, stored, resize, size):
    """4:1:1 (chroma quartered along x), which Pillow cannot write: 37.0 and 32.2 dB before
    CHROMA_LOSS, 52.0 and 51.2 now (4:4:0, chroma halved along y, turned upright: 40.6-47.8,
    now 47.3-51.7)."""
    import simplejpeg

    path = tmp_path / "camera.jpg"
    pixels = np.ascontiguousarray(np.asarray(photo_like(stored, 4)))
    path.write_bytes(simplejpeg.encode_jpeg(pixels, quality=90, colorsubsampling="411"))
    config = BuildConfig(size=size, resize=resize, decoder="fast")
    assert psnr(load_pixels(str(path), config),
                full_decode_reference(str(path), config)) >= MIN_PSNR
