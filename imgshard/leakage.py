"""The duplicates of a shard directory: found from its ``samples.csv`` once a build or an
append has published it, recorded in the manifest's ``duplicates``, and reported, leakage
first (the build's summary, ``inspect`` and ``inspect --json``).

The hashes come from the workers through ``samples.csv`` (its ``pixel_hash`` and ``dhash``
columns), which a resumed build keeps exactly as it keeps the rows' places, so the groups are
the same whatever the interruptions, the worker count or the executor. Reading them back costs
one pass over ``samples.csv``; memory holds 24 bytes and the path of each sample.
"""

from __future__ import annotations

import contextlib
import functools
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .duplicates import DuplicateGroup, find_groups
from .formats import shard_format
from .config import BuildConfig
from .errors import ShardError
from .image_hash import DIGEST_BYTES, pixel_digest, thumbnail
from .layout import SAMPLES_NAME
from .manifest import SplitInfo
from .samples_csv import SampleRow, read_samples
from .storage import Location

#: How many groups the reports name (the manifest lists them all).
EXAMPLES = 3
#: The skip reason of a file ``--dedupe exact`` leaves out, followed by the path it repeats.
DUPLICATE_REASON = "duplicate of "
#: How summaries count those skips: as one reason, not one per kept path.
DUPLICATES_SKIPPED = "duplicate of an earlier path (--dedupe exact)"
#: The hash cells a build writes: lowercase hexadecimal digits only (``bytes.fromhex`` and
#: ``int(cell, 16)`` would also take spaces, a sign, ``0x`` or ``_``).
_HASH_CELL = re.compile(r"[0-9a-f]*")


def reason_group(reason: str) -> str:
    """The reason a summary groups a skip under: its own, but one for every duplicate."""
    return DUPLICATES_SKIPPED if reason.startswith(DUPLICATE_REASON) else reason


def duplicates_in(out: Location, config: BuildConfig,
                  splits: dict[str, SplitInfo]) -> list[DuplicateGroup] | None:
    """The duplicate groups of the samples OUT's ``samples.csv`` lists (``config``: the
    dataset's; ``splits``: the manifest's, whose shards alone are read, see
    :func:`groups_of_rows`: a resumed build's staged rows may have been edited); None when its
    rows carry no hashes (written before they existed)."""
    shards = held_shards(splits)
    max_rows = sum(rows for _, rows in shards.values())
    with out.open_listed(SAMPLES_NAME) as stream:
        return groups_of_rows(read_samples(stream, max_rows), out, config, shards)


def held_shards(splits: dict[str, SplitInfo]) -> dict[str, tuple[str, int]]:
    """Each shard the manifest's ``splits`` list: its split and its sample count."""
    return {shard.images: (name, shard.num_samples) for name, split in splits.items()
            for shard in split.shards}


def found_duplicates(out: Location, config: BuildConfig,
                     splits: dict[str, SplitInfo]) -> dict[str, Any]:
    """The manifest's ``duplicates`` key for the ``samples.csv`` a build just published in OUT
    (none when its rows carry no hashes: an append to a dataset built before them)."""
    return duplicates_record(duplicates_in(out, config, splits))


