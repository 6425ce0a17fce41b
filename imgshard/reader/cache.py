"""A bounded local cache of remote shard files, so a reader can memory-map shards from S3.

``ShardReader`` over a URL downloads whole shard files into ``cache_dir`` ahead of use, on
background threads, so that downloads overlap training; then it memory-maps them like local
files. Files are stored under their sha256 (``{sha256}.npy``) and a download takes that name
only after its checksum matched the manifest's, so a file in the cache is verified exactly
once, when it lands, and several datasets or processes may share one cache directory.

The cache holds at most ``max_bytes``; beyond that the least recently used files are deleted
(a file still memory-mapped stays readable until it is unmapped: Linux frees it then). The
files the reader is using or about to use are never the ones evicted.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import ImgshardError, MissingShardError
from ..storage import Location
from ..storage.files import file_sha256


class CacheError(ImgshardError):
    """A remote shard cannot be cached: download failed, checksum differs, cache too small."""


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/imgshard`` (``~/.cache/imgshard``), as other tools keep downloads."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "imgshard")


class ShardCache:
    """Local copies of the files of one remote shard directory, verified, at most ``max_bytes``.

    ``keep``: how many most recently used files are never evicted (the reader's window plus
    the shards being downloaded ahead of it).
    """

    def __init__(self, location: Location, cache_dir: str, max_bytes: int, *, keep: int,
                 threads: int = 2) -> None:
        self.location, self.cache_dir = location, cache_dir
        self.max_bytes, self.keep = max_bytes, keep
        try:
            os.makedirs(cache_dir, exist_ok=True)
            cached = _cached_files(cache_dir)
        except OSError as error:
            raise CacheError(f"cannot use cache_dir {cache_dir}: {error.strerror or error}"
                             ) from None
        self._lock = threading.Lock()
        self._used: OrderedDict[str, int] = OrderedDict(cached)  # sha256 -> bytes, oldest first
        self._downloads: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="imgshard-download")
        self.downloaded = 0  # files fetched from the store by this cache (for tests and logs)
        self.bytes_downloaded = 0  # and their bytes

    def path(self, name: str, sha256: str) -> str:
        """The local path of ``name`` (whose checksum is ``sha256``), downloading it if needed."""
        while True:
            future = self._start(name, sha256)
            if future is not None:
                future.result()
            with self._lock:
                if sha256 in self._used:  # else evicted in between: fetch it again
                    local = self._local(sha256)
                    try:
                        os.utime(local)  # recency survives this process, for the next reader
                    except FileNotFoundError:  # another process sharing the cache evicted it
                        del self._used[sha256]
                        continue
                    self._used.move_to_end(sha256)
                    return local

    def prefetch(self, files: list[tuple[str, str]]) -> None:
        """Start downloading ``(name, sha256)`` files in the background, in this order.

        Files already here count as just used, so list the files needed soonest first.
        """
        for name, sha256 in files:
            self._start(name, sha256)

    def close(self) -> None:
        """Stop: downloads not started are dropped, the running ones finish."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def open(self, name: str, sha256: str, opener):
        """``opener(path)`` on the local copy of ``name``, fetched again if another process
        sharing the cache deletes it in between, even between finding the file and ``opener``
        opening it (a FileNotFoundError or MissingShardError from it); once open or mapped, a
        file stays readable."""
        for _ in range(3):
            local = self.path(name, sha256)
            try:
                return opener(local)
            except (FileNotFoundError, MissingShardError):
                with self._lock:
                    self._used.pop(sha256, None)
        raise CacheError(f"{self.cache_dir}: {name} keeps vanishing from the cache "
                         "(another process with a smaller cache_bytes evicting it?)")

    def _local(self, sha256: str) -> str:
        return os.path.join(self.cache_dir, f"{sha256}.npy")

    def _start(self, name: str, sha256: str) -> Future | None:
        with self._lock:
            if sha256 in self._used:
                self._used.move_to_end(sha256)  # asked for: now among the last to go
                return None
            if sha256 not in self._downloads:
                self._downloads[sha256] = self._pool.submit(self._download, name, sha256)
            return self._downloads[sha256]

    def _download(self, name: str, sha256: str) -> None:
        temp = os.path.join(self.cache_dir, f".{sha256}.{os.getpid()}.{threading.get_ident()}")
        try:
            try:
                self.location.download(name, temp)
            except FileNotFoundError:
                raise CacheError(f"{self.location.display(name)}: shard file is missing") from None
            if file_sha256(temp) != sha256:
                raise CacheError(f"{self.location.display(name)}: checksum does not match the "
                                 "manifest (changed or corrupt): run imgshard verify")
            size = os.path.getsize(temp)
            with self._lock:  # makes room, then lands, in one step
                self._evict(room=size)
                os.replace(temp, self._local(sha256))
                self._used[sha256] = size
                self._downloads.pop(sha256, None)
                self.downloaded += 1
                self.bytes_downloaded += size
        except BaseException:
            try:
                os.remove(temp)
            except OSError:
                pass
            with self._lock:
                self._downloads.pop(sha256, None)
            raise

    def _evict(self, room: int) -> None:
        """Delete least recently used files until ``room`` more bytes fit (lock held)."""
        total = sum(self._used.values()) + room
        while total > self.max_bytes and len(self._used) >= self.keep:
            sha256, size = self._used.popitem(last=False)
            try:
                os.remove(self._local(sha256))
            except OSError:
                pass
            total -= size


def _cached_files(cache_dir: str) -> list[tuple[str, int]]:
    """(sha256, size) of the verified files in ``cache_dir``, least recently used first.

    Temporary files of downloads whose process is gone (killed mid-download) are removed.
    """
    found = []
    for entry in os.scandir(cache_dir):
        try:
            if entry.name.startswith("."):
                _remove_if_orphaned(entry.path)
            elif entry.name.endswith(".npy"):
                info = entry.stat()
                found.append((info.st_mtime, entry.name[:-4], info.st_size))
        except FileNotFoundError:  # evicted by another process while listing
            continue
    return [(sha256, size) for _, sha256, size in sorted(found)]


def _remove_if_orphaned(temp: str) -> None:
    """Remove ``.{sha256}.{pid}.{thread}`` if process ``pid`` no longer runs."""
    parts = os.path.basename(temp).split(".")
    if len(parts) != 4 or not parts[2].isdigit():
        return
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        os.remove(temp)
    except PermissionError:  # a live process of another user
        pass
