"""Where a build reads and writes: a local folder, or an fsspec URL (``s3://``, ``gs://``, ...).

A :class:`Location` is one directory and the handful of operations the pipeline needs on it.
Local paths stay the fast path: plain ``os`` calls, fsync and rename, memory maps. A URL goes
through fsspec, imported only then, so the core install needs neither fsspec nor s3fs.

Writes to an object store are atomic at the object level: a file is first written to a local
temporary file and then uploaded in one piece (``put_file``), so an object either holds all of
its bytes or does not exist. There is no rename on an object store; a worker's part becomes a
shard by a server-side copy, so its pixels do not travel through the client.

Credentials come the way fsspec and its back ends look for them (the AWS environment variables
and config files, ``AWS_ENDPOINT_URL`` included) plus ``--storage-option KEY=VALUE``. Storage
options never appear in a repr, a log line or a manifest; in an error message, the value of
every option whose key looks secret (:data:`SECRET_KEY`), of any type, is masked, while the
others (an endpoint, a region) stay readable to say what failed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import ImgshardError, MissingShardError
from .files import atomic_file, file_sha256, open_regular, sync_file

#: Object stores: no folders to create, and creating one would create a *bucket* (s3fs does).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oci", "r2"})
#: Which optional extra brings the fsspec back end of a protocol.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
PACKAGES = {"s3": "s3fs", "gcs": "gcsfs"}
#: URLs that fsspec reads as local files, in any case: ``file://`` and ``local://``.
LOCAL_URL = re.compile(r"^(?:file|local)://", re.IGNORECASE)
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)
#: Storage-option keys whose values are secrets: masked in every message, nested ones too.
SECRET_KEY = re.compile(r"key|secret|token|passw|credential|session|auth|signature|private|cert",
                        re.IGNORECASE)


class StorageError(ImgshardError):
    """A URL cannot be reached or a remote file cannot be read or written (one line, no secret)."""


def is_url(path: str) -> bool:
    return "://" in str(path)


def parse_storage_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs into fsspec storage options.

    Values are read as JSON where they parse (``true``, ``3``, ``{"a": 1}``) and as text
    otherwise; a dotted key (``client_kwargs.region_name=eu-west-1``) fills a nested dict.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():  # the value is never echoed: it may be a secret
            raise StorageError("--storage-option expects KEY=VALUE" if not sep
                               else "--storage-option has an empty KEY")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.strip().split(".")
        target = options
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return options


@dataclass(frozen=True)
class Location:
    """A directory, local or remote, with the storage options needed to reach it.

    Picklable, so tasks carry it to worker processes and Dask workers; each process makes its
    own fsspec filesystem from it (fsspec caches one per options). ``temp_tag``, set by a build
    on its OUT, is the build id every temporary file written through it carries (see
    ``shards.temp_path``).
    """

    url: str
    options_json: str = field(default="{}", repr=False)
    temp_tag: str = field(default="", repr=False)

    @classmethod
    def of(cls, path: str | os.PathLike[str], options: dict[str, Any] | None = None) -> "Location":
        """A location for a local path, a local file URL (made local) or any fsspec URL."""
        text = os.fspath(path)
        text = LOCAL_URL.sub("", text, count=1)  # local checks (overlap, lock) must apply
        if is_url(text):
            text = text.rstrip("/")
        return cls(text, json.dumps(options or {}, sort_keys=True))

    @property
    def is_local(self) -> bool:
        return not is_url(self.url)

    @property
    def in_process(self) -> bool:
        """Whether the store lives in this process's memory (``memory://``): workers in other
        processes cannot see it."""
        return self.protocol == "memory"

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0].lower() if is_url(self.url) else "file"

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)

    def __str__(self) -> str:
        """The URL as shown to users: any ``user:password@`` is removed."""
        return _USERINFO.sub(r"\1", self.url)

    @property
    def fs(self):
        # keyed by process too: a forked worker must not reuse its parent's connections
        return _filesystem(self.protocol, self.options_json, os.getpid())

    def path(self, name: str) -> str:
        """The full path of ``name`` (a '/'-separated relative path) in this directory."""
        if self.is_local:
            return os.path.join(self.url, *name.split("/"))
        return f"{self.url}/{name}"

    def display(self, name: str) -> str:
        return f"{self}/{name}" if not self.is_local else self.path(name)

    def absolute(self) -> "Location":
        """The same location with a local path made absolute, for processes with another cwd.

        Not normalised: in ``link/../out`` the kernel resolves ``..`` after the link, so
        dropping ``link/..`` as text would name another folder.
        """
        if not self.is_local:
            return self
        return Location(os.path.join(os.getcwd(), self.url), self.options_json, self.temp_tag)

    # -- queries ---------------------------------------------------------------------------

    def exists(self, name: str = "") -> bool:
        target = self.path(name) if name else self.url
        if self.is_local:
            return os.path.exists(target)
        return self._call(self.fs.exists, target)

    def isdir(self) -> bool:
        if self.is_local:
            return os.path.isdir(self.url)
        return self._call(self.fs.isdir, self.url)

    def listdir(self) -> list[str]:
        """Names directly in this directory (empty when it does not exist)."""
        if self.is_local:
            return os.listdir(self.url) if os.path.isdir(self.url) else []
        if not self.isdir():
            return []
        entries = self._call(self.fs.ls, self.url, detail=False, refresh=True)
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries]

    def size(self, name: str) -> int:
        if self.is_local:
            return os.path.getsize(self.path(name))
        return int(self._call(self.fs.size, self.path(name)))

    def sizes(self) -> dict[str, int]:
        """Size of every file directly in this directory, in one listing."""
        if self.is_local:
            return {n: os.path.getsize(self.path(n)) for n in self.listdir()
                    if os.path.isfile(self.path(n))}
        if not self.isdir():
            return {}
        entries = self._call(self.fs.ls, self.url, detail=True, refresh=True)
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
                for e in entries if e.get("type") == "file"}

    # -- reading ---------------------------------------------------------------------------

    def open_read(self, name: str) -> BinaryIO:
        if self.is_local:
            return open(self.path(name), "rb")
        if self.in_process:  # memory:// hands every reader the same file object: take a copy
            return io.BytesIO(self.read_bytes(name))
        return self._call(self.fs.open, self.path(name), "rb")

    def read_bytes(self, name: str) -> bytes:
        if self.is_local:
            with open(self.path(name), "rb") as stream:
                return stream.read()
        return self._call(self.fs.cat_file, self.path(name))

    def sha256(self, name: str) -> str:
        """The checksum of ``name``, streamed (a remote file is not kept)."""
        if self.is_local:
            return file_sha256(self.path(name))

        def digest() -> str:
            with self.open_read(name) as stream:
                return hashlib.file_digest(stream, "sha256").hexdigest()

        return self._call(digest)

    def download(self, name: str, local_path: str) -> None:
        """Copy ``name`` to a local file (the caller renames it into place)."""
        if self.in_process:  # two threads reading one memory:// file would share its position
            with open(local_path, "wb") as stream:
                stream.write(self.read_bytes(name))
            return
        self._call(self.fs.get_file, self.path(name), local_path)

    # -- writing ---------------------------------------------------------------------------

    def makedirs(self) -> None:
        """Create the directory; on an object store nothing (a prefix needs no creating)."""
        if self.is_local:
            os.makedirs(self.url, exist_ok=True)
        elif self.protocol not in OBJECT_STORES:
            self._call(self.fs.makedirs, self.url, exist_ok=True)

    @contextlib.contextmanager
    def atomic_file(self, name: str, *, durable: bool = True) -> Iterator[BinaryIO]:
        """A stream that becomes ``name`` only if the block succeeds (see ``shards.atomic_file``)."""
        if self.is_local:
            with atomic_file(self.path(name), durable=durable, tag=self.temp_tag) as stream:
                yield stream
            return
        with tempfile.NamedTemporaryFile(prefix=".imgshard-upload-") as stream:
            yield stream
            stream.flush()
            self._call(self.fs.put_file, stream.name, self.path(name))

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.atomic_file(name) as stream:
            stream.write(data)

    def upload(self, local_path: str, name: str) -> None:
        """Upload a finished local file as ``name``, in one piece."""
        self._call(self.fs.put_file, local_path, self.path(name))

    def replace(self, source: str, target: str) -> None:
        """Give ``source`` the name ``target``: a rename, or on an object store a server-side copy."""
        if self.is_local:
            os.replace(self.path(source), self.path(target))
            return
        self._call(self.fs.copy, self.path(source), self.path(target))
        self._call(self.fs.rm_file, self.path(source))

    def remove(self, name: str, *, missing_ok: bool = False) -> None:
        try:
            if self.is_local:
                os.remove(self.path(name))
            else:
                self._call(self.fs.rm_file, self.path(name))
        except FileNotFoundError:
            if not missing_ok:
                raise

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

    # -- added for the reader (merge into the local and remote stores) -------------------------

    def file_identity(self, name: str) -> tuple[int, int, int, int] | None:
        """What tells the file ``name`` from a later one under that name (see
        :func:`~imgshard.storage.files.file_identity`); None when it is not there, and for a
        remote file, whose bytes are checked against their sha256 as they download instead."""
        from .files import file_identity

        if not self.is_local:
            return None
        try:
            return file_identity(os.lstat(self.path(name)))
        except OSError:
            return None

    def file_stats(self, names: list[str]) -> Iterator[tuple[str, int, tuple | None]]:
        """``(name, size, identity)`` of each file of ``names`` in turn (identity as
        :meth:`file_identity`), without opening any: a local file is looked at with ``lstat``,
        refusing links and special files; a remote directory's files come from one listing.

        Raises:
            MissingShardError: a file of ``names`` is not there (when its turn comes).
            ShardError: a local one is a link, a special file or cannot be looked at.
        """
        from ..errors import MissingShardError
        from .files import file_identity, regular_file_stat

        listed = None if self.is_local else self.sizes()
        for name in names:
            if listed is None:
                status = regular_file_stat(self.path(name))
                yield name, status.st_size, file_identity(status)
            elif name in listed:
                yield name, listed[name], None
            else:
                raise MissingShardError(f"{self.display(name)}: shard file is missing")

    def map_files(self, *, in_place: Any, downloading: Any) -> Any:
        """How a reader gets this directory's files as local files it can memory-map:
        ``in_place()`` for a local directory, whose files are mapped where they are;
        ``downloading()`` for a remote store, whose files must be downloaded first (both are
        callables of no argument; what they return is returned)."""
        return in_place() if self.is_local else downloading()

    # -- added for the build pipeline (merge into the local and remote stores) -------------

    def worker_processes(self, workers: int, *, only_other_processes: bool) -> int:
        """How many of ``workers`` worker processes can reach this directory: all, but
        memory:// lives in this process only, so there one, run in this process.

        Raises:
            StorageError: every worker of the executor is another process (``only_other_processes``).
        """
        if not self.in_process:
            return workers
        if only_other_processes:
            raise StorageError("memory:// lives in this process only: use the local executor")
        return 1

    def replace_durably(self, source: str, target: str) -> None:
        """:meth:`replace`, after making ``source`` durable: a worker wrote it without syncing."""
        if self.is_local:
            sync_file(self.path(source))
        self.replace(source, target)

    def staging_folder(self) -> str:
        """A local folder where a file grows before :meth:`publish` gives it a name here: this
        directory itself when local (the file then outlives a crash, see
        :meth:`keeps_staged_files`), else a new temporary folder (see :meth:`end_staging`)."""
        return self.url if self.is_local else tempfile.mkdtemp(prefix="imgshard-staging-")

    def keeps_staged_files(self) -> bool:
        """Whether a file in :meth:`staging_folder` outlives this process, for a resume to
        continue; where it does not, the build's records must carry its content."""
        return self.is_local

    def publish(self, local_path: str, name: str) -> None:
        """Give the finished staged file ``local_path`` the name ``name`` here, in one piece."""
        if self.is_local:
            os.replace(local_path, self.path(name))
        else:
            self.upload(local_path, name)

    def end_staging(self, folder: str) -> None:
        """Remove a temporary :meth:`staging_folder` (this directory itself stays)."""
        if not self.is_local:
            shutil.rmtree(folder, ignore_errors=True)

    def open_regular(self, name: str) -> BinaryIO:
        """``name`` opened for reading, only if it is a regular file: a FIFO in its place would
        hang the reading (see :func:`~imgshard.storage.files.open_regular`).

        Raises:
            FileNotFoundError: there is nothing at ``name``.
            ShardError: a link, FIFO, device or directory is there.
        """
        if not self.is_local:
            return self.open_read(name)  # an object store holds objects only
        try:
            return os.fdopen(open_regular(self.path(name)), "rb")
        except MissingShardError:
            raise FileNotFoundError(self.path(name)) from None


