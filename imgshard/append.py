"""``append()``: the files a grown source folder has beyond a finished dataset, added to it.

An append is a build of the new files only (``append_plan.py`` decides which, their splits and
labels), run by the build's own machinery (:func:`imgshard.build.run_tasks`: executors,
checkpoints, ``--resume``) into the dataset's directory, after its shards: every old shard file
keeps its name and bytes, every old sample its split, shard, row and label. The dataset's
manifest stays valid until the new one replaces it (written last, atomically); a reader that
opened the old one finishes its epoch on the old files, which nothing touches. The new manifest
records the old ``dataset_id`` as its ``parent_id``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .append_plan import AppendPlan, plan_append
from .build import run_tasks
from .build_plan import BuildPlan, plan_of
from .config import BuildConfig, ConfigError, changed_options
from .duplicates import DuplicateGroup
from .executors import executor_named
from .executors.interface import Executor
from .errors import ImgshardError
from .fast_decode import require_decoder
from .layout import SOURCES_KEPT
from .leakage import duplicates_in, duplicates_record
from .manifest import Manifest, ManifestError, SplitInfo, read_manifest, write_manifest
from .outdir import check_apart, locked
from .resume import finish_log
from .resume_log import appended_id, holds_log
from .samples import SPLIT_ORDER
from .samples_csv import read_samples
from .scan import ScanResult, Sources, scan
from .sources_record import record_lines, write_sources
from .storage import Location
from .transform import decoder_versions
from .version import __version__
from .wording import differing_option


class AppendError(ImgshardError):
    """OUT's dataset cannot grow by an append (a merge of several datasets)."""


@dataclass(frozen=True)
class AppendResult:
    """What an append did: the dataset's manifest now, what was new, and the time it took."""

    manifest: Manifest
    plan: AppendPlan
    elapsed: float
    #: nothing in SRC was new: the dataset is as it was
    nothing_new: bool = False
    #: the dataset's manifest before the append (None: the same as now)
    before: Manifest | None = None

    def added(self) -> dict[str, int]:
        """Samples added per split: the new files that decoded (the others are skips)."""
        before = (self.before or self.manifest).splits
        return {name: split.num_samples - (before[name].num_samples if name in before else 0)
                for name, split in self.manifest.splits.items()
                if name in self.plan.splits or name not in before}

    def new_skips(self) -> int:
        """New files skipped: when scanned, or when they would not decode."""
        return len(self.manifest.skipped) - len((self.before or self.manifest).skipped)


@dataclass(frozen=True)
class AppendStart:
    """An append's inputs, read before anything is written (also what ``--dry-run`` shows)."""

    manifest: Manifest
    config: BuildConfig
    scan: ScanResult
    plan: AppendPlan
    #: the dataset's record of its source files (None: it keeps none, or a damaged one)
    record: dict[str, tuple[int, int]] | None = None

    @property
    def build_plan(self) -> BuildPlan:
        """The plan of the build of the new files (labels in the dataset's numbering)."""
        scanned = ScanResult(self.plan.class_names, self.plan.splits, self.plan.skipped,
                             self.scan.sources, self.scan.labels_sha256)
        return BuildPlan(scan=scanned, config=self.config)


def dataset_config(manifest: Manifest, given: dict[str, Any]) -> BuildConfig:
    """The dataset's own build config; options ``given`` must repeat it, but ``labels``: a
    dataset built from a labels file may name where that (grown) file is now, since the path
    recorded is relative to wherever the build ran and its content is checked row by row.

    Raises:
        ConfigError: naming the first option given that differs from the manifest's.
    """
    recorded = BuildConfig.from_record(manifest.config)
    if not given:
        return recorded
    wanted = BuildConfig.from_record({**manifest.config, **given})
    changed = [name for name in changed_options(recorded.to_dict(), wanted.to_dict())
               if not (name == "labels" and None not in (recorded.labels, wanted.labels))]
    if changed:
        # an option given first: another may differ only through it (uint8 records no bit depth)
        name = min(changed, key=lambda option: option not in given)
        mine = wanted.to_dict().get(name, getattr(wanted, name))  # bit_depth 8 is unwritten
        theirs = manifest.config.get(name, getattr(recorded, name))
        raise ConfigError(f"{differing_option(name, mine, theirs)}: an append takes every "
                          "option from OUT's manifest (leave it out)")
    return wanted


