"""Which shards are memory-mapped, where their files come from, and batches made ahead.

Only the shards in use are mapped (as many as the epoch's order has in use at once, see
:meth:`~imgshard.reader.order.EpochOrder.shards_in_use`); they are unmapped when the epoch moves
on, and the pages of rows already read are handed back as batches are made, so resident memory
stays near the batches in flight, whatever the dataset size. A local directory's files are
mapped where they are (:class:`InPlaceFiles`); a remote store's are downloaded ahead of use (as
many shards ahead as are in use) into a :class:`~imgshard.reader.cache.ShardCache`, checked
against their sha256 as they land, and mapped from there (:class:`DownloadedFiles`).
:func:`prefetched` prepares batches on a background thread so reading overlaps training.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..formats import check_labels, check_targets, shard_format
from ..layout import MANIFEST_NAME
from ..manifest import Manifest, ShardInfo
from ..storage import Location
from .batches import MappedShard
from .cache import ShardCache, default_cache_dir
from .checks import ReaderError, shard_bytes
from .order import EpochOrder


class InPlaceFiles:
    """A local directory's files, mapped where they are: each must still be the file seen when
    the reader opened the directory (``identities``), and with ``verify`` its sha256 is checked
    the first time its shard is mapped."""

    cache = None  # nothing is downloaded

    def __init__(self, location: Location, identities: dict[str, Any]) -> None:
        self.location, self.identities = location, identities

    def plan(self, order: EpochOrder, indices: np.ndarray, in_use: int) -> None:
        """Nothing to fetch ahead of an epoch."""

    def ahead(self, shards: list[ShardInfo], index: int) -> None:
        """Nothing to fetch ahead of a shard."""

    def open_file(self, name: str, sha256: str | None, verify: bool, **expected: Any) -> np.ndarray:
        return shard_format().open_shard(self.location.local_path(name),
                                         sha256=sha256 if verify else None,
                                         identity=self.identities[name], **expected)

    def close(self) -> None:
        """Nothing runs in the background."""


class DownloadedFiles:
    """A remote store's files, downloaded into :attr:`cache` in the order the epoch visits their
    shards, as many ahead of use as are in use at once, and mapped from there (checked as they
    land: ``verify`` is moot)."""

    def __init__(self, cache: ShardCache, in_use: int) -> None:
        self.cache, self.in_use = cache, in_use
        self._sequence: list[int] = []  # the shards in the order the epoch visits them

    def plan(self, order: EpochOrder, indices: np.ndarray, in_use: int) -> None:
        """Download in the order an epoch of ``indices`` visits the shards."""
        self._sequence, self.in_use = order.visit_order(indices), in_use

    def ahead(self, shards: list[ShardInfo], index: int) -> None:
        """Start downloading shard ``index`` and the shards the epoch visits next."""
        sequence = self._sequence
        position = sequence.index(index) if index in sequence else len(sequence)
        upcoming = [shards[index]]
        upcoming += [shards[i] for i in sequence[position + 1:position + 1 + self.in_use]]
        self.cache.prefetch([(f, sha) for s in upcoming
                             for f, sha in ((s.images, s.sha256), (s.labels, s.labels_sha256),
                                            (s.targets, s.targets_sha256))
                             if f is not None])

    def open_file(self, name: str, sha256: str | None, verify: bool, **expected: Any) -> np.ndarray:
        opener = shard_format().open_shard
        return self.cache.open(name, sha256 or "", lambda path: opener(path, **expected))

    def close(self) -> None:
        self.cache.close()


def files_of(location: Location, manifest: Manifest, shards: list[ShardInfo],
             identities: dict[str, Any], *, in_use: int, cache_dir: str | None,
             cache_bytes: int) -> InPlaceFiles | DownloadedFiles:
    """Where the files of ``shards`` are mapped from: where they lie when the store has them on
    this machine's file system, else from a cache they are downloaded into."""
    if location.local_path(MANIFEST_NAME) is not None:
        return InPlaceFiles(location, identities)
    return _downloaded(location, manifest, shards, in_use=in_use, cache_dir=cache_dir,
                       cache_bytes=cache_bytes)


def _downloaded(location: Location, manifest: Manifest, shards: list[ShardInfo], *,
                in_use: int, cache_dir: str | None, cache_bytes: int) -> DownloadedFiles:
    """The files of a remote ``location``, through a cache that must hold the ``in_use``
    shards and as many downloaded ahead."""
    largest = largest_shard_bytes(manifest, shards)
    in_use = max(in_use, 1)
    if cache_bytes < 2 * in_use * largest:
        raise ReaderError(f"cache_bytes={cache_bytes:,} cannot hold the {in_use} shards in "
                          f"use at once and as many downloaded ahead (at least "
                          f"{2 * in_use * largest:,} bytes): raise cache_bytes, or lower "
                          "window or partitions")
    cache = ShardCache(location, cache_dir or default_cache_dir(), cache_bytes, keep=4 * in_use)
    return DownloadedFiles(cache, in_use)


