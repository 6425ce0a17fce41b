"""A subset of a dataset's classes, read alone: which names are served and as which labels, and
which samples of a split belong to them.

The samples are found from the split's label files, read whole before the first epoch (4 bytes
a sample; a URL's are downloaded), each checked against its sha256 and the class count: an
epoch's order (:mod:`imgshard.reader.order`) is then a pure function of the selection, as it is
of the shard sizes, so ``len()``, exactly-once epochs and the split between processes hold for
the subset as for the whole split, and a shard holding none of its samples is never mapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MissingShardError, ShardError
from ..formats import check_labels, shard_format
from ..manifest import Manifest, ShardInfo
from ..storage import Location
from .checks import ReaderError

#: Known class names an error about an unknown one lists.
NAMES_SHOWN = 5


@dataclass(frozen=True)
class ServedClasses:
    """The classes a reader serves: all of the dataset's ``dataset_names`` (``names`` None), or
    the subset ``names``, served as labels ``0..k-1`` in that order with ``relabel``, else as
    their own indices."""

    dataset_names: tuple[str, ...] | None
    names: tuple[str, ...] | None = None
    relabel: bool = True

    @property
    def class_names(self) -> list[str] | None:
        """The name of each served label (None: the shards have no labels)."""
        served = self.names if self.names is not None and self.relabel else self.dataset_names
        return None if served is None else list(served)

    @property
    def count(self) -> int | None:
        """How many classes are served."""
        served = self.dataset_names if self.names is None else self.names
        return None if served is None else len(served)

    @property
    def width(self) -> int | None:
        """How many labels there are (the columns of a categorical label)."""
        return None if self.class_names is None else len(self.class_names)

    @property
    def indices(self) -> tuple[int, ...]:
        """The dataset's index of each class of the subset."""
        return tuple(self.dataset_names.index(name) for name in self.names or ())

    @property
    def label_map(self) -> np.ndarray | None:
        """The served label of each dataset class index (-1: a class not served); None when
        every class is served as stored."""
        if self.names is None:
            return None
        served = np.full(len(self.dataset_names), -1, dtype=np.int32)
        served[list(self.indices)] = np.arange(len(self.names)) if self.relabel else self.indices
        return served

    def state(self) -> dict[str, Any]:
        """What a reader's state records of the classes it serves."""
        subset = self.names is not None
        return {"classes": list(self.names) if subset else None,
                "relabel": self.relabel if subset else None}

    def served_samples(self, location: Location, shards: list[ShardInfo],
                       identities: dict[str, Any]) -> np.ndarray | None:
        """The global indices (stored order) of the split's samples of the subset (None: all
        samples are served)."""
        label_map = self.label_map
        if label_map is None:
            return None
        served, start = [], 0
        for info in shards:
            labels = read_labels(location, info, identities.get(info.labels), len(label_map))
            served.append(start + np.flatnonzero(label_map[labels] >= 0))
            start += info.num_samples
        selected = np.concatenate(served).astype(np.int64) if served else np.empty(0, np.int64)
        if not len(selected):
            raise ReaderError(f"the split holds no sample of the classes {list(self.names)} "
                              "(an epoch would serve nothing)")
        return selected


def served_classes(manifest: Manifest, classes: Any, relabel: Any,
                   label_mode: Any) -> ServedClasses:
    """The classes a reader serves: the subset ``classes`` of the manifest's (None: all).

    Raises:
        ReaderError: ``classes`` is not a non-empty list of distinct names of the dataset's
            classes, the dataset has no labels, ``relabel`` is no bool, or ``label_mode`` is
            binary without 2 served classes (whose labels are 0 and 1).
    """
    if not isinstance(relabel, (bool, np.bool_)):
        raise ReaderError(f"relabel must be True or False, got {repr(relabel)[:40]}")
    known = manifest.class_names
    if classes is None:
        return ServedClasses(None if known is None else tuple(known))
    if known is None:
        raise ReaderError("classes needs labels, and these shards have none (built with "
                          "--no-labels)")
    if manifest.label_kind == "multi":
        raise ReaderError("classes: a subset of the classes of a multi-label dataset is not "
                          "served yet (an image may carry classes in and out of the subset)")
    names = _names(classes)
    for name in names:
        if name not in known:
            shown = ", ".join(known[:NAMES_SHOWN]) + (
                f", ... ({len(known)} in all)" if len(known) > NAMES_SHOWN else "")
            raise ReaderError(f"class {name!r} of classes is not in the dataset (its classes: "
                              f"{shown})")
    subset = ServedClasses(tuple(known), names, bool(relabel))
    modes = label_mode if isinstance(label_mode, (tuple, list)) else (label_mode,)
    if any(isinstance(mode, str) and mode == "binary" for mode in modes):  # alone or in a tuple
        _check_binary(subset)
    return subset


def _names(classes: Any) -> tuple[str, ...]:
    """``classes`` as a tuple of distinct class names, refused in one line if it is not."""
    if not isinstance(classes, (list, tuple)):
        raise ReaderError(f"classes must be a list of class names, got {repr(classes)[:60]}")
    if not classes:
        raise ReaderError("classes must name at least one class (None: all of them)")
    names: list[str] = []
    for name in classes:
        if not isinstance(name, str):
            raise ReaderError(f"classes must be class names (str), got {repr(name)[:40]}")
        name = str.__str__(name)  # a plain str: a subclass's __eq__ or __hash__ is not trusted
        if name in names:
            raise ReaderError(f"class {name!r} is named twice in classes")
        names.append(name)
    return tuple(names)


def _check_binary(subset: ServedClasses) -> None:
    if len(subset.names) != 2:
        raise ReaderError(f"label_mode='binary' needs 2 classes, classes names "
                          f"{len(subset.names)}")
    if not subset.relabel and set(subset.indices) != {0, 1}:
        raise ReaderError(f"label_mode='binary' with relabel=False serves the classes' own "
                          f"labels {list(subset.indices)}, not 0 and 1: pass relabel=True")


def read_labels(location: Location, info: ShardInfo, identity: Any,
                num_classes: int) -> np.ndarray:
    """The labels of shard ``info``, read whole and checked against the manifest (sha256, row
    count, and every label a class).

    Raises:
        ShardError: naming the label file: missing, corrupt, or not what the manifest says.
    """
    name = info.labels
    if name is None:
        raise ShardError(f"{location.display(info.images)}: its shard has no label file, its "
                         "dataset has classes (run imgshard verify)")
    try:
        with location.local_copy(name) as path:
            try:
                labels = np.array(shard_format().open_shard(
                    path, shape=(info.num_samples,), dtype="int32", sha256=info.labels_sha256,
                    identity=identity))
            except ShardError as error:  # named as the user knows it, not as a download
                raise type(error)(str(error).replace(path, location.display(name))) from None
    except FileNotFoundError:
        raise MissingShardError(f"{location.display(name)}: shard file is missing") from None
    check_labels(location.display(name), labels, num_classes)
    return labels
