"""Float16 images widened to float32: a float16 dataset read with ``dtype="float32"``.

numpy's float16 -> float32 cast runs without SIMD on common builds (about 185 µs for one
224x224x3 image on the benchmark machine), which made float32 batches a third of the speed of
float16 ones. OpenCV 5 (the ``fast`` extra) converts with the CPU's float16 instructions (7.5 µs),
plus 3 µs to sum the row's float16 values first (``cv2.sumElems``: no float16 row can overflow
its sum), which is not finite exactly when the row holds an infinity or a NaN (and brings the
row into cache for the conversion). OpenCV's
values are numpy's bit for bit for every float16 but the signalling NaNs, which it makes quiet;
no build writes a NaN or an infinity, so a row that holds one (an edited shard) is converted
again by numpy, and the served values are always ``astype(np.float32)``'s. (Looking at the
float16 bits instead, ``(bits & 0x7FFF).max()``, made a temporary array a row and cost a
third of the epoch.)

Rows are widened one at a time, straight from the shard's memory map into the batch: one pass
over the stored bytes (gathering the rows first, then widening the gathered batch, read and
wrote each value twice, out of cache), and the row's check runs while it is still in cache.
OpenCV 4 (which the extra accepts) has float16 in conversions only: numpy widens there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from types import ModuleType

import numpy as np

#: A stored row (float16, or any dtype numpy casts) and where its float32 values go.
Row = tuple[np.ndarray, np.ndarray]


def widen_rows(rows: Iterable[Row]) -> None:
    """``out[...] = stored`` for each pair of ``rows``: float16 ``stored`` into the float32 array
    ``out`` of its shape (a row of a batch), bit for bit as numpy casts it (any other dtypes:
    numpy's cast)."""
    cv2 = opencv() if float16_arithmetic() else None
    for stored, out in rows:
        source = np.ascontiguousarray(stored).reshape(1, -1) if stored.size > 1 else stored
        # not finite: an infinity or a NaN, which OpenCV may make quiet: numpy's cast instead;
        # so is a row of one value, which OpenCV takes for a scalar (and returns four values)
        if cv2 is None or stored.dtype != np.float16 or out.dtype != np.float32 \
                or stored.size < 2 or not out.flags.c_contiguous \
                or not math.isfinite(cv2.sumElems(source)[0]):
            out[...] = stored
            continue
        target = out.reshape(source.shape)
        written = cv2.multiply(source, 1.0, dst=target, dtype=cv2.CV_32F)
        if not np.shares_memory(written, target):  # OpenCV made its own array after all
            np.copyto(target, written)


@functools.cache
def float16_arithmetic() -> bool:
    """Whether OpenCV is installed and sums and multiplies float16 arrays (OpenCV 5): 4.x has
    float16 in conversions only, and its ``sumElems`` and ``multiply`` refuse a float16 array
    (``cv2.error``), so numpy widens the rows there."""
    cv2 = opencv()
    if cv2 is None:
        return False
    probe = np.float16([[1.5, -2]])
    try:
        cv2.sumElems(probe)
        widened = cv2.multiply(probe, 1.0, dtype=cv2.CV_32F)
    except cv2.error:
        return False
    return np.array_equal(widened, probe.astype(np.float32))


@functools.cache
def opencv() -> ModuleType | None:
    """OpenCV if it is installed and loads (imported once, when floats are first served from
    a uint8 or float16 dataset), else None."""
    try:
        import cv2
    except (ImportError, OSError):
        return None
    return cv2
