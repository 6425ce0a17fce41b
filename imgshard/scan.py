"""Scan a source folder into labelled samples per split, accounting for every file.

The scan only lists and classifies files; it decodes nothing. Its result is deterministic: the
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
import math
import os
import stat
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .config import BuildConfig
from .errors import ImgshardError
from .labels_file import parse_labels_csv, read_labels_bytes
from .manifest import Skip
from .storage import Location

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
SPLIT_ORDER = ("train", "val", "test")


class ScanError(ImgshardError):
    """The source cannot be scanned into a build (one line for the user)."""


@dataclass(frozen=True, slots=True)  # slots: the build holds one per input file
class Sample:
    """One input image: its path relative to SRC ('/'-separated) and its label (None if none)."""

    path: str
    label: int | None


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

    def sources(self, entries: list[_Entry]) -> Sources:
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

    @property
    def num_samples(self) -> int:
        return sum(len(samples) for samples in self.splits.values())

    def empty_samples(self) -> int:
        """How many samples are empty files (the build will skip them; a dry run opens none)."""
        if self.sources is None:
            return 0
        empty = {self.sources.paths[i] for i in np.flatnonzero(self.sources.sizes == 0)}
        return sum(s.path in empty for samples in self.splits.values() for s in samples)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A file met by the walk: a candidate (reason None) or a skip with its reason."""

    path: str
    reason: str | None = None


def scan(src: str | Location, config: BuildConfig) -> ScanResult:
    """List the samples and skips of ``src`` for ``config`` (see the module docstring).

    Raises:
        ScanError: SRC is missing or not a folder, holds no image, or its labels are inconsistent.
    """
    src = src if isinstance(src, Location) else Location.of(src)
    stamps = _Stamps()
    if src.is_local:
        if not os.path.exists(src.url):
            raise ScanError(f"source {src} does not exist")
        if not os.path.isdir(src.url):
            raise ScanError(f"source {src} is not a folder")
        entries = list(walk(src.url, follow_links=config.follow_links, stamps=stamps))
    else:
        entries = list(walk_remote(src, stamps=stamps))
        if not entries:
            raise ScanError(f"source {src} does not exist or holds no files")
    labels_sha256 = None
    if config.no_labels:
        class_names, labelled, skipped = None, _unlabelled(entries), []
    elif config.labels is not None:
        data = read_labels_bytes(config.labels)
        labels_sha256 = hashlib.sha256(data).hexdigest()
        class_names, labelled, skipped = _from_csv(src, config, entries,
                                                   parse_labels_csv(data, config.labels))
    else:
        class_names, labelled, skipped = _from_folders(src, config, entries)
    reasons = {skip.path: skip.reason for skip in skipped}
    for entry in entries:
        if entry.reason is not None:
            reasons.setdefault(entry.path, entry.reason)
        elif not is_image_name(entry.path):
            reasons.setdefault(entry.path, "not an image extension")
    splits = _split_and_order(labelled, config)
    if not any(splits.values()):
        raise ScanError(f"no images found in {src} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return ScanResult(class_names, splits, [Skip(p, reasons[p]) for p in sorted(reasons)],
                      stamps.sources(entries), labels_sha256)


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def walk(root: str, *, follow_links: bool, stamps: _Stamps | None = None) -> Iterator[_Entry]:
    """Yield every file below ``root`` in sorted order, with a reason when it cannot be a sample.

    Hidden names are reported once (a hidden folder as one entry), links are reported unless
    followed, and a followed link that leads back into its own ancestry is reported as a loop.
    With ``stamps``, the size and mtime of each entry are recorded from the walk's own stat.

    The walk keeps a stack of folders, not a recursion: a tree thousands of levels deep is
    walked like any other, and a folder too deep for the OS's path limit is a reported entry.
    """
    record = stamps.add if stamps is not None else _ignore
    listing = _listing(root, "")
    if isinstance(listing, _Entry):
        record()
        yield listing
        return
    stack = [(iter(listing), "", frozenset({_identity(root)}))]
    while stack:
        children, prefix, ancestors = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        rel = prefix + child.name
        if child.name.startswith("."):
            record()
            yield _Entry(rel + "/" if child.is_dir(follow_symlinks=False) else rel,
                         "hidden folder" if child.is_dir(follow_symlinks=False) else "hidden file")
            continue
        if child.is_symlink() and not follow_links:
            record()
            yield _Entry(rel, "symbolic link (not followed; use --follow-links)")
            continue
        try:
            info = os.stat(child.path)
        except OSError as error:
            reason = "broken symbolic link" if child.is_symlink() else error.strerror
            record()
            yield _Entry(rel, f"cannot read: {reason}")
            continue
        if stat.S_ISDIR(info.st_mode):
            identity = (info.st_dev, info.st_ino)
            if identity in ancestors:
                record()
                yield _Entry(rel + "/", "symbolic link loop")
                continue
            listing = _listing(root, rel + "/")
            if isinstance(listing, _Entry):
                record()
                yield listing
                continue
            stack.append((iter(listing), rel + "/", ancestors | {identity}))
            continue
        record(info.st_size, info.st_mtime_ns)
        yield _Entry(rel) if stat.S_ISREG(info.st_mode) else _Entry(rel, "not a regular file")


