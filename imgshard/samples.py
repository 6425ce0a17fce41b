"""A source's samples split into train and val, and put in the order they take in the shards.

Both are pure functions of the file paths, labels and seed: never of the file system's listing
order, of workers, or of the machine.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .config import BuildConfig

SPLIT_ORDER = ("train", "val", "test")


#: A sample's label: a class index, a multi-label dataset's sorted class indices, or None.
Label = int | tuple[int, ...] | None


@dataclass(frozen=True, slots=True)  # slots: the build holds one per input file
class Sample:
    """One input image: its path relative to SRC ('/'-separated), its label (None if none) and
    its numeric targets (with ``--targets``)."""

    path: str
    label: Label
    targets: tuple[float, ...] | None = None


def is_multi_label(samples: Iterable[Sample]) -> bool:
    """Whether the samples are a multi-label dataset's: their labels are tuples of class
    indices (the scan makes every label of a dataset one, or every label an index)."""
    return any(isinstance(sample.label, tuple) for sample in samples)


def split_and_order(splits: dict[str, list[Sample]], config: BuildConfig) -> dict[str, list[Sample]]:
    if config.val_split is not None and "val" not in splits:
        samples = splits.get("train", [])
        hold = hold_out_multi if is_multi_label(samples) else hold_out
        train, val = hold(samples, config.val_split, config.seed)
        splits = {**splits, "train": train, "val": val}
    return {name: order(splits[name], seed=config.seed, shuffle=config.shuffle)
            for name in SPLIT_ORDER if splits.get(name)}


def rank(seed: int, salt: str, path: str) -> bytes:
    """A file's seeded place among its class (``salt`` val) or split (``salt`` order)."""
    return hashlib.sha256(f"{seed}\0{salt}\0{path}".encode("utf-8", "surrogateescape")).digest()


def hold_out(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into (train, val), stratified by label.

    In every class of n samples, the ``min(floor(fraction * n + 0.5), n - 1)`` samples with the
    smallest ``sha256(f"{seed}\\0val\\0{path}")`` go to val. A file's side depends only on its own
    path, the seed and its class's size, never on listing order or workers.
    """
    by_label: dict[int | None, list[Sample]] = {}
    for sample in samples:
        by_label.setdefault(sample.label, []).append(sample)
    held: set[str] = set()
    for members in by_label.values():
        count = min(math.floor(fraction * len(members) + 0.5), len(members) - 1)
        ranked = sorted(members, key=lambda s: rank(seed, "val", s.path))
        held.update(s.path for s in ranked[:count])
    return ([s for s in samples if s.path not in held], [s for s in samples if s.path in held])


def hold_out_multi(samples: list[Sample], fraction: float, seed: int
                   ) -> tuple[list[Sample], list[Sample]]:
    """Split multi-labelled ``samples`` (labels: tuples of class indices) into (train, val).

    Each file is stratified by its rarest class (the one on fewest files; ties: the lower
    index), and each stratum of n files holds out up to ``min(floor(fraction * n + 0.5), n - 1)``
    of them, smallest ``sha256(f"{seed}\\0val\\0{path}")`` first, as :func:`hold_out` does for
    a class; a file is passed over when it holds the last training file of one of its classes,
    so that no class vanishes from training. Strata are taken in class order.
    """
    files_of: dict[int, int] = {}
    for sample in samples:
        for label in sample.label:
            files_of[label] = files_of.get(label, 0) + 1
    strata: dict[int, list[Sample]] = {}
    for sample in samples:
        rarest = min(sample.label, key=lambda label: (files_of[label], label))
        strata.setdefault(rarest, []).append(sample)
    in_train, held = dict(files_of), set()
    for stratum in sorted(strata):
        members = strata[stratum]
        count = min(math.floor(fraction * len(members) + 0.5), len(members) - 1)
        for sample in sorted(members, key=lambda s: rank(seed, "val", s.path)):
            if count == 0:
                break
            if all(in_train[label] > 1 for label in sample.label):
                held.add(sample.path)
                count -= 1
                for label in sample.label:
                    in_train[label] -= 1
    return ([s for s in samples if s.path not in held], [s for s in samples if s.path in held])


def order(samples: list[Sample], *, seed: int, shuffle: bool) -> list[Sample]:
    """The order samples take in a split's shards.

    Shuffled (default): by ``sha256(f"{seed}\\0order\\0{path}")``, so every shard holds a mix of
    classes and a reader's shard-window shuffle works well. Unshuffled: by (label, path).
    """
    if shuffle:
        return sorted(samples, key=lambda s: rank(seed, "order", s.path))
    return sorted(samples, key=lambda s: (_label_key(s.label), s.path))


def _label_key(label: Label) -> tuple[int, ...]:
    if label is None:
        return (-1,)
    return label if isinstance(label, tuple) else (label,)
