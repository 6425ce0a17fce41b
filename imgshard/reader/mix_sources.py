"""The sources of a mix (:mod:`imgshard.reader.mixing`): readers whose batches are
interchangeable, their weights, and their labels remapped to the union of their classes
(the union and the table of ``imgshard merge``: :mod:`imgshard.merge_plan`).

Readers and weights come from user code; anything that cannot be mixed is one
:class:`ReaderError` line naming the reader and the first difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..merge_plan import label_table
from .checks import ReaderError
from .pixel_values import describe
from .shard_reader import ShardReader


def check_readers(readers: Any) -> list[ShardReader]:
    """``readers`` as a list, if each is a distinct :class:`ShardReader` and all serve
    batches alike (see :func:`served`)."""
    if not isinstance(readers, (list, tuple)) or not readers:
        raise ReaderError(f"mix takes a list of ShardReader objects, got {repr(readers)[:60]}")
    for number, reader in enumerate(readers):
        if not isinstance(reader, ShardReader):
            raise ReaderError(f"reader {number} is not a ShardReader: {repr(reader)[:60]}")
        twin = next(i for i, other in enumerate(readers) if other is reader)
        if twin != number:  # it would serve the same batches twice as two sources
            raise ReaderError(f"reader {number} is reader {twin}: give each reader once, and "
                              "more weight to read it more")
    if readers[0].label_mode not in ("int", "categorical", "binary", None):
        raise ReaderError(f"mix serves label_mode 'int', 'categorical', 'binary' or None, not "
                          f"{readers[0].label_mode!r} (not yet)")
    first = served(readers[0])
    for number, reader in enumerate(readers[1:], start=1):
        for (what, value), expected in zip(served(reader).items(), first.values()):
            if value != expected:
                raise ReaderError(f"reader {number} serves {what} {value}, reader 0 {expected}: "
                                  f"the readers of a mix must serve the same {what}")
    check_binary_classes(readers)
    return list(readers)


def served(reader: ShardReader) -> dict[str, str]:
    """What must be alike in every reader of a mix, as it is shown: the batches' shape, dtype,
    label encoding and size, the process count and rank they are cut for, and what a served
    pixel value is (a uint8 dataset read as floats mixes with a float one of the same scale)."""
    return {"image shape": str(tuple(reader.manifest.image_shape)), "dtype": str(reader.dtype),
            "label_mode": repr(reader.label_mode), "batch_size": str(reader.batch_size),
            "num_replicas": str(reader.num_replicas), "rank": str(reader.rank),
            "pixel values": describe(reader.manifest, reader.dtype, reader.raw_pixels)}


def check_binary_classes(readers: Sequence[ShardReader]) -> None:
    """With ``label_mode="binary"``, refuse readers of other pairs of classes (a union of more
    than two is no binary label)."""
    if readers[0].label_mode != "binary":
        return
    first = sorted(readers[0].class_names)
    for number, reader in enumerate(readers[1:], start=1):
        names = sorted(reader.class_names)
        if names != first:
            raise ReaderError(f"label_mode='binary' needs the same 2 classes in every reader: "
                              f"reader {number} has {names}, reader 0 {first}")


def check_weights(weights: Any, count: int) -> list[float]:
    """``weights`` as floats: one finite number >= 0 per reader, not all 0 (None: all 1)."""
    if weights is None:
        return [1.0] * count
    if isinstance(weights, np.ndarray) and weights.ndim == 1:
        weights = weights.tolist()
    if not isinstance(weights, (list, tuple)) or len(weights) != count:
        raise ReaderError(f"weights must be one number per reader ({count}), got "
                          f"{repr(weights)[:60]}")
    values = [as_weight(weight) for weight in weights]
    if not any(values):
        raise ReaderError("weights are all 0: no reader would supply a batch")
    return values


def as_weight(weight: Any) -> float:
    """One weight as a float, if it is a finite number >= 0 (not a bool, not text)."""
    number = None
    if isinstance(weight, (int, float, np.integer, np.floating)) \
            and not isinstance(weight, (bool, np.bool_)):
        try:
            number = float(weight)
        except OverflowError:  # an int beyond any float
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise ReaderError(f"weights must be finite numbers >= 0, got {repr(weight)[:40]}")
    return number


@dataclass(frozen=True, eq=False)
class LabelTable:
    """A reader's labels as indices into the union of the mix's classes (``table`` is None when
    they are already: the same classes in the same order)."""

    label_mode: str | None
    table: np.ndarray | None
    width: int

    @classmethod
    def of(cls, names: list[str] | None, union: list[str] | None,
           label_mode: str | None) -> LabelTable:
        if label_mode is None or names == union:
            return cls(label_mode, None, len(union or ()))
        return cls(label_mode, label_table(names, union), len(union))

    def apply(self, batch: Any) -> Any:
        """``batch`` (images, or images and labels as the reader encodes them) with its labels
        in the union."""
        if self.table is None:
            return batch
        images, labels = batch
        if self.label_mode == "int":
            return images, self.table[labels]
        if self.label_mode == "binary":
            return images, self.table[labels[:, 0].astype(np.int64)].astype(np.float32)[:, None]
        one_hot = np.zeros((len(labels), self.width), dtype=np.float32)
        one_hot[:, self.table] = labels
        return images, one_hot