def check_appendable(out: Location, manifest: Manifest) -> None:
    """Refuse a manifest edited since it was written (its recorded ``dataset_id`` is not the
    hash of its classes, config and shards): the append would write its new shards with the
    edited options and a new manifest whose id hides the edit. Refuse a merged dataset too:
    its paths are relative to several sources, so one SRC's new file may bear the path of
    another input's sample (and be left out), and the other inputs' files would be called gone.

    Raises:
        AppendError: naming what is wrong and the way that works.
    """
    if manifest.recorded_id not in (None, manifest.dataset_id):
        raise AppendError(f"{out}: the manifest's dataset_id is not the hash of its classes, "
                          "config and shard checksums: it was edited (imgshard verify tells "
                          "more; build --overwrite rebuilds)")
    if manifest.extra.get("merged_from") is not None:
        raise AppendError(f"{out} holds a merge of several datasets, whose paths are relative "
                          "to different sources: append to an input and merge again")
    if manifest.richer_labels is not None:
        raise AppendError(f"{out} holds {manifest.richer_labels}, which imgshard append does not grow yet: "
                          "build the grown folder with --overwrite")


def prepare_append(src: str | Location, out: str | Location,
                   given: dict[str, Any] | None = None) -> AppendStart:
    """Read the dataset in ``out``, scan ``src`` with its config, and plan the append."""
    src, out = _location(src), _location(out)
    manifest = read_manifest(out)
    check_appendable(out, manifest)
    config = dataset_config(manifest, given or {})
    require_decoder(config.decoder)
    check_apart(src, out, config.labels)
    # new duplicates are reported, never dropped; a class whose folder is gone keeps its samples
    scanned = scan(src, config, dedupe=False, class_folders=False)
    if scanned.label_kind != "single":  # the labels file now gives a file several labels
        raise AppendError(f"the labels file {config.labels} gives a file several labels "
                          f"(multi-label), and {out} is a single-label dataset: build the "
                          "grown folder with --overwrite")
    held = held_paths(out, manifest)
    record = kept_record(out, manifest)
    plan = plan_append(manifest, config, scanned, held=held, record=record)
    check_layout(config, plan, held)
    return AppendStart(manifest, config, scanned, plan, record)


def check_layout(config: BuildConfig, plan: AppendPlan, held: dict[str, int | None]) -> None:
    """Refuse a source whose layout changed under class folders: a new class folder that
    holds the dataset's old files was something else before (a pre-split SRC's ``train/``,
    once SRC gains a folder that is no split, is scanned as a class; its old files would all
    change label).

    Raises:
        AppendError: naming the folder.
    """
    if config.labels is not None or config.no_labels:
        return  # classes are the labels file's values, or none: no folder is a class
    folders = {path.split("/", 1)[0] for path in held}
    moved = [name for name in plan.new_classes if name in folders]
    if moved:
        raise AppendError(f"SRC's folders are no longer the dataset's layout: {moved[0]}/ "
                          "holds its old files but would now be a class (a pre-split SRC "
                          "holds only train/, val/ and test/)")


def append(src: str | Location, out: str | Location, given: dict[str, Any] | None = None, *,
           workers: int | None = None, executor: str = "local", scheduler: str | None = None,
           resume: bool = False, progress=None) -> AppendResult:
    """Add the files of ``src`` that the dataset in ``out`` does not hold (see the module
    docstring). ``given``: build options named by the caller, which must be the dataset's.

    Raises:
        ConfigError, ScanError, ResumeError, OutputError, BuildError, ManifestError: one line.
    """
    started = time.perf_counter()
    src, out = _location(src), _location(out)
    with contextlib.ExitStack() as owned:
        runner: Executor = executor_named(executor, workers=workers, scheduler=scheduler,
                                          reaches=(src, out))
        owned.enter_context(runner)
        owned.enter_context(locked(out))
        start = prepare_append(src, out, given)
        runner.start(start.config)
        if _finished_before(out, start.manifest) or not (
                holds_log(out) or start.plan.num_samples or start.plan.skipped):
            return AppendResult(start.manifest, start.plan, time.perf_counter() - started,
                                nothing_new=True)
        manifest = _run(src, out, start, runner, resume=resume, progress=progress)
    return AppendResult(manifest, start.plan, time.perf_counter() - started,
                        before=start.manifest)


def _run(src: Location, out: Location, start: AppendStart, runner: Executor, *, resume: bool,
         progress) -> Manifest:
    build_plan = start.build_plan
    planned = {**plan_of(build_plan, runner.workers),
               "append": start.manifest.dataset_id}
    splits = dict(start.manifest.splits)
    if start.plan.num_samples:
        begun, assembled = run_tasks(src, out, build_plan, runner, planned=planned,
                                     overwrite=False, resume=resume, progress=progress,
                                     base=start.manifest.splits)
        out, new_skips = begun.out, assembled.skipped
        splits.update(assembled.splits)
    else:
        new_skips = []
    _keep_record(out, start)
    found = duplicates_in(out, start.config, splits)
    manifest = _manifest(start, splits, new_skips, found)
    write_manifest(out, manifest)
    if holds_log(out):  # an append of new skips alone runs no task and writes no log
        finish_log(out)
    return manifest


