"""Scan a source folder into labelled samples per split, accounting for every file.

The scan lists and classifies files; it decodes nothing (but with ``--dedupe exact``, which
decodes every file once to find exact duplicates before the val split: ``dedupe.py``, on the
build's executor). Its result is deterministic: the
walk is sorted by name at every level, and the order of samples inside a split is a pure function
of the file list and the seed, never of the file system's listing order.

Layouts, tried in this order:

* ``--no-labels``: every image below SRC, unlabelled;
* ``--labels FILE.csv``: ``path,label`` rows, paths relative to SRC;
* pre-split: SRC holds only ``train/``, ``val/`` (or ``validation/``) and/or ``test/``, each
  holding class folders; class names are the union over the splits;
* class folders: every folder directly in SRC is a class (as Keras infers labels).
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .config import BuildConfig
from .dedupe import drop_exact_duplicates
from .errors import ImgshardError
from .executors.interface import Executor
from .labels_file import parse_labels_csv, read_labels_bytes
from .targets_file import Targets, parse_targets_csv, read_targets_bytes
from .manifest import Skip
from .samples import Sample, is_multi_label, split_and_order
from .storage import Location, MissingDirectory
from .storage.tree import Entry

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


class ScanError(ImgshardError):
    """The source cannot be scanned into a build (one line for the user)."""


@dataclass(frozen=True)
class Sources:
    """Every file the walk saw (skipped ones too), in walk order, with its size and a stamp:
    its modification time in nanoseconds, or for an object a hash of its ETag or time.

    What ``--resume`` compares, to refuse a source that changed since the build started.
    Sizes and stamps are arrays (16 bytes a file), not Python ints; a file the walk could not
    stat has -1 for both.
    """

    paths: list[str]
    sizes: np.ndarray
    stamps: np.ndarray


class _Stamps:
    """The sizes and stamps of the walk's entries as they come, in compact arrays."""

    def __init__(self) -> None:
        self.sizes, self.stamps = array("q"), array("q")

    def add(self, size: int = -1, stamp: int = -1) -> None:
        self.sizes.append(size)
        self.stamps.append(stamp)

    def sources(self, entries: list[Entry]) -> Sources:
        return Sources([entry.path for entry in entries], np.frombuffer(self.sizes, np.int64),
                       np.frombuffer(self.stamps, np.int64))


@dataclass(frozen=True)
class ScanResult:
    """What a build will process: samples per split in final order, and every skipped file.

    ``sources`` records every file the walk saw and ``labels_sha256`` the labels file's
    content (with ``--labels``), so that a resume can refuse a source that changed.
    """

    class_names: list[str] | None
    splits: dict[str, list[Sample]]
    skipped: list[Skip]
    sources: Sources | None = field(default=None, repr=False, compare=False)
    labels_sha256: str | None = None
    #: "multi" when a labels file gives some file several labels (each a tuple of indices)
    label_kind: str = "single"
    #: the targets file's column names and content hash (with ``--targets``)
    target_names: list[str] | None = None
    targets_sha256: str | None = None

    @property
    def num_samples(self) -> int:
        return sum(len(samples) for samples in self.splits.values())

    def empty_samples(self) -> int:
        """How many samples are empty files (the build will skip them; a dry run opens none)."""
        if self.sources is None:
            return 0
        empty = {self.sources.paths[i] for i in np.flatnonzero(self.sources.sizes == 0)}
        return sum(s.path in empty for samples in self.splits.values() for s in samples)


