"""An fsspec URL (``s3://``, ``gs://``, ``memory://``...): objects written whole, never locked.

fsspec is imported only for a URL, so the core install needs neither fsspec nor s3fs. Writes to
an object store are atomic at the object level: a file is first written to a local temporary
file and then uploaded in one piece (``put_file``), so an object either holds all of its bytes
or does not exist. There is no rename on an object store; a worker's part becomes a shard by a
server-side copy, so its pixels do not travel through the client. Nothing can be locked.

Credentials come the way fsspec and its back ends look for them (the AWS environment variables
and config files, ``AWS_ENDPOINT_URL`` included) plus ``--storage-option KEY=VALUE``; every
failure becomes one :class:`~.options.StorageError` line with the secrets masked.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import BinaryIO

from ..errors import ImgshardError, MissingShardError
from .location import Location, MissingDirectory, is_url
from .options import StorageError, describe_error
from .record_log import ObjectRecordLog
from .tree import Entry, Record, Subfolders, ignore, implied_subfolders, walk_objects

#: Object stores: no folders to create, and creating one would create a *bucket* (s3fs does).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oci", "r2"})
#: Protocols that name the same store as another.
PROTOCOL_ALIASES = {"s3a": "s3", "gcs": "gs"}
#: Which optional extra brings the fsspec back end of a protocol.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
PACKAGES = {"s3": "s3fs", "gcs": "gcsfs"}
#: Files read at once when checksumming many (the time goes in waiting for the store).
READ_THREADS = 8


class FsspecLocation(Location):
    """A directory (a prefix, on an object store) reached through fsspec.

    Each process makes its own fsspec filesystem from the location (fsspec caches one per
    options).
    """

    @staticmethod
    def accepts(text: str) -> bool:
        return is_url(text)

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0].lower()

    @property
    def in_process(self) -> bool:
        """Whether the store lives in this process's memory (``memory://``): workers in other
        processes cannot see it."""
        return self.protocol == "memory"

    @property
    def fs(self):
        # keyed by process too: a forked worker must not reuse its parent's connections
        return _filesystem(self.protocol, self.options_json, os.getpid())

    def path(self, name: str) -> str:
        return f"{self.url}/{name}"

    def display(self, name: str) -> str:
        return f"{self}/{name}"

    def absolute(self) -> "FsspecLocation":
        return self

    def relative_path(self, local_path: str) -> str | None:
        return None  # a local file is never an object of the store

    # -- queries ---------------------------------------------------------------------------

    def exists(self, name: str = "") -> bool:
        return self._call(self.fs.exists, self.path(name) if name else self.url)

    def isdir(self) -> bool:
        return self._call(self.fs.isdir, self.url)

    def listdir(self) -> list[str]:
        if not self.isdir():
            return []
        entries = self._call(self.fs.ls, self.url, detail=False, refresh=True)
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries]

    def size(self, name: str) -> int:
        return int(self._call(self.fs.size, self.path(name)))

    def sizes(self) -> dict[str, int]:
        if not self.isdir():
            return {}
        entries = self._call(self.fs.ls, self.url, detail=True, refresh=True)
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
                for e in entries if e.get("type") == "file"}

    def is_regular_file(self, name: str) -> bool:
        return True  # an object store holds objects only

    def check_directory(self) -> None:
        if not self.exists():
            raise MissingDirectory("does not exist (check the bucket and prefix)")

    def occupied_by_file(self) -> bool:
        return False

    def overlaps(self, other: Location) -> bool:
        if not isinstance(other, FsspecLocation) or _store(self) != _store(other):
            return False
        first, second = _components(self), _components(other)
        shorter = min(len(first), len(second))
        return first[:shorter] == second[:shorter]

    def contains(self, local_path: str) -> bool:
        return False

    def holds(self, local_path: str) -> bool:
        return False

    # -- walking ---------------------------------------------------------------------------

    def walk(self, *, follow_links: bool, record: Record = ignore) -> Iterator[Entry]:
        root = self.fs._strip_protocol(self.url).rstrip("/")
        entries = walk_objects(self._call(self.fs.find, root, detail=True), root, record=record)
        first = next(entries, None)
        if first is None:
            raise MissingDirectory("does not exist or holds no files")
        return _chain(first, entries)

    def subfolders(self, entries: Iterable[Entry], *, follow_links: bool) -> Subfolders:
        return implied_subfolders(entries)

    # -- reading ---------------------------------------------------------------------------

    def open_read(self, name: str) -> BinaryIO:
        if self.in_process:  # memory:// hands every reader the same file object: take a copy
            return io.BytesIO(self.read_bytes(name))
        stream = self._call(self.fs.open, self.path(name), "rb")
        if getattr(stream, "details", {}).get("type", "file") != "file":
            stream.close()  # a key prefix (s3fs opens one as an empty file): no object is there
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.path(name))
        return stream

    def open_listed(self, name: str) -> BinaryIO:
        return self.open_read(name)

    def open_source(self, name: str) -> BinaryIO:
        try:
            return io.BytesIO(self.read_bytes(name))
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name) from None

    def read_bytes(self, name: str) -> bytes:
        return self._call(self.fs.cat_file, self.path(name))

    def sha256(self, name: str) -> str:
        def digest() -> str:
            with self.open_read(name) as stream:
                return hashlib.file_digest(stream, "sha256").hexdigest()

        return self._call(digest)

    def regular_sha256(self, name: str) -> str | None:
        try:
            return self.sha256(name)
        except FileNotFoundError:
            return None

    def sha256s(self, names: list[str], *, workers: int,
                process_pool: Callable[[int], contextlib.AbstractContextManager[Executor]],
                ) -> Iterator[str | None]:
        with ThreadPoolExecutor(max(workers, READ_THREADS)) as pool:
            yield from pool.map(self.regular_sha256, names)

    def download(self, name: str, local_path: str) -> None:
        if self.in_process:  # two threads reading one memory:// file would share its position
            with open(local_path, "wb") as stream:
                stream.write(self.read_bytes(name))
            return
        self._call(self.fs.get_file, self.path(name), local_path)

    @contextlib.contextmanager
    def local_copy(self, name: str, temp_dir: str | None = None) -> Iterator[str]:
        folder = tempfile.mkdtemp(prefix=".imgshard-download-", dir=temp_dir)
        try:
            target = os.path.join(folder, name.rsplit("/", 1)[-1])
            self.download(name, target)
            yield target
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- writing ---------------------------------------------------------------------------

    def makedirs(self) -> None:
        if self.protocol not in OBJECT_STORES:
            self._call(self.fs.makedirs, self.url, exist_ok=True)

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def atomic_file(self, name: str, *, durable: bool = True) -> Iterator[BinaryIO]:
        with tempfile.NamedTemporaryFile(prefix=".imgshard-upload-") as stream:
            yield stream
            stream.flush()
            self._call(self.fs.put_file, stream.name, self.path(name))

    def upload(self, local_path: str, name: str) -> None:
        self._call(self.fs.put_file, local_path, self.path(name))

    def replace(self, source: str, target: str) -> None:
        self._call(self.fs.copy, self.path(source), self.path(target))
        self._call(self.fs.rm_file, self.path(source))

    def remove(self, name: str, *, missing_ok: bool = False) -> None:
        try:
            self._call(self.fs.rm_file, self.path(name))
        except FileNotFoundError:
            if not missing_ok:
                raise

    # -- a build's staging and records ---------------------------------------------------

    def worker_processes(self, workers: int, *, only_other_processes: bool) -> int:
        """memory:// lives in this process only: one worker, run in this process."""
        if not self.in_process:
            return workers
        if only_other_processes:
            raise StorageError("memory:// lives in this process only: use the local executor")
        return 1

    def replace_durably(self, source: str, target: str) -> None:
        """:meth:`replace`: an object is durable once uploaded."""
        self.replace(source, target)

    def staging_folder(self) -> str:
        """A new local temporary folder (see :meth:`end_staging`)."""
        return tempfile.mkdtemp(prefix="imgshard-staging-")

    def keeps_staged_files(self) -> bool:
        return False

    def publish(self, local_path: str, name: str) -> None:
        self.upload(local_path, name)

    def end_staging(self, folder: str) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def record_log(self) -> ObjectRecordLog:
        return ObjectRecordLog(self)

    # -- a reader's files --------------------------------------------------------------------

    def file_identity(self, name: str) -> None:
        return None

    def file_stats(self, names: list[str]) -> Iterator[tuple[str, int, None]]:
        """The sizes from one listing."""
        listed = self.sizes()
        for name in names:
            if name not in listed:
                raise MissingShardError(f"{self.display(name)}: shard file is missing")
            yield name, listed[name], None

    def local_path(self, name: str) -> None:
        return None

    def _call(self, function, *args, **kwargs):
        """Call an fsspec function; its failures become one line naming this location."""
        try:
            return function(*args, **kwargs)
        except FileNotFoundError:
            raise
        except ImgshardError:
            raise
        except Exception as error:  # noqa: BLE001 - back ends raise anything, even ClientError
            message = describe_error(error, self.options, also_secret=(self._userinfo(),))
            raise StorageError(f"{self}: {message}") from None

    def _userinfo(self) -> str:
        """The ``user:password`` of a URL such as ``ftp://user:password@host/path``, if any."""
        found = re.match(r"^[a-z][a-z0-9+.-]*://([^/@]*)@", self.url, re.IGNORECASE)
        return found.group(1) if found else ""


