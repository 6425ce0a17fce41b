"""Local files, handled safely: atomic writes, and reads that never follow a link or block.

Every file is first written under a hidden temporary name (see :func:`~imgshard.layout.temp_path`)
and then renamed into place, so a half-written file never carries a final name. A read opens only
regular files (:func:`open_regular`): never a link out of the directory, never a FIFO that hangs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import MissingShardError, ShardError
from ..layout import temp_path


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


class NotRegularFile(OSError):
    """What ``path`` names is not a regular file; ``kind`` says what it is (``a FIFO``...)."""

    def __init__(self, kind: str) -> None:
        super().__init__(0, "not a regular file")
        self.kind = kind


def open_regular_file(path: str | os.PathLike[str], *, follow_links: bool) -> int:
    """Open ``path`` read-only, refusing anything but a regular file; return the descriptor.

    The one way imgshard opens a file it did not write. ``O_NONBLOCK`` makes opening a FIFO
    return at once (a blocking open would wait for a writer forever); without ``follow_links``,
    ``O_NOFOLLOW`` refuses a symbolic link as the last component (``ELOOP``), so a link can never
    lead a read out of a shard directory. The file type is checked on the opened descriptor, so
    the file cannot be swapped between the check and the read.

    Raises:
        NotRegularFile: a FIFO, device, socket or directory.
        OSError: it cannot be opened (missing, a link, no permission...).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    descriptor = os.open(path, flags if follow_links else flags | os.O_NOFOLLOW)
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise NotRegularFile(_file_kind(mode))
    return descriptor


def read_regular_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file ``path`` (a config or labels file; links are followed).

    A FIFO would hang the build and a device such as ``/dev/zero`` would fill the memory.

    Raises:
        OSError: it cannot be read, or is not a regular file (``strerror`` says which).
    """
    with os.fdopen(open_regular_file(path, follow_links=True), "rb") as stream:
        return stream.read()


def open_regular(path: str) -> int:
    """Open a file of a shard directory as :func:`open_regular_file` does, never following a
    link; return the descriptor.

    Raises:
        MissingShardError: nothing is there.
        ShardError: a link, a FIFO, device, socket or directory, or unreadable.
    """
    try:
        return open_regular_file(path, follow_links=False)
    except FileNotFoundError:
        raise MissingShardError(f"{path}: shard file is missing") from None
    except NotRegularFile as error:
        raise ShardError(f"{path}: not a regular file ({error.kind})") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ShardError(f"{path}: a symbolic link (imgshard follows no links in a shard "
                             "directory)") from None
        raise ShardError(f"{path}: cannot open: {error.strerror}") from None


def file_identity(status: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one file from the next one under its name: a build replaces every file it
    writes (a new inode, a new time), so a file of the same size is still another file."""
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def regular_file_stat(path: str) -> os.stat_result:
    """``lstat`` of ``path``, refusing (without opening it) what :func:`open_regular` refuses."""
    try:
        mode_and_size = os.lstat(path)
    except FileNotFoundError:
        raise MissingShardError(f"{path}: shard file is missing") from None
    except OSError as error:
        raise ShardError(f"{path}: cannot open: {error.strerror}") from None
    if stat.S_ISLNK(mode_and_size.st_mode):
        raise ShardError(f"{path}: a symbolic link (imgshard follows no links in a shard "
                         "directory)")
    if not stat.S_ISREG(mode_and_size.st_mode):
        raise ShardError(f"{path}: not a regular file ({_file_kind(mode_and_size.st_mode)})")
    return mode_and_size


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket",
             stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    return next((kind for test, kind in kinds.items() if test(mode)), "not a file")


def descriptor_sha256(descriptor: int) -> str:
    """The sha256 of the whole file open on ``descriptor`` (its position is left unchanged)."""
    position = os.lseek(descriptor, 0, os.SEEK_CUR)
    with os.fdopen(os.dup(descriptor), "rb") as stream:  # a dup shares the position
        stream.seek(0)
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    os.lseek(descriptor, position, os.SEEK_SET)
    return digest


def regular_file_sha256(path: str) -> str | None:
    """The sha256 of ``path`` if it is a regular file (opened as :func:`open_regular`), else
    None: for ``verify``, which reports why such a file cannot be read elsewhere."""
    try:
        descriptor = open_regular(path)
    except ShardError:
        return None
    try:
        return descriptor_sha256(descriptor)
    finally:
        os.close(descriptor)
