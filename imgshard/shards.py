"""Shard files on disk: standard ``.npy`` arrays, written atomically, read as memory maps.

A shard is two files, ``{split}-{index:05d}.npy`` holding images shaped (n, H, W, C) and
``{split}-{index:05d}.labels.npy`` holding int32 labels shaped (n,). Both are plain numpy
format version 1 files, so ``np.load(path, mmap_mode="r")`` opens them without imgshard.
Every file is first written under a hidden temporary name (``.tmp-...``) in the same directory
and then renamed into place, so a half-written file never carries a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from .errors import ImgshardError

TEMP_PREFIX = ".tmp-"


class ShardError(ImgshardError):
    """A shard file is missing, unreadable, or not what the manifest says it is."""


def shard_stem(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


def images_name(split: str, index: int) -> str:
    return f"{shard_stem(split, index)}.npy"


def labels_name(split: str, index: int) -> str:
    return f"{shard_stem(split, index)}.labels.npy"


def temp_path(path: str) -> str:
    """The hidden name a file is written under before it is renamed to ``path``."""
    head, tail = os.path.split(path)
    return os.path.join(head, f"{TEMP_PREFIX}{tail}.{os.getpid()}")


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
    """Write the ``rows`` rows of ``pieces`` one after another as a ``.npy`` file; return its sha256.

    The pieces may be memory maps of other files or a buffer reused for each piece: each is
    written and hashed before the next is taken, never concatenated in RAM. With ``durable``
    the data reaches the disk before the file takes its name; without, whoever renames the file
    to a final name must call :func:`sync_file` first.

    Raises:
        ValueError: the pieces hold another number of rows than ``rows`` (the header's count).
    """
    digest = hashlib.sha256()
    written = 0
    with atomic_file(path, durable=durable) as stream:
        header = npy_header((rows, *row_shape), dtype)
        digest.update(header)
        stream.write(header)
        for piece in pieces:
            data = memoryview(np.ascontiguousarray(piece, dtype=dtype)).cast("B")
            digest.update(data)
            stream.write(data)
            written += len(piece)
        if written != rows:
            raise ValueError(f"{path}: {written} rows written but the header says {rows}")
    return digest.hexdigest()


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name, so readers see all of it or none."""
    with atomic_file(path) as stream:
        stream.write(data)


@contextlib.contextmanager
def atomic_file(path: str, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary stream that becomes ``path`` (synced, then renamed) only if the block succeeds.

    Without ``durable`` the data is not synced: whoever later gives the file a final name must
    call :func:`sync_file` first.
    """
    tmp = temp_path(path)
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
        raise ShardError(f"{path}: shard file is missing") from None
    except (OSError, ValueError) as error:
        raise ShardError(f"{path}: not a readable .npy file (truncated?): {error}") from None
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise ShardError(f"{path}: shape {tuple(array.shape)} but the manifest says {tuple(shape)}")
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise ShardError(f"{path}: dtype {array.dtype} but the manifest says {dtype}")
    return array
