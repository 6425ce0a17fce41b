"""Decode one image file into pixels: orientation, colour, then size.

:func:`load_pixels` is the whole per-image pipeline up to pixels shaped (H, W, C); it either
returns them or raises :class:`SkipImage` with the reason that goes into the manifest. An 8-bit
image (and every image of a ``uint8`` or ``--bit-depth 8`` build) becomes uint8 pixels, which
the shard format turns into the stored dtype (see ``formats/npy.py``); a 16-bit or float image
of a full-depth float build becomes float64 pixel values in [0, 255], each channel resized in
Pillow's ``F`` mode (see :mod:`imgshard.depth`), stored by :func:`imgshard.depth.store_values`.

Large JPEGs are decoded with Pillow's ``draft()`` (DCT-domain scaling) to no less than twice
the size they are resized to, which keeps the final antialiased resize faithful (PSNR above
40 dB against a full decode) while skipping most of the decode work.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

from . import depth, fast_decode
from .config import BuildConfig
from .orientation import TRANSPOSING_ORIENTATIONS, orientation_of, reversal_shifts
from .storage import Location
from .storage.files import NotRegularFile

RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}
PIL_MODES = {"rgb": "RGB", "grayscale": "L", "rgba": "RGBA"}
#: Decoded size, as a multiple of the resized size, that ``draft()`` may reduce a JPEG to, per
#: filter. The box filter (``area``) passes more of the high frequencies in which DCT scaling
#: differs from a full decode, so it needs a wider margin to stay within 40 dB PSNR (tested in
#: tests/test_quality.py); ``nearest`` is never drafted.
DRAFT_MARGINS = {"bilinear": 2, "bicubic": 2, "lanczos": 2, "area": 4}
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class SkipImage(Exception):
    """This file becomes no sample; ``str(error)`` is the reason recorded in the manifest."""


@dataclass(frozen=True)
class Box:
    """A region of an image in pixels: left, top, right, bottom (right and bottom exclusive)."""

    left: float
    top: float
    right: float
    bottom: float

    def scaled(self, sx: float, sy: float) -> "Box":
        return Box(self.left * sx, self.top * sy, self.right * sx, self.bottom * sy)

    def shifted(self, dx: float, dy: float) -> "Box":
        return Box(self.left + dx, self.top + dy, self.right + dx, self.bottom + dy)

    def enclosing(self) -> tuple[int, int, int, int]:
        """The smallest whole-pixel box that holds this one."""
        return (math.floor(self.left), math.floor(self.top), math.ceil(self.right),
                math.ceil(self.bottom))

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)


def read_source(src: Location, rel: str) -> BinaryIO:
    """The opened file ``rel`` of SRC for :func:`load_pixels` (the caller closes it): see
    :meth:`~imgshard.storage.Location.open_source`. A local file replaced by a FIFO, socket or
    device since the scan is a skip, never a hang.

    Raises:
        SkipImage: the file vanished since the scan, cannot be read or is not a regular file.
    """
    try:
        return src.open_source(rel)
    except NotRegularFile:
        raise SkipImage("not a regular file") from None
    except OSError as error:
        if error.errno == errno.ENXIO:  # a socket, or a device with no driver
            raise SkipImage("not a regular file") from None
        raise SkipImage(skip_reason(rel, error)) from None


def load_pixels(path: str | BinaryIO, config: BuildConfig) -> np.ndarray:
    """Decode ``path`` (a file name or a binary stream) into pixels shaped ``config.image_shape``:
    uint8, or float64 values in [0, 255] for a deep image when ``config.full_depth``.

    Raises:
        SkipImage: the file cannot become a sample; the message says why in a few words.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # a stream, never a name: Pillow maps an uncompressed file it opens by name, and then
            # leaves a mapped grayscale TIFF unturned by its orientation (Pillow 13)
            with _opened(path) as stream, Image.open(stream) as image:
                return _transform(image, config, stream)
        except depth.DeepSkip as skip:
            raise SkipImage(str(skip)) from None
        except SkipImage:
            raise
        except Exception as error:  # noqa: BLE001 - every decoder failure is a recorded skip
            raise SkipImage(skip_reason(path, error)) from None


def _opened(path: str | BinaryIO) -> contextlib.AbstractContextManager[BinaryIO]:
    """``path`` opened for reading, or the stream given (left open: its caller closes it)."""
    if isinstance(path, str):
        return open(path, "rb")
    return contextlib.nullcontext(path)


