"""One writer at a time in a local folder: an OS lock (``flock``) on a file of that folder.

The lock dies with its process, so a build killed with ``kill -9`` leaves the file (with its
pid) but never the lock. Where ``fcntl`` is missing (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, so no lock (see held())
    fcntl = None


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is the pid it wrote (or ``unknown``)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class ForeignLockFile(Exception):
    """The lock's name is taken by something that is not a lock file: a folder, a link, a
    special file, or a file holding more than a pid."""


@contextlib.contextmanager
def held(folder: str, name: str) -> Iterator[None]:
    """Hold the lock ``name`` of ``folder`` for the block, creating the folder.

    The lock file is removed at the end (and the folder too if this created it and it stayed
    empty).

    Raises:
        LockHeld: another process holds it (at once: this never waits).
        ForeignLockFile: ``name`` is not a lock file.
        OSError: the folder cannot be created.
    """
    if fcntl is None:
        yield
        return
    created = not os.path.exists(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    descriptor = _lock_file(path)
    try:
        _claim(descriptor)
    except BaseException:
        os.close(descriptor)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # only our own: the folder may have been made anew
            if os.path.samestat(os.fstat(descriptor), os.lstat(path)):
                os.remove(path)
        os.close(descriptor)
        if created:
            with contextlib.suppress(OSError):  # not empty: the build wrote into it
                os.rmdir(folder)


def _lock_file(path: str) -> int:
    """An open descriptor of the lock file ``path``, locked by this process.

    Another process may remove the file between our open and our lock: locking a file that no
    longer has the name would lock nothing, so then it is opened again.
    """
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                                 | os.O_CLOEXEC, 0o644)
        except OSError as error:  # a directory, symbolic link or special file of that name
            raise ForeignLockFile(path) from error
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # a FIFO opens without blocking
            os.close(descriptor)
            raise ForeignLockFile(path)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise LockHeld(holder) from None
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(descriptor), os.stat(path, follow_symlinks=False)):
                return descriptor
        os.close(descriptor)


def _claim(descriptor: int) -> None:
    """Write our pid into the lock file, unless it holds more than a pid (then refuse)."""
    found = os.pread(descriptor, 64, 0)
    if not re.fullmatch(rb"\d*\s*", found):
        raise ForeignLockFile()
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, str(os.getpid()).encode("ascii"), 0)
