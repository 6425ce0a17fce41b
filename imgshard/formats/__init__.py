"""Shard formats: how a shard's rows are written to a file and mapped back, chosen by name.

A format is a module (or any object) with the members of :class:`ShardFormat`; ``npy.py``,
standard ``.npy`` arrays, is today's only one. Callers never import a format's module: they ask
:func:`shard_format` for it, so that a second format is one new module here plus one line in
:data:`FORMATS`. A manifest names no format today and its bytes stay so: absent means
:data:`DEFAULT_FORMAT`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

import numpy as np

from ..config import BuildConfig
from ..errors import ImgshardError, ShardError
from . import npy


class RowWriter(Protocol):
    """Rows appended to a shard file being written (see :class:`npy.RowStream`)."""

    rows: int

    def append(self, rows: np.ndarray) -> None: ...

    def finish(self) -> str | None: ...


class ShardFormat(Protocol):
    """What a shard format provides: each member is named and behaves as in ``npy.py``."""

    #: The end of its shard, label and part file names (see :mod:`imgshard.layout`).
    SUFFIX: str
    #: The bytes a file takes beyond its rows, as a build estimates its output size.
    ESTIMATED_HEADER_BYTES: int

    def RowStream(self, stream: BinaryIO, *, expected_rows: int, row_shape: tuple[int, ...],
                  dtype: np.dtype, checksum: bool = True) -> RowWriter: ...

    def read_rows(self, path: str, start: int, count: int, *, chunk_bytes: int = ...,
                  ) -> Iterator[np.ndarray]: ...

    def open_shard(self, path: str, *, shape: tuple[int, ...] | None = None,
                   dtype: str | None = None, sha256: str | None = None,
                   identity: tuple[int, int, int, int] | None = None) -> np.ndarray: ...

    def check_size(self, path: str, size: int, *, shape: tuple[int, ...], dtype: str
                   ) -> None: ...

    def check_stream(self, path: str, stream: BinaryIO, size: int, *, shape: tuple[int, ...],
                     dtype: str) -> None: ...

    def cast_table(self, config: BuildConfig) -> np.ndarray | None: ...

    def store_pixels(self, pixels: np.ndarray, table: np.ndarray | None,
                     out: np.ndarray) -> None: ...


#: Targets checked finite at once: a file's are looked at a chunk at a time, so that the
#: check's temporaries stay small however many rows and targets a file holds.
TARGETS_CHUNK = 1 << 20


def check_targets(path: str, targets: np.ndarray) -> None:
    """Refuse a targets file holding NaN or an infinity (a build writes finite numbers only).

    Raises:
        ShardError: naming the file.
    """
    rows = max(1, TARGETS_CHUNK // max(1, int(np.prod(targets.shape[1:]))))
    for start in range(0, len(targets) if targets.size else 0, rows):
        if not np.isfinite(targets[start:start + rows]).all():
            raise ShardError(f"{path}: a target is NaN or infinite")


#: The format of a shard directory whose manifest names none: every manifest today.
DEFAULT_FORMAT = "npy"
FORMATS: dict[str, ShardFormat] = {"npy": npy}


def shard_format(name: str = DEFAULT_FORMAT) -> ShardFormat:
    """The format registered as ``name``.

    Raises:
        ImgshardError: no format has that name.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise ImgshardError(f"unknown shard format {name!r} (imgshard knows: "
                            f"{', '.join(sorted(FORMATS))})") from None


def check_labels(path: str, labels: np.ndarray, num_classes: int | None) -> None:
    """Refuse a label file holding a label outside ``[0, num_classes)`` (one pass over n int32),
    or a multi-hot one (2-D) holding a value other than 0 or 1, whatever format mapped it.

    Raises:
        ShardError: naming the file and the first such label.
    """
    if num_classes is None or not len(labels):
        return
    if labels.ndim == 2:
        if int(labels.max()) > 1:
            raise ShardError(f"{path}: multi-hot value {int(labels.max())} (only 0 or 1)")
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ShardError(f"{path}: label {bad} outside [0, {num_classes}) (the manifest has "
                         f"{num_classes} classes)")


#: Labels counted at a time by :func:`class_counts` (4 MB of int32).
LABEL_CHUNK = 1 << 20


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """How many samples of ``labels`` (int32 indices checked inside ``[0, num_classes)``, or
    multi-hot rows, which count each of their labels) carry each class, counted a chunk at a
    time, so that memory stays flat however many a (mapped) file holds."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for start in range(0, len(labels) if num_classes else 0, LABEL_CHUNK):
        chunk = labels[start:start + LABEL_CHUNK]
        counts += chunk.sum(axis=0, dtype=np.int64) if chunk.ndim == 2 else np.bincount(
            chunk, minlength=num_classes)
    return counts
