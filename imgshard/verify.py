"""``imgshard verify``: prove that a shard directory is exactly what its manifest says.

Checks, each problem reported with the file it concerns: every listed file exists and its
``.npy`` header has the manifest's shape and dtype; every checksum matches (computed on several
processes); counts add up (shards, splits, class counts against the label files); ``samples.csv``
agrees with the shards; no unlisted shard file lies in the directory. ``deep`` also reads every
value, chunk by chunk: no NaN or inf, floats inside the range ``rescale``/``offset`` allow,
labels inside ``[0, num_classes)``. A flipped byte, a truncated, deleted, extra or swapped shard
and a hand-edited count are all caught.

A URL is verified on a temporary local copy of the files its manifest lists (downloaded on
several threads, so it needs that much free disk), checked exactly as a local directory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .config import BuildConfig
from .errors import ImgshardError, ShardError
from .executors.local import stoppable_pool
from .formats import check_labels, shard_format
from .layout import is_own_file
from .manifest import (
    Manifest,
    ManifestError,
    SampleRow,
    ShardInfo,
    open_listed,
    read_manifest,
    read_samples,
)
from .storage import Location
from .storage.files import regular_file_sha256

#: Rows read at a time by the deep check, so memory stays flat whatever the shard size.
DEEP_CHUNK_ROWS = 64
#: Labels counted at a time.
LABEL_CHUNK = 1 << 20


@dataclass(frozen=True)
class Problem:
    """One way the directory differs from its manifest."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


#: Downloads in flight when verifying a URL.
DOWNLOAD_THREADS = 8


def verify_directory(directory: str | Location, *, deep: bool = False, workers: int = 1,
                     progress: Callable[[int], None] | None = None) -> list[Problem]:
    """Every problem found in ``directory`` (empty when all holds)."""
    location = directory if isinstance(directory, Location) else Location.of(directory)
    if location.is_local:
        return _verify_local(location.url, deep=deep, workers=workers, progress=progress)
    manifest = read_manifest(location)
    with tempfile.TemporaryDirectory(prefix="imgshard-verify-") as mirror:
        _mirror(location, manifest, mirror)
        return _verify_local(mirror, deep=deep, workers=workers, progress=progress)


def _mirror(location: Location, manifest: Manifest, mirror: str) -> None:
    """Download what ``manifest`` lists into ``mirror``; unlisted shard files become empty
    placeholders, so that they are reported just as in a local directory."""
    from concurrent.futures import ThreadPoolExecutor

    present = set(location.listdir())
    wanted = {"manifest.json", manifest.samples} | {name for _, name, _, _ in _listed(manifest)}
    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        list(pool.map(lambda name: location.download(name, os.path.join(mirror, name)),
                      sorted(wanted & present)))
    for name in present - wanted:
        if is_own_file(name, shard_format().SUFFIX):
            open(os.path.join(mirror, name), "wb").close()


def _verify_local(directory: str, *, deep: bool, workers: int,
                  progress: Callable[[int], None] | None) -> list[Problem]:
    manifest = read_manifest(directory)
    problems = list(_check_files(directory, manifest))
    problems += _check_checksums(directory, manifest, workers, progress)
    problems += _check_samples_csv(directory, manifest)
    if deep:
        problems += _check_values(directory, manifest)
    return problems


def _listed(manifest: Manifest) -> Iterator[tuple[str, str, int, str]]:
    """(split, file name, rows, sha256) of every file the manifest lists."""
    for name, split in manifest.splits.items():
        for shard in split.shards:
            yield name, shard.images, shard.num_samples, shard.sha256
            if shard.labels:
                yield name, shard.labels, shard.num_samples, shard.labels_sha256 or ""


def _check_files(directory: str, manifest: Manifest) -> Iterator[Problem]:
    listed = set()
    for split_name, split in manifest.splits.items():
        if sum(s.num_samples for s in split.shards) != split.num_samples:
            yield Problem("manifest.json", f"split {split_name} says {split.num_samples} samples, "
                          f"its shards hold {sum(s.num_samples for s in split.shards)}")
        labels_seen = np.zeros(manifest.num_classes or 0, dtype=np.int64)
        for shard in split.shards:
            listed.update({shard.images, shard.labels})
            try:
                shard_format().open_shard(os.path.join(directory, shard.images),
                                          shape=(shard.num_samples, *manifest.image_shape),
                                          dtype=manifest.dtype)
            except ShardError as error:
                yield Problem(shard.images, str(error).split(": ", 1)[-1])
            if shard.labels:
                try:
                    labels = np.asarray(shard_format().open_shard(
                        os.path.join(directory, shard.labels), shape=(shard.num_samples,),
                        dtype="int32"))
                    check_labels(shard.labels, labels, manifest.num_classes)
                    labels_seen += _count_labels(labels, manifest.num_classes or 0)
                except ShardError as error:
                    yield Problem(shard.labels, str(error).split(": ", 1)[-1])
        if split.class_counts is not None and manifest.class_names is not None:
            counted = {name: int(labels_seen[i]) for i, name in enumerate(manifest.class_names)}
            if counted != split.class_counts:
                yield Problem("manifest.json", f"class counts of split {split_name} disagree "
                              f"with its label files ({counted})")
    for name in sorted(os.listdir(directory)):
        if is_own_file(name, shard_format().SUFFIX) and name not in listed:
            yield Problem(name, "shard file not listed in the manifest")


