"""Cut the parts that workers wrote into fixed-size shards, with their labels and provenance.

Workers write one part per task, holding the task's files that decoded. When a part is exactly
the next shard (nothing skipped, a whole shard's task) it is simply renamed (its checksum is the
worker's). Otherwise (pieces of a shard, or boundaries shifted by a skipped file) the parts'
rows are copied into the shard being joined as each part arrives, so the copying and hashing
overlap the workers' decoding instead of waiting for the shard's last part. Either way, every
shard but a split's last holds exactly ``shard_size`` samples and the bytes depend only on the
inputs and the config.

On an object store (OUT an fsspec URL) the rename is a server-side copy, so the pixels of whole
parts never pass through this process; only joining downloads a part.
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass, field

import numpy as np

from .config import BuildConfig
from .formats import RowStream, read_rows
from .layout import images_name, labels_name
from .manifest import ShardInfo, Skip, SplitInfo
from .samples import Sample
from .storage import Location, local_copy
from .storage.files import sync_file
from .worker import ShardResult


@dataclass
class _JoinedShard:
    """A shard being joined from parts: its open temporary file and the samples in it so far."""

    index: int
    expected_rows: int
    writer: RowStream
    file: contextlib.ExitStack
    samples: list[Sample] = field(default_factory=list)


@dataclass
class SplitAssembler:
    """Turns one split's :class:`ShardResult` objects, fed in task order, into final shards.

    ``num_inputs`` (the split's input files) tells how big its last shard will be before the
    last part arrives, so that a joined shard's header can be written first.
    """

    split: str
    out: Location
    config: BuildConfig
    class_names: list[str] | None
    samples_writer: "csv._writer"
    num_inputs: int
    shards: list[ShardInfo] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    bytes_written: int = 0
    _counts: dict[int, int] = field(default_factory=dict)
    _inputs_seen: int = 0
    _joined: _JoinedShard | None = None

    def add(self, result: ShardResult, inputs: list[Sample]) -> None:
        """Take the result of the next task of this split (``inputs``: the task's samples)."""
        failed = dict(result.skipped)
        self.skipped += [Skip(inputs[i].path, reason) for i, reason in failed.items()]
        kept = [sample for i, sample in enumerate(inputs) if i not in failed]
        self._inputs_seen += len(inputs)
        whole_shard = kept and len(kept) == self._next_shard_rows(len(kept))
        # A piece's part is never hashed by its worker (sha256 None), so it is always joined.
        if self._joined is None and whole_shard and result.sha256 is not None:
            self._rename_part(result, kept)
            return
        self._join_part(result.part, kept)
        self.out.remove(result.part)

    def finish(self) -> SplitInfo:
        """Close the split's last (possibly short) shard and describe the split."""
        if self._joined is not None:
            self._close_joined()
        return self.describe()

    def describe(self) -> SplitInfo:
        """The split as the manifest lists it (its shards so far)."""
        counts = None
        if self.class_names is not None:
            counts = {name: self._counts.get(i, 0) for i, name in enumerate(self.class_names)}
        total = sum(shard.num_samples for shard in self.shards)
        return SplitInfo(num_samples=total, class_counts=counts, shards=list(self.shards))

    def restore(self, *, shards: list[ShardInfo], skipped: list[Skip], counts: dict[int, int],
                inputs_seen: int) -> None:
        """Continue after the shards an interrupted build finished (``--resume``)."""
        self.shards, self.skipped = list(shards), list(skipped)
        self._counts, self._inputs_seen = dict(counts), inputs_seen

    def is_between_shards(self) -> bool:
        """True when no shard is half joined: every part taken so far is in finished shards."""
        return self._joined is None

    @property
    def counts(self) -> dict[int, int]:
        return self._counts

    @property
    def inputs_seen(self) -> int:
        return self._inputs_seen

    def abort(self) -> None:
        """Remove the temporary file of a shard being joined (the build failed)."""
        if self._joined is not None:
            joined, self._joined = self._joined, None
            failure = RuntimeError("the build failed")
            joined.file.__exit__(type(failure), failure, None)  # atomic_file removes it

    def _next_shard_rows(self, pending: int) -> int:
        """Rows of the next shard if no more files are skipped: full, or all the split has left."""
        return min(self.config.shard_size, pending + self.num_inputs - self._inputs_seen)

    def _rename_part(self, result: ShardResult, kept: list[Sample]) -> None:
        index = len(self.shards)
        name = images_name(self.split, index)
        if self.out.is_local:
            sync_file(self.out.path(result.part))
        self.out.replace(result.part, name)
        self.bytes_written += self.out.size(name)
        self.shards.append(self._finish_shard(index, result.sha256, kept))

    def _join_part(self, part: str, kept: list[Sample]) -> None:
        with local_copy(self.out, part) as part_path:
            self._join_rows(part_path, kept)

    def _join_rows(self, part_path: str, kept: list[Sample]) -> None:
        done = 0
        while done < len(kept):
            if self._joined is None:
                self._joined = self._open_joined(self._next_shard_rows(len(kept) - done))
            joined = self._joined
            take = min(len(kept) - done, joined.expected_rows - joined.writer.rows)
            for rows in read_rows(part_path, done, take):
                joined.writer.append(rows)
            joined.samples += kept[done:done + take]
            done += take
            if joined.writer.rows == joined.expected_rows:
                self._close_joined()

    def _open_joined(self, expected_rows: int) -> _JoinedShard:
        index = len(self.shards)
        file = contextlib.ExitStack()
        stream = file.enter_context(self.out.atomic_file(images_name(self.split, index)))
        writer = RowStream(stream, expected_rows=expected_rows, row_shape=self.config.image_shape,
                           dtype=np.dtype(self.config.dtype))
        return _JoinedShard(index, expected_rows, writer, file)

    def _close_joined(self) -> None:
        joined, self._joined = self._joined, None
        with joined.file:
            digest = joined.writer.finish()
        self.bytes_written += self.out.size(images_name(self.split, joined.index))
        self.shards.append(self._finish_shard(joined.index, digest, joined.samples))

    def _finish_shard(self, index: int, digest: str, samples: list[Sample]) -> ShardInfo:
        shard_file = images_name(self.split, index)
        for row, sample in enumerate(samples):
            label = "" if sample.label is None else sample.label
            self.samples_writer.writerow((sample.path, self.split, shard_file, row, label))
        if self.class_names is None:
            return ShardInfo(images=shard_file, num_samples=len(samples), sha256=digest)
        labels = np.array([s.label for s in samples], dtype=np.int32)
        for label in labels.tolist():
            self._counts[label] = self._counts.get(label, 0) + 1
        labels_file = labels_name(self.split, index)
        with self.out.atomic_file(labels_file) as stream:
            writer = RowStream(stream, expected_rows=len(labels), row_shape=(), dtype=labels.dtype)
            writer.append(labels)
            labels_digest = writer.finish()
        self.bytes_written += self.out.size(labels_file)
        return ShardInfo(images=shard_file, num_samples=len(samples), sha256=digest,
                         labels=labels_file, labels_sha256=labels_digest)
