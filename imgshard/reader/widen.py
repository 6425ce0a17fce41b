"""Float16 images widened to float32: a float16 dataset read with ``dtype="float32"``.

numpy's float16 -> float32 cast runs without SIMD on common builds (about 16 ms for a batch of
64 images of 224x224x3 on the benchmark machine), which made float32 batches a third of the
speed of float16 ones. OpenCV (the ``fast`` extra) converts with the CPU's float16
instructions in about 1.5 ms, plus 1.4 ms to look for an infinity or a NaN in the batch. Its
values are numpy's bit for bit for every float16 but the signalling NaNs, which it makes quiet;
no build writes a NaN or an infinity, so a batch that holds one (an edited shard) is converted
again by numpy, and the served values are always ``astype(np.float32)``'s.
"""

from __future__ import annotations

import functools
from types import ModuleType

import numpy as np


def widen(rows: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = rows``: float16 ``rows`` into the float32 array ``out`` of their shape, bit
    for bit as numpy casts them (any other dtypes: numpy's cast)."""
    cv2 = _opencv()
    if cv2 is None or rows.dtype != np.float16 or out.dtype != np.float32 or not rows.size \
            or not out.flags.c_contiguous:
        out[...] = rows
        return
    source = np.ascontiguousarray(rows).reshape(len(rows), -1)
    target = out.reshape(source.shape)
    written = cv2.multiply(source, 1.0, dst=target, dtype=cv2.CV_32F)
    if not np.shares_memory(written, target):  # OpenCV made its own array after all
        np.copyto(target, written)
    if (source.view(np.uint16) & 0x7FFF).max() >= 0x7C00:  # an infinity or a NaN (all ones
        out[...] = rows  # in the exponent), which OpenCV may make quiet: numpy's cast instead


@functools.cache
def _opencv() -> ModuleType | None:
    """OpenCV if it is installed and loads (imported once, when a float16 batch is first
    widened), else None."""
    try:
        import cv2
    except (ImportError, OSError):
        return None
    return cv2
