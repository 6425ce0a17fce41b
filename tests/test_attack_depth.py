"""Hostile inputs for full bit depth (imgshard/depth.py): each test a bug found and fixed."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from test_depth import png16, tiff, write

from imgshard import BuildConfig
from imgshard.transform import SkipImage, load_pixels


def associated_alpha_tiff(values: np.ndarray) -> bytes:
    """A 16-bit RGBA TIFF of ``values`` whose ExtraSamples says associated (premultiplied)."""
    data = bytearray(tiff(values))
    at = data.find(struct.pack("<HHI", 338, 3, 1))
    struct.pack_into("<HHIHH", data, at, 338, 3, 1, 1, 0)
    return bytes(data)


@pytest.mark.parametrize("color", ["rgb", "rgba"])
def test_associated_alpha_is_not_premultiplied_twice(tmp_path, color):
    """A premultiplied RGBA TIFF: composited over black, its colour is the stored colour;
    with alpha kept, colour / alpha (as Pillow unpacks ``RGBa``). OpenCV returns the stored
    premultiplied values, which the deep path multiplied by alpha again (off by up to 64/255)."""
    rng = np.random.default_rng(3)
    values = rng.integers(0, 65536, (6, 10, 4), dtype=np.uint16)
    values[..., :3] = np.minimum(values[..., :3], values[..., 3:])
    path = write(tmp_path / "associated.tif", associated_alpha_tiff(values))
    config = BuildConfig(size=(6, 10), dtype="float32", interpolation="nearest", color=color)
    colour, alpha = values[..., :3].astype(np.float64), values[..., 3:].astype(np.float64)
    if color == "rgba":
        straight = np.clip(colour * 65535 / np.maximum(alpha, 1), 0, 65535)
        want = np.concatenate([np.where(alpha > 0, straight, 0), alpha], axis=2) / 257
    else:
        want = colour / 257
    np.testing.assert_allclose(load_pixels(path, config), want, rtol=0, atol=1 / 257)


def broken_png(kind: str) -> bytes:
    values = np.random.default_rng(1).integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    data = bytearray(png16(values))
    at = data.find(b"IDAT")
    length = struct.unpack_from(">I", data, at - 4)[0]
    data[at + 4 + (length if kind == "crc" else 20)] ^= 0xFF  # the CRC, or the zlib stream
    return bytes(data)


@pytest.mark.parametrize("kind", ["crc", "zlib"])
def test_a_corrupt_sixteen_bit_png_is_a_quiet_skip(tmp_path, capfd, kind):
    """libpng printed 'libpng error: IDAT: CRC error' (or 'incorrect data check') on stderr,
    past OpenCV's silenced log: docs/safety.md promises a recorded skip, no lines on stderr."""
    path = write(tmp_path / f"{kind}.png", broken_png(kind))
    with pytest.raises(SkipImage):
        load_pixels(path, BuildConfig(size=(6, 10)))
    assert capfd.readouterr().err == ""


def test_a_negative_zero_in_a_float_tiff_is_stored_as_zero(tmp_path):
    """-0.0 (a float TIFF's, as computed images hold) was stored with its sign bit: equal, but
    not the bytes of 0, so the same picture's shard, checksum and dataset_id differed."""
    values = np.array([[[-0.0], [0.0], [-1.0]]], dtype=np.float32)
    path = write(tmp_path / "zero.tif", tiff(values))
    config = BuildConfig(size=(1, 3), dtype="float32", interpolation="nearest",
                         color="grayscale")
    pixels = load_pixels(path, config)
    assert not np.signbit(pixels).any(), pixels.ravel()


def test_an_orientation_tag_of_no_values_turns_nothing(tmp_path):
    """An Orientation entry whose count is 0 holds no value (Pillow reads none, and so the
    8-bit path and a deep grayscale TIFF stay unturned); the 16-bit colour path read the unused
    value field (6) and turned the image."""
    values = np.random.default_rng(4).integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    data = bytearray(tiff(values, 6))
    at = data.find(struct.pack("<HHI", 274, 3, 1))
    struct.pack_into("<HHIHH", data, at, 274, 3, 0, 6, 0)
    path = write(tmp_path / "no-values.tif", bytes(data))
    config = BuildConfig(size=(6, 10), dtype="float32", interpolation="nearest")
    np.testing.assert_array_equal(load_pixels(path, config), values / 257)


def test_a_file_over_opencvs_own_pixel_limit_is_a_plain_skip(tmp_path):
    """Over OpenCV's pixel limit (OPENCV_IO_MAX_IMAGE_PIXELS, here set by the user) imdecode
    raises cv2.error, not None: the skip reason was OpenCV's assertion with its build path
    ('cannot decode: error: OpenCV(5.1.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp...')."""
    import os
    import subprocess
    import sys

    import imgshard

    path = write(tmp_path / "a.png", png16(np.ones((8, 8, 3), np.uint16)))
    script = ("from imgshard import BuildConfig\nfrom imgshard.transform import SkipImage, "
              f"load_pixels\ntry:\n    load_pixels({path!r}, BuildConfig(size=(8, 8)))\n"
              "except SkipImage as skip:\n    print(skip)\n")
    env = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "16",
           "PYTHONPATH": os.path.dirname(os.path.dirname(imgshard.__file__))}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == ("cannot decode: OpenCV cannot read this 16-bit colour file "
                                   "(truncated or broken)"), done.stdout + done.stderr


@pytest.mark.parametrize("color", ["rgb", "rgba"])
def test_an_unspecified_extra_sample_is_not_alpha(tmp_path, color):
    """A 16-bit TIFF with a 4th sample that ExtraSamples calls unspecified (0): Pillow opens
    it as RGB (raw mode RGBX;16L) and the 8-bit path drops the sample; OpenCV returns four
    channels, and the deep path composited the colour over black by it (off by up to 255)."""
    values = np.random.default_rng(7).integers(0, 65536, (6, 10, 4), dtype=np.uint16)
    data = bytearray(tiff(values))
    at = data.find(struct.pack("<HHI", 338, 3, 1))
    struct.pack_into("<HHIHH", data, at, 338, 3, 1, 0, 0)
    path = write(tmp_path / "rgbx.tif", bytes(data))
    config = BuildConfig(size=(6, 10), dtype="float32", interpolation="nearest", color=color)
    want = values[:, :, :3] / 257
    if color == "rgba":
        want = np.concatenate([want, np.full((6, 10, 1), 255.0)], axis=2)
    np.testing.assert_array_equal(load_pixels(path, config), want)


def test_a_sixteen_bit_png_transparent_colour_stays_transparent(tmp_path):
    """Guard for the RGBX fix: a 16-bit RGB PNG with a tRNS colour is Pillow's RGB too, but
    OpenCV's fourth channel is then a real alpha: the transparent pixel is black."""
    values = np.random.default_rng(8).integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    values[0, 0] = (1000, 2000, 3000)
    data = png16(values)
    trns = struct.pack(">HHH", 1000, 2000, 3000)
    chunk = struct.pack(">I", 6) + b"tRNS" + trns + struct.pack(">I", zlib.crc32(b"tRNS" + trns))
    at = data.find(b"IDAT") - 4
    path = write(tmp_path / "trns.png", data[:at] + chunk + data[at:])
    want = values / 257
    want[0, 0] = 0
    config = BuildConfig(size=(6, 10), dtype="float32", interpolation="nearest")
    np.testing.assert_array_equal(load_pixels(path, config), want)
