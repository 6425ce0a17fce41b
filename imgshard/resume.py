"""The progress log that lets ``imgshard build --resume`` finish an interrupted build.

``OUT/.imgshard-progress.jsonl`` is append-only and every line is fsynced before the build
goes on, so after a crash, a ``kill -9`` or a power cut it holds a prefix of whole lines:

* line 1, the plan: the effective config, a fingerprint of the file list, and how many pieces
  each shard was cut into (the task plan depends on it);
* then one *checkpoint* each time the shards finished so far cover exactly the tasks consumed so
  far (no shard half joined): how many tasks are consumed, the shards and skips they added, the
  class counts they added, and the length of ``samples.csv`` written so far (kept under the
  hidden name ``.samples.csv.partial``).

The plan also records what the build may write, so that ``--overwrite`` can tell its files
from anyone else's (see ``outdir.py``): a build id (``build``), which tags every temporary and
part file name of the build, and how many shards each split may have (``shards``).

Beside it, ``OUT/.imgshard-sources.jsonl.gz`` (:data:`SOURCES_NAME`) records every file the
scan saw, skipped ones too, as ``[path, size, stamp]`` lines in walk order (the stamp is the
modification time in nanoseconds, or a hash of an object's ETag or time); the plan holds the
labels file's sha256. Both are written before any shard and removed when the build completes.

On resume the plan must match (else the options changed, and resuming is refused), and so must
every source file's size and stamp (else the message names one changed file); checkpoints
are replayed for as long as their shards still pass their checksums; the remaining tasks run
again. Because a build's bytes depend only on its inputs and config, the result is
byte-identical to an uninterrupted build.

An object store cannot append, so there each line is its own object,
``.imgshard-progress-{n:06d}.json``, uploaded whole, and a checkpoint also carries the
``samples.csv`` rows it added (``samples_rows``), which the build keeps in a local file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from .config import changed_options
from .errors import ImgshardError, MissingShardError, ShardError
from .layout import (
    PROGRESS_NAME,
    SOURCES_NAME,
    images_name,
    labels_name,
    remote_progress_name,
)
from .manifest import ShardInfo, Skip
from .scan import Sources
from .storage import Location
from .storage.files import open_regular


class ResumeError(ImgshardError):
    """The build in OUT cannot be resumed with these options."""


@dataclass
class Restored:
    """What the checkpoints say is done and still intact."""

    tasks_done: int = 0
    samples_bytes: int = 0
    shards: dict[str, list[ShardInfo]] = field(default_factory=dict)
    skipped: dict[str, list[Skip]] = field(default_factory=dict)
    counts: dict[str, dict[int, int]] = field(default_factory=dict)
    inputs_seen: dict[str, int] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    samples_rows: list[str] = field(default_factory=list)
    #: Lines of the log replayed, the plan included: the log is cut back to these.
    lines: int = 1


def plan_record(config: dict[str, Any], paths: Iterable[tuple[str, str]], pieces: int,
                labels_sha256: str | None = None) -> dict:
    """What a resumed build must share with the interrupted one: options, files, how many
    pieces each shard was cut into (the tasks a checkpoint counts) and the labels file's
    content (the files' sizes and times are in :data:`SOURCES_NAME`)."""
    digest = hashlib.sha256()
    for split, path in paths:
        digest.update(f"{split}\0{path}\n".encode("utf-8", "surrogateescape"))
    record = {"config": config, "files": digest.hexdigest(), "pieces": pieces}
    if labels_sha256 is not None:
        record["labels_sha256"] = labels_sha256
    return record


#: Lines of the sources record encoded at a time: bounded memory, few writes.
SOURCES_BATCH = 10_000


def write_sources(out: Location, sources: Sources) -> None:
    """Write the sources record into OUT, durably, before the first shard."""
    with out.atomic_file(SOURCES_NAME) as stream:
        with gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=1, mtime=0) as packed:
            for start in range(0, len(sources.paths), SOURCES_BATCH):
                end = start + SOURCES_BATCH
                lines = map(json.dumps, zip(sources.paths[start:end],
                                            sources.sizes[start:end].tolist(),
                                            sources.stamps[start:end].tolist()))
                packed.write(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))


