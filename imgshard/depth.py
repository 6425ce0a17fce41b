"""Full bit depth: 16-bit and floating-point images decoded into float values, never into 8 bits.

A float build (``dtype`` float16 or float32, ``bit_depth`` 16) stores a 16-bit pixel ``p16`` as
``(p16 / 257) * rescale + offset`` and a 32-bit float pixel ``f`` (0..1) as
``(f * 255) * rescale + offset``: the formula an 8-bit pixel ``p8`` follows, since
``257 * p8 / 257 == p8`` exactly, so an 8-bit image and its 16-bit expansion give the same floats.
This module decodes such an image into its own units (uint16, int32 or float32 values, upright,
shaped (H, W, C)), turns them into the build's colour planes (float32, still in source units,
so that an unresized pixel is exact) and, once :mod:`imgshard.transform` has resized each plane
in Pillow's ``F`` mode, into pixel units: float64 values in [0, 255].

Pillow keeps 16-bit grayscale (``I;16``, ``I``) and float (``F``) images, but reduces 16-bit
colour (48-bit RGB, 64-bit RGBA, 16-bit gray with alpha) to 8 bits as it opens them. Those are
decoded again by OpenCV (the ``depth`` extra, ``opencv-python-headless``); without it such a
file is skipped with a reason naming the extra and ``--bit-depth 8``, never silently reduced.
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np
from PIL import Image

#: Pillow modes that hold more than 8 bits per pixel: 16-bit and 32-bit integer, 32-bit float.
DEEP_GRAY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
#: Pillow's modes for 16-bit colour, which it reads as 8 bits (the raw mode says the file's).
DEEP_COLOUR_MODES = frozenset({"RGB", "RGBA"})
#: The formats whose 16-bit colour is deep (a BMP's 16 bits are 5-6-5 bits a channel).
DEEP_COLOUR_FORMATS = frozenset({"PNG", "TIFF"})
#: The value of white in a 16-bit integer image (a float image's is 1).
WHITE_16 = 65535
#: ITU-R 601-2 luma, as Pillow converts RGB to L (in per mille, so that integer sums stay exact).
LUMA_PER_MILLE = (299, 587, 114)
#: The skip reason of a 16-bit colour file when OpenCV is not installed.
NO_COLOUR_DECODER = ("16-bit colour: install the 'depth' extra (pip install 'imgshard[depth]') "
                     "to keep its depth, or build with --bit-depth 8")
#: The TIFF (and EXIF) tag of the orientation.
ORIENTATION_TAG = 0x0112
#: Bytes a file may have beyond 2 bytes per value of its pixels before it is not read whole
#: (metadata, ICC profiles, thumbnails); more is a hostile or broken file.
SLACK_BYTES = 64 << 20


class DeepSkip(Exception):
    """A deep image that cannot be decoded at full depth; the message is the skip reason."""


def is_deep(image: Image.Image) -> bool:
    """Whether ``image`` (opened, not loaded) holds more than 8 bits per channel."""
    if image.mode in DEEP_GRAY_MODES:
        return True
    return image.mode in DEEP_COLOUR_MODES and image.format in DEEP_COLOUR_FORMATS \
        and ";16" in raw_mode(image)


def needs_opencv(image: Image.Image) -> bool:
    """Whether a deep ``image`` is decoded by OpenCV (16-bit colour), not by Pillow (which
    then need not load it: its 8-bit pixels would be thrown away)."""
    return image.mode not in DEEP_GRAY_MODES


def raw_mode(image: Image.Image) -> str:
    """The raw mode of the file's first tile (how its bytes are laid out, e.g. ``RGB;16B``),
    '' when Pillow names none."""
    if not image.tile:
        return ""
    args = image.tile[0].args
    mode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args
                                               else "")
    return mode if isinstance(mode, str) else ""


def decode(image: Image.Image, source: str | BinaryIO, orientation: int = 1) -> np.ndarray:
    """The values of a deep ``image`` (opened from ``source``; loaded by Pillow unless
    :func:`needs_opencv`; its EXIF says ``orientation``), upright, shaped (H, W, C) in the
    file's own units: uint16 or int32 (white 65535), float32 (white 1), C = 1, 3 or 4 (RGBA).

    Raises:
        DeepSkip: a 16-bit colour file without OpenCV, or one OpenCV reads otherwise than Pillow.
    """
    if not needs_opencv(image):  # Pillow's own pixels, turned as far as Pillow did
        return upright(np.asarray(image)[:, :, np.newaxis], orientation)
    cv2 = _opencv()
    width, height = image.size
    data = _read_whole(source, width * height * 4 * 2 + SLACK_BYTES)
    if image.format == "TIFF":  # the file's own tag, whatever Pillow makes of it
        data, orientation = _tiff_unturned(data)
    else:
        _check_png_crcs(data)
    values = _quietly_decoded(cv2, data)
    if values is None:
        raise DeepSkip("cannot decode: OpenCV cannot read this 16-bit colour file (truncated "
                       "or broken)")
    if values.dtype != np.uint16 or sorted(values.shape[:2]) != sorted((height, width)):
        raise DeepSkip("cannot decode: OpenCV reads this 16-bit colour file otherwise than "
                       "Pillow")
    if values.ndim == 2:
        values = values[:, :, np.newaxis]
    elif values.shape[2] in (3, 4):  # OpenCV's BGR(A)
        values = values[:, :, [2, 1, 0, 3][:values.shape[2]]]
    layout = raw_mode(image)
    if layout.startswith("RGBX") and values.shape[2] == 4:  # an unspecified sample: not alpha
        values = values[:, :, :3]
    if layout.startswith("RGBa"):  # associated alpha: OpenCV keeps it premultiplied
        values = _unpremultiplied(values)
    return upright(values, orientation)


def _unpremultiplied(values: np.ndarray) -> np.ndarray:
    """RGBA uint16 ``values`` whose colour is premultiplied by alpha, as straight colour (as
    Pillow unpacks ``RGBa``): colour * white / alpha, rounded, at most white; 0 where alpha is 0."""
    colour, alpha = values[:, :, :3].astype(np.float64), values[:, :, 3:].astype(np.float64)
    straight = colour * WHITE_16 / np.maximum(alpha, 1)
    out = values.copy()
    out[:, :, :3] = np.where(alpha > 0, np.clip(np.round(straight), 0, WHITE_16), 0)
    return out


def _opencv():
    """OpenCV, imported on first use (it costs every start-up ~100 ms). Its pixel limit is left
    alone: it is read once a process (so it could not follow each build's ``max_pixels``), and
    the file's header has already been held to ``max_pixels`` (OpenCV must read the same size)."""
    try:
        import cv2
    except ImportError:
        raise DeepSkip(NO_COLOUR_DECODER) from None
    return cv2


def _quietly_decoded(cv2, data: bytes) -> np.ndarray | None:
    """``cv2.imdecode`` of ``data`` as it is stored, with OpenCV's log silenced meanwhile: a
    broken file is a recorded skip, not lines of libtiff's complaints on stderr."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # e.g. more pixels than OPENCV_IO_MAX_IMAGE_PIXELS (2^30 unless set)
        return None
    finally:
        logging.setLogLevel(level)


def _read_whole(source: str | BinaryIO, limit: int) -> bytes:
    """The whole file, at most ``limit`` bytes of it."""
    if isinstance(source, str):
        with open(source, "rb") as stream:
            data = stream.read(limit + 1)
    else:
        source.seek(0, io.SEEK_SET)
        data = source.read(limit + 1)
    if len(data) > limit:
        raise DeepSkip("cannot decode: the file is far larger than its pixels")
    return data


def _check_png_crcs(data: bytes) -> None:
    """Refuse a PNG whose chunks, up to IEND, fail their CRC check or are cut short: libpng
    prints its error on stderr (past OpenCV's silenced log) before OpenCV gives up on them.

    Raises:
        DeepSkip: a chunk is broken or cut short.
    """
    view, at = memoryview(data), 8
    while at + 12 <= len(data):
        length = int.from_bytes(view[at:at + 4], "big")
        end = at + 8 + length
        if end + 4 > len(data):
            break
        if zlib.crc32(view[at + 4:end]) != int.from_bytes(view[end:end + 4], "big"):
            raise DeepSkip("cannot decode: a PNG chunk fails its CRC check (broken file)")
        if view[at + 4:at + 8] == b"IEND":
            return
        at = end + 4
    raise DeepSkip("truncated")


def _tiff_unturned(data: bytes) -> tuple[bytes, int]:
    """A TIFF's bytes with its first page's Orientation tag set to 1, and the orientation it
    had (1 without the tag): OpenCV's TIFF decoder turns an image itself (even with
    ``IMREAD_UNCHANGED``, unlike its PNG decoder), which the OpenCV version should not decide.

    Raises:
        DeepSkip: the first page's directory cannot be read.
    """
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    try:
        if order is None:
            raise DeepSkip("cannot decode: not a TIFF header")
        magic = struct.unpack_from(f"{order}H", data, 2)[0]
        big = magic == 43  # BigTIFF: 8-byte offsets and counts
        offset = struct.unpack_from(f"{order}{'Q' if big else 'I'}", data, 8 if big else 4)[0]
        count = struct.unpack_from(f"{order}{'Q' if big else 'H'}", data, offset)[0]
        first, size = offset + (8 if big else 2), 20 if big else 12
        for entry in range(min(count, 4096)):
            at = first + entry * size
            tag, kind, values = struct.unpack_from(f"{order}HH{'Q' if big else 'I'}", data, at)
            if tag == ORIENTATION_TAG and kind == 3:  # SHORT, its value in the entry
                value_at = at + (12 if big else 8)
                # no values (count 0): no orientation, as Pillow reads it
                orientation = struct.unpack_from(f"{order}H", data, value_at)[0] if values else 1
                patched = bytearray(data)
                struct.pack_into(f"{order}H", patched, value_at, 1)
                return bytes(patched), orientation if orientation in range(1, 9) else 1
    except struct.error:
        raise DeepSkip("cannot decode: the TIFF's first directory is cut short") from None
    return data, 1


def upright(values: np.ndarray, orientation: int) -> np.ndarray:
    """``values`` (H, W, C) as the EXIF orientation tag says they are shown (views, no copy)."""
    turned = values.transpose(1, 0, 2)
    return {1: values, 2: values[:, ::-1], 3: values[::-1, ::-1], 4: values[::-1],
            5: turned, 6: turned[:, ::-1], 7: turned[::-1, ::-1], 8: turned[::-1]}[orientation]


def colour_planes(values: np.ndarray, color: str) -> list[np.ndarray | None]:
    """The build's channels (``rgb``, ``grayscale`` or ``rgba``) as float32 planes in source
    units, composited over black unless alpha is kept; a grey plane given as red, green and blue
    is the same object three times (resized once), and an opaque alpha that the file lacks is
    None (white inside the image, 0 where ``pad`` adds a border).
    """
    floating = values.dtype.kind == "f"
    white = 1.0 if floating else WHITE_16
    planes = [_clean(values[:, :, index], floating) for index in range(values.shape[2])]
    alpha = planes.pop() if len(planes) in (2, 4) else None
    if alpha is not None and color != "rgba":
        planes = [plane * (alpha / np.float32(white)) for plane in planes]
        alpha = None
    if color == "grayscale":
        return [planes[0] if len(planes) == 1 else _luma(planes)]
    colour = planes if len(planes) == 3 else planes * 3
    return colour + [alpha] if color == "rgba" else colour


def _clean(plane: np.ndarray, floating: bool) -> np.ndarray:
    """One channel as float32 within its range: NaN as 0, as the 8-bit path clips."""
    if floating:
        return np.clip(np.nan_to_num(plane.astype(np.float32)), 0.0, 1.0)
    return np.clip(plane, 0, WHITE_16).astype(np.float32)


def _luma(planes: list[np.ndarray]) -> np.ndarray:
    red, green, blue = (plane.astype(np.float64) for plane in planes)
    weights = LUMA_PER_MILLE
    return ((red * weights[0] + green * weights[1] + blue * weights[2]) / 1000).astype(np.float32)


def white(values: np.ndarray) -> float:
    """The value of white in the units of ``values`` (from :func:`decode`)."""
    return 1.0 if values.dtype.kind == "f" else float(WHITE_16)


def pixel_units(planes: np.ndarray, floating: bool) -> np.ndarray:
    """Resized float32 planes (source units) as float64 pixel values in [0, 255]: ``p16 / 257``
    or ``f * 255`` (computed so that an unresized 16-bit expansion of ``p8`` is ``p8``)."""
    values = planes.astype(np.float64)
    values = values * 255 if floating else values / 257
    return np.clip(np.nan_to_num(values), 0.0, 255.0) + 0.0  # -0.0 (a float file's) as 0


def store_values(pixels: np.ndarray, rescale: float, offset: float, out: np.ndarray) -> None:
    """Write float64 pixel values into ``out`` (a row of a float shard) as
    ``pixel * rescale + offset``, computed as the 8-bit table is (float64, then cast)."""
    out[...] = (pixels * rescale + offset).astype(out.dtype)


def opencv_version() -> str | None:
    """The installed OpenCV's version, None without it: from the name of its package's
    ``.dist-info`` folder beside ``cv2``, found without importing either OpenCV (~100 ms) or
    ``importlib.metadata`` (~6 ms of every build's start-up)."""
    spec = importlib.util.find_spec("cv2")
    if spec is None or spec.origin is None:
        return None
    folder = os.path.dirname(os.path.dirname(spec.origin))
    installed = os.listdir(folder)
    for name in ("opencv_python_headless", "opencv_python", "opencv_contrib_python_headless",
                 "opencv_contrib_python"):
        for entry in installed:
            if entry.startswith(name + "-") and entry.endswith(".dist-info"):
                return entry[len(name) + 1:-len(".dist-info")]
    return None
