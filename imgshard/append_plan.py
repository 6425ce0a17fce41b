"""What ``imgshard append`` adds to a dataset: its new files, their splits and labels, decided
before a pixel is decoded, without moving anything the dataset already holds.

Pure functions of the dataset's manifest, the paths (and labels) it holds, the record of its
source files, and a fresh scan of SRC with the dataset's own config:

- **new files** are the scan's files (samples and skips) whose path the dataset does not hold;
- **changed** files (another size or modification time than the record says, or another label
  in the labels file) and **disappeared** ones are reported, and left as they are;
- **splits**: a pre-split source's new files go to their folder's split. With ``val_split``,
  in every class of ``n`` files a fresh build holds out ``c(n) = min(floor(f*n + 1/2), n - 1)``
  (:func:`imgshard.samples.hold_out`); ``c`` never decreases as ``n`` grows, so giving val the
  ``c(n_old + n_new) - val_old`` new files that rank first by the same seeded hash makes the
  class's val count exactly a fresh build's, while no old file changes side;
- **classes** new to the dataset get the next label indices, in sorted order, after the old
  ones (an old label never changes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import BuildConfig
from .manifest import Manifest, Skip
from .samples import Sample, order, rank
from .scan import ScanResult

#: How many example paths a report keeps.
EXAMPLES = 10


@dataclass
class Report:
    """Old files that are no longer what the dataset holds: how many, and a few paths."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, path: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(path)

    def to_json(self) -> dict:
        return {"count": self.count, "examples": self.examples}


@dataclass(frozen=True)
class AppendPlan:
    """The new samples of each split, in shard order, with labels in ``class_names``'
    numbering; the new skips; and what changed among the old files."""

    class_names: list[str] | None
    new_classes: list[str]
    splits: dict[str, list[Sample]]
    skipped: list[Skip]
    changed: Report | None  # None: the dataset keeps no record of its sources
    disappeared: Report

    @property
    def num_samples(self) -> int:
        return sum(len(samples) for samples in self.splits.values())


def extended_classes(old: list[str] | None, found: list[str] | None) -> list[str] | None:
    """The old class names, then the scan's new ones in the scan's (sorted) order."""
    if old is None:
        return None
    known = set(old)
    return list(old) + [name for name in found or () if name not in known]


def val_quota(fraction: float, total: int) -> int:
    """How many of a class of ``total`` files a fresh build holds out as val."""
    return min(math.floor(fraction * total + 0.5), total - 1) if total else 0


def held_out_new(new: list[Sample], *, old_total: int, old_val: int, fraction: float,
                 seed: int) -> set[str]:
    """The paths of ``new`` (one class's new files) that join val."""
    wanted = max(0, val_quota(fraction, old_total + len(new)) - old_val)
    ranked = sorted(new, key=lambda s: rank(seed, "val", s.path))
    return {s.path for s in ranked[:wanted]}


def new_splits(pool: dict[str, list[Sample]], manifest: Manifest, config: BuildConfig,
               names: list[str] | None) -> dict[str, list[Sample]]:
    """The new samples of each split (``pool``: the scan's new samples, by the split the source
    gives them, all in ``train`` unless pre-split), held out and ordered."""
    if config.val_split is None or "val" in pool:
        splits = dict(pool)
    else:
        splits = {"train": [], "val": []}
        by_label: dict[int | None, list[Sample]] = {}
        for sample in pool.get("train", []):
            by_label.setdefault(sample.label, []).append(sample)
        for label, members in by_label.items():
            name = None if label is None or names is None else names[label]
            old_total, old_val = _old_counts(manifest, name)
            held = held_out_new(members, old_total=old_total, old_val=old_val,
                                fraction=config.val_split, seed=config.seed)
            splits["train"] += [s for s in members if s.path not in held]
            splits["val"] += [s for s in members if s.path in held]
    return {split: order(samples, seed=config.seed, shuffle=config.shuffle)
            for split, samples in splits.items() if samples}


def _old_counts(manifest: Manifest, name: str | None) -> tuple[int, int]:
    """(train + val, val) samples of class ``name`` in the dataset (all samples unlabelled)."""
    def count(split: str) -> int:
        info = manifest.splits.get(split)
        if info is None:
            return 0
        if name is None or info.class_counts is None:
            return info.num_samples
        return info.class_counts.get(name, 0)

    val = count("val")
    return count("train") + val, val


def plan_append(manifest: Manifest, config: BuildConfig, scan: ScanResult, *,
                held: dict[str, int | None], record: dict[str, tuple[int, int]] | None
                ) -> AppendPlan:
    """What appending the scan to the dataset adds.

    Args:
        held: every path the dataset holds (its samples, with their label indices, and its
            skips, with None).
        record: the size and stamp of each source file when the dataset last saw it (None: a
            dataset built before records were kept).
    """
    names = extended_classes(manifest.class_names, scan.class_names)
    relabel = _relabel(scan.class_names, names)
    pool: dict[str, list[Sample]] = {}
    changed = None if record is None else Report()
    for split, samples in scan.splits.items():
        target = "train" if split == "val" and config.val_split is not None else split
        for sample in samples:
            label = None if sample.label is None else relabel[sample.label]
            if sample.path not in held:
                pool.setdefault(target, []).append(Sample(sample.path, label))
            elif changed is not None and held[sample.path] not in (None, label):
                changed.add(sample.path)  # another label in the labels file
    if changed is not None and scan.sources is not None:
        _changed_files(scan, record, changed)
    seen = set(scan.sources.paths if scan.sources is not None else ())
    disappeared = Report()
    for path in sorted(set(record if record is not None else held) - seen):
        disappeared.add(path)
    old = len(manifest.class_names or ())
    return AppendPlan(names, (names or [])[old:], new_splits(pool, manifest, config, names),
                      [skip for skip in scan.skipped if skip.path not in held],
                      changed, disappeared)


def _relabel(found: list[str] | None, names: list[str] | None) -> list[int]:
    """``result[scan label]`` is that class's label in ``names``."""
    if found is None or names is None:
        return []
    position = {name: index for index, name in enumerate(names)}
    return [position[name] for name in found]


def _changed_files(scan: ScanResult, record: dict[str, tuple[int, int]], changed: Report) -> None:
    sources = scan.sources
    for path, size, stamp in zip(sources.paths, sources.sizes.tolist(), sources.stamps.tolist()):
        if path in record and record[path] != (size, stamp):
            changed.add(path)