def changed_source(out: Location, sources: Sources) -> str | None:
    """Why the source differs from the one the build in OUT started with (naming one file),
    or None when every file has its recorded size and stamp.

    The record is streamed against the scan, line by line: memory does not grow with it.
    """
    try:
        stream = _open_local(out, SOURCES_NAME) if out.is_local else out.open_read(SOURCES_NAME)
    except FileNotFoundError:
        return ("the output has no record of its source files (an older imgshard started "
                "this build, or the record was removed)")
    records = 0
    with stream, io.TextIOWrapper(gzip.GzipFile(fileobj=stream), encoding="utf-8",
                                  errors="surrogateescape") as lines:
        try:
            for line in lines:
                path, size, stamp = json.loads(line)
                if records == len(sources.paths):
                    return f"{path} was removed since the build started"
                if sources.paths[records] != path:
                    if path in set(sources.paths[records:]):
                        return f"{sources.paths[records]} was added since the build started"
                    return f"{path} was removed since the build started"
                if sources.sizes[records] != size or sources.stamps[records] != stamp:
                    return (f"{path} changed since the build started (size or modification "
                            "time)")
                records += 1
        except (OSError, EOFError, ValueError, TypeError, RecursionError):
            return "the output's record of its source files is damaged"
    if records < len(sources.paths):
        return f"{sources.paths[records]} was added since the build started"
    return None


