"""The ``fast`` decoder (``--decoder fast``, from the ``imgshard[fast]`` extra): JPEGs decoded by
simplejpeg and resized by OpenCV, everything else by the Pillow path of ``transform.py``.

Why it is faster at the same quality: Pillow's antialiased ``bilinear`` is a triangle filter as
wide as the scale, computed exactly; OpenCV has no antialiased bilinear, and its ``INTER_AREA``
is slow at fractional scales and too sharp (35-40 dB against it on real photos). A Gaussian blur
of about the triangle's variance (less what the interpolation itself adds), then bicubic (or,
near a scale of 1 and when enlarging, bilinear) interpolation, matches Pillow's filter within
40 dB PSNR at about twice its speed; a thumbnail of at most 64x64 is resized by Pillow itself.
No other filter has such a match (Pillow's box, ``area``, is neither a Gaussian nor
``INTER_AREA``: 29 dB on photos for either), so the config refuses them with this decoder.
Large JPEGs are first scaled in the DCT domain (by 1/2, 1/4 or 1/8; see :data:`DCT_MARGINS`),
the scaling's own smoothing counted in the blur.
simplejpeg's ``fastdct``/``fastupsample`` are left off: they cost 1-3 dB on real photos.

A JPEG that simplejpeg refuses (CMYK, or damage its strict mode reports) goes the Pillow way,
which records the skip reason every build gives; either way the pixels of a file depend only on
the file, so shards stay byte-identical for any worker count.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from .errors import ImgshardError
from .orientation import TRANSPOSING_ORIENTATIONS, reversal_shifts

#: The variance of the Gaussian that stands for Pillow's triangle (half-width = the scale), in
#: units of the scale squared: the triangle's own 1/6, times 1.2, which the kernel's cut at 2
#: sigma and the photos call for (over 150 photos of the corpus: min PSNR 39.2 dB at 1.0, 41.8
#: at 1.2, 41.8 at 1.3; the mean 49.0, 50.1, 49.2).
TRIANGLE_VARIANCE = 1.2 / 6
#: What bilinear interpolation adds to the variance, in output-sized source pixels squared (the
#: mean over sampling phases of the triangle of half-width 1): the interpolation of an image
#: reduced by less than :data:`CUBIC_FROM` along an axis, or enlarged (Pillow's bilinear filter
#: is then bilinear interpolation itself).
INTERPOLATION_VARIANCE = 1 / 6
#: The same for bicubic interpolation, the one of an image reduced by >= :data:`CUBIC_FROM` along
#: both axes: sharper, and less dependent on the sampling phase, it follows Pillow's triangle
#: (exact at every phase) closer at scales of 1.1-2, where bilinear fell to 39.4 dB on one photo
#: of the corpus (now >= 43.6 on all 1,500; fitted over its 299 photos of <= 420 pixels, the
#: worst; fine stripes 3-8 pixels apart at scales of 1.1-1.5: 36.5-47 dB, bilinear 31.6-43.8).
#: Nearer 1 the triangle is bilinear interpolation itself (at 1, Pillow copies the image).
#: 0.05 from 1.1 left reductions of 1.1-1.15 along both axes, which no corpus photo has at
#: 224x224, too sharp: its photos cropped to squares of 238-336 pixels fell to 38.8 dB at
#: 248 (bilinear: 39.8 at 246); 0.02 from 1.08: >= 40.5 on them, at the cost of more blur after
#: DCT scaling: the corpus' worst 43.8 dB (small, was 43.6) and 45.4 (large, was 47.5).
CUBIC_VARIANCE = 0.02
CUBIC_FROM = 1.08
#: The decoded size, as a multiple of the output, that DCT scaling by 1/2, 1/4 or 1/8 (keyed by
#: eighths) may reduce a JPEG to: 1/4 and 1/8 down to 1.5x, not ``draft()``'s 2x (a 3-MP photo
#: decoded in 14 ms at 1/4, 19 at 1/2: its 4x4 inverse DCT has no SIMD on x86); 1/2 at 2x (at
#: 1.5x its sharper inverse DCT fell to 38 dB on synthetic photos).
DCT_MARGINS = {4: 2.0, 2: 1.5, 1: 1.5}
#: The share of a k x k block mean's variance that DCT scaling by 1/k is counted as: 0.5 made
#: the worst of 100 3-MP corpus photos 47.5 dB (1: 48.4, 0: 45.1) and of synthetic photos at
#: 1/4 and 1/8 45.8 (1: 43.8, 0: 46.2): its inverse DCT is sharper than a block mean.
DCT_SMOOTHING = 0.5
#: Outputs of at most this many pixels are resized by Pillow (see :func:`_resized`): a 64x64
#: thumbnail of a noisy photo reduced by 1.3 was 38 dB from Pillow's through OpenCV.
PILLOW_OUTPUT_PIXELS = 64 * 64
#: How much coarser than the luma a DCT-scaled decode leaves the chroma, along the stored x and
#: y, by subsampling (simplejpeg's names): libjpeg-turbo scales chroma halved along both axes
#: (4:2:0) by twice the luma's factor, which keeps its resolution, but chroma halved along one
#: axis by the luma's, which halves it again there (4:2:2, as many cameras write it: 1600x1200
#: photos cropped to 224x160 and decoded at 1/4 fell to 38.1 dB; 4:2:0: 49.2; asking twice the
#: width: 52.2).
CHROMA_LOSS = {"422": (2, 1), "440": (1, 2), "411": (4, 1)}
#: Pillow modes of the JPEGs simplejpeg decodes here (a CMYK one goes the Pillow way).
JPEG_MODES = frozenset({"L", "RGB"})
ORIENTED = {2: ("flip", 1), 3: ("rotate", 1), 4: ("flip", 0), 5: ("transpose", None),
            6: ("rotate", 0), 7: ("transverse", None), 8: ("rotate", 2)}


class MissingExtra(ImgshardError):
    """``--decoder fast`` without its libraries installed."""


def require_decoder(decoder: str) -> None:
    """Refuse a ``fast`` build (or append) where simplejpeg or OpenCV is missing, before
    anything is written.

    Raises:
        MissingExtra: one line naming the extra to install.
    """
    if decoder != "fast":
        return
    try:
        import cv2  # noqa: F401
        import simplejpeg  # noqa: F401
    except ImportError:
        raise MissingExtra("--decoder fast needs the imgshard[fast] extra: "
                           "pip install 'imgshard[fast]'") from None


def simplejpeg_version() -> str:
    """simplejpeg's version, for the manifest (OpenCV's: ``depth.opencv_version``, without
    importing it: ~100 ms of the build process's own start-up)."""
    import simplejpeg

    return simplejpeg.__version__


