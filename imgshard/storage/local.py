"""A local folder: plain ``os`` calls, fsync and rename, safe opens, an OS lock.

Local paths are the fast path: files are written under a temporary name, synced and renamed
(:func:`~.files.atomic_file`), files of a shard directory are opened only if they are regular
files (:func:`~.files.open_regular`), and they can be memory-mapped where they lie.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import BinaryIO

from ..errors import MissingShardError
from . import lock
from .files import (
    atomic_file,
    file_identity,
    file_sha256,
    open_regular,
    open_regular_file,
    regular_file_sha256,
    regular_file_stat,
    sync_file,
)
from .location import Location, MissingDirectory, is_url
from .record_log import FileRecordLog
from .tree import Entry, Record, Subfolders, ignore, local_subfolders, walk


class LocalLocation(Location):
    """A folder of this machine's file system (a path, relative or absolute)."""

    @staticmethod
    def accepts(text: str) -> bool:
        return not is_url(text)

    def path(self, name: str) -> str:
        return os.path.join(self.url, *name.split("/"))

    def display(self, name: str) -> str:
        return self.path(name)

    def absolute(self) -> "LocalLocation":
        """The path made absolute. Not normalised: in ``link/../out`` the kernel resolves
        ``..`` after the link, so dropping ``link/..`` as text would name another folder."""
        return LocalLocation(os.path.join(os.getcwd(), self.url), self.options_json, self.temp_tag)

    def relative_path(self, local_path: str) -> str | None:
        relative = os.path.relpath(os.path.realpath(local_path), os.path.realpath(self.url))
        return relative.replace(os.sep, "/")

    # -- queries ---------------------------------------------------------------------------

    def exists(self, name: str = "") -> bool:
        return os.path.exists(self.path(name) if name else self.url)

    def isdir(self) -> bool:
        return os.path.isdir(self.url)

    def listdir(self) -> list[str]:
        return os.listdir(self.url) if os.path.isdir(self.url) else []

    def size(self, name: str) -> int:
        return os.path.getsize(self.path(name))

    def sizes(self) -> dict[str, int]:
        return {n: os.path.getsize(self.path(n)) for n in self.listdir()
                if os.path.isfile(self.path(n))}

    def is_regular_file(self, name: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.path(name)).st_mode)
        except OSError:
            return False

    def check_directory(self) -> None:
        if not os.path.isdir(self.url):
            raise MissingDirectory("is not a directory")

    def occupied_by_file(self) -> bool:
        return os.path.exists(self.url) and not os.path.isdir(self.url)

    def overlaps(self, other: Location) -> bool:
        return isinstance(other, LocalLocation) and (
            is_inside(other.url, self.url) or is_inside(self.url, other.url))

    def contains(self, local_path: str) -> bool:
        return is_inside(local_path, self.url)

    def holds(self, local_path: str) -> bool:
        if is_inside(local_path, self.url):
            return True
        if not os.path.exists(local_path):
            return False
        target = os.stat(local_path)
        return any(_same_file(entry, target) for entry in os.scandir(self.url))

    # -- walking ---------------------------------------------------------------------------

    def walk(self, *, follow_links: bool, record: Record = ignore) -> Iterator[Entry]:
        if not os.path.exists(self.url):
            raise MissingDirectory("does not exist")
        if not os.path.isdir(self.url):
            raise MissingDirectory("is not a folder")
        return walk(self.url, follow_links=follow_links, record=record)

    def subfolders(self, entries: Iterable[Entry], *, follow_links: bool) -> Subfolders:
        return local_subfolders(self.url, follow_links)

    # -- reading ---------------------------------------------------------------------------

    def open_read(self, name: str) -> BinaryIO:
        return open(self.path(name), "rb")

    def open_listed(self, name: str) -> BinaryIO:
        try:
            return os.fdopen(open_regular(self.path(name)), "rb")
        except MissingShardError:
            raise FileNotFoundError(self.path(name)) from None

    def open_source(self, name: str) -> BinaryIO:
        return os.fdopen(open_regular_file(self.path(name), follow_links=True), "rb")

    def read_bytes(self, name: str) -> bytes:
        with open(self.path(name), "rb") as stream:
            return stream.read()

    def _larger_than(self, stream: BinaryIO, limit: int) -> bool:
        return os.fstat(stream.fileno()).st_size > limit

    def sha256(self, name: str) -> str:
        return file_sha256(self.path(name))

    def regular_sha256(self, name: str) -> str | None:
        return regular_file_sha256(self.path(name))

    def sha256s(self, names: list[str], *, workers: int,
                process_pool: Callable[[int], contextlib.AbstractContextManager[Executor]],
                ) -> Iterator[str | None]:
        paths = [self.path(name) for name in names]
        if workers <= 1 or len(paths) <= 1:
            yield from map(regular_file_sha256, paths)
            return
        with process_pool(workers) as pool:
            yield from pool.map(regular_file_sha256, paths)

    def download(self, name: str, local_path: str) -> None:
        shutil.copyfile(self.path(name), local_path)

    @contextlib.contextmanager
    def local_copy(self, name: str, temp_dir: str | None = None) -> Iterator[str]:
        yield self.path(name)

    # -- writing ---------------------------------------------------------------------------

    def makedirs(self) -> None:
        os.makedirs(self.url, exist_ok=True)

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        return lock.held(self.url, name)

    @contextlib.contextmanager
    def atomic_file(self, name: str, *, durable: bool = True) -> Iterator[BinaryIO]:
        with atomic_file(self.path(name), durable=durable, tag=self.temp_tag) as stream:
            yield stream

    def upload(self, local_path: str, name: str) -> None:
        shutil.copyfile(local_path, self.path(name))

    def replace(self, source: str, target: str) -> None:
        os.replace(self.path(source), self.path(target))

    def remove(self, name: str, *, missing_ok: bool = False) -> None:
        try:
            os.remove(self.path(name))
        except FileNotFoundError:
            if not missing_ok:
                raise

    # -- a build's staging and records ---------------------------------------------------

    def replace_durably(self, source: str, target: str) -> None:
        sync_file(self.path(source))
        self.replace(source, target)

    def staging_folder(self) -> str:
        """This directory itself: a staged file outlives a crash, for a resume to continue."""
        return self.url

    def keeps_staged_files(self) -> bool:
        return True

    def publish(self, local_path: str, name: str) -> None:
        os.replace(local_path, self.path(name))

    def end_staging(self, folder: str) -> None:
        """Nothing: the staging folder is this directory."""

    def record_log(self) -> FileRecordLog:
        return FileRecordLog(self)

    # -- a reader's files --------------------------------------------------------------------

    def file_identity(self, name: str) -> tuple[int, int, int, int] | None:
        try:
            return file_identity(os.lstat(self.path(name)))
        except OSError:
            return None

    def file_stats(self, names: list[str]) -> Iterator[tuple[str, int, tuple | None]]:
        """Each file looked at with ``lstat``, refusing links and special files."""
        for name in names:
            status = regular_file_stat(self.path(name))
            yield name, status.st_size, file_identity(status)

    def local_path(self, name: str) -> str:
        return self.path(name)


def is_inside(inner: str, outer: str) -> bool:
    """Whether the local path ``inner`` is ``outer`` or below it, following symbolic links
    (the file system decides sameness, so case-insensitive ones and bind mounts count too)."""
    try:
        outer_stat = os.stat(outer)
    except OSError:
        return False  # nothing is inside a folder that does not exist
    path = os.path.realpath(inner)
    while True:
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(path), outer_stat):
                return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def _same_file(entry: os.DirEntry, target: os.stat_result) -> bool:
    try:
        return os.path.samestat(entry.stat(), target)
    except OSError:  # a dangling link: not the file
        return False
