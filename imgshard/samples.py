"""A source's samples split into train and val, and put in the order they take in the shards.

Both are pure functions of the file paths, labels and seed: never of the file system's listing
order, of workers, or of the machine.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from .config import BuildConfig

SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True, slots=True)  # slots: the build holds one per input file
class Sample:
    """One input image: its path relative to SRC ('/'-separated) and its label (None if none)."""

    path: str
    label: int | None


def split_and_order(splits: dict[str, list[Sample]], config: BuildConfig) -> dict[str, list[Sample]]:
    if config.val_split is not None and "val" not in splits:
        train, val = hold_out(splits.get("train", []), config.val_split, config.seed)
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


def order(samples: list[Sample], *, seed: int, shuffle: bool) -> list[Sample]:
    """The order samples take in a split's shards.

    Shuffled (default): by ``sha256(f"{seed}\\0order\\0{path}")``, so every shard holds a mix of
    classes and a reader's shard-window shuffle works well. Unshuffled: by (label, path).
    """
    if shuffle:
        return sorted(samples, key=lambda s: rank(seed, "order", s.path))
    return sorted(samples, key=lambda s: (-1 if s.label is None else s.label, s.path))
