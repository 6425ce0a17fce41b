"""``--resume``: start a build afresh, or pick up the build an interruption left in OUT.

A fresh build gets a new build id and an empty OUT and logs its plan (see ``resume_log.py``)
and its sources record (see ``sources_record.py``) before any shard. A resumed build must
match that plan (else the options changed, and resuming is refused) and every source file's
size and stamp (else the message names one changed file); its checkpoints are replayed for as
long as their shards still pass their checksums, and the tasks they account for are done: the
build runs only the others. Because a build's bytes depend only on its inputs and config, the
result is byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import BuildConfig, ConfigError, changed_options
from .errors import ImgshardError
from .layout import BUILD_ID, MANIFEST_NAME, SAMPLES_NAME, SAMPLES_PARTIAL, SOURCES_NAME
from .manifest import Manifest, ShardInfo, Skip, read_manifest
from .outdir import check_resumable, prepare_out, remove_leftovers
from .resume_log import (
    Checkpoint,
    ResumeLog,
    appended_id,
    decode_checkpoint,
    holds_log,
    log_names,
    read_plan,
)
from .scan import Sources
from .sources_record import IrregularRecord, changed_source, write_sources
from .storage import Location
from .storage.record_log import LogError
from .values import is_count


class ResumeError(ImgshardError):
    """The build in OUT cannot be resumed with these options."""


@dataclass
class Restored:
    """What the checkpoints say is done and still intact, added up per split."""

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


@dataclass(frozen=True)
class Start:
    """Where a build starts: OUT tagged with its build id, its plan, and what is done."""

    out: Location
    plan: dict
    restored: Restored
    resumed: bool


def plan_record(config: dict[str, Any], paths: Iterable[tuple[str, str]], pieces: int,
                labels_sha256: str | None = None, targets_sha256: str | None = None) -> dict:
    """What a resumed build must share with the interrupted one: options, files, how many
    pieces each shard was cut into (the tasks a checkpoint counts) and the labels and targets
    files' content (the files' sizes and times are in the sources record)."""
    digest = hashlib.sha256()
    for split, path in paths:
        digest.update(f"{split}\0{path}\n".encode("utf-8", "surrogateescape"))
    record = {"config": config, "files": digest.hexdigest(), "pieces": pieces}
    if labels_sha256 is not None:
        record["labels_sha256"] = labels_sha256
    if targets_sha256 is not None:
        record["targets_sha256"] = targets_sha256
    return record


def start_or_resume(out: Location, planned: dict, *, shards: dict[str, int],
                    sources: Sources | None, overwrite: bool, resume: bool,
                    base: dict[str, int] | None = None) -> Start:
    """Ready OUT for a build of the plan ``planned`` (``shards``: how many each split may have).

    A fresh build gets a new build id and an empty OUT; a resumed one takes the plan, the build
    id and the finished shards of the build it finishes, and removes that build's leftovers.
    An append (``base``: the shards each split of OUT's dataset holds) leaves OUT as it is,
    and refuses to start over an interrupted build or append.

    Raises:
        ResumeError, OutputError: OUT cannot be resumed, or written.
    """
    if not resume:
        planned = {**planned, "build": secrets.token_hex(6), "shards": shards}
        out = dataclasses.replace(out, temp_tag=planned["build"])
        if base is None:
            prepare_out(out, overwrite=overwrite)
        elif holds_log(out):
            raise ResumeError(f"{out} holds an interrupted build or append: finish it with "
                              "--resume first")
        return Start(out, planned, Restored(), resumed=False)
    if overwrite:
        raise ResumeError("--resume and --overwrite exclude each other")
    check_resumable(out)
    recorded = _read_plan(out)
    check_plan(recorded, planned, out, sources)
    if not isinstance(recorded.get("build"), str) or not BUILD_ID.fullmatch(recorded["build"]):
        raise ResumeError("refusing to resume: an older imgshard started this build, or its "
                          "progress log was edited (use --overwrite to start again)")
    out = dataclasses.replace(out, temp_tag=recorded["build"])
    remove_leftovers(out, out.temp_tag)
    restored = restore(out, base)
    check_staged_samples(out, restored)
    return Start(out, recorded, restored, resumed=True)


def check_staged_samples(out: Location, restored: Restored) -> None:
    """Make sure the staged ``samples.csv`` the checkpoints continue holds what they say.

    Where staged files stay in OUT, the checkpoints keep only its length. A build stopped
    after it published ``samples.csv`` but before its manifest staged it under its final name:
    it is staged again. A staged file shorter than the checkpoints say would be padded, and
    the build finished with rows it never wrote: refused.
    """
    if not restored.samples_bytes or restored.samples_rows:
        return  # nothing staged yet, or the checkpoints hold the rows themselves
    if not out.exists(SAMPLES_PARTIAL) and out.exists(SAMPLES_NAME):
        out.replace(SAMPLES_NAME, SAMPLES_PARTIAL)
    if not out.exists(SAMPLES_PARTIAL):
        raise ResumeError(f"refusing to resume: the staged {SAMPLES_PARTIAL} is missing (use "
                          "--overwrite to start again)")
    if out.size(SAMPLES_PARTIAL) < restored.samples_bytes:
        raise ResumeError(f"refusing to resume: the staged {SAMPLES_PARTIAL} is shorter than "
                          "its progress log says (truncated?) (use --overwrite to start again)")


def finished_build(out: Location, config: BuildConfig) -> Manifest | None:
    """The manifest of the finished build of ``config`` in OUT, if there is one: ``--resume``
    then has nothing to do.

    Raises:
        ConfigError: OUT holds a finished build with other options.
        ResumeError: OUT's dataset is being grown by an interrupted append.
    """
    if not out.exists(MANIFEST_NAME):
        return None
    manifest = read_manifest(out)
    if appended_id(out) == manifest.dataset_id:  # the append has not replaced it yet
        raise ResumeError(f"{out} holds an interrupted append: finish it with imgshard append "
                          "SRC OUT --resume (build --resume finishes builds)")
    if changed_options(manifest.config, config.to_dict()):
        raise ConfigError(f"{out} holds a finished build with other options: refusing to resume "
                          "(use --overwrite to replace it)")
    return manifest


def open_log(start: Start, sources: Sources | None) -> ResumeLog:
    """The log the build's checkpoints go to; a fresh build's plan and sources record are
    written first (the sources after the plan: the plan's build id accounts for them)."""
    log = ResumeLog(start.out, start.plan, append=start.resumed)
    if not start.resumed and sources is not None:
        write_sources(start.out, sources)
    return log


def finish_log(out: Location) -> None:
    """Remove the log and the sources record: the build is complete."""
    out.remove(SOURCES_NAME, missing_ok=True)
    out.record_log().remove()


def _read_plan(out: Location) -> dict | None:
    try:
        return read_plan(out)
    except LogError as error:
        raise ResumeError(f"refusing to resume: {error}") from None


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
    if recorded.get("append") != current.get("append"):
        kind = "a build's: resume it with imgshard build" if recorded.get("append") is None \
            else "an append's: resume it with imgshard append"
        raise ResumeError(f"refusing to resume: the progress log is {kind} ... --resume")
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
    if recorded.get("targets_sha256") != current.get("targets_sha256"):
        raise ResumeError(f"refusing to resume: the targets file "
                          f"{current['config'].get('targets')} changed since the build started "
                          "(use --overwrite to start again)")
    try:
        changed = changed_source(out, sources) if sources is not None else None
    except IrregularRecord as error:
        raise ResumeError(f"refusing to resume: {error}") from None
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
            and ("pieces" not in recorded or is_count(recorded["pieces"], least=1))
            and isinstance(recorded.get("labels_sha256", ""), str)
            and isinstance(recorded.get("targets_sha256", ""), str)):
        raise ResumeError("refusing to resume: the plan line of the progress log is damaged "
                          "or was edited (use --overwrite to start again)")


def restore(out: Location, base: dict[str, int] | None = None) -> Restored:
    """Replay the checkpoints whose shards are intact; stop at the first that is not
    (``base``: the shards each split held before this build, an append's dataset).

    The checkpoints after that one are removed from the log: their shards are built again, and
    a later resume must not replay them next to the new ones.
    """
    restored = Restored()
    log = out.record_log()
    try:
        lines = log.read()[1:]
    except LogError as error:
        raise ResumeError(f"refusing to resume: {error}") from None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            break  # a torn last line: the crash came while writing it
        except RecursionError:
            record = None
        try:
            checkpoint = decode_checkpoint(record, {
                split: (base or {}).get(split, 0) + len(restored.shards.get(split, []))
                for split in set(base or {}) | set(restored.shards)})
        except (TypeError, ValueError, KeyError, AttributeError):
            raise ResumeError(f"refusing to resume: checkpoint {restored.lines} of the progress "
                              "log is damaged or was edited (use --overwrite to start again)"
                              ) from None
        if not all(_intact(out, shard) for shard in checkpoint.shards):
            break
        _replay(restored, checkpoint)
    log.cut(restored.lines)
    return restored


def _replay(restored: Restored, checkpoint: Checkpoint) -> None:
    """Add an intact checkpoint to what is restored."""
    split = checkpoint.split
    restored.shards.setdefault(split, []).extend(checkpoint.shards)
    restored.skipped.setdefault(split, []).extend(checkpoint.skipped)
    split_counts = restored.counts.setdefault(split, {})
    for label, count in checkpoint.counts.items():
        split_counts[label] = split_counts.get(label, 0) + count
    restored.inputs_seen[split] = checkpoint.inputs_seen
    if checkpoint.finished:
        restored.finished.add(split)
    restored.tasks_done, restored.samples_bytes = checkpoint.tasks_done, checkpoint.samples_bytes
    if checkpoint.samples_rows is not None:
        restored.samples_rows.append(checkpoint.samples_rows)
    restored.lines += 1


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


def _intact(out: Location, shard: ShardInfo) -> bool:
    """Whether the shard's files hold what the checkpoint says (a store that cannot be read
    right now is an error, not a reason to rebuild)."""
    pairs = [(shard.images, shard.sha256)]
    if shard.labels:
        pairs.append((shard.labels, shard.labels_sha256))
    if shard.targets:
        pairs.append((shard.targets, shard.targets_sha256))
    try:
        return all(out.sha256(name) == digest for name, digest in pairs)
    except FileNotFoundError:
        return False
