"""Stream a shard directory back as batches, in bounded memory, with a good, cheap shuffle.

:class:`ShardReader` is the one class users meet; each of its jobs is a module of this package:

- ``order.py``: which samples an epoch serves, in which order and batches (the shuffle), and
  which part of each global batch this process reads when several train together;
- ``replicas.py``: how many processes train together and which one this is (the environment);
- ``window.py``: which shards are memory-mapped, downloads ahead, batches prepared ahead;
- ``batches.py``: one batch gathered, cast, flipped, augmented, its labels encoded;
- ``checks.py``: options, counts and files refused before anything is served;
- ``keras.py``, ``tf.py``: the views Keras and TensorFlow take, with their settings.

Each iteration is one epoch; a background thread prepares up to ``prefetch`` batches ahead so
reading overlaps training. ``state_dict()``/``load_state_dict()`` resume mid-epoch exactly, on
this or another number of processes with the same global batch.

A directory given as a URL (``s3://bucket/shards``) is read through a
:class:`~imgshard.reader.cache.ShardCache`: whole shard files are downloaded into ``cache_dir``
ahead of use, their checksums verified once on landing, and memory-mapped from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..layout import MANIFEST_NAME
from ..manifest import Manifest, ShardInfo, read_manifest
from ..storage import Location
from ..values import is_whole_argument, same_value
from .batches import BatchMaker
from .cache import ShardCache
from .checks import (
    ReaderError,
    check_memory,
    check_open_files,
    check_options,
    check_partitions,
    check_sizes,
    check_split,
    served_dtype,
    whole,
)
from .order import DEFAULT_PARTITIONS, EpochOrder
from .pixel_values import served_values
from .replicas import replicas_of
from .subset import served_classes
from .tf import to_tf_dataset
from .window import ShardWindow, files_of, served


#: What a saved state of another value of these keys was saved on (else: another epoch order).
STATE_MISMATCHES = {"dataset_id": "other data", "split": "other data",
                    "classes": "another subset of classes", "relabel": "other labels"}


class ShardReader:
    """Batches ``(x, y)`` (or ``x`` with ``label_mode=None``) of one split of a shard directory.

    Args:
        directory: a directory written by ``imgshard build``: a path, an fsspec URL, or a
            :class:`~imgshard.storage.Location` (a URL with its storage options).
        split: ``train``, ``val`` or ``test`` (whatever the manifest has).
        batch_size: samples per batch of this process (the global batch of a step is
            ``num_replicas * batch_size``); the last batch of an epoch is partial unless
            ``drop_remainder`` (with several processes it is topped up with repeats instead:
            see :mod:`imgshard.reader.order`).
        shuffle, seed: the partitioned, windowed shuffle of :mod:`imgshard.reader.order`, a new
            order every epoch.
        label_mode: ``"int"`` (int32), ``"categorical"`` (one-hot float32), ``"binary"``
            (float32 shaped (b, 1), two classes) or ``None`` (images only), as in Keras;
            ``"multi_hot"`` (float32 (b, classes): a multi-label dataset's labels, one-hot
            for a single-label one's), ``"targets"`` (float32 (b, k): the ``--targets``
            values), or a tuple of modes, served as a tuple (``("int", "targets")``: a
            multi-output model's ``y``).
        classes: serve only the samples of these classes (names of the manifest's
            ``class_names``; None: all); ``len()``, exactly-once epochs and the split between
            processes hold for them (see :mod:`imgshard.reader.subset`).
        relabel: serve a subset's labels as ``0..k-1`` in the order of ``classes``; False
            keeps the dataset's own (and categorical labels its width). ``class_names`` says
            the name of each served label.
        dtype: convert images to this dtype on the fly (default: the stored dtype). A uint8
            dataset read as a float dtype serves its manifest's ``pixel * rescale + offset``:
            what a float build of it stores (see :mod:`imgshard.reader.pixel_values`).
        raw_pixels: serve a uint8 dataset's stored 0..255 values cast to a float ``dtype``
            instead, as imgshard did before it applied them.
        augment: a callable applied to every batch of images, returning the new images.
        flip_horizontal: flip each image left-right with probability 1/2 (seeded per epoch).
        window: shards shuffled together inside each partition; a process has about
            ``partitions / num_replicas * window`` shards in use at once.
        num_replicas, rank: how many training processes share each epoch, and which one this
            is (each reads its own part of every global batch, all take the same number of
            steps); both None: found in the environment (JAX, ``TF_CONFIG``,
            ``WORLD_SIZE``/``RANK``; see :mod:`imgshard.reader.replicas`), else one process.
        partitions: the spans every global batch draws from; ``num_replicas`` must divide it,
            and a run can be resumed on any such count with the same global batch (keep it
            the same in every run). 1 is the leanest order for a single process.
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
                 flip_horizontal: bool = False, window: int = 1, prefetch: int = 2,
                 storage_options: dict[str, Any] | None = None, cache_dir: str | None = None,
                 cache_bytes: int = 10 * 1000**3, verify: bool = False,
                 num_replicas: int | None = None, rank: int | None = None,
                 partitions: int = DEFAULT_PARTITIONS,
                 classes: list[str] | tuple[str, ...] | None = None, relabel: bool = True,
                 raw_pixels: bool = False) -> None:
        location = directory if isinstance(directory, Location) \
            else Location.of(directory, storage_options)
        self.directory, self.location = str(location), location
        manifest_seen = location.file_identity(MANIFEST_NAME)
        self.manifest: Manifest = read_manifest(location)
        self.split = check_split(self.manifest, split, self.directory)
        self.served = served_classes(self.manifest, classes, relabel, label_mode)
        self.class_names: list[str] | None = self.served.class_names
        check_options(self.manifest, served_classes=self.served.count, batch_size=batch_size,
                      label_mode=label_mode, window=window, prefetch=prefetch, seed=seed,
                      verify=verify, cache_bytes=cache_bytes, shuffle=shuffle,
                      drop_remainder=drop_remainder, flip_horizontal=flip_horizontal,
                      augment=augment, raw_pixels=raw_pixels)
        # checked above; as Python numbers, so that state_dict() is plain JSON
        batch_size, seed, window, shuffle = int(batch_size), int(seed), int(window), bool(shuffle)
        self.num_replicas, self.rank = replicas_of(num_replicas, rank)
        self.partitions = check_partitions(partitions, self.num_replicas, shuffle)
        self.shards: list[ShardInfo] = self.manifest.splits[split].shards
        label_mode = label_mode if label_mode is None or isinstance(label_mode, str) \
            else tuple(label_mode)
        self.batch_size, self.seed, self.label_mode = batch_size, seed, label_mode
        self.dtype = served_dtype(dtype or self.manifest.dtype, self.manifest.dtype)
        self.window, self.prefetch, self.raw_pixels = window, prefetch, bool(raw_pixels)
        identities = self._files_seen(manifest_seen)
        self.order = EpochOrder.of([s.num_samples for s in self.shards], batch_size=batch_size,
                                   shuffle=shuffle, seed=seed, window=window,
                                   drop_remainder=drop_remainder, partitions=self.partitions,
                                   num_replicas=self.num_replicas, rank=self.rank,
                                   selected=self.served.served_samples(location, self.shards,
                                                                       identities))
        self.num_samples = self.order.num_samples
        self._check_count()
        check_memory(self, split)
        self.epoch, self._position = 0, 0
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._batches = self._batch_maker(flip_horizontal, augment)
        self._window = self._open_window(identities, verify=verify, cache_dir=cache_dir,
                                         cache_bytes=cache_bytes)

    def _batch_maker(self, flip_horizontal: bool, augment: Any) -> BatchMaker:
        """How this reader's batches are made; a uint8 dataset read as floats is served through
        its values (see :func:`served_values`: refused here if they do not fit the dtype)."""
        return BatchMaker(tuple(self.manifest.image_shape), self.dtype, self.label_mode,
                          self.served.width, flip_horizontal, augment, self.seed,
                          self.served.label_map,
                          served_values(self.manifest, self.dtype, self.raw_pixels))

    def _files_seen(self, manifest_seen: Any) -> dict[str, Any]:
        """The identity of each file of the split (see :func:`check_sizes`), once their sizes
        are checked, if the manifest is still the one read (so the files seen are its own)."""
        identities = check_sizes(self.location, self.manifest, self.shards)
        if self.location.file_identity(MANIFEST_NAME) != manifest_seen:
            raise ReaderError(f"{self.directory} changed while the reader opened it (a build is "
                              "writing it?): open it again when the build has finished")
        return identities

    def _open_window(self, identities: dict[str, Any], *, verify: bool, cache_dir: str | None,
                     cache_bytes: int) -> ShardWindow:
        """The maps of this split's shards, sized for the shards an epoch has in use at once."""
        in_use = self.order.shards_in_use(self.epoch_order(0))
        check_memory(self, self.split, in_use)  # now with the labels copied of those in use
        check_open_files(in_use)
        files = files_of(self.location, self.manifest, self.shards, identities, in_use=in_use,
                         cache_dir=cache_dir, cache_bytes=cache_bytes)
        return ShardWindow(self.location, self.manifest, self.shards, files,
                           size=max(in_use, 1), verify=verify)

    def _check_count(self) -> None:
        claimed, held = self.manifest.splits[self.split].num_samples, self.order.stored_samples
        if held != claimed:
            raise ReaderError(f"{self.location.display('manifest.json')}: splits.{self.split}."
                              f"num_samples says {claimed}, its shards hold {held} "
                              "(run imgshard verify)")

    @property
    def global_batch_size(self) -> int:
        """Samples of one step over all ``num_replicas`` processes."""
        return self.order.global_batch_size

    @property
    def cache(self) -> ShardCache | None:
        """The local cache a remote directory's files are downloaded into (None when local)."""
        return self._window.files.cache

    @property
    def bytes_mapped(self) -> int:
        """Bytes of shard files this reader has memory-mapped so far (a shard mapped again
        counts again): about ``1/num_replicas`` of the split's bytes per shuffled epoch."""
        return self._window.bytes_mapped

    # -- epochs and resumption -------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.order)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (from its start)."""
        self.epoch, self._position = whole(epoch, "epoch"), 0

    def state_dict(self) -> dict[str, Any]:
        """Where the job is: the epoch and the global steps taken from it, with what fixes the
        order of the epoch (any process's state; it loads into a reader of another
        ``num_replicas`` with the same global batch size)."""
        return {"epoch": self.epoch, "batches": self._position, "seed": self.seed,
                "global_batch_size": self.global_batch_size, "partitions": self.partitions,
                "window": self.window, "shuffle": self.order.shuffle,
                "num_samples": self.num_samples, "split": self.split,
                "dataset_id": self.manifest.dataset_id, **self.served.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken: no repeated or skipped sample,
        on this or another number of processes.

        Raises:
            ReaderError: ``state`` is not what :meth:`state_dict` returns for a reader with this
                one's data and order (dataset id, split, classes and relabel, seed, global batch
                size, partitions, window, shuffle, samples served; a state without one of these
                is not checked for it), an epoch >= 0, a batch count within the epoch; the
                reader is unchanged.
        """
        if not isinstance(state, dict) or not {"epoch", "batches"} <= state.keys():
            raise ReaderError(f"state must be a dict with epoch and batches, as state_dict() "
                              f"returns, got {repr(state)[:80]}")
        self.check_same_order(state)
        epoch = whole(state["epoch"], "state epoch")
        batches = whole(state["batches"], "state batches", high=len(self))
        self.epoch, self._position = epoch, batches

    def check_same_order(self, state: dict[str, Any]) -> None:
        """Refuse a state (from :meth:`state_dict`, with or without its position) of other data
        or another epoch order than this reader's; a key the state lacks is not checked."""
        if not isinstance(state, dict):
            raise ReaderError(f"state must be a dict, as state_dict() returns, got "
                              f"{repr(state)[:80]}")
        mine = self.state_dict()
        for key in ("dataset_id", "split", "classes", "relabel", "seed", "global_batch_size",
                    "partitions", "window", "shuffle", "num_samples"):
            if key in state and not same_value(state[key], mine[key]):
                why = STATE_MISMATCHES.get(key, "another epoch order")
                raise ReaderError(f"state was saved with {key} {repr(state[key])[:70]}, this "
                                  f"reader has {mine[key]!r} ({why})")

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global sample indices (shard by shard, row by row) in the order of ``epoch``."""
        return self.order.order(epoch)

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        epoch, start = self.epoch, self._position
        yield from served(self._produce(epoch, self.epoch_order(epoch), start), self.prefetch,
                          self._took_one)
        self.epoch, self._position = epoch + 1, 0
        self._window.release_all()

    def _took_one(self) -> None:
        self._position += 1

    def get_batch(self, epoch: int, index: int) -> Any:
        """Batch ``index`` of ``epoch``, by random access (what Keras' PyDataset asks for)."""
        if not is_whole_argument(index) or not 0 <= index < len(self):
            raise IndexError(f"batch {repr(index)[:40]} of {len(self)}")
        return self._batch(epoch, int(index), self._cached_order(whole(epoch, "epoch")))

    def _cached_order(self, epoch: int) -> np.ndarray:
        with self._window.lock:
            cached = self._order_cache
            if cached is None or cached[0] != epoch:
                cached = (epoch, self.epoch_order(epoch))
                self._order_cache = cached
                self._window.plan(self.order, cached[1])
            return cached[1]

    def _produce(self, epoch: int, order: np.ndarray, start: int) -> Iterator[Any]:
        self._window.plan(self.order, order)
        for index in range(start, len(self)):
            yield self._batch(epoch, index, order)

    def _batch(self, epoch: int, index: int, order: np.ndarray) -> Any:
        batch = self._batches.make(epoch, index, self.order.batch(order, index), self.order,
                                   self._window.shard, release=self._window.release_pages)
        self._window.finished(index)
        return batch

    def close(self) -> None:
        """Unmap every shard and stop downloading ahead (for a remote directory): a closed
        reader serves no more batches (a ReaderError), nor does a mix of it."""
        self._window.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- framework adapters ---------------------------------------------------------------

    def to_keras(self, *, workers: int = 2, use_multiprocessing: bool = False,
                 max_queue_size: int = 10):
        """A ``keras.utils.PyDataset`` over this reader that reshuffles every epoch.

        Two worker threads by default: Keras then prepares batches ahead while the model trains
        (with one worker it reads each batch between steps); reading releases the GIL.
        """
        from .keras import to_keras  # Keras is imported only when asked for

        return to_keras(self, workers=workers, use_multiprocessing=use_multiprocessing,
                        max_queue_size=max_queue_size)

    def to_tf_dataset(self):
        """A ``tf.data.Dataset`` of this reader's batches (one epoch per pass over it)."""
        return to_tf_dataset(self, image_shape=tuple(self.manifest.image_shape), dtype=self.dtype,
                             label_mode=self.label_mode,
                             num_classes=len(self.class_names or ()),
                             num_targets=len(self.manifest.target_names or ()))

