"""What a :class:`~imgshard.reader.ShardReader` checks before it serves a batch: its options,
a saved state, that every listed file's size holds the rows the manifest claims (and which file
it is), and that its split fits in memory.

Options and states come from user code (maybe from a checkpoint file), counts from a manifest
anyone may have written; a wrong type or range is one :class:`ReaderError` line naming the
option, never a TypeError deep inside numpy, and nothing is allocated from a count before it is
known to fit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ImgshardError, MissingShardError, ShardError
from ..formats import shard_format
from ..manifest import Manifest, ShardInfo
from ..resources import available_memory
from ..storage import Location
from ..values import is_whole_argument
from .order import MAX_PARTITIONS

if TYPE_CHECKING:
    from . import ShardReader

#: The encodings of a dataset's classes a reader serves.
CLASS_MODES = ("int", "categorical", "binary", "multi_hot")
#: Every label mode: the classes', a dataset's numeric targets, or nothing (images alone).
LABEL_MODES = (*CLASS_MODES, "targets", None)

#: Bytes the reader holds per sample of its split at most: an epoch's order at its peak (the
#: int64 indices of the epoch being made and of the epoch before, kept by ``get_batch``; the
#: temporaries of one partition, all of the split with ``partitions=1``; the sorts that find the
#: shards in use) and the int32 labels of the shards mapped.
ORDER_BYTES_PER_SAMPLE = 64


class ReaderError(ImgshardError):
    """The reader cannot serve this directory, split or option."""


def check_options(manifest: Manifest, *, served_classes: int | None, batch_size: Any,
                  label_mode: Any, window: Any, prefetch: Any, seed: Any, verify: Any,
                  cache_bytes: Any, shuffle: Any, drop_remainder: Any, flip_horizontal: Any,
                  augment: Any, raw_pixels: Any = False) -> None:
    """Refuse a reader option of the wrong type or range, or a label mode the shards cannot
    serve (a switch given ``"no"`` would mean yes); the reader serves ``served_classes``."""
    whole(batch_size, "batch_size", low=1)
    for mode in label_modes(label_mode):
        check_label_mode(manifest, mode, served_classes)
    whole(window, "window", low=1)
    whole(prefetch, "prefetch")
    whole(seed, "seed")
    whole(cache_bytes, "cache_bytes")
    switches = {"shuffle": shuffle, "drop_remainder": drop_remainder,
                "flip_horizontal": flip_horizontal, "verify": verify, "raw_pixels": raw_pixels}
    for name, value in switches.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ReaderError(f"{name} must be True or False, got {repr(value)[:40]}")
    if augment is not None and not callable(augment):
        raise ReaderError(f"augment must be a callable (batch -> batch), got {repr(augment)[:40]}")


def label_modes(label_mode: Any) -> tuple[str, ...]:
    """The encodings ``label_mode`` asks for: none (None), one (a name), or several (a tuple or
    list of distinct names, served as a tuple of arrays: a multi-output model's ``y``).

    Raises:
        ReaderError: anything else.
    """
    if label_mode is None:
        return ()
    modes = tuple(label_mode) if isinstance(label_mode, (tuple, list)) else (label_mode,)
    named = ", ".join(repr(mode) for mode in LABEL_MODES[:-1])
    if not modes or not all(isinstance(mode, str) and mode in LABEL_MODES for mode in modes):
        raise ReaderError(f"label_mode must be one of {named}, None, or a tuple of them, got "
                          f"{repr(label_mode)[:60]}")
    if len(set(modes)) != len(modes):
        raise ReaderError(f"label_mode names a mode twice: {repr(label_mode)[:60]}")
    return modes


def check_label_mode(manifest: Manifest, mode: str, served_classes: int | None) -> None:
    """Refuse a label mode the shards cannot serve, saying which one they can."""
    if mode == "targets":
        if manifest.target_names is None:
            raise ReaderError("label_mode 'targets': these shards have no targets (build "
                              "with --targets FILE.csv)")
        return
    if manifest.class_names is None:
        instead = "'targets' for their targets" if manifest.target_names else "None"
        raise ReaderError(f"these shards have no labels (built with --no-labels): use "
                          f"label_mode={instead}")
    if manifest.label_kind == "multi" and mode != "multi_hot":
        raise ReaderError(f"label_mode {mode!r}: this dataset is multi-label (several classes "
                          "an image): use label_mode='multi_hot'")
    if mode == "binary" and served_classes != 2:
        raise ReaderError(f"label_mode='binary' needs 2 classes, the shards have "
                          f"{served_classes}")


def check_split(manifest: Manifest, split: Any, directory: str) -> str:
    """``split``, if the manifest has it."""
    if not isinstance(split, str) or split not in manifest.splits:
        known = ", ".join(manifest.splits)
        raise ReaderError(f"split {split!r} is not in {directory} (it has: {known})")
    return split


def check_partitions(partitions: Any, num_replicas: int, shuffle: bool) -> int:
    """``partitions`` as an int, if ``num_replicas`` divides it (a shuffled epoch gives each
    process whole partitions; an unshuffled one has none)."""
    partitions = whole(partitions, "partitions", low=1, high=MAX_PARTITIONS)
    if shuffle and partitions % num_replicas:
        multiple = partitions * num_replicas // math.gcd(partitions, num_replicas)
        raise ReaderError(f"num_replicas={num_replicas} must divide partitions={partitions}, "
                          "so that every process count that divides it reads the same global "
                          f"batches: pass partitions={multiple} (or another multiple of "
                          f"{num_replicas}), the same in every run")
    return partitions


def whole(value: Any, name: str, *, low: int = 0, high: int | None = None) -> int:
    """``value`` as an int, if it is a whole number in ``[low, high]``; else a ReaderError."""
    if not is_whole_argument(value) or value < low or (high is not None and value > high):
        within = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ReaderError(f"{name} must be a whole number {within}, got {repr(value)[:40]}")
    return int(value)


def served_dtype(dtype: Any, stored: str) -> np.dtype:
    """The dtype batches are served in: numbers only (no objects, text or records), and one
    that holds every stored value (float pixels in [0, 1] cast to an integer would be 0 or 1)."""
    try:
        served = np.dtype(dtype)
    except (TypeError, ValueError):
        served = None
    if served is None or served.kind not in "fiu":
        raise ReaderError(f"dtype must be a numeric dtype such as float32, got "
                          f"{repr(dtype)[:40]}")
    narrower_float = served.kind == "f" and np.dtype(stored).kind == "f"  # float32 -> float16
    if not (np.can_cast(stored, served, casting="safe") or narrower_float):
        raise ReaderError(f"dtype {served} cannot hold the stored {stored} values (choose a float "
                          "dtype such as float32)")
    return served


#: File descriptors kept free for everything else a training process opens.
SPARE_FILES = 64


def check_open_files(in_use: int) -> None:
    """Make room for the files of ``in_use`` shards mapped at once (images and labels: each map
    holds its file open): raise this process's soft limit on open files up to its hard limit
    if need be, else refuse in one line, rather than fail mid-epoch with "Too many open files"
    on whichever shard comes next."""
    import resource

    needed = 2 * in_use + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    if hard == resource.RLIM_INFINITY or needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    raise ReaderError(f"{in_use} shards in use at once need {needed} open files, more than "
                      f"this process may open ({hard}, ulimit -n): lower window or partitions, "
                      "or raise the limit")


def check_memory(reader: "ShardReader", split: str, in_use: int = 0) -> None:
    """Refuse a split whose epoch order and batches in flight (and the copies of the multi-hot
    labels and targets of the ``in_use`` shards mapped at once) cannot fit in this machine's
    memory, before any is allocated: the counts come from a manifest (and sparse files can back
    any count), and a failed allocation would be a MemoryError or the OOM killer."""
    manifest = reader.manifest
    labels = 4 * (len(reader.class_names or ()) + len(manifest.target_names or ()) + 1)
    sample = math.prod(manifest.image_shape) * reader.dtype.itemsize + labels
    copies = in_use * max((copied_bytes(manifest, info) for info in reader.shards), default=0)
    needed = (ORDER_BYTES_PER_SAMPLE * reader.num_samples + copies
              + (reader.prefetch + 2) * reader.batch_size * sample)
    available = available_memory()
    if available is not None and needed > available:
        held = f", the labels and targets of {in_use} shards in use" if copies else ""
        raise ReaderError(f"split {split} of {reader.num_samples:,} samples needs about "
                          f"{needed / 1e9:,.1f} GB of memory (its epoch order{held} and "
                          f"{reader.prefetch + 2} batches of {reader.batch_size}), but this "
                          f"machine has {available / 1e9:,.1f} GB available")


def copied_bytes(manifest: Manifest, info: ShardInfo) -> int:
    """Bytes of a mapped shard's multi-hot labels and targets, which a reader copies (its int32
    labels are counted in :data:`ORDER_BYTES_PER_SAMPLE`)."""
    labels = info.num_samples * (manifest.num_classes or 0) if (
        info.labels is not None and manifest.label_kind == "multi") else 0
    targets = 4 * math.prod(manifest.targets_layout(info.num_samples)[0]) if info.targets else 0
    return labels + targets


def shard_bytes(manifest: Manifest, info: ShardInfo) -> int:
    """Bytes of a shard's files (images, labels and targets), from the manifest alone."""
    pixels = info.num_samples * math.prod(manifest.image_shape) * np.dtype(manifest.dtype).itemsize
    labels = math.prod(manifest.labels_layout(info.num_samples)[0]) * (
        1 if manifest.label_kind == "multi" else 4)
    targets = 4 * math.prod(manifest.targets_layout(info.num_samples)[0])
    files = 2 + (info.targets is not None)  # images and labels (as ever), targets
    return pixels + labels + targets + files * shard_format().ESTIMATED_HEADER_BYTES