def scan(src: str | Location, config: BuildConfig, *, dedupe: bool = True,
         executor: Executor | None = None, class_folders: bool = True) -> ScanResult:
    """List the samples and skips of ``src`` for ``config`` (see the module docstring).

    With ``config.dedupe`` ``exact`` (and ``dedupe``: an append, which never drops a file,
    says False), the labelled files are hashed on ``executor`` (in this process without one)
    and exact duplicates dropped before the val split is drawn (see ``dedupe.py``).

    Raises:
        ScanError: SRC is missing or not a folder, holds no image, its labels are inconsistent,
            or (``class_folders``: not an append's) --classes names no folder of SRC.
    """
    src = src if isinstance(src, Location) else Location.of(src)
    stamps = _Stamps()
    try:
        entries = list(src.walk(follow_links=config.follow_links, record=stamps.add))
    except MissingDirectory as error:
        raise ScanError(f"source {src} {error}") from None
    labels_sha256 = None
    if config.no_labels:
        class_names, labelled, skipped = None, _unlabelled(entries), []
    elif config.labels is not None:
        data = read_labels_bytes(config.labels)
        labels_sha256 = hashlib.sha256(data).hexdigest()
        class_names, labelled, skipped = _from_csv(src, config, entries,
                                                   parse_labels_csv(data, config.labels))
    else:
        class_names, labelled, skipped = _from_folders(src, config, entries, class_folders)
    targets = None
    if config.targets is not None:
        data = read_targets_bytes(config.targets)
        targets = parse_targets_csv(data, config.targets), hashlib.sha256(data).hexdigest()
        labelled, skipped = _with_targets(src, config, entries, labelled, skipped, targets[0])
    if dedupe and config.dedupe == "exact":  # after targets: a file without is no sample
        labelled, dropped = drop_exact_duplicates(labelled, src, config, executor)
        skipped = skipped + dropped
    reasons = {skip.path: skip.reason for skip in skipped}
    for entry in entries:
        if entry.reason is not None:
            reasons.setdefault(entry.path, entry.reason)
        elif not is_image_name(entry.path):
            reasons.setdefault(entry.path, "not an image extension")
    splits = split_and_order(_one_label_each(labelled), config)
    if not any(splits.values()):
        raise ScanError(_no_images(src, reasons))
    multi = is_multi_label(s for samples in splits.values() for s in samples)
    return ScanResult(class_names, splits, [Skip(p, reasons[p]) for p in sorted(reasons)],
                      stamps.sources(entries), labels_sha256, "multi" if multi else "single",
                      None if targets is None else targets[0].names,
                      None if targets is None else targets[1])


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _unlabelled(entries: list[Entry]) -> dict[str, list[Sample]]:
    return {"train": [Sample(e.path, None) for e in _images(entries)]}


def _images(entries: list[Entry]) -> Iterator[Entry]:
    return (e for e in entries if e.reason is None and is_image_name(e.path))


def _from_folders(src: Location, config: BuildConfig, entries: list[Entry],
                  class_folders: bool = True):
    subfolders = src.subfolders(entries, follow_links=config.follow_links)
    top_folders = sorted(subfolders(""))
    is_presplit = bool(top_folders) and all(n in SPLIT_FOLDERS for n in top_folders)
    if is_presplit:
        class_folders = {f: subfolders(f) for f in top_folders}
        is_presplit = all(class_folders.values())
    if is_presplit:
        found = sorted(set().union(*class_folders.values()))
        depth = 1
    else:
        found, depth = top_folders, 0
    class_names = list(config.classes) if config.classes is not None else found
    missing = [name for name in class_names if name not in found]
    if class_folders and missing:  # a typo would make an empty class
        raise ScanError(f"--classes names {missing[0]!r}, which is no class folder of SRC "
                        f"(its folders: {', '.join(found) or 'none'})")
    index = {name: i for i, name in enumerate(class_names)}
    splits: dict[str, list[Sample]] = {}
    skipped: list[Skip] = []
    for entry in _images(entries):
        parts = entry.path.split("/")
        if len(parts) < depth + 2:
            where = "a split folder" if depth and len(parts) == 1 else "a class folder"
            skipped.append(Skip(entry.path, f"not in {where}"))
            continue
        class_name = parts[depth]
        if class_name not in index:
            skipped.append(Skip(entry.path, f"class {class_name!r} not in --classes"))
            continue
        split = SPLIT_FOLDERS[parts[0]] if depth else "train"
        splits.setdefault(split, []).append(Sample(entry.path, index[class_name]))
    if is_presplit and config.val_split is not None and "val" in splits:
        raise ScanError("the source already has a val/ folder: drop --val-split")
    return class_names, splits, skipped


