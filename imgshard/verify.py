"""``imgshard verify``: prove that a shard directory is exactly what its manifest says.

Checks, each problem reported with the file it concerns: every listed file exists and its
``.npy`` header has the manifest's shape and dtype; every checksum matches (computed on several
processes); counts add up (shards, splits, class counts against the label files); ``samples.csv``
agrees with the shards; no unlisted shard file lies in the directory. ``deep`` also reads every
value, chunk by chunk: no NaN or inf, floats inside the range ``rescale``/``offset`` allow,
labels inside ``[0, num_classes)``; and the manifest's ``duplicates`` are the groups of
``samples.csv``'s hashes (reading the stored rows of the samples that share a fingerprint). A flipped byte, a truncated, deleted, extra or swapped shard
and a hand-edited count are all caught.

A URL is verified as it is: checksums are streamed from the store and an image file's header is
read, not the file; a label file, and with ``deep`` an image file whose values are read, is
copied to a temporary local file for that check alone, so disk and memory stay bounded by one
shard whatever the dataset's size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import BuildConfig
from .errors import ImgshardError, MissingShardError, ShardError
from .formats import check_labels, check_targets, class_counts, shard_format
from .layout import MANIFEST_NAME, is_own_file
from .leakage import groups_of_rows, held_shards
from .manifest import Manifest, ManifestError, ShardInfo, read_manifest
from .processes import stoppable_pool
from .samples_csv import SampleRow, read_samples
from .storage import Location

#: Rows read at a time by the deep check, so memory stays flat whatever the shard size.
DEEP_CHUNK_ROWS = 64


@dataclass(frozen=True)
class Problem:
    """One way the directory differs from its manifest."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def verify_directory(directory: str | Location, *, deep: bool = False, workers: int = 1,
                     progress: Callable[[int], None] | None = None) -> list[Problem]:
    """Every problem found in ``directory`` (empty when all holds)."""
    location = directory if isinstance(directory, Location) else Location.of(directory)
    manifest = read_manifest(location)
    problems = _check_identity(manifest)
    problems += _check_files(location, manifest)
    problems += _check_checksums(location, manifest, workers, progress)
    problems += _check_samples_csv(location, manifest, deep=deep)
    if deep:
        problems += _check_values(location, manifest)
    return problems


def _check_identity(manifest: Manifest) -> list[Problem]:
    """The manifest's ``dataset_id`` must be the hash of what it lists (a reader trusts only
    the hash it computes itself; this tells the user the file was edited)."""
    if manifest.recorded_id in (None, manifest.dataset_id):
        return []
    return [Problem(MANIFEST_NAME, f"dataset_id {manifest.recorded_id} is not the hash of its "
                                   f"classes, config and shard checksums ({manifest.dataset_id}): "
                                   "edited after the build?")]


@contextlib.contextmanager
def _opened(location: Location, name: str, shape: tuple[int, ...], dtype: str
            ) -> Iterator[np.ndarray]:
    """The shard file ``name`` mapped and checked against ``shape`` and ``dtype`` for the block
    (a URL's file through a temporary local copy of that one file, deleted after the block)."""
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(location.local_copy(name))
        except FileNotFoundError:  # a URL's file that is not there
            raise MissingShardError(f"{name}: shard file is missing") from None
        yield shard_format().open_shard(path, shape=shape, dtype=dtype)


def _listed(manifest: Manifest) -> Iterator[tuple[str, str, int, str]]:
    """(split, file name, rows, sha256) of every file the manifest lists."""
    for name, split in manifest.splits.items():
        for shard in split.shards:
            yield name, shard.images, shard.num_samples, shard.sha256
            if shard.labels:
                yield name, shard.labels, shard.num_samples, shard.labels_sha256 or ""
            if shard.targets:
                yield name, shard.targets, shard.num_samples, shard.targets_sha256 or ""


