"""Assembling one batch: gather its samples from the mapped shards, cast (a uint8 dataset's
pixels read as floats: through its values, see :mod:`~imgshard.reader.pixel_values`), flip,
augment, and encode its labels as Keras expects them.

Every batch the reader allocates starts on a :data:`BATCH_ALIGNMENT` boundary, so that
TensorFlow takes it without a copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ShardError
from ..libc import drop_file_pages
from .checks import ReaderError
from .order import EpochOrder
from .pixel_values import PixelValues
from .widen import widen_rows

#: Where the data of every batch the reader allocates starts. TensorFlow takes a numpy array from
#: a generator (Keras' PyDataset path) without a realigning copy only when it is 64-byte aligned,
#: which numpy's own arrays (16) are not: through Keras' adapter a batch of 32 224x224 float16
#: images cost 5.1 ms of CPU aligned against 6.4 ms unaligned.
BATCH_ALIGNMENT = 64

#: Converted bytes of a batch from which half its rows are converted in a helper thread. The
#: conversion (OpenCV's and numpy's) lets go of the GIL, and the reading thread alone used one
#: of 2 cores: in alternating epochs with a core idle, float16 read as float32 went from 0.33x
#: to 0.76x of a copy of the float16 shards, uint8 as float16 from 0.65x to 0.98x (with no
#: core idle it gains nothing: docs/performance.md). A small batch is not worth the hand-over.
SPLIT_BYTES = 1 << 20

#: The helper thread's executor of each process id (see :func:`helper_thread`).
HELPERS: dict[int, ThreadPoolExecutor] = {}

#: A shard's memory maps: its images, its labels (None for unlabelled shards) and its targets
#: (None without).
MappedShard = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]


@dataclass(frozen=True)
class BatchMaker:
    """How a batch is made from the samples an :class:`~imgshard.reader.order.EpochOrder`
    chose for it.

    ``num_classes`` (the served labels' count) is None for unlabelled shards; ``label_mode``
    None serves images only, a tuple of modes a tuple of encodings. ``label_map``: the served
    label of each stored one (-1: a class not served), when the reader serves a subset of the
    classes. ``values``: the served value of each stored uint8 pixel, when a uint8 dataset is
    served as floats (None: a plain cast).
    """

    image_shape: tuple[int, ...]
    dtype: np.dtype
    label_mode: str | tuple[str, ...] | None
    num_classes: int | None
    flip_horizontal: bool
    augment: Callable[[np.ndarray], np.ndarray] | None
    seed: int
    label_map: np.ndarray | None = None
    values: PixelValues | None = None

    def make(self, epoch: int, index: int, chosen: np.ndarray, order: EpochOrder,
             shard: Callable[[int], MappedShard], *, release: bool = False) -> Any:
        """Batch ``index`` of ``epoch``, of the samples ``chosen`` (global indices), read
        through ``shard`` (a shard's index -> its maps): ``(x, y)``, or ``x`` without labels.
        ``release``: hand back the pages of the rows read (see :func:`release_rows`)."""
        images, labels, targets = self.gather(chosen, order, shard, release=release)
        if self.flip_horizontal:
            flips = np.random.default_rng([self.seed, epoch, index, 1]).random(len(chosen)) < 0.5
            images = aligned_copy(images, images.dtype) if not images.flags.writeable else images
            images[flips] = images[flips, :, ::-1]
        if self.augment is not None:
            images = self.augment(images)
        if self.label_mode is None:
            return images
        if isinstance(self.label_mode, str):
            return images, self.encode(self.label_mode, labels, targets)
        return images, tuple(self.encode(mode, labels, targets) for mode in self.label_mode)

    def encode(self, mode: str, labels: np.ndarray | None, targets: np.ndarray | None
               ) -> np.ndarray:
        """A batch's ``labels`` (or ``targets``) as the label mode ``mode`` serves them."""
        if mode == "targets":
            return targets
        if mode == "multi_hot" and labels is not None and labels.ndim == 2:
            return labels.astype(np.float32)
        return encode_labels(self.served_labels(labels),
                             "categorical" if mode == "multi_hot" else mode, self.num_classes)

    def served_labels(self, labels: np.ndarray | None) -> np.ndarray | None:
        """The stored ``labels`` as served (a subset's relabelled)."""
        if self.label_map is None or labels is None:
            return labels
        served = self.label_map[labels]
        if len(served) and served.min() < 0:  # the order chose these samples by their labels
            raise ShardError("a label file changed since the reader read it (it now gives a "
                             "served sample a class not served): open the directory again")
        return served

    def gather(self, chosen: np.ndarray, order: EpochOrder, shard: Callable[[int], MappedShard],
               *, release: bool = False
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Read the samples ``chosen`` (global indices), copying each one once, into the batch;
        with their labels and targets.

        Inside a batch the samples are taken in stored order (shard by shard, row by row): the
        batch's membership is what the shuffle decides, and reading in file order lets one
        ``np.take`` per shard write straight into the batch.
        """
        chosen = np.sort(chosen)
        shard_of = order.shard_of(chosen)
        rows = chosen - order.starts[shard_of]
        if shard_of[0] == shard_of[-1] and rows[-1] - rows[0] == len(rows) - 1:
            images, labels, targets = shard(int(shard_of[0]))
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            return (self.served_rows(images, lo, hi), None if labels is None else labels[lo:hi],
                    None if targets is None else targets[lo:hi])
        batch = aligned_empty((len(chosen), *self.image_shape), self.dtype)
        label_parts, target_parts = [], []
        bounds = np.flatnonzero(np.diff(shard_of)) + 1
        converted, read = [], []  # rows served in another dtype, straight from the map; spans
        for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(chosen)]])):
            images, labels, targets = shard(int(shard_of[lo]))
            if images.dtype == self.dtype:
                # mode="clip": the rows are in range, and numpy's default "raise" would copy
                # every row twice (it buffers ``out``), which made the gather 4x slower
                np.take(images, rows[lo:hi], axis=0, out=batch[lo:hi], mode="clip")
            else:
                converted += zip((images[row] for row in rows[lo:hi]), batch[lo:hi])
            if release:  # once its rows are copied or converted, below
                read.append((images, int(rows[lo]), int(rows[hi - 1]) + 1))
            if labels is not None:
                label_parts.append(labels[rows[lo:hi]])
            if targets is not None:
                target_parts.append(targets[rows[lo:hi]])
        if converted:
            self.convert_rows(converted)
        for images, first, stop in read:
            release_rows(images, first, stop)
        return (batch, np.concatenate(label_parts) if label_parts else None,
                np.concatenate(target_parts) if target_parts else None)

    def convert_rows(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Write each stored row of ``rows`` into its batch row in the served dtype: a uint8
        dataset's through its values, else a cast (float16 -> float32: :func:`widen_rows`);
        half of a batch of :data:`SPLIT_BYTES` or more in a helper thread."""
        convert = widen_rows if self.values is None else self.values.lookup_rows
        half = len(rows) // 2
        if not half or sum(out.nbytes for _, out in rows) < SPLIT_BYTES:
            convert(rows)
            return
        other = helper_thread(os.getpid()).submit(convert, rows[half:])
        try:
            convert(rows[:half])
        finally:
            other.result()

    def served_rows(self, images: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of a shard's map as served: the map itself (no copy) when it holds
        the served dtype and is aligned, else a new batch (cast, or a uint8 dataset's values)."""
        batch = np.asarray(images[lo:hi])  # a view of the map, no copy
        if self.values is not None or batch.dtype != self.dtype \
                or batch.ctypes.data % BATCH_ALIGNMENT:
            served = aligned_empty(batch.shape, self.dtype)
            self.convert_rows(list(zip(batch, served)))
            return served
        return batch


def helper_thread(process: int) -> ThreadPoolExecutor:
    """The thread that converts half of each large batch's rows, one per ``process`` id (a
    forked child inherits its parent's executor but not its thread).

    Threads asking first at once (Keras' workers) all get the executor kept: ``setdefault`` is
    atomic, and an executor starts no thread until given work (``functools.cache`` returned
    each its own, whose thread then idled until exit). No lock: a child forked while another
    thread held it would wait for it forever."""
    executor = HELPERS.get(process)
    if executor is None:
        executor = HELPERS.setdefault(process, ThreadPoolExecutor(
            1, thread_name_prefix=f"imgshard-convert-{process}"))
    return executor


def release_rows(images: np.ndarray, first: int, stop: int) -> None:
    """Hand back the resident pages of rows ``first:stop`` of a read-only file map, once they
    are copied into a batch: an epoch reads each row once, and a process reading many
    partitions has many shards mapped at once, whose read pages would otherwise stay resident
    until the shard is unmapped. The file's pages stay in the page cache, but the next epoch
    faults them in again (a tenth of the epoch's time on 450 MB), so the reader asks for this
    only when its shards in use would hold more than ``window.RESIDENT_BYTES``."""
    if isinstance(images, np.memmap) and images.mode == "r" and len(images):
        row = images[0].nbytes
        drop_file_pages(images.ctypes.data + first * row, (stop - first) * row)


def encode_labels(labels: np.ndarray | None, label_mode: str,
                  num_classes: int | None) -> np.ndarray:
    """Class indices as Keras' ``label_mode`` has them: int32 indices (``"int"``), one-hot
    float32 (``"categorical"``) or float32 of shape (b, 1) (``"binary"``)."""
    if labels is None:
        raise ReaderError("these shards have no labels (built with --no-labels): "
                          "use label_mode=None")
    if label_mode == "categorical":  # not np.eye(classes)[labels]: classes squared
        one_hot = np.zeros((len(labels), num_classes), dtype=np.float32)
        one_hot[np.arange(len(labels)), labels] = 1
        return one_hot
    if label_mode == "binary":
        return labels.astype(np.float32)[:, np.newaxis]
    return labels


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
