"""A :class:`Location`: one directory and the operations imgshard needs on it, wherever it is.

``Location.of(path, options)`` picks the implementation that suits the path: a local folder
(:mod:`.local`) or an fsspec URL (:mod:`.remote`). Callers use the operations and never ask
which one they hold; a new storage back end is one more subclass (each subclass registers itself
and says which paths it ``accepts``).
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

from .options import StorageError
from .tree import Entry, Record, Subfolders, ignore

if TYPE_CHECKING:
    from .record_log import RecordLog

#: URLs that fsspec reads as local files, in any case: ``file://`` and ``local://``.
LOCAL_URL = re.compile(r"^(?:file|local)://", re.IGNORECASE)
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)
#: How much of a bounded read (:meth:`Location.read_at_most`) is read at a time.
READ_CHUNK_BYTES = 1 << 20


def is_url(path: str) -> bool:
    return "://" in str(path)


@dataclass(frozen=True)
class Location(abc.ABC):
    """A directory with the storage options needed to reach it.

    Picklable, so tasks carry it to worker processes and Dask workers. ``temp_tag``, set by a
    build on its OUT, is the build id every temporary file written through it carries (see
    :func:`~imgshard.layout.temp_path`). ``str()`` hides a URL's ``user:password``; the options
    are never shown.
    """

    url: str
    options_json: str = field(default="{}", repr=False)
    temp_tag: str = field(default="", repr=False)

    #: Every kind of location, in the order their modules defined them (see :meth:`of`).
    kinds: ClassVar[list[type["Location"]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Location.kinds.append(cls)

    @classmethod
    def of(cls, path: str | os.PathLike[str], options: dict[str, Any] | None = None) -> "Location":
        """A location for a local path, a local file URL (made local) or any fsspec URL."""
        text = LOCAL_URL.sub("", os.fspath(path), count=1)  # local checks (overlap, lock) apply
        if is_url(text):
            text = text.rstrip("/")
        # the latest kinds first: a back end for one protocol wins over fsspec's, which takes all
        kind = next((kind for kind in reversed(Location.kinds) if kind.accepts(text)), None)
        if kind is None:
            raise StorageError(f"{text}: no storage back end takes this path")
        return kind(text, json.dumps(options or {}, sort_keys=True))

    @staticmethod
    @abc.abstractmethod
    def accepts(text: str) -> bool:
        """Whether this kind of location handles the path or URL ``text``."""

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)

    def __str__(self) -> str:
        """The URL as shown to users: any ``user:password@`` is removed."""
        return _USERINFO.sub(r"\1", self.url)

    # -- names -----------------------------------------------------------------------------

    @abc.abstractmethod
    def path(self, name: str) -> str:
        """The full path of ``name`` (a '/'-separated relative path) in this directory."""

    @abc.abstractmethod
    def display(self, name: str) -> str:
        """``name`` as shown to users (no password)."""

    @abc.abstractmethod
    def absolute(self) -> "Location":
        """The same location as seen from a process with another working directory."""

    @abc.abstractmethod
    def relative_path(self, local_path: str) -> str | None:
        """The local file ``local_path`` as a name of this directory, None if it cannot be one."""

    # -- queries ---------------------------------------------------------------------------

    @abc.abstractmethod
    def exists(self, name: str = "") -> bool: ...

    @abc.abstractmethod
    def isdir(self) -> bool: ...

    @abc.abstractmethod
    def listdir(self) -> list[str]:
        """Names directly in this directory (empty when it does not exist)."""

    @abc.abstractmethod
    def size(self, name: str) -> int: ...

    @abc.abstractmethod
    def sizes(self) -> dict[str, int]:
        """Size of every file directly in this directory, in one listing."""

    @abc.abstractmethod
    def is_regular_file(self, name: str) -> bool:
        """Whether ``name`` may be a file imgshard wrote: not a link, folder or special file."""

    @abc.abstractmethod
    def check_directory(self) -> None:
        """Raise :class:`MissingDirectory` unless this directory is there to be read."""

    @abc.abstractmethod
    def occupied_by_file(self) -> bool:
        """Whether something that is not a folder holds this directory's name."""

    @abc.abstractmethod
    def overlaps(self, other: "Location") -> bool:
        """Whether one of the two directories is, or is inside, the other."""

    @abc.abstractmethod
    def contains(self, local_path: str) -> bool:
        """Whether the local path ``local_path`` is this directory or below it."""

    @abc.abstractmethod
    def holds(self, local_path: str) -> bool:
        """Whether writing ``local_path`` could replace a file of this directory: it is inside,
        or is one of its files under another name (a hard link)."""

    # -- walking ---------------------------------------------------------------------------

    @abc.abstractmethod
    def walk(self, *, follow_links: bool, record: Record = ignore) -> Iterator[Entry]:
        """Every file below this directory in sorted order (see :mod:`.tree`).

        Raises:
            MissingDirectory: there is no such folder, or nothing below the URL.
        """

    @abc.abstractmethod
    def subfolders(self, entries: Iterable[Entry], *, follow_links: bool) -> Subfolders:
        """``folder -> names of the visible folders in it``, for the walk's ``entries``."""

    # -- reading ---------------------------------------------------------------------------

    @abc.abstractmethod
    def open_read(self, name: str) -> BinaryIO: ...

    @abc.abstractmethod
    def open_listed(self, name: str) -> BinaryIO:
        """Open a file of a shard directory for reading; a local one only if it is a regular
        file (no link, FIFO or device: see :func:`~imgshard.storage.files.open_regular`).

        Raises:
            FileNotFoundError: it is not there.
            ShardError: a local link or special file.
        """

    @abc.abstractmethod
    def open_source(self, name: str) -> BinaryIO:
        """Open a source file to decode it: a local regular file (links followed: the scan
        decided), or a remote object's bytes read whole (one request, not the decoder's many).

        Raises:
            NotRegularFile: a local FIFO, device or folder.
            OSError: it cannot be read (``FileNotFoundError``: it vanished).
        """

    @abc.abstractmethod
    def read_bytes(self, name: str) -> bytes: ...

    def read_at_most(self, name: str, limit: int) -> bytes | None:
        """The bytes of ``name`` (opened as :meth:`open_listed`), or None when it holds more
        than ``limit``. Read a chunk at a time: a single ``read(limit + 1)`` would allocate the
        whole limit up front, even for a small file."""
        with self.open_listed(name) as stream:
            if self._larger_than(stream, limit):
                return None
            chunks, size = [], 0
            while size <= limit:
                chunk = stream.read(min(READ_CHUNK_BYTES, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        return None if size > limit else b"".join(chunks)

    def _larger_than(self, stream: BinaryIO, limit: int) -> bool:
        """Whether the file open as ``stream`` is known, before reading, to hold more than
        ``limit`` bytes (it is not, unless the store can say so cheaply)."""
        return False

    @abc.abstractmethod
    def sha256(self, name: str) -> str:
        """The checksum of ``name``, streamed (a remote file is not kept)."""

    @abc.abstractmethod
    def regular_sha256(self, name: str) -> str | None:
        """The checksum of ``name``, streamed, or None when it is missing or (locally) not a
        regular file: for ``verify``, which reports why elsewhere."""

    @abc.abstractmethod
    def sha256s(self, names: list[str], *, workers: int,
                process_pool: Callable[[int], contextlib.AbstractContextManager[Executor]],
                ) -> Iterator[str | None]:
        """:meth:`regular_sha256` of each of ``names``, in order, computed on ``workers``
        workers in the way that suits the store: hashing local files is work for processes
        (``process_pool(workers)`` makes the pool), reading a remote one waiting for threads."""

    @abc.abstractmethod
    def download(self, name: str, local_path: str) -> None:
        """Copy ``name`` to a local file (the caller renames it into place)."""

    @abc.abstractmethod
    def local_copy(self, name: str, temp_dir: str | None = None
                   ) -> contextlib.AbstractContextManager[str]:
        """A local path holding ``name``: the file itself when local, else a temporary download."""

    # -- writing ---------------------------------------------------------------------------

    @abc.abstractmethod
    def makedirs(self) -> None:
        """Create the directory (nothing where a prefix needs no creating)."""

    @abc.abstractmethod
    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Hold this directory's lock file ``name`` for the block (see :mod:`.lock`); where
        nothing can be locked (an object store), nothing is done."""

    @abc.abstractmethod
    def atomic_file(self, name: str, *, durable: bool = True
                    ) -> contextlib.AbstractContextManager[BinaryIO]:
        """A stream that becomes ``name`` only if the block succeeds, in one piece."""

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.atomic_file(name) as stream:
            stream.write(data)

    @abc.abstractmethod
    def upload(self, local_path: str, name: str) -> None:
        """Store a finished local file as ``name``, in one piece."""

    @abc.abstractmethod
    def replace(self, source: str, target: str) -> None:
        """Give ``source`` the name ``target`` (a rename, or a server-side copy)."""

    @abc.abstractmethod
    def remove(self, name: str, *, missing_ok: bool = False) -> None: ...


    # -- a build's staging and records ---------------------------------------------------

    def worker_processes(self, workers: int, *, only_other_processes: bool) -> int:
        """How many of ``workers`` worker processes can reach this directory (all, unless it
        lives in this process's memory).

        Raises:
            StorageError: none can, and every worker of the executor is another process
                (``only_other_processes``).
        """
        return workers

    @abc.abstractmethod
    def replace_durably(self, source: str, target: str) -> None:
        """:meth:`replace`, after making ``source`` durable: a worker wrote it without syncing."""

    @abc.abstractmethod
    def staging_folder(self) -> str:
        """A local folder where a file grows before :meth:`publish` gives it a name here (see
        :meth:`keeps_staged_files` and :meth:`end_staging`)."""

    @abc.abstractmethod
    def keeps_staged_files(self) -> bool:
        """Whether a file in :meth:`staging_folder` outlives this process, for a resume to
        continue; where it does not, the build's records must carry its content."""

    @abc.abstractmethod
    def publish(self, local_path: str, name: str) -> None:
        """Give the finished staged file ``local_path`` the name ``name`` here, in one piece."""

    @abc.abstractmethod
    def end_staging(self, folder: str) -> None:
        """Remove a :meth:`staging_folder` that is not this directory itself."""

    @abc.abstractmethod
    def record_log(self) -> "RecordLog":
        """This directory's append-only resume log, kept as this store can (see
        :mod:`.record_log`)."""

    def record_log_files(self) -> list[str]:
        """The files of :meth:`record_log` that hold something, the plan's first (none: this
        directory holds no interrupted run)."""
        sizes = self.sizes()
        return [name for name in self.record_log().names() if sizes.get(name)]

    # -- a reader's files --------------------------------------------------------------------

    @abc.abstractmethod
    def file_identity(self, name: str) -> tuple[int, int, int, int] | None:
        """What tells the file ``name`` from a later one under that name (see
        :func:`~imgshard.storage.files.file_identity`); None when it is not there, or where the
        store has no such thing (a remote file's bytes are checked against their sha256)."""

    @abc.abstractmethod
    def file_stats(self, names: list[str]) -> Iterator[tuple[str, int, tuple | None]]:
        """``(name, size, identity)`` of each file of ``names`` in turn (identity as
        :meth:`file_identity`), without opening any.

        Raises:
            MissingShardError: a file of ``names`` is not there (when its turn comes).
            ShardError: a local one is a link, a special file or cannot be looked at.
        """

    @abc.abstractmethod
    def local_path(self, name: str) -> str | None:
        """The path of ``name`` on this machine's file system, where a file can be memory-mapped
        as it lies; None for a store whose files must be downloaded first."""


class MissingDirectory(StorageError):
    """A directory to read is not there; the message says how, after the location's name."""