def _finished_before(out: Location, manifest: Manifest) -> bool:
    """Whether OUT's log is an append's that wrote this manifest and stopped before removing
    its log (then the log goes, and nothing is appended again)."""
    grows = appended_id(out)
    if grows is None or grows != manifest.parent_id:
        return False
    finish_log(out)
    return True


def _manifest(start: AppendStart, splits: dict[str, SplitInfo], new_skips: list,
              duplicates: list[DuplicateGroup] | None) -> Manifest:
    old, plan = start.manifest, start.plan
    names = plan.class_names
    ordered = {name: _with_classes(splits[name], names)
               for name in [*SPLIT_ORDER, *sorted(set(splits) - set(SPLIT_ORDER))]
               if name in splits}
    report = {"changed": None if plan.changed is None else plan.changed.to_json(),
              "disappeared": plan.disappeared.to_json(), "new_classes": plan.new_classes}
    extra = {**{k: v for k, v in old.extra.items() if k != "duplicates"},  # found again
             "decoder": decoder_versions(start.config), "sources": SOURCES_KEPT, "append": report,
             **duplicates_record(duplicates)}
    grown = Manifest(
        imgshard_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        source=old.source, image_shape=old.image_shape, dtype=old.dtype, class_names=names,
        config=old.config, splits=ordered,
        skipped=sorted([*old.skipped, *plan.skipped, *new_skips], key=lambda s: s.path),
        extra=extra, parent_id=old.dataset_id)
    if grown.dataset_id == old.dataset_id:  # new skips alone: the same data, not its child
        return dataclasses.replace(grown, parent_id=old.parent_id)
    return grown


def _with_classes(split: SplitInfo, names: list[str] | None) -> SplitInfo:
    """The split with a count (0) for every class, new ones included."""
    if split.class_counts is None or names is None:
        return split
    counts = {name: split.class_counts.get(name, 0) for name in names}
    return SplitInfo(split.num_samples, counts, split.shards)


def held_paths(out: Location, manifest: Manifest) -> dict[str, int | None]:
    """Every path the dataset holds: its samples (with their labels) and its skips (None).

    Its rows are the first of ``samples.csv``: an append stopped after publishing its own
    (the old rows, then the new) and before its manifest is read as the dataset it grows.
    They must name as many distinct files as the shards hold samples: a file missing from a
    cut or edited ``samples.csv`` would be taken for a new one and appended a second time
    (an old val image into train).

    Raises:
        ManifestError: the rows name fewer distinct files than the shards hold.
    """
    held: dict[str, int | None] = {}
    with out.open_listed(manifest.samples) as stream:
        rows = read_samples(stream, max_rows=manifest.shard_samples)
        for row in itertools.islice(rows, manifest.shard_samples):
            held[row.path] = row.label
    if len(held) != manifest.shard_samples:  # an old file missing would be appended again
        raise ManifestError(f"{out}: {manifest.samples} names {len(held)} distinct files where the "
                            f"shards hold {manifest.shard_samples} samples: it was cut or "
                            "edited (imgshard verify tells more)")
    held.update({skip.path: None for skip in manifest.skipped})
    return held


def kept_record(out: Location, manifest: Manifest) -> dict[str, tuple[int, int]] | None:
    """The size and stamp of each source file when the dataset last saw it, or None when the
    dataset keeps no record (built before records were kept) or its record is damaged."""
    if manifest.extra.get("sources") != SOURCES_KEPT or not out.exists(SOURCES_KEPT):
        return None
    record: dict[str, tuple[int, int]] = {}
    try:
        with out.open_listed(SOURCES_KEPT) as stream:
            for line in record_lines(stream):
                path, size, stamp = json.loads(line)
                if not (isinstance(path, str) and type(size) is int and type(stamp) is int):
                    return None
                record[path] = (size, stamp)
    except (OSError, EOFError, ValueError, TypeError, RecursionError):
        return None
    return record


def _keep_record(out: Location, start: AppendStart) -> None:
    """Record what the dataset now holds: the old files as they were when added (a changed
    file's record stays the old one, so a next append reports it again), then the new."""
    record = dict(start.record or {})
    sources = start.scan.sources
    if sources is not None:
        for path, size, stamp in zip(sources.paths, sources.sizes.tolist(),
                                     sources.stamps.tolist()):
            record.setdefault(path, (size, stamp))
    paths = sorted(record)
    values = np.array([record[path] for path in paths], dtype=np.int64).reshape(-1, 2)
    write_sources(out, Sources(paths, values[:, 0], values[:, 1]), SOURCES_KEPT)


def _location(path: str | Location) -> Location:
    return path if isinstance(path, Location) else Location.of(path)
