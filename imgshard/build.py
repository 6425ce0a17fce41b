"""``build()``: a raw image folder in, a finished shard directory out.

The pipeline, as :func:`_build` reads: scan the source (:func:`plan`), cut each split into one
:class:`~imgshard.worker.ShardTask` per shard, start afresh or pick up an interrupted build
(``resume.py``), run the tasks that are not done yet on an executor (``executors/``), assemble
their parts into fixed-size shards in task order (``assemble.py``), and write ``samples.csv``
and finally ``manifest.json``. Until that last rename the directory holds no manifest, so an
interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass

from .assemble import SplitAssembler, StagedSamples, assemble_in_order, no_sample
from .config import BuildConfig
from .errors import ImgshardError
from .executors import executor_named
from .executors.interface import Executor
from .layout import MANIFEST_NAME, SAMPLES_NAME, SOURCES_KEPT, SOURCES_NAME
from .leakage import found_duplicates
from .manifest import Manifest, Skip, SplitInfo, write_manifest
from .outdir import check_apart, locked, remove_leftovers
from .resume import (
    Restored,
    Start,
    check_restored,
    finish_log,
    finished_build,
    open_log,
    start_or_resume,
)
from .build_plan import BuildPlan, make_tasks, plan, plan_of
from .resume_log import Checkpointer
from .sources_record import keep_sources
from .storage import Location
from .transform import decoder_versions
from .version import __version__
from .worker import ShardTask, run_shard_task

class BuildError(ImgshardError):
    """The build cannot finish; the message is one line for the user."""


@dataclass(frozen=True)
class BuildResult:
    manifest: Manifest
    elapsed: float
    bytes_written: int
    #: ``resume=True`` found the build in OUT finished already: nothing was written.
    already_complete: bool = False

    @property
    def images_per_second(self) -> float:
        samples = sum(split.num_samples for split in self.manifest.splits.values())
        return samples / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class Assembled:
    """What the tasks made: the splits, the files they skipped, and the bytes written so far."""

    splits: dict[str, SplitInfo]
    skipped: list[Skip]
    bytes_written: int


def build(src: str | Location, out: str | Location, config: BuildConfig | None = None, *,
          workers: int | None = None, overwrite: bool = False, resume: bool = False,
          progress: Callable[[int], None] | None = None,
          build_plan: BuildPlan | None = None, executor: str | Executor = "local",
          scheduler: str | None = None) -> BuildResult:
    """Build the shard directory ``out`` from the image folder ``src``.

    ``src`` and ``out`` are local paths, fsspec URLs, or :class:`~imgshard.storage.Location`
    objects (a URL with its storage options).

    Args:
        config: the options (default: :class:`BuildConfig`'s); with ``build_plan``, it must be
            the plan's own (or None).
        workers: worker processes (default: all cores); never changes the output bytes.
        overwrite: replace an earlier imgshard build in ``out``.
        resume: finish the interrupted build in ``out`` (see ``resume.py``); a finished one is
            left as it is (the result says ``already_complete``).
        progress: called with the number of images (decoded or skipped) after each task.
        build_plan: the result of :func:`plan` for the same source, if already made.
        executor: ``"local"`` (a process pool) or ``"dask"`` (a Dask cluster, see ``scheduler``),
            both writing the same bytes; or an executor started before the scan
            (:func:`~imgshard.executors.executor_named`), used and closed by the build.
        scheduler: the Dask scheduler's address, or ``"local"`` for a LocalCluster.

    ``out`` must not overlap ``src``; a local ``out`` is locked while the build writes it, and
    another build into it is refused at once.

    Raises:
        ScanError, ConfigError, BuildError, StorageError, OutputError: with a one-line message
        for the user.
    """
    started = time.perf_counter()
    src, out = _location(src), _location(out)
    config = one_config(config, build_plan)
    with contextlib.ExitStack() as owned:
        if isinstance(executor, Executor) and (workers, scheduler) != (None, None):
            raise BuildError("workers and scheduler are the executor's: give them to "
                             "executor_named(), or name the executor here")
        if not isinstance(executor, Executor):  # a name, or anything else: named or refused
            executor = executor_named(executor, workers=workers, scheduler=scheduler,
                                      reaches=(src, out))
            executor.start(config)
        owned.enter_context(executor)
        check_apart(src, out, config.labels, config.targets)
        finished = finished_build(out, config) if resume else None  # read only: no lock
        if finished is not None:
            return BuildResult(finished, time.perf_counter() - started, 0, already_complete=True)
        owned.enter_context(locked(out))
        return _build(src, out, build_plan or plan(src, config, executor), executor,
                      overwrite=overwrite, resume=resume, progress=progress, started=started)


def one_config(config: BuildConfig | None, build_plan: BuildPlan | None) -> BuildConfig:
    """The build's one configuration: the plan's, which ``config`` may only repeat."""
    if build_plan is None:
        return config or BuildConfig()
    if config is not None and config != build_plan.config:
        raise BuildError("the config differs from the build plan's: make the plan with this "
                         "config, or pass only the plan")
    return build_plan.config


def _build(src: Location, out: Location, build_plan: BuildPlan, executor: Executor, *,
           overwrite: bool, resume: bool, progress: Callable[[int], None] | None,
           started: float) -> BuildResult:
    """Plan -> resume -> execute -> assemble -> manifest."""
    start, assembled = run_tasks(src, out, build_plan, executor, planned=plan_of(
        build_plan, executor.workers), overwrite=overwrite, resume=resume, progress=progress)
    kept = start.out.exists(SOURCES_NAME)
    if kept:
        keep_sources(start.out)
    manifest = _manifest(src, build_plan, assembled, sources_kept=kept, out=start.out)
    write_manifest(start.out, manifest)
    finish_log(start.out)
    bytes_written = assembled.bytes_written + start.out.size(MANIFEST_NAME)
    return BuildResult(manifest, time.perf_counter() - started, bytes_written)


def run_tasks(src: Location, out: Location, build_plan: BuildPlan, executor: Executor, *,
              planned: dict, overwrite: bool, resume: bool,
              progress: Callable[[int], None] | None,
              base: dict[str, SplitInfo] | None = None) -> tuple[Start, Assembled]:
    """Start (or resume) the plan in OUT and run its tasks (the resume -> execute -> assemble
    part of a build; an append gives the ``base`` splits its new shards follow)."""
    first = None if base is None else {split: len(info.shards) for split, info in base.items()}
    shards = {split: (first or {}).get(split, 0) + build_plan.num_shards(split)
              for split in build_plan.scan.splits}
    start = start_or_resume(out, planned, shards={**(first or {}), **shards},
                            sources=build_plan.scan.sources, overwrite=overwrite, resume=resume,
                            base=first)
    if progress and resume:  # the images finished before the interruption count as done
        progress(sum(start.restored.inputs_seen.values()))
    tasks = make_tasks(build_plan, src.absolute(), start.out.absolute(), start.plan["pieces"])
    check_restored(start.restored, [(task.split, len(task.paths)) for task in tasks])
    remaining = tasks[start.restored.tasks_done:]  # the tasks done before go to nobody
    assembled = execute_tasks(build_plan, remaining, start, executor, progress, base)
    remove_leftovers(start.out, start.out.temp_tag)  # of tasks whose worker died mid-write
    return start, assembled


def _manifest(src: Location, build_plan: BuildPlan, assembled: Assembled, *,
              sources_kept: bool, out: Location) -> Manifest:
    config = build_plan.config
    extra: dict[str, object] = {"decoder": decoder_versions(config),
                                **found_duplicates(out, config, assembled.splits)}
    if sources_kept:
        extra["sources"] = SOURCES_KEPT
    return Manifest(
        imgshard_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        source=str(src),
        image_shape=config.image_shape,
        dtype=config.dtype,
        class_names=build_plan.scan.class_names,
        config=config.to_dict(),
        splits=assembled.splits,
        skipped=sorted(build_plan.scan.skipped + assembled.skipped, key=lambda s: s.path),
        extra=extra,
        label_kind=build_plan.scan.label_kind,
        target_names=build_plan.scan.target_names,
    )


def _location(path: str | Location) -> Location:
    return path if isinstance(path, Location) else Location.of(path)


def execute_tasks(build_plan: BuildPlan, tasks: list[ShardTask], start: Start, executor: Executor,
             progress: Callable[[int], None] | None,
             base: dict[str, SplitInfo] | None = None) -> Assembled:
    """Run ``tasks`` and assemble their parts, with the shards restored before them; log a
    checkpoint whenever the build could stop; publish ``samples.csv``. ``base``: the splits
    an appended dataset holds (its shards come first, its ``samples.csv`` rows too).

    On any failure the parts and temporary files of the build are removed (its workers are
    stopped first).
    """
    out, restored = start.out, start.restored
    log = open_log(start, build_plan.scan.sources)
    samples = StagedSamples(out, restored.samples_bytes, restored.samples_rows,
                            continues=base is not None)
    try:
        assemblers = {split: SplitAssembler(split, out, build_plan.config,
                                            build_plan.scan.class_names, samples.writer, len(inputs))
                      for split, inputs in build_plan.scan.splits.items()}
        splits = _restore_splits(assemblers, restored, base or {}, build_plan.scan.class_names)
        checkpoint = Checkpointer(log, samples.stream, assemblers, restored.tasks_done,
                                  carry_rows=not out.keeps_staged_files())
        workers = min(executor.workers, max(1, len(tasks)))  # no idle processes
        results = executor.run(run_shard_task, tasks, workers=workers,
                               describe=lambda t: f"shard {t.index} of split {t.split}")
        try:
            assemble_in_order(results, tasks, build_plan.scan.splits, assemblers, splits,
                              after_task=checkpoint.after_task, progress=progress)
            if not any(split.num_samples for split in splits.values()):
                # before samples.csv takes its name: the build stays resumable, and says the same
                raise BuildError(no_sample(build_plan.scan.num_samples,
                                           [s for a in assemblers.values() for s in a.skipped]))
            samples.publish()
        except BaseException:
            results.close()  # stops the workers before their parts are removed, not after
            for assembler in assemblers.values():
                assembler.abort()
            raise
    except BaseException:
        _remove_parts(out)
        raise
    finally:
        samples.close()
        log.close()
    return Assembled(splits, [skip for a in assemblers.values() for skip in a.skipped],
                     sum(a.bytes_written for a in assemblers.values()) + out.size(SAMPLES_NAME))


def _restore_splits(assemblers: dict[str, SplitAssembler], restored: Restored,
                    base: dict[str, SplitInfo], class_names: list[str] | None
                    ) -> dict[str, SplitInfo]:
    """Give the assemblers the shards an appended dataset holds and those an interrupted run
    finished; the splits it finished."""
    for split, assembler in assemblers.items():
        earlier = base.get(split)
        counts = dict(restored.counts.get(split, {}))
        if earlier is not None and earlier.class_counts and class_names is not None:
            for label, name in enumerate(class_names):
                counts[label] = counts.get(label, 0) + earlier.class_counts.get(name, 0)
        shards = (earlier.shards if earlier else []) + restored.shards.get(split, [])
        assembler.restore(shards=shards, skipped=restored.skipped.get(split, []), counts=counts,
                          inputs_seen=restored.inputs_seen.get(split, 0))
    return {split: assemblers[split].describe() for split in restored.finished}


def _remove_parts(out: Location) -> None:
    """Remove the parts and temporary files of a failed build (its workers are stopped)."""
    try:
        remove_leftovers(out, out.temp_tag)
    except (OSError, ImgshardError):  # cleaning up after a failure must not hide it
        pass
