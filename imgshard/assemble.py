"""Cut the parts that workers wrote into fixed-size shards, with their labels and provenance.

Workers write one part per task, holding the task's files that decoded. When nothing was
skipped a part is exactly one shard and is simply renamed (its checksum is the worker's). After
the first skip in a split the boundaries shift, so the following shards are streamed together
from the parts' memory maps and hashed anew. Either way, every shard but a split's last holds
exactly ``shard_size`` samples and the bytes depend only on the inputs and the config.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np

from .config import BuildConfig
from .manifest import ShardInfo, Skip, SplitInfo
from .scan import Sample
from .shards import images_name, labels_name, open_shard, sync_file, write_array_atomically, \
    write_rows_atomically
from .tasks import ShardResult

SAMPLES_HEADER = ("path", "split", "shard", "index", "label")


@dataclass
class _Part:
    path: str
    sha256: str
    samples: list[Sample]
    consumed: int = 0


@dataclass
class SplitAssembler:
    """Turns one split's :class:`ShardResult` objects, fed in task order, into final shards."""

    split: str
    out: str
    config: BuildConfig
    class_names: list[str] | None
    samples_writer: "csv._writer"
    shards: list[ShardInfo] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    _parts: list[_Part] = field(default_factory=list)
    _counts: dict[int, int] = field(default_factory=dict)
    bytes_written: int = 0

    def add(self, result: ShardResult, inputs: list[Sample]) -> None:
        """Take the result of the next task of this split (``inputs``: the task's samples)."""
        failed = dict(result.skipped)
        self.skipped += [Skip(inputs[i].path, reason) for i, reason in failed.items()]
        kept = [sample for i, sample in enumerate(inputs) if i not in failed]
        self._parts.append(_Part(result.part_path, result.sha256, kept))
        while self._pending() >= self.config.shard_size:
            self._emit(self.config.shard_size)

    def finish(self) -> SplitInfo:
        """Write the split's last (possibly short) shard and describe the split."""
        if self._pending():
            self._emit(self._pending())
        for part in self._parts:
            os.remove(part.path)
        self._parts.clear()
        counts = None
        if self.class_names is not None:
            counts = {name: self._counts.get(i, 0) for i, name in enumerate(self.class_names)}
        total = sum(shard.num_samples for shard in self.shards)
        return SplitInfo(num_samples=total, class_counts=counts, shards=list(self.shards))

    def _pending(self) -> int:
        return sum(len(p.samples) - p.consumed for p in self._parts)

    def _emit(self, size: int) -> None:
        index = len(self.shards)
        path = os.path.join(self.out, images_name(self.split, index))
        first = self._parts[0]
        if first.consumed == 0 and len(first.samples) == size:
            sync_file(first.path)
            os.replace(first.path, path)
            digest, samples = first.sha256, first.samples
            self._parts.pop(0)
        else:
            digest, samples = self._stream_into(path, size)
        self.bytes_written += os.path.getsize(path)
        self.shards.append(self._finish_shard(index, digest, samples))

    def _stream_into(self, path: str, size: int) -> tuple[str, list[Sample]]:
        pieces, samples, needed = [], [], size
        for part in self._parts:
            take = min(needed, len(part.samples) - part.consumed)
            if take:
                rows = open_shard(part.path)
                pieces.append(rows[part.consumed:part.consumed + take])
                samples += part.samples[part.consumed:part.consumed + take]
                part.consumed += take
                needed -= take
            if not needed:
                break
        digest = write_rows_atomically(path, pieces, rows=size,
                                       row_shape=self.config.image_shape,
                                       dtype=np.dtype(self.config.dtype))
        del pieces
        while self._parts and self._parts[0].consumed == len(self._parts[0].samples):
            os.remove(self._parts.pop(0).path)
        return digest, samples

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
        labels_digest = write_array_atomically(os.path.join(self.out, labels_file), labels)
        self.bytes_written += os.path.getsize(os.path.join(self.out, labels_file))
        return ShardInfo(images=shard_file, num_samples=len(samples), sha256=digest,
                         labels=labels_file, labels_sha256=labels_digest)


def open_samples_csv(path: str):
    """Open ``samples.csv`` for writing (non-UTF-8 names kept byte for byte)."""
    stream = open(path, "w", newline="", encoding="utf-8", errors="surrogateescape")
    writer = csv.writer(stream)
    writer.writerow(SAMPLES_HEADER)
    return stream, writer
