"""``samples.csv`` of a merge or reshard: each input's rows, moved to where their pixels went.

Every input row is checked against its input's manifest (a listed shard, a row inside it, a
label in range, no sample given two rows, none left without one) and its label files (each
shard's rows must give the labels its file holds), so an edited input cannot make the output's
provenance lie. The labels are compared without holding them: each (row, label) pair is mixed
into 64 bits with a key drawn for the merge, and a shard's rows must add up to what its label
file adds up to (an edit cannot be made to match a key it never sees). Paths found in more than
one input are counted by a 64-bit hash of each path (8 bytes a sample, and a byte a sample for
the rows seen: the only memory that grows with the inputs), and a few are named as examples.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from array import array
from dataclasses import dataclass, field

import numpy as np

from .formats import shard_format
from .layout import images_name
from .merge_copy import CHUNK_BYTES, Input, verified_labels
from .merge_plan import MergeError, SplitLayout
from .samples_csv import SampleRow, read_samples

#: How many duplicated paths a merge names (it counts them all).
DUPLICATE_EXAMPLES = 10
#: Marks of (row, label) pairs add up modulo 2**64.
MASK = (1 << 64) - 1


@dataclass
class Duplicates:
    """Paths that occur in more than one input: how many, and a few with their inputs."""

    count: int = 0
    examples: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"count": self.count, "examples": self.examples}


def path_hash(path: str) -> int:
    return int.from_bytes(hashlib.blake2b(path.encode("utf-8", "surrogateescape"),
                                          digest_size=8).digest(), "little")


def rewrite_samples(inputs: list[Input], names: list[str], layouts: dict[str, SplitLayout],
                    writer, *, source_column: bool, hash_columns: bool) -> np.ndarray:
    """Write every input's rows to ``writer`` at their output places (with ``hash_columns``,
    each row's hash cells as its input has them: its pixels are copied byte for byte); return
    each distinct path hash once per input it occurs in (for :func:`duplicated_hashes`)."""
    seen = []
    for source, (given, name) in enumerate(zip(inputs, names)):
        hashes = array("Q")
        for row in checked_rows(given):
            if hash_columns and row.hashes is None:
                raise MergeError(f"{given.location.display(given.manifest.samples)}: its rows "
                                 "carry no hashes, but its manifest lists duplicates (run "
                                 "imgshard verify)")
            layout = layouts[row.split]
            shard, index = layout.place(source, row.shard, row.index)
            label = "" if given.table is None else int(given.table[row.label])
            written = (row.path, row.split, shard_name(layout, shard), index, label,
                       *((row.hashes or ("", "")) if hash_columns else ()))
            writer.writerow((*written, row.source or name) if source_column else written)
            hashes.append(path_hash(row.path))
        seen.append(np.unique(np.frombuffer(hashes, dtype=np.uint64)))
    return np.concatenate(seen) if seen else np.zeros(0, np.uint64)


def shard_name(layout: SplitLayout, index: int) -> str:
    return images_name(layout.split, index, shard_format().SUFFIX)


def checked_rows(given: Input):
    """The rows of one input's ``samples.csv``, each checked against its manifest.

    Raises:
        MergeError: naming the input's file, the line and what is wrong with it.
    """
    manifest, location = given.manifest, given.location
    where = {(split, shard.images): (offset, shard.num_samples)
             for split, offset, shard in _shard_offsets(manifest)}
    covered = np.zeros(manifest.shard_samples, dtype=bool)
    key = _mark_key()
    marks: dict[tuple[str, str], int] = {}  # the sum of each shard's rows' marks
    display = location.display(manifest.samples)
    try:
        opened = location.open_listed(manifest.samples)
    except FileNotFoundError:
        raise MergeError(f"{display} is missing (run imgshard verify)") from None
    with opened as stream:
        for row in read_samples(stream, max_rows=manifest.shard_samples):
            offset, rows = where.get((row.split, row.shard), (None, 0))
            problem = _row_problem(row, offset, rows, manifest.num_classes)
            if problem is None and row.source and "merged_from" not in manifest.extra:
                problem = f"source {row.source[:40]!r}: only a merged dataset's rows name one"
            if problem is None and covered[offset + row.index]:
                problem = f"{row.shard} row {row.index} has a second row"
            if problem is not None:
                raise MergeError(f"{display}: line {row.line}: {problem} (run imgshard verify)")
            covered[offset + row.index] = True
            if given.table is not None:
                shard = (row.split, row.shard)
                marks[shard] = (marks.get(shard, 0) + row_marks(key, row.index, row.label)) & MASK
            yield row
    if not covered.all():
        raise MergeError(f"{display}: {int((~covered).sum())} samples of the manifest have no "
                         "row (run imgshard verify)")
    if given.table is not None:
        _check_labels(given, marks, key, display)


def _check_labels(given: Input, marks: dict[tuple[str, str], int], key: tuple[int, int],
                  display: str) -> None:
    """Refuse rows whose labels are not their shard's label file's (``marks``: each shard's
    rows' marks added up), reading each label file a chunk at a time."""
    step = max(1, CHUNK_BYTES // 4)
    for split, _, shard in _shard_offsets(given.manifest):
        found = 0
        with contextlib.ExitStack() as files:
            labels = verified_labels(given, shard, shard_format(), files)
            for start in range(0, shard.num_samples, step):
                rows = np.arange(start, min(start + step, shard.num_samples), dtype=np.uint64)
                chunk = labels[start:start + step].astype(np.uint64)
                found = (found + int(row_marks(key, rows, chunk).sum(dtype=np.uint64))) & MASK
        if found != marks.get((split, shard.images), 0):
            raise MergeError(f"{display}: the labels of {shard.images} disagree with "
                             f"{shard.labels} (run imgshard verify)")


def _mark_key() -> tuple[int, int]:
    """Two odd 64-bit multipliers, new for each input read."""
    return secrets.randbits(64) | 1, secrets.randbits(64) | 1


def row_marks(key: tuple[int, int], row, label):
    """The 64-bit mark of a (row, label) pair: Python ints, or uint64 arrays (which wrap as
    the masks do)."""
    mixed = ((row * key[0]) & MASK) ^ ((label * key[1]) & MASK)
    mixed ^= mixed >> 29
    return (mixed * key[0]) & MASK


def _row_problem(row: SampleRow, offset: int | None, rows: int,
                 num_classes: int | None) -> str | None:
    if offset is None:
        return f"shard {row.shard[:80]!r} of split {row.split[:20]!r} is not in the manifest"
    if not 0 <= row.index < rows:
        return f"row {row.index} is not in {row.shard} ({rows} rows)"
    if num_classes is not None and (not isinstance(row.label, int)
                                    or not 0 <= row.label < num_classes):
        return f"label {row.label} is not one of the {num_classes} classes"
    return None


def _shard_offsets(manifest):
    offset = 0
    for split, info in manifest.splits.items():
        for shard in info.shards:
            yield split, offset, shard
            offset += shard.num_samples


def duplicated_hashes(hashes: np.ndarray) -> np.ndarray:
    """The path hashes found in more than one input (``hashes``: each input's, distinct)."""
    values, counts = np.unique(hashes, return_counts=True)
    return values[counts > 1]


def find_duplicates(written_rows, duplicated: np.ndarray) -> Duplicates:
    """Count the duplicated paths and name the first :data:`DUPLICATE_EXAMPLES` of them with
    the inputs they occur in (``written_rows``: the output's rows, with their source)."""
    found = Duplicates(count=len(duplicated))
    if not found.count:
        return found
    wanted = set(duplicated.tolist())
    examples: dict[str, list[str]] = {}
    for row in written_rows:
        if path_hash(row.path) in wanted and (row.path in examples
                                              or len(examples) < DUPLICATE_EXAMPLES):
            sources = examples.setdefault(row.path, [])
            if row.source not in sources:
                sources.append(row.source)
    found.examples = [{"path": path, "sources": sources} for path, sources in examples.items()]
    return found
