"""Shard files on disk: standard ``.npy`` arrays, written atomically, read as memory maps.

A shard is two files, ``{split}-{index:05d}.npy`` holding images shaped (n, H, W, C) and
``{split}-{index:05d}.labels.npy`` holding int32 labels shaped (n,). Both are plain numpy
format version 1 files, so ``np.load(path, mmap_mode="r")`` opens them without imgshard.
Every file is first written under a hidden temporary name (``.tmp-...``) in the same directory
and then renamed into place, so a half-written file never carries a final name. A build tags
its temporary names with its build id (``.tmp-{build}-{name}.{pid}``), so that a later build
can tell them from files it must not delete; the pid keeps two writers of one name apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from .errors import ImgshardError

TEMP_PREFIX = ".tmp-"


class ShardError(ImgshardError):
    """A shard file is missing, unreadable, or not what the manifest says it is."""


class MissingShardError(ShardError):
    """The shard file is not there (a cache may fetch it again)."""


def shard_stem(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


def images_name(split: str, index: int) -> str:
    return f"{shard_stem(split, index)}.npy"


def labels_name(split: str, index: int) -> str:
    return f"{shard_stem(split, index)}.labels.npy"


def temp_path(path: str, tag: str = "") -> str:
    """The hidden name a file is written under before it is renamed to ``path`` (``tag``: the
    build id of the build writing it, if any)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f"{temp_prefix(tag)}{tail}.{os.getpid()}")