def check_sizes(location: Location, manifest: Manifest,
                shards: list[ShardInfo]) -> dict[str, tuple[int, int, int, int] | None]:
    """Refuse any file of ``shards`` whose size cannot hold the rows the manifest claims, before
    an epoch's order (8 bytes a sample) or a download is sized by those claims.

    Files are looked at without being opened (see :meth:`Location.file_stats`). Returns each
    file's identity: a file mapped later must be the one seen now, not one of a build that has
    overwritten the directory since (same names, same sizes).
    """
    expected = []  # (name, shape, dtype) of every file, in the manifest's order
    for info in shards:
        expected.append((info.images, (info.num_samples, *manifest.image_shape), manifest.dtype))
        if info.labels is not None:
            expected.append((info.labels, *manifest.labels_layout(info.num_samples)))
        if info.targets is not None:
            expected.append((info.targets, *manifest.targets_layout(info.num_samples)))
    identities = {}
    stats = location.file_stats([name for name, _, _ in expected])
    file_format = shard_format()
    for (name, shape, dtype), (_, size, identity) in zip(expected, stats):
        try:
            file_format.check_size(location.display(name), size, shape=shape, dtype=dtype)
        except ShardError:
            _explain_size(location, name, size, shape, dtype)
            raise
        identities[name] = identity
    return identities


def _explain_size(location: Location, name: str, size: int, shape: tuple[int, ...],
                  dtype: str) -> None:
    """Say from its header what is wrong with the file ``name`` of the wrong ``size``.

    Raises:
        ShardError: its header says what is wrong, or it is gone since its size was looked at.
    """
    try:
        with location.open_listed(name) as stream:
            shard_format().check_stream(location.display(name), stream, size, shape=shape,
                                        dtype=dtype)
    except FileNotFoundError:
        raise MissingShardError(f"{location.display(name)}: shard file is missing") from None
