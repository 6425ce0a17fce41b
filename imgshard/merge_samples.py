"""``samples.csv`` of a merge or reshard: each input's rows, moved to where their pixels went.

Every input row is checked against its input's manifest (a listed shard, a row inside it, a
label in range, no sample given two rows, none left without one), so an edited input cannot
make the output's provenance lie. Paths found in more than one input are counted by a 64-bit
hash of each path (8 bytes a sample, the only memory that grows with the inputs), and a few
are named as examples.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field

import numpy as np

from .formats import shard_format
from .layout import images_name
from .merge_copy import Input
from .merge_plan import MergeError, SplitLayout
from .samples_csv import SampleRow, read_samples

#: How many duplicated paths a merge names (it counts them all).
DUPLICATE_EXAMPLES = 10


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
                    writer, *, source_column: bool) -> np.ndarray:
    """Write every input's rows to ``writer`` at their output places; return each distinct
    path hash once per input it occurs in (for :func:`duplicated_hashes`)."""
    seen = []
    for source, (given, name) in enumerate(zip(inputs, names)):
        hashes = array("Q")
        for row in checked_rows(given):
            layout = layouts[row.split]
            shard, index = layout.place(source, row.shard, row.index)
            label = "" if given.table is None else int(given.table[row.label])
            written = (row.path, row.split, shard_name(layout, shard), index, label)
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
    display = location.display(manifest.samples)
    try:
        opened = location.open_listed(manifest.samples)
    except FileNotFoundError:
        raise MergeError(f"{display} is missing (run imgshard verify)") from None
    with opened as stream:
        for row in read_samples(stream, max_rows=manifest.shard_samples):
            offset, rows = where.get((row.split, row.shard), (None, 0))
            problem = _row_problem(row, offset, rows, manifest.num_classes)
            if problem is None and covered[offset + row.index]:
                problem = f"{row.shard} row {row.index} has a second row"
            if problem is not None:
                raise MergeError(f"{display}: line {row.line}: {problem} (run imgshard verify)")
            covered[offset + row.index] = True
            yield row
    if not covered.all():
        raise MergeError(f"{display}: {int((~covered).sum())} samples of the manifest have no "
                         "row (run imgshard verify)")


def _row_problem(row: SampleRow, offset: int | None, rows: int,
                 num_classes: int | None) -> str | None:
    if offset is None:
        return f"shard {row.shard[:80]!r} of split {row.split[:20]!r} is not in the manifest"
    if not 0 <= row.index < rows:
        return f"row {row.index} is not in {row.shard} ({rows} rows)"
    if num_classes is not None and (row.label is None or not 0 <= row.label < num_classes):
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