def temp_prefix(tag: str = "") -> str:
    """How the temporary names of the build ``tag`` begin."""
    return f"{TEMP_PREFIX}{tag}-" if tag else TEMP_PREFIX


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The exact bytes numpy writes before the data of a C-ordered array of this shape."""
    header = {"descr": npy_format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)}
    sink = io.BytesIO()
    npy_format.write_array_header_1_0(sink, header)
    return sink.getvalue()


def write_array_atomically(path: str, array: np.ndarray) -> str:
    """Write ``array`` as a ``.npy`` file at ``path`` (via a temporary name); return its sha256."""
    return write_rows_atomically(path, [array], rows=len(array), row_shape=array.shape[1:],
                                 dtype=array.dtype)


def write_rows_atomically(path: str, pieces: Iterable[np.ndarray], *, rows: int,
                          row_shape: tuple[int, ...], dtype: np.dtype, durable: bool = True) -> str:
    """Write the ``rows`` rows of ``pieces`` one after another as ``.npy``; return its sha256.

    The pieces may be memory maps of other files: each is written and hashed before the next
    is taken, never concatenated in RAM. With ``durable`` the data reaches the disk before the
    file takes its name; without, whoever renames the file to a final name must call
    :func:`sync_file` first.

    Raises:
        ValueError: the pieces hold another number of rows than ``rows`` (the header's count).
    """
    with atomic_file(path, durable=durable) as stream:
        writer = RowStream(stream, expected_rows=rows, row_shape=row_shape, dtype=dtype)
        for piece in pieces:
            writer.append(piece)
        if writer.rows != rows:
            raise ValueError(f"{path}: {writer.rows} rows written but the header says {rows}")
        return writer.finish()


class RowStream:
    """Rows appended to a new ``.npy`` file as they come, when their count may still fall short.

    The header is written for ``expected_rows`` first, so that each row is hashed and written
    while it is still in cache. If fewer rows arrive (skipped images), :meth:`finish` rewrites
    the header in place (numpy pads it so that its length never depends on the row count) and
    hashes the file again from disk: a slower path, taken only for files with skips.

    Without ``checksum`` nothing is hashed and :meth:`finish` returns None: for a file that is
    only ever copied into another one, which is hashed as it is written.
    """

    def __init__(self, stream: BinaryIO, *, expected_rows: int, row_shape: tuple[int, ...],
                 dtype: np.dtype, checksum: bool = True) -> None:
        self._stream = stream
        self._row_shape = tuple(row_shape)
        self._dtype = np.dtype(dtype)
        self._expected_rows = expected_rows
        header = npy_header((expected_rows, *self._row_shape), self._dtype)
        self._header_length = len(header)
        self._digest = hashlib.sha256(header) if checksum else None
        self.rows = 0
        stream.write(header)

    def append(self, rows: np.ndarray) -> None:
        """Write ``rows`` (shaped (n, *row_shape)) after those appended before."""
        data = memoryview(np.ascontiguousarray(rows, dtype=self._dtype)).cast("B")
        if self._digest is not None:
            self._digest.update(data)
        self._stream.write(data)
        self.rows += len(rows)

    def finish(self) -> str | None:
        """Make the header say how many rows were appended; return the file's sha256 (None
        without ``checksum``)."""
        if self.rows == self._expected_rows:
            return None if self._digest is None else self._digest.hexdigest()
        header = npy_header((self.rows, *self._row_shape), self._dtype)
        if len(header) != self._header_length:  # numpy pads shape[0] to 21 digits: never
            raise ValueError(f"{self._stream.name}: the .npy header changed length")
        self._stream.flush()
        with open(self._stream.name, "r+b") as file:
            file.write(header)
            if self._digest is None:
                return None
            file.seek(0)
            return hashlib.file_digest(file, "sha256").hexdigest()


def read_rows(path: str, start: int, count: int, *, chunk_bytes: int = 1 << 22,
              ) -> Iterator[np.ndarray]:
    """Yield rows ``start`` to ``start + count`` of a ``.npy`` file, a few at a time.

    Read into one reused buffer (about ``chunk_bytes``, at least one row), not memory-mapped:
    mapped pages would count as the reader's resident memory. Each chunk is valid only until the
    next one is taken.
    """
    if count == 0:
        return
    layout = open_shard(path)  # only the header is read: no page of data is touched
    if start + count > len(layout):
        raise ShardError(f"{path}: cannot read rows {start}..{start + count} of {len(layout)}")
    row_bytes = layout.dtype.itemsize * math.prod(layout.shape[1:])
    per_chunk = max(1, chunk_bytes // max(row_bytes, 1))
    buffer = np.empty((min(per_chunk, count), *layout.shape[1:]), dtype=layout.dtype)
    with open(path, "rb") as stream:
        stream.seek(layout.offset + start * row_bytes)
        del layout
        while count:
            rows = buffer[:min(per_chunk, count)]
            if stream.readinto(memoryview(rows).cast("B")) != rows.nbytes:
                raise ShardError(f"{path}: file ends early (truncated?)")
            yield rows
            count -= len(rows)


@contextlib.contextmanager
def atomic_file(path: str, *, durable: bool = True, tag: str = "") -> Iterator[BinaryIO]:
    """A binary stream that becomes ``path`` (synced, then renamed) only if the block succeeds.

    Without ``durable`` the data is not synced: whoever later gives the file a final name must
    call :func:`sync_file` first. ``tag``: see :func:`temp_path`.
    """
    tmp = temp_path(path, tag)
    try:
        with open(tmp, "wb") as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def sync_file(path: str) -> None:
    """Make a file written earlier (maybe by another process) durable on disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def file_sha256(path: str) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def open_shard(path: str, *, shape: tuple[int, ...] | None = None, dtype: str | None = None,
               ) -> np.ndarray:
    """Memory-map a shard read-only and check it against what the manifest expects.

    Raises:
        ShardError: naming ``path`` when it is missing, truncated, or of another shape/dtype.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise MissingShardError(f"{path}: shard file is missing") from None
    except (OSError, ValueError) as error:
        raise ShardError(f"{path}: not a readable .npy file (truncated?): {error}") from None
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise ShardError(f"{path}: shape {tuple(array.shape)} but the manifest says {tuple(shape)}")
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise ShardError(f"{path}: dtype {array.dtype} but the manifest says {dtype}")
    return array
