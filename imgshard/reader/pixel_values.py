"""How the stored pixels of a ``--dtype uint8`` dataset become the floats a reader serves.

A float build stores each 8-bit pixel value ``p`` as ``p * rescale + offset``, computed in
float64 and rounded once to its dtype (:func:`~imgshard.config.stored_values`, a 256-entry
table). A uint8 build stores ``p`` and records the same ``rescale`` and ``offset`` in its
manifest's ``config``; a reader asked for a float dtype serves it through that table in the
served dtype, so it yields bit for bit what a float build of the same source stores, from half
(float16) or a quarter (float32) of the disk. ``raw_pixels=True`` serves ``p`` itself.

The lookup is the reader's own cost, so it is written for speed (see docs/performance.md):

- with OpenCV (the ``fast`` extra), one OpenCV call a row (:class:`OpenCVValues`), with SIMD:
  ``addWeighted`` (``pixel * rescale + offset``) or ``divide`` (``pixel / (1 / rescale)``) when
  it gives all 256 table values bit for bit in the served dtype (checked when the reader is
  made, on rows long and short enough for OpenCV's vector and scalar code), else ``LUT`` (a
  copy of the table's bits: float16 and subnormal values too);
- without it, float32 (and float64) values come from arithmetic when it reproduces all 256 table values bit
  for bit (checked when the reader is made): a cast, a multiply or a divide (``p / 255`` for
  the default), and an add unless the offset is 0, which numpy vectorises;
- otherwise (float16: numpy's float16 arithmetic and casts are not vectorised) the table is
  looked up two pixels at a time (:class:`~imgshard.lookup.PairTable`);
- a batch is worked on row by row, straight from the memory maps into the batch: no copy of
  the stored rows, and each row's steps run on data in cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import BuildConfig, ConfigError, check_stored_values, stored_values
from ..lookup import PairTable, opencv_lut, opencv_row, pair_table
from ..manifest import Manifest
from .checks import ReaderError
from .widen import opencv

#: What a served value is when it is the stored pixel itself (see :func:`describe`).
RAW = "raw pixels (0..255)"

#: A stored row (uint8) and where its served values go (the same shape).
Row = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class PixelValues:
    """The served value of each uint8 pixel value (``table``), of each pair of adjacent pixels
    (``pairs``), and the ``scale`` (rescale, offset, divide) in the served dtype when arithmetic
    gives the table bit for bit (``divide``: pixel / rescale is the formula, rescale holding its
    inverse); ``opencv``: the OpenCV call that serves them instead, where OpenCV is installed."""

    table: np.ndarray
    pairs: PairTable
    scale: tuple[np.generic, np.generic | None, bool] | None
    opencv: "OpenCVValues | None" = None

    @classmethod
    def of_scale(cls, rescale: float, offset: float, served: np.dtype) -> "PixelValues":
        """The values ``pixel * rescale + offset`` in the float dtype ``served``."""
        table = stored_values(rescale, offset, served)
        return cls(table, pair_table(table), exact_scale(table, rescale, offset),
                   OpenCVValues.of_table(table, rescale, offset))

    def lookup(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """Write the value of every uint8 of ``pixels`` into ``out`` (same shape, one row a
        sample)."""
        self.lookup_rows(list(zip(pixels, out)))

    def lookup_rows(self, rows: Sequence[Row]) -> None:
        """:meth:`lookup` of each ``(pixels, out)`` of ``rows``."""
        for pixels, out in rows:
            if not out.flags.c_contiguous:
                served = np.empty(out.shape, out.dtype)
                self._row(pixels, served)
                out[...] = served
            else:
                self._row(pixels, out)

    def _row(self, pixels: np.ndarray, out: np.ndarray) -> None:
        if self.opencv is not None and self.opencv.write(pixels, out):
            return
        if self.scale is not None:
            factor, offset, divide = self.scale
            np.copyto(out, pixels)
            (np.divide if divide else np.multiply)(out, factor, out=out)
            if offset is not None:
                np.add(out, offset, out=out)
            return
        self.pairs.write(pixels, out)


@dataclass(frozen=True)
class OpenCVValues:
    """The one OpenCV call (``operation``: ``"addWeighted"``, ``"divide"`` or ``"LUT"``) that
    writes the served values of a row of pixels, bit for bit the table's."""

    operation: str
    call: Callable[[np.ndarray, np.ndarray], object]

    @classmethod
    def of_table(cls, table: np.ndarray, rescale: float, offset: float) -> "OpenCVValues | None":
        """The fastest call that gives every value of ``table`` (float16 or float32), None
        without OpenCV (or for another dtype). Never arithmetic that meets a subnormal number
        (see :func:`exact_scale`): the table's bits are copied then."""
        cv2 = opencv()
        depth = None if cv2 is None else {"float16": cv2.CV_16F, "float32": cv2.CV_32F}.get(
            table.dtype.name)
        if depth is None:
            return None
        products = [np.arange(256) * np.array(rescale, float_type) for float_type in
                    (np.float32, np.float64)]
        if not any(subnormal(values) for values in [table, np.float32([rescale, offset]),
                                                   *products]):
            arithmetic = [("addWeighted", lambda pixels, out: cv2.addWeighted(
                pixels, rescale, pixels, 0, offset, dst=out, dtype=depth))]
            if offset == 0 and rescale:
                arithmetic.append(("divide", lambda pixels, out: cv2.divide(
                    pixels, 1 / rescale, dst=out, dtype=depth)))
            for operation, call in arithmetic:
                if gives_table(cls(operation, call), table):
                    return cls(operation, call)
        return cls("LUT", opencv_lut(table, cv2))

    def write(self, pixels: np.ndarray, out: np.ndarray) -> bool:
        """The values of ``pixels`` (uint8) into ``out`` (C-contiguous, their shape); False
        (nothing written) for a single pixel, which OpenCV would take for a scalar."""
        return opencv_row(self.call, pixels, out)