def skip_reason(path: str | BinaryIO, error: BaseException) -> str:
    """A short, one-line reason for a failed decode, as recorded in the manifest."""
    if isinstance(error, PermissionError):
        return "cannot read: permission denied"
    if isinstance(error, UnidentifiedImageError):
        try:
            empty = (os.path.getsize(path) if isinstance(path, str)
                     else path.seek(0, io.SEEK_END)) == 0
        except OSError:
            empty = False
        return "empty file" if empty else "cannot decode: not a recognised image format"
    if isinstance(error, Image.DecompressionBombError):
        return "too many pixels"
    if isinstance(error, MemoryError):
        return "cannot decode: out of memory"
    message = " ".join(str(error).split())
    if isinstance(error, EOFError) or "truncated" in message.lower():
        return "truncated"
    if isinstance(error, OSError) and error.strerror:
        return f"cannot read: {error.strerror}"
    return f"cannot decode: {type(error).__name__}: {message}"[:200]


def _transform(image: Image.Image, config: BuildConfig, source: str | BinaryIO) -> np.ndarray:
    width, height = image.size
    if width * height > config.max_pixels:
        raise SkipImage(f"too many pixels ({width}x{height} > {config.max_pixels})")
    deep = config.full_depth and depth.is_deep(image)  # before loading, which drops the tile
    if image.format != "JPEG" and not (deep and depth.needs_opencv(image)
                                       and image.format == "TIFF"):
        # Pillow turns a TIFF as it loads it (and reports its size upright before); a deep PNG's
        # 8-bit decode (which getexif() does anyway) refuses broken data before libpng prints
        image.load()
    orientation = orientation_of(image)
    if deep:
        return _deep_transform(image, source, orientation, config)
    width, height = image.size
    upright = (height, width) if orientation in TRANSPOSING_ORIENTATIONS else (width, height)
    region = source_region(upright, config)
    if config.decoder == "fast" and fast_decode.decodes(image.format, image.mode):
        pixels = fast_decode.load(source, image.size, orientation, region.as_tuple(),
                                  _output_size(region, config), config.color)
        if pixels is not None:  # else simplejpeg refused it: Pillow decodes it (or says why not)
            return _padded(pixels, (pixels.shape[1], pixels.shape[0]), config)
    _draft(image, upright, region, orientation, config)
    image.load()
    decoded = image.size  # as stored: a DCT-scaled decode may cover a partial last block
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    image = to_color(image, config.color)
    scales = _draft_scales(upright, image.size)
    box = region.shifted(*reversal_shifts((width, height), decoded, scales[0], orientation))
    box = box.scaled(*scales)
    return _resize(image, box, _output_size(region, config), config)


def _deep_transform(image: Image.Image, source: str | BinaryIO, orientation: int,
                    config: BuildConfig) -> np.ndarray:
    """A deep image as float64 pixel values: each colour plane resized in Pillow's ``F`` mode
    (every filter, the same crop and letterbox as the 8-bit path), rounded to nothing."""
    values = depth.decode(image, source, orientation)
    region = source_region((values.shape[1], values.shape[0]), config)
    size = _output_size(region, config)
    resized: dict[int, np.ndarray] = {}
    channels = []
    for plane in depth.colour_planes(values, config.color):
        if plane is None:  # an opaque alpha: white inside the image, not resampled
            opaque = np.full((size[1], size[0], 1), depth.white(values), dtype=np.float32)
            channels.append(_padded(opaque, size, config))
            continue
        if id(plane) not in resized:
            resized[id(plane)] = _resize(Image.fromarray(plane), region, size, config)
        channels.append(resized[id(plane)])
    return depth.pixel_units(np.concatenate(channels, axis=2), values.dtype.kind == "f")


def source_region(size: tuple[int, int], config: BuildConfig) -> Box:
    """The part of an upright image of ``size`` (W, H) that is resized into the target.

    ``crop`` takes the largest centred window of the target's aspect ratio with the same integer
    arithmetic as Keras ``crop_to_aspect_ratio``; ``stretch`` and ``pad`` use the whole image.
    """
    width, height = size
    if config.resize != "crop":
        return Box(0, 0, width, height)
    target_h, target_w = config.size
    crop_h = min(height, int(width * target_h / target_w))
    crop_w = min(width, int(height * target_w / target_h))
    crop_h, crop_w = max(crop_h, 1), max(crop_w, 1)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return Box(left, top, left + crop_w, top + crop_h)


def fitted_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """(W, H) of an image of ``size`` (W, H) scaled to fit inside ``target`` (H, W), for ``pad``."""
    width, height = size
    target_h, target_w = target
    if width * target_h >= height * target_w:
        return target_w, max(1, min(target_h, round(height * target_w / width)))
    return max(1, min(target_w, round(width * target_h / height))), target_h