def largest_shard_bytes(manifest: Manifest, shards: list[ShardInfo]) -> int:
    return max((shard_bytes(manifest, s) for s in shards), default=0)


#: Resident pages of mapped shards a reader keeps: when the shards an epoch has in use at once
#: are larger, the pages of rows are handed back as they are read (``batches.release_rows``).
RESIDENT_BYTES = 512 * 1000**2


class ShardWindow:
    """The memory maps of at most ``size`` shards of a split (the most an epoch has in use at
    once), least recently used unmapped first.

    Thread-safe: Keras' workers ask for batches from several threads.
    """

    def __init__(self, location: Location, manifest: Manifest, shards: list[ShardInfo],
                 files: InPlaceFiles | DownloadedFiles, *, size: int, verify: bool) -> None:
        self.location, self.manifest, self.shards, self.files = location, manifest, shards, files
        self.size, self.verify = size, verify
        self.lock = threading.RLock()  # get_batch plans an epoch while holding it
        self._open: OrderedDict[int, MappedShard] = OrderedDict()
        self._verified: set[int] = set()
        self.bytes_mapped = 0  # bytes of the shard files mapped so far, each time mapped
        self.largest = largest_shard_bytes(manifest, shards)
        self.release_pages = False  # whether batches hand back the pages they read
        self._last_batch: dict[int, int] = {}  # shard -> the epoch's last batch that reads it
        self.closed = False

    def plan(self, order: EpochOrder, indices: np.ndarray) -> None:
        """Size the maps for an epoch of ``indices``, note the batch that reads each shard last,
        and tell the files what comes."""
        in_use = order.shards_in_use(indices)
        with self.lock:
            self.size = max(in_use, 1)
            self.release_pages = in_use * self.largest > RESIDENT_BYTES
            self._last_batch = order.last_batches(indices)
        self.files.plan(order, indices, in_use)

    def finished(self, batch: int) -> None:
        """Unmap the shards the epoch reads for the last time in batch ``batch``: least recently
        used is not least needed (a shard read last a moment ago would stay mapped while one
        still needed is unmapped and mapped again)."""
        with self.lock:
            for index in [i for i in self._open if self._last_batch.get(i, -1) <= batch]:
                del self._open[index]

    def shard(self, index: int) -> MappedShard:
        """The memory maps of shard ``index``; shards beyond the window's reach are unmapped."""
        with self.lock:
            if self.closed:  # a URL's downloads are stopped for good: say so, for local ones too
                raise ReaderError(f"the reader of {self.location} is closed: open a new "
                                  "ShardReader")
            if index in self._open:
                self._open.move_to_end(index)
                return self._open[index]
            while len(self._open) >= self.size:  # unmap first: never window + 1 mapped
                self._open.popitem(last=False)
            self.files.ahead(self.shards, index)
            opened = self._map(self.shards[index],
                               verify=self.verify and index not in self._verified)
            self._verified.add(index)
            self._open[index] = opened
            self.bytes_mapped += shard_bytes(self.manifest, self.shards[index])
            return opened

    def _map(self, info: ShardInfo, *, verify: bool) -> MappedShard:
        manifest = self.manifest
        images = self.files.open_file(info.images, info.sha256, verify,
                                      shape=(info.num_samples, *manifest.image_shape),
                                      dtype=manifest.dtype)
        labels = targets = None
        if info.labels is not None:  # copied (4 bytes a sample), so that the labels checked
            # are the ones served: a shared map shows whatever is written to the file later
            shape, dtype = manifest.labels_layout(info.num_samples)
            labels = np.array(self.files.open_file(info.labels, info.labels_sha256, verify,
                                                   shape=shape, dtype=dtype))
            check_labels(self.location.display(info.labels), labels, manifest.num_classes)
        if info.targets is not None:  # copied too, and checked finite
            shape, dtype = manifest.targets_layout(info.num_samples)
            targets = np.array(self.files.open_file(info.targets, info.targets_sha256, verify,
                                                    shape=shape, dtype=dtype))
            check_targets(self.location.display(info.targets), targets)
        return images, labels, targets

    def release_all(self) -> None:
        """Unmap every shard."""
        with self.lock:
            self._open.clear()

    def close(self) -> None:
        """Unmap every shard and stop downloading ahead, for good (see :meth:`shard`)."""
        with self.lock:
            self.closed = True
        self.release_all()
        self.files.close()


def prefetched(batches: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``batches`` in a background thread, at most ``depth`` ahead; stop when closed."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(done)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put(error)

    thread = threading.Thread(target=fill, name="imgshard-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def served(batches: Iterator[Any], depth: int, taken: Callable[[], None]) -> Iterator[Any]:
    """``batches`` prepared ``depth`` ahead (0: in the caller's thread), ``taken()`` called as
    each is handed on (what a reader's or a mix's position counts); closed however the
    consumer stops."""
    if depth:
        batches = prefetched(batches, depth)
    try:
        for batch in batches:
            taken()
            yield batch
    finally:
        batches.close()