def gives_table(values: OpenCVValues, table: np.ndarray) -> bool:
    """Whether ``values`` writes ``table[pixel]`` for every pixel value at every place of a
    long row (OpenCV's vector loop) and of short ones (67 values: its scalar tail too)."""
    probe = ((np.arange(256)[:, np.newaxis] + np.arange(80)) % 256).astype(np.uint8)
    bits = f"u{table.itemsize}"
    for pixels in [probe, *probe[:, :67]]:
        out = np.empty(pixels.shape, table.dtype)
        try:
            values.write(pixels, out)
        except opencv().error:  # OpenCV 4's arithmetic refuses float16 results: LUT then
            return False
        if not np.array_equal(out.view(bits), table[pixels].view(bits)):
            return False
    return True


def exact_scale(table: np.ndarray, rescale: float, offset: float
                ) -> tuple[np.generic, np.generic | None, bool] | None:
    """The arithmetic in the table's dtype that gives every value of ``table`` bit for bit:
    ``pixel * rescale`` or ``pixel / (1 / rescale)``, ``+ offset`` unless that is 0 (None: no
    such arithmetic, or float16, whose arithmetic numpy does not vectorise).

    Never arithmetic that meets a subnormal number (as an operand, a product or a value): a
    thread that flushes them to zero (TensorFlow's, running ``to_tf_dataset``; any after a
    library built with ``-ffast-math`` is loaded) would serve 0 for them. Looked up, their bits
    are copied."""
    served = table.dtype
    if served.itemsize < 4 or subnormal(table):
        return None
    pixels = np.arange(256, dtype=served)
    bits = table.view(f"u{served.itemsize}")
    with np.errstate(all="ignore"):
        inverse = served.type(1 / rescale) if rescale else None
    for factor, divide in ((served.type(rescale), False), (inverse, True)):
        for added in ((None,) if offset == 0 else ()) + (served.type(offset),):
            if factor is None or subnormal(np.array([factor, added or 0], served)):
                continue
            with np.errstate(all="ignore"):
                scaled = pixels / factor if divide else pixels * factor
                values = scaled if added is None else scaled + added
            if not subnormal(scaled) and np.array_equal(values.view(bits.dtype), bits):
                return factor, added, divide
    return None


def subnormal(values: np.ndarray) -> bool:
    """Whether any of ``values`` (floats) is subnormal: not 0, and nearer 0 than the smallest
    normal number of their dtype."""
    magnitudes = np.abs(values)
    return bool(np.any((magnitudes > 0) & (magnitudes < np.finfo(values.dtype).tiny)))


def served_values(manifest: Manifest, served: np.dtype, raw: bool) -> PixelValues | None:
    """How a reader of ``manifest`` serves pixels as ``served``: through :class:`PixelValues`
    for a uint8 dataset read as floats (None: cast, or the stored values as they are).

    Raises:
        ReaderError: the dataset's values overflow ``served`` (a float16 of more than 65504),
            or two pixel values would be served as one; a float32 dataset read as float16 is
            checked too (its cast made them inf, or merged them, silently).
    """
    stored = np.dtype(manifest.dtype)
    narrowed = stored.kind == "f" and served.kind == "f" and served.itemsize < stored.itemsize
    if not narrowed and (stored != np.uint8 or served.kind != "f" or raw):
        return None
    config = BuildConfig.from_dict(manifest.config)  # checked when the manifest was read
    try:
        check_stored_values(config.rescale, config.offset, served.name)
    except ConfigError as error:
        raw_too = "" if narrowed else " (or raw_pixels=True)"
        raise ReaderError(f"{error}: read this dataset with dtype='float32'{raw_too}") from None
    return None if narrowed else PixelValues.of_scale(config.rescale, config.offset, served)


def describe(manifest: Manifest, served: np.dtype, raw: bool) -> str:
    """What a served value is, as a mix compares readers: ``pixel * rescale + offset`` (the exact
    numbers: ``:g`` showed 0.5 and 0.5000004 alike) and the dtypes it was rounded to (a float16
    dataset read as float32 serves float16 values), or the stored pixel itself (a float
    dataset's pixels are stored scaled: ``raw`` changes nothing)."""
    if manifest.dtype == "uint8" and (raw or served.kind != "f"):
        return RAW
    config = BuildConfig.from_dict(manifest.config)
    rounded = served.name if manifest.dtype == "uint8" else manifest.dtype
    if rounded != served.name and served.itemsize < np.dtype(rounded).itemsize:
        rounded += f", then {served.name}"  # rounded twice: not always the values rounded once
    return f"pixel * {config.rescale!r} + {config.offset!r} rounded to {rounded}"
