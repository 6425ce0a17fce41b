"""The npy shard format: standard ``.npy`` arrays, written as a stream of rows, read as memory maps.

A shard is two files, ``{split}-{index:05d}.npy`` holding images shaped (n, H, W, C) in the
stored dtype and ``{split}-{index:05d}.labels.npy`` holding int32 labels shaped (n,) (see
:mod:`imgshard.layout`). Both are plain numpy format version 1 files, C order, so
``np.load(path, mmap_mode="r")`` opens them without imgshard. A reader accepts numpy format
versions 1 and 2, C order, numeric dtypes and headers of at most :data:`NPY_MAX_HEADER` bytes,
checked before numpy reads the header. Pixels are stored through a 256-entry lookup table
(:func:`cast_table`, looked up by :mod:`imgshard.lookup`): exact, and several times faster
than ``astype(float16) / 255``.

This module is a :class:`~imgshard.formats.ShardFormat`: callers get it from
:func:`~imgshard.formats.shard_format`, never by importing it.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import sys
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from ..config import BuildConfig, stored_values
from ..errors import ShardError
from ..lookup import look_up
from ..storage.files import descriptor_sha256, file_identity, open_regular

#: The sizes of a ``.npy`` header: 16 bytes at least (numpy pads to 64 today); numpy reads at
#: most 10,000 bytes of it (``max_header_size``) after the 12 bytes of magic and length.
NPY_MIN_HEADER, NPY_MAX_HEADER = 16, 10_012
#: The end of the names of this format's files.
SUFFIX = ".npy"
#: The header numpy writes for a shard or label file (padded to a multiple of 64 bytes).
ESTIMATED_HEADER_BYTES = 128


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The exact bytes numpy writes before the data of a C-ordered array of this shape."""
    header = {"descr": npy_format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)}
    sink = io.BytesIO()
    npy_format.write_array_header_1_0(sink, header)
    return sink.getvalue()


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


def check_size(path: str, size: int, *, shape: tuple[int, ...], dtype: str) -> None:
    """Refuse a ``.npy`` file whose size cannot hold an array of ``shape`` and ``dtype``.

    Checked from a listing before anything is mapped, allocated or downloaded from the counts
    a manifest claims (:func:`check_stream` on the file says more exactly what is wrong).
    """
    data = math.prod(shape) * np.dtype(dtype).itemsize
    if data + NPY_MIN_HEADER <= size <= data + NPY_MAX_HEADER:
        return
    raise ShardError(f"{path}: the manifest says {shape[0]} samples, the file holds {size} "
                     f"bytes (not a header and {data} bytes of data)")