def _output_size(region: Box, config: BuildConfig) -> tuple[int, int]:
    """(W, H) that ``region`` is resized to: the target, or its fitted size when padding."""
    if config.resize == "pad":
        region_size = (round(region.right - region.left), round(region.bottom - region.top))
        return fitted_size(region_size, config.size)
    return config.size[1], config.size[0]


def _draft(image: Image.Image, upright: tuple[int, int], region: Box, orientation: int,
           config: BuildConfig) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale while it stays >= margin x the resized size."""
    margin = DRAFT_MARGINS.get(config.interpolation)
    if image.format != "JPEG" or margin is None:
        return
    out_w, out_h = _output_size(region, config)
    need_x = out_w / (region.right - region.left) * margin
    need_y = out_h / (region.bottom - region.top) * margin
    request = (math.ceil(upright[0] * need_x), math.ceil(upright[1] * need_y))
    if orientation in TRANSPOSING_ORIENTATIONS:
        request = (request[1], request[0])
    if request[0] < image.size[0] and request[1] < image.size[1]:
        image.draft(image.mode, request)


def _draft_scales(upright: tuple[int, int], decoded: tuple[int, int]) -> tuple[float, float]:
    """Decoded pixels per source pixel along x and y: 1, or 1/2, 1/4, 1/8 after ``draft()``.

    DCT scaling by 1/n maps decoded pixel i onto source pixels [i*n, (i+1)*n), whatever the
    rounding up of a partial last block, so the exact factor is 1/n, not decoded/source size.
    n is the one that rounds both sides up to the decoded ones (a side's ratio alone misleads
    on a narrow image: 9 pixels drafted at 1/4 to 3 read as 1/3).
    """
    scale = next(n for n in (1, 2, 4, 8)
                 if all(-(-side // n) == size for side, size in zip(upright, decoded)))
    return (1 / scale, 1 / scale)


def to_color(image: Image.Image, color: str) -> Image.Image:
    """Convert any mode Pillow reads into ``L``, ``RGB`` or ``RGBA`` for ``color``.

    (The 8-bit path.) 16-bit and 32-bit integer images are scaled to 8 bits (divided by 257),
    floating-point images are taken as 0..1, and transparent pixels are composited over black
    unless the target keeps alpha.
    """
    target = PIL_MODES[color]
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        image = _to_eight_bit(image)
    elif image.mode == "1":
        image = image.convert("L")
    if image.mode == target:
        return image
    if target != "RGBA" and _has_alpha(image):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert(target)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _to_eight_bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    scale = 255.0 if image.mode == "F" else 1 / 257
    pixels = np.clip(np.nan_to_num(values * scale) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L")


def _resize(image: Image.Image, box: Box, size: tuple[int, int], config: BuildConfig) -> np.ndarray:
    """Resize the ``box`` region of ``image`` to ``size`` (W, H), then pad it to the target.

    The region is first cropped to whole pixels, so that the filter sees nothing outside it (as
    in a crop, then resize); a fractional remainder, left by DCT scaling, is resampled exactly.
    """
    target_h, target_w = config.size
    whole = box.enclosing()
    if whole != (0, 0, *image.size):
        image = image.crop(whole)
        box = box.shifted(-whole[0], -whole[1])
    if image.size != size or box != Box(0, 0, *image.size):
        image = image.resize(size, RESAMPLING[config.interpolation], box=box.as_tuple())
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return _padded(pixels, size, config)


def _padded(pixels: np.ndarray, size: tuple[int, int], config: BuildConfig) -> np.ndarray:
    """``pixels`` of ``size`` (W, H) centred on a black canvas of the target size."""
    target_h, target_w = config.size
    if size == (target_w, target_h):
        return pixels
    canvas = np.zeros((target_h, target_w, pixels.shape[2]), dtype=pixels.dtype)
    top, left = (target_h - size[1]) // 2, (target_w - size[0]) // 2
    canvas[top:top + size[1], left:left + size[0]] = pixels
    return canvas


def decoder_versions(config: BuildConfig) -> dict[str, str | None]:
    """The libraries whose versions decide the pixels: Pillow, the JPEG codec inside it, numpy,
    OpenCV for a full-depth build, which decodes its 16-bit colour files (None: not installed,
    so such files were skipped), and OpenCV and simplejpeg for ``--decoder fast``.

    libjpeg-turbo's DCT scaling (``draft()``) and IDCT may round differently across versions,
    so shards are byte-identical only for the same versions.
    """
    from PIL import features  # imported here: it costs every start-up ~6 ms

    versions = {"pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"),
                "numpy": np.__version__}
    if config.full_depth or config.decoder == "fast":
        versions["opencv"] = depth.opencv_version()
    if config.decoder == "fast":
        versions["simplejpeg"] = fast_decode.simplejpeg_version()
    return versions
