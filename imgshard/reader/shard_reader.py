"""Stream a shard directory back as batches, in bounded memory, with a good, cheap shuffle.

Shuffle algorithm (``shuffle=True``), a pure function of ``(seed, epoch)``:

1. the shards of the split are put in a random order;
2. consecutive runs of ``window`` shards form a window, and the samples of a window are put in
   a random order;
3. the epoch is the windows one after another, cut into batches.

Only the shards of the current window are memory-mapped; they are unmapped when the window
moves on, so resident memory stays near ``window`` shards plus the batches in flight, whatever
the dataset size. Reads stay within a few files at a time (I/O friendly), yet a batch mixes
samples from ``window`` shards, and because ``imgshard build`` already spreads every class over
every shard, batches are well mixed. The trade-off: a larger window shuffles more globally but
maps more data; ``window=1`` is the cheapest and still reorders every shard.

Each iteration is one epoch; a background thread prepares up to ``prefetch`` batches ahead so
reading overlaps training. ``state_dict()``/``load_state_dict()`` resume mid-epoch exactly.

A directory given as a URL (``s3://bucket/shards``) is read through a :class:`~imgshard.reader.cache.
ShardCache`: whole shard files are downloaded into ``cache_dir`` a window ahead of use, their
checksums verified once on landing, and memory-mapped from there.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import MissingShardError
from ..formats import check_labels, shard_format
from ..layout import MANIFEST_NAME
from ..manifest import Manifest, ShardInfo, read_manifest
from ..storage import Location
from .cache import ShardCache, default_cache_dir
from .checks import (
    ReaderError,
    check_memory,
    check_options,
    check_sizes,
    file_identity_of,
    is_whole,
    served_dtype,
    shard_bytes,
    whole,
)

#: Fed from Python (a PyDataset or a generator: any such input, not only a reader's), Keras on
#: TensorFlow runs each ``model.fit`` step 1.6-1.9x slower with TensorFlow's default CPU
#: allocator, which hands a step's memory back to the OS and faults it in again on the next
#: step (7x the page faults of in-memory arrays; see ``benchmarks/fit_step.py``). Its BFC
#: allocator keeps that memory for reuse. TensorFlow reads this variable when it makes its first
#: tensor, so it is set on ``import imgshard``, before a model exists; a value already set wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

#: Where the data of every batch the reader allocates starts. TensorFlow takes a numpy array from
#: a generator (Keras' PyDataset path) without a realigning copy only when it is 64-byte aligned,
#: which numpy's own arrays (16) are not: through Keras' adapter a batch of 32 224x224 float16
#: images cost 5.1 ms of CPU aligned against 6.4 ms unaligned.
BATCH_ALIGNMENT = 64



class ShardReader:
    """Batches ``(x, y)`` (or ``x`` with ``label_mode=None``) of one split of a shard directory.

    Args:
        directory: a directory written by ``imgshard build``: a path, an fsspec URL, or a
            :class:`~imgshard.storage.Location` (a URL with its storage options).
        split: ``train``, ``val`` or ``test`` (whatever the manifest has).
        batch_size: samples per batch; the last batch of an epoch is partial unless
            ``drop_remainder``.
        shuffle, seed: windowed shuffle (see the module docstring), new order every epoch.
        label_mode: ``"int"`` (int32), ``"categorical"`` (one-hot float32), ``"binary"``
            (float32 shaped (b, 1), two classes) or ``None`` (images only), as in Keras.
        dtype: convert images to this dtype on the fly (default: the stored dtype).
        augment: a callable applied to every batch of images, returning the new images.
        flip_horizontal: flip each image left-right with probability 1/2 (seeded per epoch).
        window: shards shuffled together; memory holds about this many shards.
        prefetch: batches prepared ahead by a background thread (0: none).
        storage_options: fsspec options for a URL ``directory`` (credentials, endpoint, ...).
        cache_dir: where the shards of a URL are cached (default ``~/.cache/imgshard``).
        cache_bytes: the cache's size limit; least recently used shards are evicted beyond it.
        verify: check each shard file's sha256 against the manifest the first time it is
            mapped (a local directory; a URL's files are always checked as they download).

    Raises:
        ManifestError, ShardError: the manifest, or a file it lists, is not what a build writes
            (every file's size is checked against the manifest's counts on construction; each
            label file's labels against the class count when mapped).
    """

    def __init__(self, directory: str, split: str = "train", *, batch_size: int = 32,
                 shuffle: bool = True, seed: int = 0, drop_remainder: bool = False,
                 label_mode: str | None = "int", dtype: str | None = None,
                 augment: Callable[[np.ndarray], np.ndarray] | None = None,
                 flip_horizontal: bool = False, window: int = 4, prefetch: int = 2,
                 storage_options: dict[str, Any] | None = None, cache_dir: str | None = None,
                 cache_bytes: int = 10 * 1000**3, verify: bool = False) -> None:
        location = directory if isinstance(directory, Location) \
            else Location.of(directory, storage_options)
        self.directory = str(location)
        self.location = location
        manifest_seen = file_identity_of(location, MANIFEST_NAME)
        self.manifest: Manifest = read_manifest(location)
        if not isinstance(split, str) or split not in self.manifest.splits:
            known = ", ".join(self.manifest.splits)
            raise ReaderError(f"split {split!r} is not in {self.directory} (it has: {known})")
        check_options(self.manifest, batch_size=batch_size, label_mode=label_mode, window=window,
                      prefetch=prefetch, seed=seed, verify=verify, cache_bytes=cache_bytes,
                      shuffle=shuffle, drop_remainder=drop_remainder,
                      flip_horizontal=flip_horizontal, augment=augment)
        self.split = split
        self.shards: list[ShardInfo] = self.manifest.splits[split].shards
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_remainder, self.label_mode = drop_remainder, label_mode
        self.dtype = served_dtype(dtype or self.manifest.dtype, self.manifest.dtype)
        self.augment, self.flip_horizontal = augment, flip_horizontal
        self.window, self.prefetch = window, prefetch
        self.verify, self._verified = verify and location.is_local, set()
        self._identities = check_sizes(location, self.manifest, self.shards)
        if file_identity_of(location, MANIFEST_NAME) != manifest_seen:  # so the files seen are its own
            raise ReaderError(f"{self.directory} changed while the reader opened it (a build is "
                              "writing it?): open it again when the build has finished")
        sizes = np.array([s.num_samples for s in self.shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])
        self.num_samples = int(self._starts[-1])
        if self.num_samples != self.manifest.splits[split].num_samples:
            raise ReaderError(f"{location.display('manifest.json')}: splits.{split}.num_samples "
                              f"says {self.manifest.splits[split].num_samples}, its shards hold "
                              f"{self.num_samples} (run imgshard verify)")
        check_memory(self, split)
        self.epoch, self._position = 0, 0
        self._open: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._shard_sequence: list[int] = []
        self.cache: ShardCache | None = None
        if not location.is_local:
            largest = max((shard_bytes(self.manifest, s) for s in self.shards), default=0)
            if cache_bytes < 2 * window * largest:
                raise ReaderError(f"cache_bytes={cache_bytes:,} cannot hold two windows of "
                                  f"{window} shards (at least {2 * window * largest:,} bytes)")
            self.cache = ShardCache(location, cache_dir or default_cache_dir(), cache_bytes,
                                    keep=4 * window)

    # -- epochs and resumption -------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_remainder:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (from its start)."""
        self.epoch, self._position = whole(epoch, "epoch"), 0

    def state_dict(self) -> dict[str, int]:
        """Where the consumer is: the epoch and the number of batches it has taken from it."""
        return {"epoch": self.epoch, "batches": self._position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue exactly where :meth:`state_dict` was taken: no repeated or skipped sample.

        Raises:
            ReaderError: ``state`` is not what :meth:`state_dict` returns for this reader (its
                seed, an epoch >= 0, a batch count within the epoch); the reader is unchanged.
        """
        if not isinstance(state, dict) or not {"epoch", "batches"} <= state.keys():
            raise ReaderError(f"state must be a dict with epoch and batches, as state_dict() "
                              f"returns, got {repr(state)[:80]}")
        if state.get("seed", self.seed) != self.seed:
            raise ReaderError(f"state was saved with seed {repr(state['seed'])[:40]}, reader has "
                              f"{self.seed}")
        epoch = whole(state["epoch"], "state epoch")
        batches = whole(state["batches"], "state batches", high=len(self))
        self.epoch, self._position = epoch, batches

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global sample indices (shard by shard, row by row) in the order of ``epoch``."""
        if not self.shuffle:
            return np.arange(self.num_samples, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch])
        shard_order = rng.permutation(len(self.shards))
        parts = []
        for first in range(0, len(shard_order), self.window):
            members = shard_order[first:first + self.window]
            indices = np.concatenate([np.arange(self._starts[s], self._starts[s + 1])
                                      for s in members])
            parts.append(rng.permutation(indices))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        epoch, start = self.epoch, self._position
        order = self.epoch_order(epoch)
        batches = self._produce(epoch, order, start)
        if self.prefetch:
            batches = _prefetched(batches, self.prefetch)
        try:
            for batch in batches:
                self._position += 1
                yield batch
        finally:
            batches.close()
        self.epoch, self._position = epoch + 1, 0
        self._release_all()

    def get_batch(self, epoch: int, index: int) -> Any:
        """Batch ``index`` of ``epoch``, by random access (what Keras' PyDataset asks for)."""
        if not is_whole(index) or not 0 <= index < len(self):
            raise IndexError(f"batch {repr(index)[:40]} of {len(self)}")
        return self._batch(epoch, int(index), self._cached_order(whole(epoch, "epoch")))

    def _cached_order(self, epoch: int) -> np.ndarray:
        with self._lock:
            cached = self._order_cache
            if cached is None or cached[0] != epoch:
                cached = (epoch, self.epoch_order(epoch))
                self._order_cache = cached
                self._shard_sequence = self._visit_order(cached[1])
            return cached[1]

    def _visit_order(self, order: np.ndarray) -> list[int]:
        """The shards in the order an epoch of ``order`` first touches them."""
        if self.cache is None:
            return []
        shard_of = np.searchsorted(self._starts, order, side="right") - 1
        _, first = np.unique(shard_of, return_index=True)
        return shard_of[np.sort(first)].tolist()

    def _produce(self, epoch: int, order: np.ndarray, start: int) -> Iterator[Any]:
        self._shard_sequence = self._visit_order(order)
        for index in range(start, len(self)):
            yield self._batch(epoch, index, order)

    def _batch(self, epoch: int, index: int, order: np.ndarray) -> Any:
        chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
        images, labels = self._gather(chosen)
        if self.flip_horizontal:
            flips = np.random.default_rng([self.seed, epoch, index, 1]).random(len(chosen)) < 0.5
            images = aligned_copy(images, images.dtype) if not images.flags.writeable else images
            images[flips] = images[flips, :, ::-1]
        if self.augment is not None:
            images = self.augment(images)
        if self.label_mode is None:
            return images
        return images, self._encode(labels)

    def _gather(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Read the samples ``chosen`` (global indices), copying each one once, into the batch.

        Inside a batch the samples are taken in stored order (shard by shard, row by row): the
        batch's membership is what the shuffle decides, and reading in file order lets one
        ``np.take`` per shard write straight into the batch.
        """
        chosen = np.sort(chosen)
        shard_of = np.searchsorted(self._starts, chosen, side="right") - 1
        rows = chosen - self._starts[shard_of]
        if shard_of[0] == shard_of[-1] and rows[-1] - rows[0] == len(rows) - 1:
            images, labels = self._shard(int(shard_of[0]))
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            batch = np.asarray(images[lo:hi])  # a view of the map, no copy
            if batch.dtype != self.dtype or batch.ctypes.data % BATCH_ALIGNMENT:
                batch = aligned_copy(batch, self.dtype)
            return batch, None if labels is None else labels[lo:hi]
        batch = aligned_empty((len(chosen), *self.manifest.image_shape), self.dtype)
        batch_labels = np.empty(len(chosen), dtype=np.int32)
        bounds = np.flatnonzero(np.diff(shard_of)) + 1
        for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(chosen)]])):
            images, labels = self._shard(int(shard_of[lo]))
            if images.dtype == self.dtype:
                # mode="clip": the rows are in range, and numpy's default "raise" would copy
                # every row twice (it buffers ``out``), which made the gather 4x slower
                np.take(images, rows[lo:hi], axis=0, out=batch[lo:hi], mode="clip")
            else:
                batch[lo:hi] = images[rows[lo:hi]]
            if labels is not None:
                batch_labels[lo:hi] = labels[rows[lo:hi]]
        return batch, None if self.manifest.class_names is None else batch_labels

    def _shard(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The memory maps of shard ``index``; shards beyond the window's reach are unmapped."""
        with self._lock:
            if index in self._open:
                self._open.move_to_end(index)
                return self._open[index]
            while len(self._open) >= self.window:  # unmap first: never window + 1 mapped
                self._open.popitem(last=False)
            info = self.shards[index]
            self._download_ahead(index)
            opened = self._map(info, verify=self.verify and index not in self._verified)
            self._verified.add(index)
            self._open[index] = opened
            return opened

    def _map(self, info: ShardInfo, *, verify: bool) -> tuple[np.ndarray, np.ndarray | None]:
        images = self._open_file(info.images, info.sha256, verify,
                                 shape=(info.num_samples, *self.manifest.image_shape),
                                 dtype=self.manifest.dtype)
        labels = None
        if info.labels is not None:  # copied (4 bytes a sample), so that the labels checked
            # are the ones served: a shared map shows whatever is written to the file later
            labels = np.array(self._open_file(info.labels, info.labels_sha256, verify,
                                              shape=(info.num_samples,), dtype="int32"))
            check_labels(self.location.display(info.labels), labels, self.manifest.num_classes)
        return images, labels

    def _open_file(self, name: str, sha256: str | None, verify: bool,
                   **expected: Any) -> np.ndarray:
        """Map a file of the directory, from the local cache when it is remote."""
        if self.cache is None:
            return shard_format().open_shard(self.location.path(name),
                                             sha256=sha256 if verify else None,
                                             identity=self._identities[name], **expected)
        return self.cache.open(name, sha256 or "", lambda path: _open_cached(path, **expected))

    def close(self) -> None:
        """Unmap every shard and stop downloading ahead (for a remote directory)."""
        self._release_all()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _download_ahead(self, index: int) -> None:
        """Start downloading shard ``index`` and the window of shards the epoch visits next."""
        sequence = self._shard_sequence
        if self.cache is None:
            return
        position = sequence.index(index) if index in sequence else len(sequence)
        upcoming = [self.shards[index]]
        upcoming += [self.shards[i] for i in sequence[position + 1:position + 1 + self.window]]
        self.cache.prefetch([(f, sha) for s in upcoming
                             for f, sha in ((s.images, s.sha256), (s.labels, s.labels_sha256))
                             if f is not None])

    def _release_all(self) -> None:
        with self._lock:
            self._open.clear()

    def _encode(self, labels: np.ndarray | None) -> np.ndarray:
        if labels is None:
            raise ReaderError("these shards have no labels (built with --no-labels): "
                              "use label_mode=None")
        if self.label_mode == "categorical":  # not np.eye(classes)[labels]: classes squared
            one_hot = np.zeros((len(labels), len(self.manifest.class_names)), dtype=np.float32)
            one_hot[np.arange(len(labels)), labels] = 1
            return one_hot
        if self.label_mode == "binary":
            return labels.astype(np.float32)[:, np.newaxis]
        return labels

    # -- framework adapters ---------------------------------------------------------------

    def to_keras(self, *, workers: int = 2, use_multiprocessing: bool = False,
                 max_queue_size: int = 10):
        """A ``keras.utils.PyDataset`` over this reader that reshuffles every epoch.

        Two worker threads by default: Keras then prepares batches ahead while the model trains
        (with one worker it reads each batch between steps); reading releases the GIL.
        """
        from .keras import ShardPyDataset, keep_heap_for_keras

        keep_heap_for_keras()  # a process-wide glibc setting, for TensorFlow only (see there)
        return ShardPyDataset(self, workers=workers, use_multiprocessing=use_multiprocessing,
                              max_queue_size=max_queue_size)

    def to_tf_dataset(self):
        """A ``tf.data.Dataset`` of this reader's batches (one epoch per pass over it)."""
        from .keras import to_tf_dataset

        return to_tf_dataset(self)


def _open_cached(path: str, **expected: Any) -> np.ndarray:
    """:func:`open_shard` on a cache file; FileNotFoundError if another reader sharing the cache
    evicted it, even between finding the file and mapping it (once mapped, it stays readable)."""
    try:
        return shard_format().open_shard(path, **expected)
    except MissingShardError:
        raise FileNotFoundError(path) from None


def _prefetched(batches: Iterator[Any], depth: int):
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


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose data starts on a :data:`BATCH_ALIGNMENT` boundary."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + BATCH_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % BATCH_ALIGNMENT
    return raw[start:start + size].view(dtype).reshape(shape)


def aligned_copy(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` cast to ``dtype`` in a new, writeable, aligned array."""
    copy = aligned_empty(array.shape, dtype)
    copy[...] = array
    return copy


__all__ = ["ReaderError", "ShardReader"]