def groups_of_rows(rows: Iterable[SampleRow], out: Location, config: BuildConfig,
                   shards: dict[str, tuple[str, int]]) -> list[DuplicateGroup] | None:
    """The groups of the rows' hashes, exact ones confirmed and near ones compared on
    thumbnails of OUT's shards (:func:`confirm_exact`, :class:`StoredThumbnails`). A row whose
    hash cells are not what a build writes (an edited file), or that names a shard not in
    ``shards`` (the manifest's, :func:`held_shards`) or a row outside it, is left out rather than
    trusted (nor read: an edited ``../x.npy`` lies outside OUT); a row's split is its shard's
    (an edited split cell would hide leakage)."""
    paths: list[str] = []
    splits: list[str] = []
    places: list[tuple[str, int]] = []
    digests, dhashes = bytearray(), array("Q")
    named: dict[str, int] = {}
    for row in rows:
        if row.hashes is None:
            return None
        digest, difference = row.hashes
        split, held = shards.get(row.shard, ("", 0))
        if len(digest) != 2 * DIGEST_BYTES or len(difference) != 16 or not (
                _HASH_CELL.fullmatch(digest) and _HASH_CELL.fullmatch(difference)) or (
                not 0 <= row.index < held):
            continue
        digest_bytes, value = bytes.fromhex(digest), int(difference, 16)
        paths.append(_sample_name(row, named))
        splits.append(split)
        places.append((row.shard, row.index))
        digests += digest_bytes
        dhashes.append(value)
    confirmed = confirm_exact(np.frombuffer(bytes(digests), np.uint8).reshape(-1, 16), places,
                              StoredRows(out, config))
    return find_groups(paths, splits, confirmed,
                       np.frombuffer(dhashes, np.uint64) if dhashes else np.zeros(0, np.uint64),
                       StoredThumbnails(places, out, config))


def confirm_exact(fingerprints: np.ndarray, places: list[tuple[str, int]],
                  stored: StoredRows) -> np.ndarray:
    """The samples' digests: each fingerprint that only one sample has, as it is; a shared one
    replaced by the digest of the sample's whole stored row (sha256, first 128 bits), read from
    its shard (``places``: shard name and row), so that equal digests are identical pixels.

    Only samples that share a fingerprint are read: exact duplicates, nearly always, so a
    dataset without any costs no read. Raises ShardError or OSError for a row it cannot read.
    """
    digests = fingerprints.copy()
    if not len(digests):
        return digests
    keys = np.ascontiguousarray(digests).view(np.dtype((np.void, DIGEST_BYTES))).ravel()
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    by_shard: dict[str, list[int]] = {}
    for sample in np.flatnonzero(counts[inverse.ravel()] > 1).tolist():
        by_shard.setdefault(places[sample][0], []).append(sample)
    for shard, samples in sorted(by_shard.items()):
        with stored.open(shard) as row:  # mapped once, a row read at a time
            for sample in samples:
                digests[sample] = np.frombuffer(pixel_digest(row(places[sample][1])), np.uint8)
    return digests


class StoredRows:
    """The stored rows of OUT's shards, each checked to hold the dataset's images (``config``'s
    shape and dtype) and the row asked for: an edited directory's shard of other rows (verify
    says which) is a ShardError, never thumbnails of what is not an image."""

    def __init__(self, out: Location, config: BuildConfig):
        self.out, self.config = out, config

    @contextlib.contextmanager
    def open(self, shard: str) -> Iterator[Callable[[int], np.ndarray]]:
        """The shard mapped while the context lasts, as a function of a row's index."""
        with self.out.local_copy(shard) as path:
            rows = shard_format().open_shard(path)
            if rows.shape[1:] != self.config.image_shape or rows.dtype != self.config.dtype:
                raise ShardError(f"{shard}: rows of shape {rows.shape[1:]} and dtype "
                                 f"{rows.dtype}, not the dataset's images (run imgshard verify)")
            yield functools.partial(_row, rows, shard)


def _sample_name(row: SampleRow, named: dict[str, int]) -> str:
    """How a group names the row's sample: its path; a merged dataset's, after its input
    (``INPUT: PATH``). A name already given (an input merged twice) is followed by ``#2``,
    ``#3``... in the order of the rows: a group never names one sample twice."""
    name = row.path if not row.source else f"{row.source}: {row.path}"
    seen = named.get(name, 0)
    named[name] = seen + 1
    return name if not seen else f"{name} #{seen + 1}"


def _row(rows: np.ndarray, shard: str, index: int) -> np.ndarray:
    if not 0 <= index < len(rows):
        raise ShardError(f"{shard}: holds {len(rows)} rows, not row {index} (run imgshard verify)")
    return rows[index]


