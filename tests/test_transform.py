"""Decoding and transforming one image, checked against references computed with Pillow directly."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_image
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from imgshard.config import BuildConfig
from imgshard.formats.npy import cast_table, store_pixels
from imgshard.transform import SkipImage, load_pixels

MODES = {"rgb": "RGB", "grayscale": "L", "rgba": "RGBA"}


def reference(image: Image.Image, mode: str, resize: str, size=(20, 20)) -> np.ndarray:
    """What imgshard should store for ``image`` (a 60x30 W x H test picture), by hand."""
    image = image.convert(mode)
    width, height = size
    if resize == "stretch":
        out = image.resize((width, height), Image.Resampling.BILINEAR)
    elif resize == "crop":  # largest centred square of 60x30 is 30x30 at x=15
        out = image.crop((15, 0, 45, 30)).resize((width, height), Image.Resampling.BILINEAR)
    else:  # pad: 60x30 fits as 20x10, centred 5 rows down, black around it
        fitted = np.asarray(image.resize((20, 10), Image.Resampling.BILINEAR))
        canvas = np.zeros((height, width, *fitted.shape[2:]), dtype=np.uint8)
        canvas[5:15] = fitted
        out = Image.fromarray(canvas)
    pixels = np.asarray(out)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


@pytest.mark.parametrize("resize", ["stretch", "crop", "pad"])
@pytest.mark.parametrize("color", ["rgb", "grayscale", "rgba"])
def test_every_colour_and_resize_mode_matches_pillow(tmp_path, color, resize):
    path = str(tmp_path / "in.png")
    write_image(path, size=(60, 30), seed=3)
    config = BuildConfig(size=(20, 20), color=color, resize=resize)
    pixels = load_pixels(path, config)
    assert pixels.shape == (20, 20, config.channels) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, reference(Image.open(path), MODES[color], resize))


@pytest.mark.parametrize("interpolation, resample", [
    ("bilinear", Image.Resampling.BILINEAR), ("bicubic", Image.Resampling.BICUBIC),
    ("lanczos", Image.Resampling.LANCZOS), ("nearest", Image.Resampling.NEAREST),
    ("area", Image.Resampling.BOX),
])
def test_interpolations_are_pillows_filters(tmp_path, interpolation, resample):
    path = str(tmp_path / "in.png")
    write_image(path, size=(50, 40), seed=4)
    pixels = load_pixels(path, BuildConfig(size=(16, 24), interpolation=interpolation))
    expected = np.asarray(Image.open(path).convert("RGB").resize((24, 16), resample))
    np.testing.assert_array_equal(pixels, expected)


def exif_upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """How an EXIF orientation tag says the stored pixels are to be shown (EXIF 2.3, 4.6.4)."""
    transposed = pixels.transpose(1, 0, 2)
    return {
        1: pixels, 2: pixels[:, ::-1], 3: pixels[::-1, ::-1], 4: pixels[::-1],
        5: transposed, 6: transposed[:, ::-1], 7: transposed[::-1, ::-1], 8: transposed[::-1],
    }[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.zeros((6, 10, 3), dtype=np.uint8)
    stored[0, 0] = (255, 0, 0)  # a red corner and a green stripe make every turn distinct
    stored[:, 9] = (0, 255, 0)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = str(tmp_path / "turned.png")
    image.save(path, exif=exif)
    upright = exif_upright(stored, orientation)
    config = BuildConfig(size=upright.shape[:2], interpolation="nearest")
    np.testing.assert_array_equal(load_pixels(path, config), upright)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("channels", [1, 3])
def test_tiff_orientation_is_applied_once(tmp_path, orientation, channels):
    """Pillow reports a turned TIFF's size upright and turns its pixels as it loads them (an
    uncompressed grayscale one opened by name, mapped, it leaves unturned)."""
    stored = np.random.default_rng(orientation).integers(0, 256, (6, 10, channels), np.uint8)
    path = str(tmp_path / "turned.tif")
    Image.fromarray(stored if channels == 3 else stored[:, :, 0]).save(
        path, tiffinfo={0x0112: orientation})
    upright = exif_upright(stored, orientation)
    for resize in ("stretch", "crop"):
        config = BuildConfig(size=upright.shape[:2], interpolation="nearest", resize=resize,
                             color="rgb" if channels == 3 else "grayscale")
        np.testing.assert_array_equal(load_pixels(path, config), upright)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    path = str(tmp_path / "deep.png")
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = load_pixels(path, BuildConfig(size=(1, 4), color="grayscale", interpolation="nearest",
                                           bit_depth=8))
    assert pixels[0, :, 0].tolist() == [0, 1, 128, 255]


def test_transparent_pixels_become_black_unless_alpha_is_kept(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 255
    path = str(tmp_path / "alpha.png")
    Image.fromarray(rgba, "RGBA").save(path)
    config = BuildConfig(size=(2, 2), interpolation="nearest")
    assert load_pixels(path, config)[..., 0].tolist() == [[200, 0], [0, 0]]
    kept = load_pixels(path, BuildConfig(size=(2, 2), color="rgba", interpolation="nearest"))
    np.testing.assert_array_equal(kept, rgba)


def test_one_bit_and_palette_images_convert(tmp_path):
    bits = Image.new("1", (4, 2), 1)
    bits.putpixel((0, 0), 0)
    bits.save(tmp_path / "bits.png")
    pixels = load_pixels(str(tmp_path / "bits.png"), BuildConfig(size=(2, 4), interpolation="nearest"))
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[1, 3].tolist() == [255, 255, 255]
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([10, 20, 30] + [0] * 765)
    palette.save(tmp_path / "palette.png")
    pixels = load_pixels(str(tmp_path / "palette.png"), BuildConfig(size=(2, 2)))
    assert pixels.reshape(-1, 3).tolist() == [[10, 20, 30]] * 4


def test_animated_gif_takes_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    pixels = load_pixels(str(tmp_path / "anim.gif"), BuildConfig(size=(4, 4)))
    assert pixels[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"hello, I am text", "cannot decode: not a recognised image format"),
])
def test_undecodable_files_are_skipped_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(SkipImage) as skip:
        load_pixels(str(path), BuildConfig())
    assert str(skip.value) == reason


def test_truncated_jpeg_is_skipped_as_truncated(tmp_path):
    path = tmp_path / "cut.jpg"
    write_image(str(path), size=(64, 64), seed=1, quality=95)
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(SkipImage, match="^truncated$"):
        load_pixels(str(path), BuildConfig(size=(8, 8)))


def test_images_above_the_pixel_limit_are_skipped(tmp_path):
    write_image(str(tmp_path / "big.png"), size=(100, 100), colour=(1, 2, 3))
    with pytest.raises(SkipImage, match=r"too many pixels \(100x100 > 9999\)"):
        load_pixels(str(tmp_path / "big.png"), BuildConfig(max_pixels=9999))


@given(arrays(np.uint8, st.integers(1, 64)))
def test_float16_round_trips_every_8_bit_pixel(pixels):
    out = np.empty(pixels.shape, dtype=np.float16)
    store_pixels(pixels, cast_table(BuildConfig()), out)
    assert np.array_equal(np.round(out.astype(np.float64) * 255).astype(np.uint8), pixels)


# a rescale below ~1e-7 would store two pixel values alike, which BuildConfig refuses
@given(arrays(np.uint8, st.integers(1, 64)), st.floats(-2, 2).filter(lambda r: abs(r) > 1e-3),
       st.floats(-1, 1))
def test_float32_cast_is_pixel_times_rescale_plus_offset(pixels, rescale, offset):
    out = np.empty(pixels.shape, dtype=np.float32)
    store_pixels(pixels, cast_table(BuildConfig(dtype="float32", rescale=rescale, offset=offset)), out)
    np.testing.assert_array_equal(out, (pixels * rescale + offset).astype(np.float32))


def test_uint8_stores_raw_pixels():
    pixels = np.arange(256, dtype=np.uint8)
    out = np.empty_like(pixels)
    store_pixels(pixels, cast_table(BuildConfig(dtype="uint8")), out)
    np.testing.assert_array_equal(out, pixels)