def _check_header(location: Location, name: str, shape: tuple[int, ...], dtype: str) -> None:
    """Check the shard file ``name`` from its header and its size alone (a URL's file is not
    downloaded: its checksum is streamed separately). The size is the opened file's, not a
    listing's: a file changed, removed or put back since a listing is checked as it is.

    Raises:
        ShardError: it is missing, not a regular file, or not what the manifest says.
    """
    try:
        with location.open_listed(name) as stream:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(0)
            shard_format().check_stream(name, stream, size, shape=shape, dtype=dtype)
    except FileNotFoundError:
        raise MissingShardError(f"{name}: shard file is missing") from None


def _check_files(location: Location, manifest: Manifest) -> Iterator[Problem]:
    listed = set()
    for split_name, split in manifest.splits.items():
        if sum(s.num_samples for s in split.shards) != split.num_samples:
            yield Problem("manifest.json", f"split {split_name} says {split.num_samples} samples, "
                          f"its shards hold {sum(s.num_samples for s in split.shards)}")
        labels_seen = np.zeros(manifest.num_classes or 0, dtype=np.int64)
        for shard in split.shards:
            listed.update({shard.images, shard.labels, shard.targets})
            try:
                _check_header(location, shard.images,
                              (shard.num_samples, *manifest.image_shape), manifest.dtype)
            except ShardError as error:
                yield Problem(shard.images, str(error).split(": ", 1)[-1])
            if shard.labels:
                try:
                    with _opened(location, shard.labels,
                                 *manifest.labels_layout(shard.num_samples)) as labels:
                        check_labels(shard.labels, labels, manifest.num_classes)
                        labels_seen += class_counts(labels, manifest.num_classes or 0)
                except ShardError as error:
                    yield Problem(shard.labels, str(error).split(": ", 1)[-1])
            if shard.targets:
                try:
                    with _opened(location, shard.targets,
                                 *manifest.targets_layout(shard.num_samples)) as targets:
                        check_targets(shard.targets, targets)
                except ShardError as error:
                    yield Problem(shard.targets, str(error).split(": ", 1)[-1])
        if split.class_counts is not None and manifest.class_names is not None:
            counted = {name: int(labels_seen[i]) for i, name in enumerate(manifest.class_names)}
            if counted != split.class_counts:
                yield Problem("manifest.json", f"class counts of split {split_name} disagree "
                              f"with its label files ({counted})")
    for name in sorted(location.listdir()):
        if is_own_file(name, shard_format().SUFFIX) and name not in listed:
            yield Problem(name, "shard file not listed in the manifest")


def _check_checksums(location: Location, manifest: Manifest, workers: int,
                     progress: Callable[[int], None] | None) -> list[Problem]:
    """Each listed file's sha256, streamed from the store (a URL's file is not downloaded)."""
    files = [(name, sha) for _, name, _, sha in _listed(manifest)]
    digests = _track(location.sha256s([name for name, _ in files], workers=workers,
                                      process_pool=stoppable_pool), progress)
    return [Problem(name, "checksum does not match the manifest (changed, swapped or corrupt)")
            for (name, expected), actual in zip(files, digests)
            if actual is not None and actual != expected]  # None: reported by _check_files


def _track(digests: Iterator[str | None], progress: Callable[[int], None] | None,
           ) -> list[str | None]:
    done = []
    for digest in digests:
        done.append(digest)
        if progress:
            progress(1)
    return done


def _check_samples_csv(location: Location, manifest: Manifest, *,
                       deep: bool = False) -> list[Problem]:
    try:
        with location.open_listed(manifest.samples) as stream:
            rows = list(read_samples(stream, max_rows=manifest.shard_samples))
    except FileNotFoundError:
        return [Problem(manifest.samples, "file is missing")]
    except (ShardError, ManifestError) as error:  # a link or special file; a malformed row
        return [Problem(manifest.samples, str(error).rsplit(f"{manifest.samples}: ", 1)[-1])]
    by_shard: dict[str, list[SampleRow]] = {}
    for row in rows:
        by_shard.setdefault(row.shard, []).append(row)
    problems = []
    for name, split in manifest.splits.items():
        for shard in split.shards:
            shard_rows = by_shard.pop(shard.images, [])
            indices = sorted(row.index for row in shard_rows)
            if len(indices) != shard.num_samples or indices != list(range(shard.num_samples)):
                problems.append(Problem(manifest.samples, f"rows for {shard.images} do not cover "
                                        f"its {shard.num_samples} samples exactly once"))
                continue
            if any(row.split != name for row in shard_rows):  # leakage is told by the splits
                problems.append(Problem(manifest.samples, f"rows for {shard.images} name another "
                                        f"split than {name}"))
            if _labels_disagree(location, manifest, shard, shard_rows):
                problems.append(Problem(manifest.samples,
                                        f"labels of {shard.images} disagree with {shard.labels}"))
    problems += [Problem(manifest.samples, f"rows name {name!r}, which the manifest does not list")
                 for name in by_shard]
    return problems + (_check_duplicates(location, manifest, rows) if deep else [])


