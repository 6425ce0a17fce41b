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

Results arrive in the order the workers finish; :func:`assemble_in_order` feeds them to the
assemblers in task order, which is what makes the bytes independent of the workers.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import shutil
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .config import BuildConfig
from .errors import ImgshardError
from .formats import RowWriter, ShardFormat, class_counts, shard_format
from .image_hash import HASHES_BYTES, hash_cells
from .labels_file import LABEL_SEPARATOR
from .layout import (HASH_COLUMNS, SAMPLES_NAME, SAMPLES_PARTIAL, images_name, labels_name,
                     targets_name)
from .manifest import ShardInfo, Skip, SplitInfo
from .samples import Label, Sample, is_multi_label
from .samples_csv import has_hash_columns, open_samples_csv
from .storage import Location
from .worker import ShardResult, ShardTask


#: A kept sample and the hash cells of its ``samples.csv`` row (empty: no hash columns).
Row = tuple[Sample, tuple[str, ...]]


@dataclass
class _JoinedShard:
    """A shard being joined from parts: its open temporary file and the samples in it so far."""

    index: int
    expected_rows: int
    writer: RowWriter
    file: contextlib.ExitStack
    samples: list[Row] = field(default_factory=list)


@dataclass
class SplitAssembler:
    """Turns one split's :class:`ShardResult` objects, fed in task order, into final shards.

    ``num_inputs`` (the split's input files) tells how big its last shard will be before the
    last part arrives, so that a joined shard's header can be written first. Each row given
    to ``samples_writer`` ends with the sample's hash cells (see :class:`StagedSamples`).
    """

    split: str
    out: Location
    config: BuildConfig
    class_names: list[str] | None
    samples_writer: "csv._writer"
    num_inputs: int
    file_format: ShardFormat = field(default_factory=shard_format)
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
        kept = list(zip([sample for i, sample in enumerate(inputs) if i not in failed],
                        self._cells(result.hashes)))
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

    def _cells(self, hashes: bytes) -> list[tuple[str, ...]]:
        """The hash cells of each row of a part (see :data:`Row`)."""
        return [hash_cells(hashes[at:at + HASHES_BYTES])
                for at in range(0, len(hashes), HASHES_BYTES)]

    def _next_shard_rows(self, pending: int) -> int:
        """Rows of the next shard if no more files are skipped: full, or all the split has left."""
        return min(self.config.shard_size, pending + self.num_inputs - self._inputs_seen)

    def _images_name(self, index: int) -> str:
        return images_name(self.split, index, self.file_format.SUFFIX)

    def _rename_part(self, result: ShardResult, kept: list[Row]) -> None:
        index = len(self.shards)
        name = self._images_name(index)
        self.out.replace_durably(result.part, name)
        self.bytes_written += self.out.size(name)
        self.shards.append(self._finish_shard(index, result.sha256, kept))

    def _join_part(self, part: str, kept: list[Row]) -> None:
        with self.out.local_copy(part) as part_path:
            self._join_rows(part_path, kept)

    def _join_rows(self, part_path: str, kept: list[Row]) -> None:
        done = 0
        while done < len(kept):
            if self._joined is None:
                self._joined = self._open_joined(self._next_shard_rows(len(kept) - done))
            joined = self._joined
            take = min(len(kept) - done, joined.expected_rows - joined.writer.rows)
            for rows in self.file_format.read_rows(part_path, done, take):
                joined.writer.append(rows)
            joined.samples += kept[done:done + take]
            done += take
            if joined.writer.rows == joined.expected_rows:
                self._close_joined()

    def _open_joined(self, expected_rows: int) -> _JoinedShard:
        index = len(self.shards)
        file = contextlib.ExitStack()
        stream = file.enter_context(self.out.atomic_file(self._images_name(index)))
        writer = self.file_format.RowStream(stream, expected_rows=expected_rows,
                                            row_shape=self.config.image_shape,
                                            dtype=np.dtype(self.config.dtype))
        return _JoinedShard(index, expected_rows, writer, file)

    def _close_joined(self) -> None:
        joined, self._joined = self._joined, None
        with joined.file:
            digest = joined.writer.finish()
        self.bytes_written += self.out.size(self._images_name(joined.index))
        self.shards.append(self._finish_shard(joined.index, digest, joined.samples))

    def _finish_shard(self, index: int, digest: str, rows: list[Row]) -> ShardInfo:
        shard_file = self._images_name(index)
        for row, (sample, cells) in enumerate(rows):
            self.samples_writer.writerow((sample.path, self.split, shard_file, row,
                                          label_cell(sample.label), *cells))
        samples = [sample for sample, _ in rows]
        info = ShardInfo(images=shard_file, num_samples=len(samples), sha256=digest)
        if self.class_names is not None:
            labels = label_rows(samples, len(self.class_names))
            counts = class_counts(labels, len(self.class_names))
            for label in np.flatnonzero(counts).tolist():
                self._counts[label] = self._counts.get(label, 0) + int(counts[label])
            name = labels_name(self.split, index, self.file_format.SUFFIX)
            info = dataclasses.replace(info, labels=name, labels_sha256=self._write(name, labels))
        if self.config.targets is not None:
            name = targets_name(self.split, index, self.file_format.SUFFIX)
            targets = np.array([s.targets for s in samples], np.float32).reshape(len(samples), -1)
            info = dataclasses.replace(info, targets=name, targets_sha256=self._write(name,
                                                                                      targets))
        return info

    def _write(self, name: str, rows: np.ndarray) -> str:
        """Write the rows of a labels or targets file; its checksum."""
        with self.out.atomic_file(name) as stream:
            writer = self.file_format.RowStream(stream, expected_rows=len(rows),
                                                row_shape=rows.shape[1:], dtype=rows.dtype)
            writer.append(rows)
            digest = writer.finish()
        self.bytes_written += self.out.size(name)
        return digest