class ProgressLog:
    """Appends the plan and the checkpoints to OUT's progress log, each line durable."""

    def __init__(self, out: Location, plan: dict, *, append: bool) -> None:
        self.out = out
        self.stream = None
        if out.is_local:
            self.stream = open(out.path(PROGRESS_NAME), "a" if append else "w", encoding="utf-8")
        self.records = len(_remote_records(out)) if append and not out.is_local else 0
        if not append:
            self._write(plan)

    def checkpoint(self, *, tasks_done: int, split: str, shards: list[ShardInfo],
                   skipped: list[Skip], counts: dict[int, int], inputs_seen: int,
                   finished: bool, samples_bytes: int, samples_rows: str | None = None) -> None:
        record = {"tasks_done": tasks_done, "split": split,
                  "shards": [asdict(s) for s in shards], "skipped": [asdict(s) for s in skipped],
                  "counts": {str(k): v for k, v in counts.items()},
                  "inputs_seen": inputs_seen, "finished": finished,
                  "samples_bytes": samples_bytes}
        if samples_rows is not None:
            record["samples_rows"] = samples_rows
        self._write(record)

    def _write(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        if self.stream is None:
            self.out.write_bytes(remote_progress_name(self.records), line.encode("utf-8"))
            self.records += 1
            return
        self.stream.write(line)
        self.stream.flush()
        os.fsync(self.stream.fileno())

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()

    def remove(self) -> None:
        """Remove the log and the sources record: the build is complete."""
        self.out.remove(SOURCES_NAME, missing_ok=True)
        if self.out.is_local:
            self.out.remove(PROGRESS_NAME)
            return
        for name in _remote_records(self.out):
            self.out.remove(name, missing_ok=True)


def log_names(out: Location) -> list[str]:
    """The names of the files that hold OUT's progress log, the plan line's first."""
    return [PROGRESS_NAME] if out.is_local else _remote_records(out)


def _remote_records(out: Location) -> list[str]:
    """The names of the remote progress records, in order (a gap ends the log)."""
    names = set(out.listdir())
    found = []
    while remote_progress_name(len(found)) in names:
        found.append(remote_progress_name(len(found)))
    return found


def _open_local(out: Location, name: str) -> BinaryIO:
    """A file of a local OUT, opened only if it is a regular file (a FIFO in its place would
    hang the reading; see :func:`~imgshard.formats.npy.open_regular`).

    Raises:
        FileNotFoundError: there is nothing at ``name``.
        ResumeError: a link, FIFO, device or directory is there.
    """
    try:
        return os.fdopen(open_regular(out.path(name)), "rb")
    except MissingShardError:
        raise FileNotFoundError(out.path(name)) from None
    except ShardError:
        raise ResumeError(f"refusing to resume: {name} is not a regular file") from None


def _read_lines(out: Location) -> list[str]:
    """The progress log's lines: the plan first (an empty list when there is no log; a
    line that is not UTF-8 is kept as an unreadable one, which ends the replay)."""
    if out.is_local:
        try:
            with _open_local(out, PROGRESS_NAME) as stream:
                data = stream.read()
        except FileNotFoundError:
            return []
        return data.decode("utf-8", "replace").split("\n")
    return [out.read_bytes(name).decode("utf-8", "replace") for name in _remote_records(out)]


def read_plan(out: Location) -> dict | None:
    """The plan line of OUT's progress log, or None when there is no log."""
    lines = _read_lines(out)
    try:
        return json.loads(lines[0]) if lines else None
    except (ValueError, RecursionError):
        return None


def check_plan(recorded: dict | None, current: dict, out: Location,
               sources: Sources | None) -> None:
    """Refuse to resume when there is nothing to resume or the options or files changed
    (``sources``: the scan's record of every file, compared with the one OUT holds)."""
    if recorded is None and set(log_names(out)) & set(out.listdir()):
        raise ResumeError("refusing to resume: the progress log is damaged (its first line is "
                          "not a plan imgshard wrote), so nothing proves which files its build "
                          "wrote: delete them by hand, or build into another directory")
    if recorded is None:
        raise ResumeError("nothing to resume: the output has no progress log "
                          "(start the build without --resume)")
    _check_plan_fields(recorded)
    changed = changed_options(recorded["config"], current["config"])
    if changed:
        raise ResumeError(f"refusing to resume with different options: {', '.join(changed)} "
                          "changed (use --overwrite to start again)")
    if "pieces" not in recorded:
        raise ResumeError("refusing to resume: an older imgshard started this build and cut "
                          "its work differently (use --overwrite to start again)")
    if recorded.get("labels_sha256") != current.get("labels_sha256"):
        raise ResumeError(f"refusing to resume: the labels file {current['config'].get('labels')} "
                          "changed since the build started (use --overwrite to start again)")
    changed = changed_source(out, sources) if sources is not None else None
    if changed:
        raise ResumeError(f"refusing to resume: {changed} (use --overwrite to start again)")
    if recorded["files"] != current["files"]:
        raise ResumeError("refusing to resume: the source's files changed since the build "
                          "started (use --overwrite to start again)")


def _check_plan_fields(recorded: Any) -> None:
    """Refuse a plan line that is not the object a build writes (edited, or written by
    someone else): its fields decide which tasks a resume skips."""
    if not (isinstance(recorded, dict) and isinstance(recorded.get("config"), dict)
            and isinstance(recorded.get("files"), str)
            and ("pieces" not in recorded or _is_count(recorded["pieces"], least=1))
            and isinstance(recorded.get("labels_sha256", ""), str)):
        raise ResumeError("refusing to resume: the plan line of the progress log is damaged "
                          "or was edited (use --overwrite to start again)")


def _is_count(value: Any, *, least: int = 0) -> bool:
    """Whether ``value`` is a whole number (not a bool) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def restore(out: Location) -> Restored:
    """Replay the checkpoints whose shards are intact; stop at the first that is not.

    The checkpoints after that one are removed from the log (see :func:`_cut_log`): their
    shards are built again, and a later resume must not replay them next to the new ones.
    """
    restored = Restored()
    for line in _read_lines(out)[1:]:
        try:
            record = json.loads(line)
        except ValueError:
            break  # a torn last line: the crash came while writing it
        except RecursionError:
            record = None
        try:
            split, shards = _checkpoint_shards(record, restored)
            skipped = [Skip(**s) for s in record["skipped"]]
            counts = {int(label): count for label, count in record["counts"].items()}
            numbers = [record[key] for key in ("inputs_seen", "tasks_done", "samples_bytes")]
            if not (all(map(_is_count, [*counts.values(), *numbers]))
                    and isinstance(record["finished"], bool)
                    and isinstance(record.get("samples_rows", ""), str)
                    and all(isinstance(s.path, str) and isinstance(s.reason, str)
                            for s in skipped)):
                raise TypeError
        except (TypeError, ValueError, KeyError, AttributeError):
            raise ResumeError(f"refusing to resume: checkpoint {restored.lines} of the progress "
                              "log is damaged or was edited (use --overwrite to start again)"
                              ) from None
        if not all(_intact(out, shard) for shard in shards):
            break
        restored.shards.setdefault(split, []).extend(shards)
        restored.skipped.setdefault(split, []).extend(skipped)
        split_counts = restored.counts.setdefault(split, {})
        for label, count in counts.items():
            split_counts[label] = split_counts.get(label, 0) + count
        restored.inputs_seen[split] = record["inputs_seen"]
        if record["finished"]:
            restored.finished.add(split)
        restored.tasks_done, restored.samples_bytes = record["tasks_done"], record["samples_bytes"]
        if "samples_rows" in record:
            restored.samples_rows.append(record["samples_rows"])
        restored.lines += 1
    _cut_log(out, restored.lines)
    return restored


def _checkpoint_shards(record: Any, restored: Restored) -> tuple[str, list[ShardInfo]]:
    """A checkpoint's split and shards, which must carry the names the build gives the next
    shards of that split (a shard named otherwise, e.g. ``../x``, is never read or listed).

    Raises:
        TypeError: the checkpoint is not what a build writes.
    """
    split = record["split"]
    if not isinstance(split, str) or not isinstance(record["shards"], list):
        raise TypeError
    first = len(restored.shards.get(split, []))
    shards = [ShardInfo(**s) for s in record["shards"]]
    for index, shard in enumerate(shards, first):
        if (shard.images != images_name(split, index) or not _is_count(shard.num_samples)
                or shard.labels not in (None, labels_name(split, index))):
            raise TypeError
    return split, shards


def check_restored(restored: Restored, tasks: list[tuple[str, int]]) -> None:
    """Refuse checkpoints that do not add up under the plan's tasks (``(split, inputs)`` in
    order): the tasks a resume skips must be exactly the inputs the restored shards and skips
    account for, else the resume would lose files or write shards without end."""
    done = tasks[:restored.tasks_done]
    last = {split: number for number, (split, _) in enumerate(tasks)}
    for split in set(restored.inputs_seen) | set(restored.shards) | {s for s, _ in done}:
        seen = restored.inputs_seen.get(split, 0)
        kept = sum(shard.num_samples for shard in restored.shards.get(split, []))
        if (restored.tasks_done > len(tasks) or split not in last
                or seen != sum(inputs for s, inputs in done if s == split)
                or kept + len(restored.skipped.get(split, [])) != seen
                or (split in restored.finished) != (last[split] < restored.tasks_done)):
            raise ResumeError("refusing to resume: the progress log's checkpoints do not match "
                              "its plan (edited?) (use --overwrite to start again)")


def _cut_log(out: Location, keep: int) -> None:
    """Keep only the first ``keep`` lines (records) of the progress log, durably."""
    if not out.is_local:
        for name in reversed(_remote_records(out)[keep:]):  # last first: no gap if cut short
            out.remove(name)
        return
    path = out.path(PROGRESS_NAME)
    with open(path, "rb") as stream:
        kept = b"".join(stream.readline() for _ in range(keep))
    with open(path, "r+b") as stream:
        stream.truncate(len(kept))
        stream.flush()
        os.fsync(stream.fileno())


def _intact(out: Location, shard: ShardInfo) -> bool:
    """Whether the shard's files hold what the checkpoint says (a store that cannot be read
    right now is an error, not a reason to rebuild)."""
    pairs = [(shard.images, shard.sha256)]
    if shard.labels:
        pairs.append((shard.labels, shard.labels_sha256))
    try:
        return all(out.sha256(name) == digest for name, digest in pairs)
    except FileNotFoundError:
        return False