def describe_error(error: BaseException, options: dict[str, Any],
                   also_secret: tuple[str, ...] = ()) -> str:
    """A one-line description of a storage failure with every secret masked: the values of
    the options whose key looks secret (:data:`SECRET_KEY`, any type: numbers too) and
    ``also_secret``. Other values, such as the endpoint that failed, are kept."""
    message = " ".join(str(error).split()) or type(error).__name__
    secrets = [spelling for secret in [*secret_values(options), *also_secret]
               for spelling in spellings(secret)]
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
        for part in secret.split(":") if ":" in secret else ():
            if len(part) >= 4:
                message = message.replace(part, "***")
    return f"{type(error).__name__}: {message}"[:200]


def spellings(secret: str) -> set[str]:
    """The ways a secret may be written in an error message: as is, percent-encoded (in a
    URL's query, as a SAS token or a signed URL shows it) or backslash-escaped (in a repr)."""
    return {secret, urllib.parse.quote(secret), urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret), secret.encode("unicode_escape").decode("ascii")}


def secret_values(options: Any, secret: bool = False) -> Iterator[str]:
    """The text of every value under a secret-like key of ``options`` (nested dicts and lists
    too; a secret key's whole subtree is secret)."""
    if isinstance(options, dict):
        for key, value in options.items():
            yield from secret_values(value, secret or SECRET_KEY.search(str(key)) is not None)
    elif isinstance(options, (list, tuple)):
        for value in options:
            yield from secret_values(value, secret)
    elif secret and options is not None:
        yield str(options)


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


@contextlib.contextmanager
def local_copy(location: Location, name: str, temp_dir: str | None = None) -> Iterator[str]:
    """A local path holding ``name``: the file itself when local, else a temporary download."""
    if location.is_local:
        yield location.path(name)
        return
    folder = tempfile.mkdtemp(prefix=".imgshard-download-", dir=temp_dir)
    try:
        target = os.path.join(folder, name.rsplit("/", 1)[-1])
        location.download(name, target)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)
