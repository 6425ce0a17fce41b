"""The resume log: the plan of a build, then a typed :class:`Checkpoint` each time it can stop.

Its records (see :mod:`imgshard.storage.record_log` for how they are kept durable, locally and
on an object store) are JSON objects with sorted keys, one a line:

* the first, the plan: the effective config, a fingerprint of the file list, how many pieces
  each shard was cut into, the labels file's sha256, the build id (``build``), which tags every
  temporary and part file name of the build, and how many shards each split may have
  (``shards``), so that ``--overwrite`` can tell the build's files from anyone else's;
* then one checkpoint each time the shards finished so far cover exactly the tasks consumed so
  far (no shard half joined): see :class:`Checkpoint`.

:func:`encode_checkpoint` and :func:`decode_checkpoint` are the one pair that writes and reads
a checkpoint; the decoder refuses anything a build would not have written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ImgshardError
from .formats import shard_format
from .layout import images_name, labels_name, targets_name
from .manifest import ShardInfo, Skip
from .storage import Location
from .values import is_count


@dataclass(frozen=True)
class Checkpoint:
    """What one split's newly finished shards add, and where the whole build then stands.

    ``tasks_done``: tasks consumed so far (all splits); ``shards``, ``skipped`` and ``counts``
    (samples per label): what this checkpoint adds to ``split``; ``inputs_seen``: the split's
    inputs consumed so far; ``finished``: the split has no task left; ``samples_bytes``: the
    length of ``samples.csv`` so far; ``samples_rows``: the rows it added, where the staged
    ``samples.csv`` does not outlive the build process (an object store), else None.
    """

    tasks_done: int
    split: str
    shards: tuple[ShardInfo, ...]
    skipped: tuple[Skip, ...]
    counts: dict[int, int]
    inputs_seen: int
    finished: bool
    samples_bytes: int
    samples_rows: str | None = None


def encode_checkpoint(checkpoint: Checkpoint) -> str:
    """The checkpoint as one line of the log (without its newline)."""
    record = {"tasks_done": checkpoint.tasks_done, "split": checkpoint.split,
              "shards": [asdict(s) for s in checkpoint.shards],
              "skipped": [asdict(s) for s in checkpoint.skipped],
              "counts": {str(k): v for k, v in checkpoint.counts.items()},
              "inputs_seen": checkpoint.inputs_seen, "finished": checkpoint.finished,
              "samples_bytes": checkpoint.samples_bytes}
    if checkpoint.samples_rows is not None:
        record["samples_rows"] = checkpoint.samples_rows
    return json.dumps(record, sort_keys=True)


def decode_checkpoint(record: Any, next_index: dict[str, int]) -> Checkpoint:
    """The checkpoint a parsed log line holds, whose shards must carry the names the build
    gives the next shards of their split, from ``next_index[split]`` on (a shard named
    otherwise, e.g. ``../x``, is never read or listed).

    Raises:
        TypeError, ValueError, KeyError, AttributeError: the line is not what a build writes.
    """
    split = record["split"]
    if not isinstance(split, str) or not isinstance(record["shards"], list):
        raise TypeError
    shards = tuple(ShardInfo(**s) for s in record["shards"])
    suffix = shard_format().SUFFIX
    for index, shard in enumerate(shards, next_index.get(split, 0)):
        if (shard.images != images_name(split, index, suffix) or not is_count(shard.num_samples)
                or shard.labels not in (None, labels_name(split, index, suffix))
                or shard.targets not in (None, targets_name(split, index, suffix))):
            raise TypeError
    skipped = tuple(Skip(**s) for s in record["skipped"])
    counts = {int(label): count for label, count in record["counts"].items()}
    numbers = [record[key] for key in ("inputs_seen", "tasks_done", "samples_bytes")]
    if not (all(map(is_count, [*counts.values(), *numbers]))
            and isinstance(record["finished"], bool)
            and isinstance(record.get("samples_rows", ""), str)
            and all(isinstance(s.path, str) and isinstance(s.reason, str) for s in skipped)):
        raise TypeError
    return Checkpoint(record["tasks_done"], split, shards, skipped, counts,
                      record["inputs_seen"], record["finished"], record["samples_bytes"],
                      record.get("samples_rows"))


class ResumeLog:
    """Writes a build's plan and checkpoints into OUT's record log, each durable."""

    def __init__(self, out: Location, plan: dict, *, append: bool) -> None:
        self.records = out.record_log()
        self.records.open(append=append)
        if not append:
            self.records.append(json.dumps(plan, sort_keys=True))

    def write(self, checkpoint: Checkpoint) -> None:
        self.records.append(encode_checkpoint(checkpoint))

    def close(self) -> None:
        self.records.close()


def log_names(out: Location) -> list[str]:
    """The names of the files that hold OUT's resume log, the plan's first."""
    return out.record_log().names()


def holds_log(out: Location) -> bool:
    """Whether OUT holds a resume log with a plan in it: a build that ``--resume`` may finish."""
    return bool(out.record_log_files())


def read_plan(out: Location) -> dict | None:
    """The plan record of OUT's resume log, or None when there is no log or no plan in it."""
    lines = out.record_log().read()
    try:
        return json.loads(lines[0]) if lines else None
    except (ValueError, RecursionError):
        return None


def appended_id(out: Location) -> str | None:
    """The ``dataset_id`` of the dataset that the interrupted run in OUT grows, as its plan
    names it; None when OUT holds no log, an unreadable one, or a build's."""
    if not holds_log(out):
        return None
    try:
        plan = read_plan(out)
    except (OSError, ImgshardError):
        return None
    grows = plan.get("append") if isinstance(plan, dict) else None
    return grows if isinstance(grows, str) else None


class Checkpointer:
    """Logs a checkpoint whenever a split's finished shards cover exactly the tasks consumed.

    ``assemblers``: each split's :class:`~imgshard.assemble.SplitAssembler`; ``stream``: the
    staged ``samples.csv``; ``carry_rows``: the log carries its rows (it does not outlive the
    build process).
    """

    def __init__(self, log: ResumeLog, stream, assemblers: dict, tasks_done: int, *,
                 carry_rows: bool) -> None:
        self.log, self.stream, self.assemblers = log, stream, assemblers
        self.tasks_done = tasks_done
        self.carry_rows = carry_rows
        self.rows_logged = stream.tell()
        self.logged = {split: (len(a.shards), len(a.skipped), dict(a.counts))
                       for split, a in assemblers.items()}

    def after_task(self, split: str, *, finished: bool) -> None:
        self.tasks_done += 1
        assembler = self.assemblers[split]
        if not assembler.is_between_shards():
            return
        shards, skips, counts = self.logged[split]
        self.stream.flush()
        os.fsync(self.stream.fileno())
        added = {k: v - counts.get(k, 0) for k, v in assembler.counts.items()
                 if v != counts.get(k, 0)}
        self.log.write(Checkpoint(
            self.tasks_done, split, tuple(assembler.shards[shards:]),
            tuple(assembler.skipped[skips:]), added, assembler.inputs_seen, finished,
            self.stream.tell(), self._rows_since_last() if self.carry_rows else None))
        self.logged[split] = (len(assembler.shards), len(assembler.skipped),
                              dict(assembler.counts))

    def _rows_since_last(self) -> str:
        """The ``samples.csv`` rows written since the last checkpoint."""
        end = self.stream.tell()
        with open(self.stream.name, "rb") as written:
            written.seek(self.rows_logged)
            rows = written.read(end - self.rows_logged)
        self.rows_logged = end
        return rows.decode("utf-8", "surrogateescape")