def label_cell(label: Label) -> str | int:
    """A label as ``samples.csv`` writes it: the index, a multi-label's indices joined by
    ``|``, or empty."""
    if label is None:
        return ""
    return LABEL_SEPARATOR.join(map(str, label)) if isinstance(label, tuple) else label


def label_rows(samples: list[Sample], num_classes: int) -> np.ndarray:
    """The labels file's rows: int32 indices, or a multi-label dataset's uint8 multi-hot rows."""
    if not is_multi_label(samples):
        return np.array([s.label for s in samples], dtype=np.int32)
    rows = np.zeros((len(samples), num_classes), dtype=np.uint8)
    for row, sample in enumerate(samples):
        rows[row, list(sample.label)] = 1
    return rows


def assemble_in_order(results: Iterable[ShardResult], tasks: list[ShardTask],
                      samples: dict[str, list[Sample]], assemblers: dict[str, SplitAssembler],
                      splits: dict[str, SplitInfo], *, after_task: Callable[..., None],
                      progress: Callable[[int], None] | None = None) -> None:
    """Give each result to its split's assembler in task order, whatever order they finish in,
    and put each split into ``splits`` once its last task is assembled.

    ``samples``: each split's samples (a task's inputs are ``len(task.paths)`` of them from
    ``task.start``); ``after_task(split, finished=...)`` is called after each task assembled.
    """
    order = deque((task.split, task.index) for task in tasks)
    task_of = {(task.split, task.index): task for task in tasks}
    last_index = {task.split: task.index for task in tasks}
    waiting: dict[tuple[str, int], ShardResult] = {}
    for result in results:
        waiting[(result.split, result.index)] = result
        if progress:
            progress(result.num_samples + len(result.skipped))
        while order and order[0] in waiting:
            split, index = order.popleft()
            task = task_of[(split, index)]
            inputs = samples[split][task.start:task.start + len(task.paths)]
            assemblers[split].add(waiting.pop((split, index)), inputs)
            if index == last_index[split]:
                splits[split] = assemblers[split].finish()
            after_task(split, finished=split in splits)
    if order:
        raise ImgshardError(f"{len(order)} tasks never reported back (a bug): rerun with --resume")


class StagedSamples:
    """``samples.csv``, grown in OUT's staging folder as shards finish and published last.

    An interrupted build's rows are kept: cut after its last checkpoint (``samples_bytes``)
    where the staged file outlived it, else written again from the checkpoints' rows. An
    append (``continues``) starts from the rows of OUT's ``samples.csv``. Its ``writer``
    keeps a row's hash cells where its header names the hash columns (an append to a dataset
    built before they existed writes none, so that every row has the header's columns).
    """

    def __init__(self, out: Location, samples_bytes: int, samples_rows: list[str], *,
                 continues: bool = False) -> None:
        self.out = out
        self.folder = out.staging_folder()
        path = os.path.join(self.folder, SAMPLES_PARTIAL)
        hashes = True
        if samples_rows or not samples_bytes:
            self.stream, self.writer = open_samples_csv(path, header=not continues,
                                                        hash_columns=True)
            if continues:
                with out.open_listed(SAMPLES_NAME) as earlier:
                    text = io.TextIOWrapper(earlier, encoding="utf-8", errors="surrogateescape",
                                            newline="")
                    header = text.readline()
                    hashes = has_hash_columns(header)
                    self.stream.write(header)
                    shutil.copyfileobj(text, self.stream)
            self.stream.write("".join(samples_rows))
            self.stream.flush()
        else:
            with open(path, encoding="utf-8", errors="surrogateescape", newline="") as staged:
                hashes = has_hash_columns(staged.readline())
            self.stream, self.writer = open_samples_csv(path, samples_bytes)
        if not hashes:
            self.writer = _WithoutHashes(self.writer)

    def publish(self) -> None:
        """Give the finished file its name in OUT."""
        self.stream.close()
        self.out.publish(self.stream.name, SAMPLES_NAME)

    def close(self) -> None:
        self.stream.close()
        self.out.end_staging(self.folder)


class _WithoutHashes:
    """A ``samples.csv`` writer that leaves out the hash cells rows end with."""

    def __init__(self, writer) -> None:
        self.writer = writer

    def writerow(self, row: tuple) -> None:
        self.writer.writerow(row[:-len(HASH_COLUMNS)])


def no_sample(images: int, skipped: list[Skip]) -> str:
    """Why a build made no sample: its most frequent skip reason, with an example."""
    reasons = Counter(skip.reason.split(" (")[0] for skip in skipped)
    files = f"none of the {images:,} image{'s' if images != 1 else ''} became a sample"
    if not reasons:
        return files
    reason, count = reasons.most_common(1)[0]
    example = next(skip for skip in skipped if skip.reason.split(" (")[0] == reason)
    detail = example.reason[len(reason):]  # what the example's reason says beyond the group's
    return f"{files}: {count:,} skipped as {reason}, e.g. {example.path}{detail}"