@contextlib.contextmanager
def one_thread(decoder: str) -> Iterator[None]:
    """OpenCV on this thread alone while a task decodes (then as before): a build already runs
    a worker per core, and OpenCV's pool of threads, idle between two small images, spins
    (measured: ~20% more CPU time per image in a 2-worker build)."""
    if decoder != "fast":
        yield
        return
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def decodes(image_format: str | None, mode: str) -> bool:
    """Whether a file Pillow opened as ``image_format`` in ``mode`` is this decoder's."""
    return image_format == "JPEG" and mode in JPEG_MODES


def load(stream: BinaryIO, stored: tuple[int, int], orientation: int,
         region: tuple[float, float, float, float], size: tuple[int, int],
         color: str) -> np.ndarray | None:
    """The JPEG in ``stream`` (``stored``: its (W, H) as stored) turned upright by its EXIF
    ``orientation``, its ``region`` (of the upright image) resized to ``size`` (W, H): uint8
    (H, W, C) for ``color``, resized as Pillow's ``bilinear``; None when simplejpeg refuses the
    file (the caller decodes it)."""
    import simplejpeg

    stream.seek(0)
    data = stream.read()
    try:
        subsampling = simplejpeg.decode_jpeg_header(data)[3]
    except ValueError:
        return None
    chroma_loss = (1, 1) if color == "grayscale" else CHROMA_LOSS.get(subsampling, (1, 1))
    eighths = _dct_eighths(stored, orientation, region, size, chroma_loss)
    expected = [-(-side * eighths // 8) for side in stored]  # libjpeg rounds a partial block up
    try:
        decoded = simplejpeg.decode_jpeg(data, colorspace="GRAY" if color == "grayscale"
                                         else "RGB", min_width=expected[0] if eighths < 8 else 0,
                                         min_height=expected[1] if eighths < 8 else 0)
    except ValueError:
        return None
    if list(decoded.shape[1::-1]) != expected:  # not the scaling asked for: Pillow decodes it
        return None
    scale = eighths / 8
    upright = _oriented(decoded, orientation)
    shift_x, shift_y = reversal_shifts(stored, decoded.shape[1::-1], scale, orientation)
    left, top, right, bottom = region
    box = ((left + shift_x) * scale, (top + shift_y) * scale, (right + shift_x) * scale,
           (bottom + shift_y) * scale)
    pixels = _resized(upright, box, size, 8 / eighths)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if color == "rgba":  # a JPEG is opaque, as Pillow's RGB -> RGBA makes it
        pixels = np.concatenate([pixels, np.full_like(pixels[:, :, :1], 255)], axis=2)
    return pixels


def _dct_eighths(stored: tuple[int, int], orientation: int,
                 region: tuple[float, float, float, float], size: tuple[int, int],
                 chroma_loss: tuple[int, int]) -> int:
    """The DCT scaling to decode at, in eighths: 8 (none), 4, 2 or 1, the smallest whose decoded
    ``region`` stays >= :data:`DCT_MARGINS` x the output, its chroma too (``chroma_loss``: see
    :data:`CHROMA_LOSS`). Not 3/8, 5/8...: libjpeg-turbo has no SIMD inverse DCT for those, and
    they are slower than the next power of two up (measured: 3/8 made large photos decode
    slower than Pillow's ``draft()`` to 1/2)."""
    left, top, right, bottom = region
    scales = (size[0] / (right - left), size[1] / (bottom - top))  # output per upright pixel
    if orientation in TRANSPOSING_ORIENTATIONS:
        scales = scales[::-1]
    scales = (scales[0] * chroma_loss[0], scales[1] * chroma_loss[1])
    eighths = 8
    while eighths > 1 and all(
            -(-side * (eighths // 2) // 8) >= math.ceil(side * scale * DCT_MARGINS[eighths // 2])
            for side, scale in zip(stored, scales)):
        eighths //= 2
    return eighths


def _oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` turned as Pillow's ``exif_transpose`` turns the image (1: as stored)."""
    import cv2

    how, code = ORIENTED.get(orientation, (None, None))
    rotations = (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if how == "flip":
        return cv2.flip(pixels, code)
    if how == "rotate":
        return cv2.rotate(pixels, rotations[code])
    if how == "transpose":
        return cv2.transpose(pixels)
    if how == "transverse":
        return cv2.flip(cv2.transpose(pixels), -1)
    return pixels


def _resized(pixels: np.ndarray, box: tuple[float, ...], size: tuple[int, int],
             dct_reduction: int) -> np.ndarray:
    """The ``box`` of ``pixels`` (decoded at 1/``dct_reduction`` of the stored size) resized to
    ``size`` (W, H) as Pillow's ``bilinear`` filter does: by Pillow itself for a thumbnail of at
    most :data:`PILLOW_OUTPUT_PIXELS` (cheap there, and exact where OpenCV's sampling at the
    border, most of such an output, is not), else by :func:`_blurred_and_sampled`."""
    if size[0] * size[1] <= PILLOW_OUTPUT_PIXELS:
        from PIL import Image

        return np.asarray(Image.fromarray(np.squeeze(pixels, axis=2) if pixels.ndim == 3
                                          and pixels.shape[2] == 1 else pixels).resize(
            size, Image.Resampling.BILINEAR, box=box))
    return _blurred_and_sampled(pixels, box, size, dct_reduction)


def _blurred_and_sampled(pixels: np.ndarray, box: tuple[float, ...], size: tuple[int, int],
                         dct_reduction: int) -> np.ndarray:
    """The ``box`` of ``pixels`` blurred by a Gaussian of about Pillow's triangle's variance at
    this scale, less what the DCT scaling already smoothed (counted as :data:`DCT_SMOOTHING` of
    a ``dct_reduction`` x ``dct_reduction`` block mean's), then sampled (see
    :func:`_interpolation`) at Pillow's pixel centres.

    The box is first cut to whole pixels, so that nothing outside it is blurred in, and when it
    is more than 4x the output, averaged in k x k blocks (the blur then makes up the rest of
    the variance): a blur runs over every input pixel, where Pillow computes only the outputs.
    """
    import cv2

    left, top = math.floor(box[0]), math.floor(box[1])
    right, bottom = math.ceil(box[2]), math.ceil(box[3])
    pixels = pixels[top:bottom, left:right]
    box = (box[0] - left, box[1] - top, box[2] - left, box[3] - top)
    pixels, box, block = _block_means(pixels, box, size)
    scale_x, scale_y = (box[2] - box[0]) / size[0], (box[3] - box[1]) / size[1]
    box_pixels = block ** 2  # a mean of a x a pixels: variance (a^2 - 1) / 12
    dct_variance = DCT_SMOOTHING * (dct_reduction ** 2 - 1) / 12 / (block * dct_reduction) ** 2
    interpolation, interpolation_variance = _interpolation(scale_x, scale_y)
    sigmas = [math.sqrt(max(TRIANGLE_VARIANCE * s * s - interpolation_variance
                            - (box_pixels - 1) / 12 / box_pixels - dct_variance, 0.0))
              for s in (scale_x, scale_y)]
    if max(sigmas) > 0.1:  # cut at 2 sigma (OpenCV's own size for uint8 is 3: 40% slower)
        kernel = [2 * math.ceil(2 * sigma) + 1 for sigma in sigmas]
        pixels = cv2.GaussianBlur(pixels, kernel, sigmaX=max(sigmas[0], 0.01),
                                  sigmaY=max(sigmas[1], 0.01), borderType=cv2.BORDER_REFLECT)
    if box == (0, 0, pixels.shape[1], pixels.shape[0]):
        return cv2.resize(pixels, size, interpolation=interpolation)
    matrix = np.array([[scale_x, 0, box[0] + 0.5 * scale_x - 0.5],
                       [0, scale_y, box[1] + 0.5 * scale_y - 0.5]])
    return cv2.warpAffine(pixels, matrix, size, flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _interpolation(scale_x: float, scale_y: float) -> tuple[int, float]:
    """OpenCV's interpolation for a resize by these scales (input pixels per output pixel) and
    the variance it adds: bicubic when the image is reduced by >= :data:`CUBIC_FROM` along both
    axes, else bilinear."""
    import cv2

    if min(scale_x, scale_y) >= CUBIC_FROM:
        return cv2.INTER_CUBIC, CUBIC_VARIANCE
    return cv2.INTER_LINEAR, INTERPOLATION_VARIANCE


def _block_means(pixels: np.ndarray, box: tuple[float, ...],
                 size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, ...], int]:
    """``pixels`` averaged in k x k blocks (OpenCV's exact ``INTER_AREA`` at a whole factor),
    k = the box's scale // 2 (1: as they are), the box in the averaged pixels, and k. A last
    partial block is left out: it lies in the box's last half output pixel at most."""
    import cv2

    block = int(min((box[2] - box[0]) / size[0], (box[3] - box[1]) / size[1]) // 2)
    if block < 2:
        return pixels, box, 1
    height, width = pixels.shape[0] // block, pixels.shape[1] // block
    pixels = cv2.resize(pixels[:height * block, :width * block], (width, height),
                        interpolation=cv2.INTER_AREA)
    return pixels, tuple(edge / block for edge in box), block
