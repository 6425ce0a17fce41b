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


@functools.lru_cache(maxsize=8)
def _pair_table(table_bits: bytes, dtype: str) -> PairTable:
    return PairTable.of(np.frombuffer(table_bits, dtype=dtype))


def look_up(table: np.ndarray, pixels: np.ndarray, out: np.ndarray,
            opencv: ModuleType | None) -> None:
    """``table[pixels]`` (uint8 pixels) into ``out`` (their shape, C-contiguous), by ``opencv``'s
    ``LUT`` when it is given and copies such values, else by the pair table (made once per
    table; and for a single pixel: OpenCV takes a 1x1 array for a scalar)."""
    if opencv is not None and pixels.size > 1 and table.itemsize in OPENCV_ITEMSIZES:
        bits = table.view(f"i{table.itemsize}")
        opencv_row(lambda source, target: opencv.LUT(source, bits, dst=target.view(bits.dtype)),
                   pixels, out)
    else:
        _pair_table(table.tobytes(), table.dtype.str).write(pixels, out)


def opencv_row(call: Callable[[np.ndarray, np.ndarray], object], pixels: np.ndarray,
               out: np.ndarray) -> None:
    """``call(source, target)``, an OpenCV call writing the values of ``pixels`` (uint8) into
    ``out`` (C-contiguous, their shape), on them as one row (of more than one value: OpenCV
    takes a 1x1 array for a scalar)."""
    source = np.ascontiguousarray(pixels).reshape(1, -1)
    target = out.reshape(source.shape)
    written = call(source, target)
    if not np.shares_memory(written, target):  # OpenCV made its own array after all
        target.view(np.uint8)[...] = np.asarray(written).view(np.uint8)