def _from_csv(src: Location, config: BuildConfig, entries: list[Entry],
              rows: dict[str, tuple[str, ...]]):
    named_labels = {label for labels in rows.values() for label in labels}
    if config.classes is not None:
        class_names = list(config.classes)
        unknown = sorted(named_labels - set(class_names))
        if unknown:
            raise ScanError(f"labels file {config.labels} names unknown class {unknown[0]!r} "
                            f"(not in --classes)")
    else:
        class_names = _sorted_labels(named_labels)
    index = {name: i for i, name in enumerate(class_names)}
    multi = any(len(labels) > 1 for labels in rows.values())
    samples, seen = [], set()
    for entry in _images(entries):
        seen.add(entry.path)
        if entry.path in rows:
            found = sorted(index[label] for label in rows[entry.path])
            samples.append(Sample(entry.path, tuple(found) if multi else found[0]))
    skipped = _unlisted(src, config.labels, "labels", entries, rows, seen)
    return class_names, {"train": samples}, skipped


def _unlisted(src: Location, listing: str, kind: str, entries: list[Entry], rows: dict,
              seen: set[str]) -> list[Skip]:
    """The skips a ``kind`` file (labels or targets) makes: the images it does not list, itself,
    and the rows naming no image of SRC."""
    skipped = [Skip(e.path, f"not in the {kind} file") for e in _images(entries)
               if e.path not in rows]
    listing_file = src.relative_path(listing)
    named = {e.path for e in entries}
    if listing_file in named:
        skipped.append(Skip(listing_file, f"the {kind} file itself"))
    skipped += [Skip(path, f"listed in the {kind} file but not found")
                for path in sorted(rows) if path not in seen and path not in named]
    skipped += [Skip(path, f"listed in the {kind} file but not an image extension")
                for path in sorted(rows) if path in named and not is_image_name(path)]
    return skipped


#: What to do about the reasons a scan finds no image at all.
_HINTS = {"not in a class folder": "use --no-labels for a folder without class folders",
          "not in a split folder": "put the images in train/, val/ or test/ class folders",
          "symbolic link (not followed; use --follow-links)": "use --follow-links"}


def _no_images(src: Location, reasons: dict[str, str]) -> str:
    """Why the scan found no image: the commonest skip reason with an example and what to do,
    or which extensions it looks for."""
    extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
    if not reasons:
        return f"no images found in {src} (extensions: {extensions})"
    counts = Counter(reasons.values())
    reason, count = counts.most_common(1)[0]
    example = min(path for path, why in reasons.items() if why == reason)
    hint = _HINTS.get(reason, f"image extensions: {extensions}")
    return (f"no images found in {src}: {count:,} of {len(reasons):,} skipped file"
            f"{'s' if len(reasons) != 1 else ''} {'are' if count != 1 else 'is'} {reason} "
            f"(e.g. {example}; {hint})")


def _one_label_each(labelled: dict[str, list[Sample]]) -> dict[str, list[Sample]]:
    """The samples of a multi-label labels file as single-label ones when none of them has
    several labels: a row for a file that is not built (missing, not an image, without targets)
    does not make a dataset multi-label."""
    samples = [sample for split in labelled.values() for sample in split]
    if not samples or not all(isinstance(s.label, tuple) and len(s.label) == 1 for s in samples):
        return labelled
    return {split: [Sample(s.path, s.label[0], s.targets) for s in split_samples]
            for split, split_samples in labelled.items()}


def _with_targets(src: Location, config: BuildConfig, entries: list[Entry],
                  labelled: dict[str, list[Sample]], skipped: list[Skip], targets: Targets):
    """Each labelled sample with its row of the targets file; a file without one is a skip."""
    skips = {skip.path for skip in skipped}
    seen = {sample.path for samples in labelled.values() for sample in samples} | skips
    with_targets = {split: [Sample(s.path, s.label, targets.rows[s.path]) for s in samples
                            if s.path in targets.rows]
                    for split, samples in labelled.items()}
    more = [skip for skip in _unlisted(src, config.targets, "targets", entries, targets.rows,
                                       seen) if skip.path not in skips]
    return with_targets, skipped + more


def _sorted_labels(labels: set[str]) -> list[str]:
    """Sorted class names; numerically when every label is an integer, so '10' follows '9'."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)