class StoredThumbnails:
    """The thumbnails (``image_hash.thumbnail``) of samples, from their stored rows in OUT's
    shards (``places``: each sample's shard name and row), each shard opened once a call.

    A float build stores ``pixel * rescale + offset``; a uint8 build the pixel itself
    (``rescale`` applies when it is read), so its thumbnails take (1, 0)."""

    def __init__(self, places: list[tuple[str, int]], out: Location, config: BuildConfig):
        self.places, self.stored = places, StoredRows(out, config)
        self.scale = (1.0, 0.0) if config.dtype == "uint8" else (config.rescale, config.offset)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        by_shard: dict[str, list[int]] = {}
        for position, sample in enumerate(samples.tolist()):
            by_shard.setdefault(self.places[sample][0], []).append(position)
        found: list[np.ndarray | None] = [None] * len(samples)
        for shard, positions in sorted(by_shard.items()):
            with self.stored.open(shard) as row:
                for position in positions:
                    found[position] = thumbnail(row(self.places[samples[position]][1]),
                                                *self.scale)
        return np.stack(found) if found else np.zeros((0, 1), np.uint8)


def duplicates_record(groups: list[DuplicateGroup] | None) -> dict[str, Any]:
    """The manifest's ``duplicates`` key for ``groups`` (none when nothing was searched)."""
    return {} if groups is None else {"duplicates": [group.to_json() for group in groups]}


def summarize_duplicates(groups: list[dict] | None) -> dict[str, Any] | None:
    """What ``inspect --json`` says under ``duplicates`` (None: the manifest has no record):
    counts of groups by kind, of the paths in them, and of those that leak (docs/check.md)."""
    if groups is None:
        return None
    leaking = [group for group in groups if len(group["splits"]) > 1]
    return {
        "exact_groups": sum(group["kind"] == "exact" for group in groups),
        "near_groups": sum(group["kind"] == "near" for group in groups),
        "extra_exact_copies": sum(len(g["paths"]) - 1 for g in groups if g["kind"] == "exact"),
        "leakage": {
            "groups": len(leaking),
            "exact": sum(group["kind"] == "exact" for group in leaking),
            "near": sum(group["kind"] == "near" for group in leaking),
            "examples": leaking[:EXAMPLES],
        },
        "examples": [group for group in groups if len(group["splits"]) == 1][:EXAMPLES],
    }


def leakage_lines(summary: dict[str, Any] | None) -> list[str]:
    """The warning said first, when duplicate groups span more than one split."""
    leakage = None if summary is None else summary["leakage"]
    if not leakage or not leakage["groups"]:
        return []
    groups = leakage["groups"]
    lines = [f"LEAKAGE: {groups:,} duplicate group{'s span' if groups != 1 else ' spans'} more "
             f"than one split ({leakage['exact']:,} exact, {leakage['near']:,} near), e.g.:"]
    lines += [_example(group) for group in leakage["examples"]]
    return lines


def duplicate_lines(summary: dict[str, Any] | None) -> list[str]:
    """One line counting the duplicates (none when the dataset has no record of them)."""
    if summary is None:
        return []
    exact, near = summary["exact_groups"], summary["near_groups"]
    if not exact and not near:
        return ["duplicates: none found"]
    across = summary["leakage"]["groups"]
    extra = summary["extra_exact_copies"]
    copies = f" ({extra:,} extra cop{'ies' if extra != 1 else 'y'})" if exact else ""
    lines = [f"duplicates: {exact:,} exact group{'s' if exact != 1 else ''}{copies}, {near:,} "
             f"near group{'s' if near != 1 else ''}; "
             + (f"{across:,} across splits (above)" if across else "none across splits")]
    return lines + [_example(group) for group in summary["examples"]]


def _example(group: dict) -> str:
    paths = group["paths"]
    shown = ", ".join(paths[:4]) + (f", ... ({len(paths):,} in all)" if len(paths) > 4 else "")
    return f"  {group['kind']:<5}  {shown}  ({', '.join(group['splits'])})"