def _count_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """How many of ``labels`` (each checked inside ``[0, num_classes)``) are of each class,
    counted a chunk at a time: memory stays flat however many labels a file holds."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for start in range(0, len(labels) if num_classes else 0, LABEL_CHUNK):
        counts += np.bincount(labels[start:start + LABEL_CHUNK], minlength=num_classes)
    return counts


def _check_checksums(directory: str, manifest: Manifest, workers: int,
                     progress: Callable[[int], None] | None) -> list[Problem]:
    files = [(name, sha) for _, name, _, sha in _listed(manifest)]
    paths = [os.path.join(directory, name) for name, _ in files]
    if workers > 1 and len(paths) > 1:
        with stoppable_pool(workers) as pool:
            digests = _track(pool.map(regular_file_sha256, paths), progress)
    else:
        digests = _track(map(regular_file_sha256, paths), progress)
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


def _check_samples_csv(directory: str, manifest: Manifest) -> list[Problem]:
    try:
        with open_listed(Location.of(directory), manifest.samples) as stream:
            rows = list(read_samples(stream, max_rows=manifest.shard_samples))
    except FileNotFoundError:
        return [Problem(manifest.samples, "file is missing")]
    except (ShardError, ManifestError) as error:  # a link or special file; a malformed row
        return [Problem(manifest.samples, str(error).rsplit(f"{manifest.samples}: ", 1)[-1])]
    by_shard: dict[str, list[SampleRow]] = {}
    for row in rows:
        by_shard.setdefault(row.shard, []).append(row)
    problems = []
    for split in manifest.splits.values():
        for shard in split.shards:
            shard_rows = by_shard.pop(shard.images, [])
            indices = sorted(row.index for row in shard_rows)
            if len(indices) != shard.num_samples or indices != list(range(shard.num_samples)):
                problems.append(Problem(manifest.samples, f"rows for {shard.images} do not cover "
                                        f"its {shard.num_samples} samples exactly once"))
                continue
            labels = _labels(directory, shard)
            if labels is not None and any(row.label != labels[row.index] for row in shard_rows):
                problems.append(Problem(manifest.samples,
                                        f"labels of {shard.images} disagree with {shard.labels}"))
    problems += [Problem(manifest.samples, f"rows name {name!r}, which the manifest does not list")
                 for name in by_shard]
    return problems


def _labels(directory: str, shard: ShardInfo) -> np.ndarray | None:
    """The labels of ``shard`` (None without, or when its file cannot be read: reported
    elsewhere)."""
    if not shard.labels:
        return None
    try:
        return np.asarray(shard_format().open_shard(os.path.join(directory, shard.labels),
                                                    shape=(shard.num_samples,), dtype="int32"))
    except ShardError:
        return None


def _check_values(directory: str, manifest: Manifest) -> list[Problem]:
    low, high = _value_range(manifest)
    problems = []
    for split in manifest.splits.values():
        for shard in split.shards:
            try:
                images = shard_format().open_shard(os.path.join(directory, shard.images),
                                                   shape=(shard.num_samples, *manifest.image_shape),
                                                   dtype=manifest.dtype)
            except ShardError:
                continue  # already reported
            for start in range(0, len(images), DEEP_CHUNK_ROWS):
                chunk = np.asarray(images[start:start + DEEP_CHUNK_ROWS])
                if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
                    problems.append(Problem(shard.images, f"NaN or inf near row {start}"))
                    break
                if chunk.size and (chunk.min() < low or chunk.max() > high):
                    problems.append(Problem(shard.images, f"values outside [{low}, {high}] "
                                            f"near row {start}"))
                    break
    return problems


def _value_range(manifest: Manifest) -> tuple[float, float]:
    try:
        table = shard_format().cast_table(BuildConfig.from_dict(manifest.config))
    except ImgshardError:
        table = None
    if table is None:
        return 0, 255
    return float(table.min()), float(table.max())