def _ignore(size: int = -1, stamp: int = -1) -> None:
    """Records nothing: a walk without stamps."""


def _listing(root: str, prefix: str) -> list[os.DirEntry] | _Entry:
    """The folder ``prefix`` of ``root`` sorted by name, or the entry reporting why not."""
    folder = os.path.join(root, prefix) if prefix else root
    try:
        with os.scandir(folder) as listing:
            return sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        return _Entry(prefix.rstrip("/") + "/", f"cannot read folder: {error.strerror}")


#: Object metadata that changes when an object is rewritten, by back end, in order of trust.
OBJECT_STAMP_KEYS = ("ETag", "etag", "md5Hash", "generation", "LastModified", "last_modified",
                     "mtime", "updated", "created")


def walk_remote(src: Location, *, stamps: _Stamps | None = None) -> Iterator[_Entry]:
    """Yield every object below the URL ``src`` in sorted order, as :func:`walk` does.

    An object store has no links and no empty folders; a hidden name (a path component
    starting with '.') is reported once, at its shallowest hidden component. With ``stamps``,
    each object's size and a hash of its ETag (or time) are recorded from the same listing.
    """
    record = stamps.add if stamps is not None else _ignore
    root = src.fs._strip_protocol(src.url).rstrip("/")
    found = src._call(src.fs.find, root, detail=True)
    reported: set[str] = set()
    for full in sorted(found):
        rel = full[len(root):].lstrip("/")
        parts = rel.split("/")
        hidden = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
        if hidden is None:
            info = found[full]
            record(int(info.get("size") or 0), object_stamp(info))
            yield _Entry(rel)
        elif hidden == len(parts) - 1:
            record()
            yield _Entry(rel, "hidden file")
        elif (folder := "/".join(parts[:hidden + 1]) + "/") not in reported:
            reported.add(folder)
            record()
            yield _Entry(folder, "hidden folder")


def object_stamp(info: dict) -> int:
    """A signed 8-byte hash of the first of an object's :data:`OBJECT_STAMP_KEYS` (0 if none)."""
    value = next((info[key] for key in OBJECT_STAMP_KEYS if info.get(key) is not None), None)
    if value is None:
        return 0
    digest = hashlib.blake2b(str(value).encode("utf-8", "surrogateescape"), digest_size=8)
    return int.from_bytes(digest.digest(), "little", signed=True)