def _check_duplicates(location: Location, manifest: Manifest,
                      rows: list[SampleRow]) -> list[Problem]:
    """The manifest's ``duplicates`` must be the groups of the hashes ``samples.csv`` holds."""
    recorded = manifest.extra.get("duplicates")
    try:
        found = None if recorded is None else groups_of_rows(
            rows, location, BuildConfig.from_dict(manifest.config), held_shards(manifest.splits))
    except (ShardError, OSError):  # a shard that cannot be read: reported already
        return []
    if found is None and recorded is not None:  # a build that records them writes hashes
        return [Problem(MANIFEST_NAME, f"it lists duplicates, but the rows of "
                        f"{manifest.samples} carry no hashes")]
    if found is None or [group.to_json() for group in found] == recorded:
        return []
    return [Problem(MANIFEST_NAME, f"its duplicates are not those of the hashes in "
                    f"{manifest.samples} ({len(found)} groups found, {len(recorded)} listed)")]


def _labels_disagree(location: Location, manifest: Manifest, shard: ShardInfo,
                     rows: list[SampleRow]) -> bool:
    """Whether a row of ``rows`` gives another label than ``shard``'s labels file (False
    without one, or when its file cannot be read: reported elsewhere). Compared in the file's
    map, never copied: a multi-hot file holds a byte a class a sample."""
    if not shard.labels:
        return False
    try:
        with _opened(location, shard.labels,
                     *manifest.labels_layout(shard.num_samples)) as labels:
            return any(_row_label(row.label, labels.ndim == 2)
                       != _stored_label(labels, row.index) for row in rows)
    except ShardError:
        return False


def _row_label(label: int | tuple[int, ...] | None, multi: bool) -> Any:
    """A ``samples.csv`` label as :func:`_stored_label` gives it (a multi-label file's single
    index is its one-element tuple)."""
    return (label,) if multi and isinstance(label, int) else label


def _stored_label(labels: np.ndarray, index: int) -> int | tuple[int, ...]:
    """The label of row ``index`` as ``samples.csv`` writes it."""
    if labels.ndim == 2:
        return tuple(int(i) for i in np.flatnonzero(labels[index]))
    return int(labels[index])


def _check_values(location: Location, manifest: Manifest) -> list[Problem]:
    low, high = _value_range(manifest)
    problems = []
    for split in manifest.splits.values():
        for shard in split.shards:
            try:
                with _opened(location, shard.images, (shard.num_samples, *manifest.image_shape),
                             manifest.dtype) as images:
                    problems += _value_problems(shard.images, images, low, high)
            except ShardError:
                continue  # already reported
    return problems


def _value_problems(name: str, images: np.ndarray, low: float, high: float) -> list[Problem]:
    """The first chunk of ``images`` holding NaN, inf or a value outside ``[low, high]``."""
    for start in range(0, len(images), DEEP_CHUNK_ROWS):
        chunk = np.asarray(images[start:start + DEEP_CHUNK_ROWS])
        if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
            return [Problem(name, f"NaN or inf near row {start}")]
        if chunk.size and (chunk.min() < low or chunk.max() > high):
            return [Problem(name, f"values outside [{low}, {high}] near row {start}")]
    return []


def _value_range(manifest: Manifest) -> tuple[float, float]:
    try:
        table = shard_format().cast_table(BuildConfig.from_dict(manifest.config))
    except ImgshardError:
        table = None
    if table is None:
        return 0, 255
    return float(table.min()), float(table.max())