def open_shard(path: str, *, shape: tuple[int, ...] | None = None, dtype: str | None = None,
               sha256: str | None = None,
               identity: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Memory-map a shard read-only and check it against what the manifest expects.

    The file is opened with :func:`open_regular` and mapped through that descriptor. Only
    numeric dtypes are mapped (never pickled objects). With ``sha256`` the file's checksum is
    computed first, from the same descriptor, and must match. With ``identity`` (see
    :func:`file_identity`) it must still be the file seen when the manifest was read.

    Raises:
        ShardError: naming ``path`` when it is missing, not a regular file, replaced,
            truncated, of another shape/dtype, or (with ``sha256``) of another checksum.
    """
    descriptor = open_regular(path)
    try:
        if identity is not None and file_identity(os.fstat(descriptor)) != identity:
            raise ShardError(f"{path}: replaced since the reader opened its directory (a build "
                             "overwrote it?): open the directory again")
        if sha256 is not None and descriptor_sha256(descriptor) != sha256:
            raise ShardError(f"{path}: checksum does not match the manifest (changed or "
                             "corrupt): run imgshard verify")
        with os.fdopen(os.dup(descriptor), "rb") as stream:
            array = _map_npy(stream)
    except (OSError, ValueError) as error:
        raise ShardError(f"{path}: not a readable .npy file (truncated?): {error}") from None
    finally:
        os.close(descriptor)
    _check_expected(path, array.shape, array.dtype, shape=shape, dtype=dtype)
    return array


def check_stream(path: str, stream: BinaryIO, size: int, *, shape: tuple[int, ...],
                 dtype: str) -> None:
    """Check the shard file open as ``stream`` (``size`` bytes) as :func:`open_shard` does,
    from its header alone: a remote file is checked without being downloaded.

    Raises:
        ShardError: naming ``path``, as :func:`open_shard` would.
    """
    try:
        found_shape, found_dtype, _ = _read_header(stream, size)
    except (OSError, ValueError) as error:
        raise ShardError(f"{path}: not a readable .npy file (truncated?): {error}") from None
    _check_expected(path, found_shape, found_dtype, shape=shape, dtype=dtype)


def _check_expected(path: str, found_shape: tuple[int, ...], found_dtype: np.dtype, *,
                    shape: tuple[int, ...] | None, dtype: str | None) -> None:
    if shape is not None and tuple(found_shape) != tuple(shape):
        raise ShardError(f"{path}: shape {tuple(found_shape)} but the manifest says {tuple(shape)}")
    if dtype is not None and found_dtype != np.dtype(dtype):
        raise ShardError(f"{path}: dtype {found_dtype} but the manifest says {dtype}")


def _map_npy(stream: BinaryIO) -> np.ndarray:
    """Map the ``.npy`` file open as ``stream`` read-only (numpy's ``open_memmap`` takes only
    a file name, which could name another file by the time it is opened)."""
    shape, dtype, offset = _read_header(stream, os.fstat(stream.fileno()).st_size)
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(stream, dtype=dtype, mode="r", shape=shape, offset=offset)


def _read_header(stream: BinaryIO, size: int) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, dtype and data offset of the ``.npy`` file of ``size`` bytes open as
    ``stream``, refusing what imgshard never writes and a file too short for its header's
    promise.

    Raises:
        ValueError: saying what is wrong.
    """
    version = npy_format.read_magic(stream)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format version {version} is not supported")
    # numpy reads a header of any claimed length (4 GB in version 2) before its own size check
    length_format = "<H" if version == (1, 0) else "<I"
    start, length_size = stream.tell(), struct.calcsize(length_format)
    data = stream.read(length_size)
    if len(data) < length_size:
        raise ValueError("the file ends in its header")
    (length,) = struct.unpack(length_format, data)
    if start + length_size + length > NPY_MAX_HEADER:
        raise ValueError(f"a header of {length} bytes (numpy writes at most {NPY_MAX_HEADER})")
    stream.seek(start)
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) \
        else npy_format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(stream)
    if fortran_order:  # a sample's bytes would be spread over the whole file
        raise ValueError("Fortran order (imgshard writes C order only)")
    if dtype.hasobject or dtype.itemsize == 0:
        raise ValueError(f"dtype {dtype} holds no numbers")
    offset = stream.tell()
    needed = offset + math.prod(shape) * dtype.itemsize
    if size < needed:
        raise ValueError(f"{size} bytes, the header promises {needed}")
    return shape, dtype, offset


def cast_table(config: BuildConfig) -> np.ndarray | None:
    """The stored value of each 8-bit pixel value (``pixel * rescale + offset``), None for uint8."""
    if config.dtype == "uint8":
        return None
    return stored_values(config.rescale, config.offset, config.dtype)


def store_pixels(pixels: np.ndarray, table: np.ndarray | None, out: np.ndarray) -> None:
    """Write uint8 ``pixels`` into ``out`` (a row of a shard) in the stored dtype: by OpenCV's
    ``LUT`` once the fast decoder has loaded it, else two pixels at a time (see
    :mod:`imgshard.lookup`)."""
    if table is None:
        out[...] = pixels
    else:
        look_up(table, pixels, out, sys.modules.get("cv2"))