def _identity(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return (info.st_dev, info.st_ino)


def _unlabelled(entries: list[_Entry]) -> dict[str, list[Sample]]:
    return {"train": [Sample(e.path, None) for e in _images(entries)]}


def _images(entries: list[_Entry]) -> Iterator[_Entry]:
    return (e for e in entries if e.reason is None and is_image_name(e.path))


def _from_folders(src: Location, config: BuildConfig, entries: list[_Entry]):
    subfolders = _local_subfolders(src.url, config) if src.is_local else _folders_of(entries)
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


def _local_subfolders(root: str, config: BuildConfig):
    """``folder -> names of the visible folders in it`` for a local SRC (empty ones included)."""
    return lambda rel: _subfolders(os.path.join(root, rel) if rel else root, config.follow_links)


def _folders_of(entries: list[_Entry]):
    """``folder -> names of the visible folders in it``, as the objects' paths imply."""
    children: dict[str, set[str]] = {}
    for entry in entries:
        parts = entry.path.rstrip("/").split("/")
        for depth in range(len(parts) - 1):
            if not parts[depth].startswith("."):
                children.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    return lambda rel: sorted(children.get(rel, ()))


def _is_folder(parent: str, name: str, follow_links: bool) -> bool:
    path = os.path.join(parent, name)
    if os.path.islink(path) and not follow_links:
        return False
    return os.path.isdir(path)


def _subfolders(path: str, follow_links: bool) -> list[str]:
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return [n for n in names if not n.startswith(".") and _is_folder(path, n, follow_links)]


def _from_csv(src: Location, config: BuildConfig, entries: list[_Entry], rows: dict[str, str]):
    if config.classes is not None:
        class_names = list(config.classes)
        unknown = sorted({label for label in rows.values()} - set(class_names))
        if unknown:
            raise ScanError(f"labels file {config.labels} names unknown class {unknown[0]!r} "
                            f"(not in --classes)")
    else:
        class_names = _sorted_labels(set(rows.values()))
    index = {name: i for i, name in enumerate(class_names)}
    labels_file = None
    if src.is_local:
        labels_file = os.path.relpath(os.path.realpath(config.labels), os.path.realpath(src.url))
        labels_file = labels_file.replace(os.sep, "/")
    samples, skipped, seen = [], [], set()
    for entry in _images(entries):
        seen.add(entry.path)
        if entry.path in rows:
            samples.append(Sample(entry.path, index[rows[entry.path]]))
        else:
            skipped.append(Skip(entry.path, "not in the labels file"))
    if labels_file in {e.path for e in entries}:
        skipped.append(Skip(labels_file, "the labels file itself"))
    named = {e.path for e in entries}
    skipped += [Skip(path, "listed in the labels file but not found")
                for path in sorted(rows) if path not in seen and path not in named]
    skipped += [Skip(path, "listed in the labels file but not an image extension")
                for path in sorted(rows) if path in named and not is_image_name(path)]
    return class_names, {"train": samples}, skipped


def _sorted_labels(labels: set[str]) -> list[str]:
    """Sorted class names; numerically when every label is an integer, so '10' follows '9'."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _split_and_order(splits: dict[str, list[Sample]], config: BuildConfig) -> dict[str, list[Sample]]:
    if config.val_split is not None and "val" not in splits:
        train, val = hold_out(splits.get("train", []), config.val_split, config.seed)
        splits = {**splits, "train": train, "val": val}
    return {name: order(splits[name], seed=config.seed, shuffle=config.shuffle)
            for name in SPLIT_ORDER if splits.get(name)}


def _rank(seed: int, salt: str, path: str) -> bytes:
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
        ranked = sorted(members, key=lambda s: _rank(seed, "val", s.path))
        held.update(s.path for s in ranked[:count])
    return ([s for s in samples if s.path not in held], [s for s in samples if s.path in held])


def order(samples: list[Sample], *, seed: int, shuffle: bool) -> list[Sample]:
    """The order samples take in a split's shards.

    Shuffled (default): by ``sha256(f"{seed}\\0order\\0{path}")``, so every shard holds a mix of
    classes and a reader's shard-window shuffle works well. Unshuffled: by (label, path).
    """
    if shuffle:
        return sorted(samples, key=lambda s: _rank(seed, "order", s.path))
    return sorted(samples, key=lambda s: (-1 if s.label is None else s.label, s.path))