def _chain(first: Entry, rest: Iterator[Entry]) -> Iterator[Entry]:
    yield first
    yield from rest


def _store(location: FsspecLocation) -> str:
    return PROTOCOL_ALIASES.get(location.protocol, location.protocol)


def _components(location: FsspecLocation) -> tuple[str, ...]:
    """A URL's bucket and key components, normalised (``memory://a/`` and ``memory:///a``)."""
    path = posixpath.normpath("/" + location.url.split("://", 1)[1])
    return tuple(part for part in path.split("/") if part)


@functools.lru_cache(maxsize=16)
def _filesystem(protocol: str, options_json: str, pid: int):
    try:
        import fsspec
    except ImportError:
        raise StorageError(f"{protocol}:// URLs need fsspec: pip install "
                           f"'imgshard[{EXTRAS.get(protocol, 'fsspec')}]'") from None
    # Other processes (workers) write into the same store, so a listing must never be stale.
    options = {"use_listings_cache": False, **json.loads(options_json)}
    if protocol not in fsspec.available_protocols():
        raise StorageError(f"{protocol}:// is not a storage protocol fsspec knows")
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError:
        extra = EXTRAS.get(protocol)
        hint = f"pip install 'imgshard[{extra}]'" if extra else "install its fsspec back end"
        raise StorageError(f"{protocol}:// URLs need {PACKAGES.get(extra, 'a back end')}: "
                           f"{hint}") from None
    except Exception as error:  # noqa: BLE001 - a back end rejecting an option raises anything
        raise StorageError(f"bad --storage-option for {protocol}://: "
                           f"{describe_error(error, json.loads(options_json))}") from None
