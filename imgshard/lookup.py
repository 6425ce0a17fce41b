"""A table of 256 values looked up for 8-bit pixels, fast: how a build stores each pixel as
``pixel * rescale + offset`` in float16 or float32 (:func:`~imgshard.config.stored_values`),
and how a reader serves a uint8 dataset's pixels where no arithmetic gives the table.

numpy's ``take`` costs about the same per index whatever it copies, and is not vectorised:
a 224x224x3 row took 0.36 ms. So:

- with OpenCV already loaded (the ``fast`` decoder's; never imported for this alone: that is
  ~100 ms of each build worker's start-up), one ``cv2.LUT`` of the table's bits a row, with
  SIMD: 0.06 ms;
- else the table of 65,536 entries of two values (256 KB for float16), indexed by the uint16
  view of two adjacent pixels, halves the indices (converted to intp :data:`CHUNK` pairs at a
  time, as ``take`` takes no other): 0.17 ms.

Either way the values are the table's bits, copied: float16 and subnormal values too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

#: Pixel pairs looked up per ``np.take`` (their intp indices are 8 bytes each): a 224x224x3
#: row (75,264 pairs) in one; 32,768 took 2.6 ms a batch of 32 such rows against 2.4 ms.
CHUNK = 1 << 17

#: Item sizes of the values whose bits ``cv2.LUT`` copies (as int16 / int32).
OPENCV_ITEMSIZES = (2, 4)


@dataclass(frozen=True, eq=False)
class PairTable:
    """``table`` (256 values) and ``pairs``: the uint16 view of two pixels -> their two values,
    as one item."""

    table: np.ndarray
    pairs: np.ndarray

    @classmethod
    def of(cls, table: np.ndarray) -> "PairTable":
        # the two pixels of each uint16 value, in memory order (any byte order)
        two = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
        pairs = np.ascontiguousarray(table[two])
        return cls(table, pairs.view(pair_dtype(table.dtype)).reshape(-1))

    def write(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """``table[pixels]`` into ``out`` (C-contiguous, the shape of ``pixels``)."""
        flat, target = np.ascontiguousarray(pixels).reshape(-1), out.reshape(-1)
        even = len(flat) - len(flat) % 2
        if even != len(flat):
            target[-1] = self.table[flat[-1]]
        pair_pixels = flat[:even].view(np.uint16)
        pair_out = target[:even].view(self.pairs.dtype)
        indices = np.empty(min(CHUNK, len(pair_pixels)), dtype=np.intp)
        for start in range(0, len(pair_pixels), CHUNK):
            chunk = indices[:len(pair_pixels[start:start + CHUNK])]
            chunk[...] = pair_pixels[start:start + CHUNK]
            # mode="clip": every index is in range (a uint16), and "raise" would buffer ``out``
            np.take(self.pairs, chunk, out=pair_out[start:start + len(chunk)], mode="clip")


def pair_dtype(served: np.dtype) -> np.dtype:
    """One item of two ``served`` values: an unsigned integer where one is that wide (``take``
    copies those fastest), else raw bytes."""
    size = 2 * served.itemsize
    return np.dtype({4: np.uint32, 8: np.uint64}.get(size, (np.void, size)))


def pair_table(table: np.ndarray) -> PairTable:
    """The :class:`PairTable` of ``table``, made once per table (its arrays read-only: shared
    by every caller, threads included)."""
    return _pair_table(table.tobytes(), table.dtype.str)


@functools.lru_cache(maxsize=8)
def _pair_table(table_bits: bytes, dtype: str) -> PairTable:
    made = PairTable.of(np.frombuffer(table_bits, dtype=dtype).copy())
    for array in (made.table, made.pairs):
        array.flags.writeable = False
    return made


def opencv_lut(table: np.ndarray, opencv: ModuleType) -> Callable[[np.ndarray, np.ndarray], object]:
    """The ``cv2.LUT`` call that copies ``table``'s bits (as integers of its width: OpenCV has
    all of them, float16 or not) for each pixel of a source row into a target row."""
    bits = table.view(f"i{table.itemsize}")
    return lambda source, target: opencv.LUT(source, bits, dst=target.view(bits.dtype))


def look_up(table: np.ndarray, pixels: np.ndarray, out: np.ndarray,
            opencv: ModuleType | None) -> None:
    """``out[...] = table[pixels]`` (uint8 pixels; ``out`` their shape): by ``opencv``'s ``LUT``
    when it is given, else by the pair table, where ``out`` is the table's own dtype and
    contiguous (those copy bits); as written otherwise (a cast, another byte order, a strided
    view), which no build's row is."""
    if out.dtype != table.dtype or not out.flags.c_contiguous:
        out[...] = table[pixels]
    elif opencv is None or table.itemsize not in OPENCV_ITEMSIZES \
            or not opencv_row(opencv_lut(table, opencv), pixels, out):
        pair_table(table).write(pixels, out)


def opencv_row(call: Callable[[np.ndarray, np.ndarray], object], pixels: np.ndarray,
               out: np.ndarray) -> bool:
    """``call(source, target)``, an OpenCV call writing the values of ``pixels`` (uint8) into
    ``out`` (C-contiguous, their shape), on them as one row; False (nothing written) for a
    single pixel: OpenCV takes a 1x1 array for a scalar."""
    if pixels.size <= 1:
        return False
    source = np.ascontiguousarray(pixels).reshape(1, -1)
    target = out.reshape(source.shape)
    written = call(source, target)
    if not np.shares_memory(written, target):  # OpenCV made its own array after all
        target.view(np.uint8)[...] = np.asarray(written).view(np.uint8)
    return True
