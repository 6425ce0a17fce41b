"""``build()``: a raw image folder in, a finished shard directory out.

The whole pipeline: :func:`~imgshard.scan.scan` the source, cut each split into one
:class:`~imgshard.worker.ShardTask` per shard, run the tasks on worker processes that write
their own part files, assemble the parts into fixed-size shards in task order, and write
``samples.csv`` and finally ``manifest.json``. Until that last rename the directory holds no
manifest, so an interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import PIL

from .version import __version__
from .assemble import SplitAssembler
from .config import BuildConfig
from .errors import ImgshardError
from .executors.local import default_workers, run_tasks, started_pool
from .layout import BUILD_ID, MANIFEST_NAME, SAMPLES_NAME, SAMPLES_PARTIAL
from .manifest import Manifest, Skip, SplitInfo, write_manifest
from .outdir import check_apart, check_resumable, locked, prepare_out, remove_leftovers
from .resources import check_memory, local_workers
from .resume import (
    ProgressLog,
    Restored,
    ResumeError,
    check_plan,
    check_restored,
    plan_record,
    read_plan,
    restore,
    write_sources,
)
from .samples_csv import open_samples_csv
from .scan import ScanResult, scan
from .storage import Location
from .worker import ShardResult, ShardTask, run_shard_task

#: Below this many shards per worker, shards are cut into pieces (see :func:`pieces_per_shard`).
MIN_SHARDS_PER_WORKER = 2
#: Pieces per worker when shards are cut: every piece is joined by the build process anyway,
#: so small pieces cost little more, and a worker never waits long for the other's last one.
PIECES_PER_WORKER = 4


class BuildError(ImgshardError):
    """The build cannot finish; the message is one line for the user."""


@dataclass(frozen=True)
class BuildPlan:
    """What a build will do, known before any pixel is decoded (also what ``--dry-run`` shows)."""

    scan: ScanResult
    config: BuildConfig

    def bytes_per_image(self, dtype: str | None = None) -> int:
        height, width, channels = self.config.image_shape
        return height * width * channels * np.dtype(dtype or self.config.dtype).itemsize

    def num_shards(self, split: str) -> int:
        return -(-len(self.scan.splits[split]) // self.config.shard_size)

    def estimated_bytes(self, dtype: str | None = None) -> int:
        """Bytes on disk if every image decodes (stored as ``dtype``): pixels, labels, headers."""
        labels = 0 if self.scan.class_names is None else 4
        shards = sum(self.num_shards(split) for split in self.scan.splits)
        per_shard_headers = 128 * (1 if self.scan.class_names is None else 2)
        return self.scan.num_samples * (self.bytes_per_image(dtype) + labels) + shards * per_shard_headers


@dataclass(frozen=True)
class BuildResult:
    manifest: Manifest
    elapsed: float
    bytes_written: int

    @property
    def images_per_second(self) -> float:
        samples = sum(split.num_samples for split in self.manifest.splits.values())
        return samples / self.elapsed if self.elapsed > 0 else 0.0


def plan(src: str | Location, config: BuildConfig) -> BuildPlan:
    return BuildPlan(scan=scan(_location(src), config), config=config)


def build(src: str | Location, out: str | Location, config: BuildConfig | None = None, *,
          workers: int | None = None, overwrite: bool = False, resume: bool = False,
          progress: Callable[[int], None] | None = None,
          build_plan: BuildPlan | None = None, executor: str = "local",
          scheduler: str | None = None, pool: ProcessPoolExecutor | None = None) -> BuildResult:
    """Build the shard directory ``out`` from the image folder ``src``.

    ``src`` and ``out`` are local paths, fsspec URLs, or :class:`~imgshard.storage.Location`
    objects (a URL with its storage options).

    Args:
        workers: worker processes (default: all cores); never changes the output bytes.
        overwrite: replace an earlier imgshard build in ``out``.
        resume: finish the interrupted build in ``out`` (see ``progress.py``).
        progress: called with the number of images (decoded or skipped) after each task.
        build_plan: the result of :func:`plan` for the same source and config, if already made.
        executor: ``"local"`` (a process pool) or ``"dask"`` (a Dask cluster, see ``scheduler``);
            both write the same bytes.
        scheduler: the Dask scheduler's address, or ``"local"`` for a LocalCluster.
        pool: local worker processes started before the scan (:func:`started_pool`); used
            and shut down by the build.

    ``out`` must not overlap ``src``; a local ``out`` is locked while the build writes it, and
    another build into it is refused at once.

    Raises:
        ScanError, ConfigError, BuildError, StorageError, OutputError: with a one-line message
        for the user.
    """
    started = time.perf_counter()
    src, out = _location(src), _location(out)
    config = config or BuildConfig()
    workers = local_workers(workers) if executor == "local" else workers or default_workers()
    if src.in_process or out.in_process:
        if executor != "local":
            raise BuildError("memory:// lives in this process only: use the local executor")
        workers = 1  # worker processes could not see this process's memory
    if executor == "local":
        check_memory(config, workers)
    if pool is None and build_plan is None and executor == "local":
        pool = started_pool(workers)
    with contextlib.ExitStack() as owned:
        if pool is not None:
            owned.enter_context(pool)
        check_apart(src, out, config.labels)
        owned.enter_context(locked(out))
        return _build(src, out, config, workers, overwrite, resume, progress,
                      build_plan or plan(src, config), executor, scheduler, pool, started)


def _build(src: Location, out: Location, config: BuildConfig, workers: int, overwrite: bool,
           resume: bool, progress: Callable[[int], None] | None, build_plan: BuildPlan,
           executor: str, scheduler: str | None, pool: ProcessPoolExecutor | None,
           started: float) -> BuildResult:
    files = ((split, s.path) for split, samples in build_plan.scan.splits.items() for s in samples)
    planned = plan_record(config.to_dict(), files, pieces_per_shard(build_plan, workers),
                          build_plan.scan.labels_sha256)
    out, planned, restored = _start(out, planned, build_plan, overwrite=overwrite, resume=resume)
    if progress and resume:  # the images finished before the interruption count as done
        progress(sum(restored.inputs_seen.values()))
    tasks = make_tasks(build_plan, src.absolute(), out.absolute(), planned["pieces"])
    check_restored(restored, [(task.split, len(task.paths)) for task in tasks])
    workers = min(workers, max(1, len(tasks) - restored.tasks_done))  # no idle processes
    log = ProgressLog(out, planned, append=resume)
    if not resume and build_plan.scan.sources is not None:
        write_sources(out, build_plan.scan.sources)  # after the plan: the log accounts for it
    staging = out.path("") if out.is_local else tempfile.mkdtemp(prefix="imgshard-staging-")
    run_on = functools.partial(run_tasks, executor=executor, scheduler=scheduler, workers=workers,
                               pool=pool)
    try:
        splits, skipped, bytes_written = _run(build_plan, tasks, out, staging, run_on, progress,
                                              log, restored)
    except BaseException:
        _remove_parts(out)
        raise
    finally:
        log.close()
        if not out.is_local:
            shutil.rmtree(staging, ignore_errors=True)
    remove_leftovers(out, out.temp_tag)  # temporary files of tasks whose worker died mid-write
    manifest = Manifest(
        imgshard_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        source=str(src),
        image_shape=config.image_shape,
        dtype=config.dtype,
        class_names=build_plan.scan.class_names,
        config=config.to_dict(),
        splits=splits,
        skipped=sorted(build_plan.scan.skipped + skipped, key=lambda s: s.path),
        extra={"decoder": decoder_versions()},
    )
    write_manifest(out, manifest)
    log.remove()
    bytes_written += out.size(MANIFEST_NAME)
    return BuildResult(manifest, time.perf_counter() - started, bytes_written)


def _start(out: Location, planned: dict, build_plan: BuildPlan, *, overwrite: bool,
           resume: bool) -> tuple[Location, dict, Restored]:
    """Ready OUT (with this build's temporary names' tag), the plan to log, what is restored.

    A fresh build gets a new build id and an empty OUT; a resumed one takes the plan, the build
    id and the finished shards of the build it finishes, and removes that build's leftovers.
    """
    if not resume:
        planned = {**planned, **written_record(build_plan)}
        out = dataclasses.replace(out, temp_tag=planned["build"])
        prepare_out(out, overwrite=overwrite)
        return out, planned, Restored()
    if overwrite:
        raise BuildError("--resume and --overwrite exclude each other")
    check_resumable(out)
    recorded = read_plan(out)
    check_plan(recorded, planned, out, build_plan.scan.sources)
    if not isinstance(recorded.get("build"), str) or not BUILD_ID.fullmatch(recorded["build"]):
        raise ResumeError("refusing to resume: an older imgshard started this build, or its "
                          "progress log was edited (use --overwrite to start again)")
    out = dataclasses.replace(out, temp_tag=recorded["build"])
    remove_leftovers(out, out.temp_tag)
    return out, recorded, restore(out)


def written_record(build_plan: BuildPlan) -> dict:
    """What the progress log's plan records of the files this build may write, so that an
    ``--overwrite`` of it deletes those and nothing else: a fresh build id, which tags its
    temporary and part names, and how many shards each split may have (skips only lower it).
    """
    return {"build": secrets.token_hex(6),
            "shards": {split: build_plan.num_shards(split) for split in build_plan.scan.splits}}


def _location(path: str | Location) -> Location:
    return path if isinstance(path, Location) else Location.of(path)


def decoder_versions() -> dict[str, str | None]:
    """The libraries whose versions decide the pixels: Pillow, the JPEG codec inside it, numpy.

    libjpeg-turbo's DCT scaling (``draft()``) and IDCT may round differently across versions,
    so shards are byte-identical only for the same versions.
    """
    from PIL import features  # imported here: it costs every start-up ~6 ms

    return {"pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"),
            "numpy": np.__version__}


def pieces_per_shard(build_plan: BuildPlan, workers: int) -> int:
    """Into how many tasks each shard is cut: 1, unless the build has fewer shards than
    ``MIN_SHARDS_PER_WORKER`` per worker; then enough pieces to keep every worker busy to the end.
    """
    shards = sum(build_plan.num_shards(split) for split in build_plan.scan.splits)
    if workers > 1 and shards < workers * MIN_SHARDS_PER_WORKER:
        return -(-workers * PIECES_PER_WORKER // max(shards, 1))
    return 1


def make_tasks(build_plan: BuildPlan, src: Location, out: Location,
               pieces: int = 1) -> list[ShardTask]:
    """One task per shard-sized run of each split's samples (or per piece of one, see
    :func:`pieces_per_shard`), in split then shard order; pieces are joined by the assembler
    into the same shard bytes.
    """
    size = build_plan.config.shard_size
    tasks = []
    for split, samples in build_plan.scan.splits.items():
        starts = [start for shard_start in range(0, len(samples), size)
                  for start in piece_starts(shard_start, min(size, len(samples) - shard_start),
                                            pieces)]
        for index, (start, end) in enumerate(zip(starts, [*starts[1:], len(samples)])):
            paths = tuple(s.path for s in samples[start:end])
            tasks.append(ShardTask(split, index, paths, src, out, build_plan.config, start=start,
                                   whole=pieces == 1))
    return tasks


def piece_starts(start: int, length: int, pieces: int) -> list[int]:
    """Where each of ``pieces`` near-equal pieces of ``length`` samples from ``start`` begins."""
    pieces = min(pieces, length)
    return [start + length * piece // pieces for piece in range(pieces)]


def _run(build_plan: BuildPlan, tasks: list[ShardTask], out: Location, staging: str,
         run_on: Callable, progress: Callable[[int], None] | None, log: ProgressLog,
         restored: Restored):
    """Run the tasks and assemble their parts in task order, whatever order they finish in.

    Tasks before ``restored.tasks_done`` were finished by an interrupted run and are not run.
    ``samples.csv`` grows in ``staging`` (OUT itself when local) and is moved into OUT last.
    """
    partial = os.path.join(staging, SAMPLES_PARTIAL)
    if restored.samples_rows:
        stream, writer = open_samples_csv(partial)
        stream.write("".join(restored.samples_rows))
        stream.flush()
    else:
        stream, writer = open_samples_csv(partial, restored.samples_bytes)
    assemblers = {split: SplitAssembler(split, out, build_plan.config, build_plan.scan.class_names,
                                        writer, len(samples))
                  for split, samples in build_plan.scan.splits.items()}
    splits = {split: _restore_split(assemblers[split], restored, split)
              for split in restored.finished}
    for split in set(restored.shards) - restored.finished:
        _restore_split(assemblers[split], restored, split)
    checkpoint = _Checkpointer(log, stream, assemblers, restored.tasks_done,
                               carry_rows=not out.is_local)
    remaining = tasks[restored.tasks_done:]
    order = deque((task.split, task.index) for task in remaining)
    task_of = {(task.split, task.index): task for task in remaining}
    last_index = {task.split: task.index for task in tasks}
    waiting: dict[tuple[str, int], ShardResult] = {}
    results = run_on(run_shard_task, remaining,
                     describe=lambda t: f"shard {t.index} of split {t.split}")
    try:
        for result in results:
            waiting[(result.split, result.index)] = result
            if progress:
                progress(result.num_samples + len(result.skipped))
            while order and order[0] in waiting:
                split, index = order.popleft()
                task = task_of[(split, index)]
                inputs = build_plan.scan.splits[split][task.start:task.start + len(task.paths)]
                assemblers[split].add(waiting.pop((split, index)), inputs)
                if index == last_index[split]:
                    splits[split] = assemblers[split].finish()
                checkpoint.after_task(split, finished=split in splits)
        if order:
            raise BuildError(f"{len(order)} tasks never reported back (a bug): rerun with --resume")
        if not any(split.num_samples for split in splits.values()):
            # before samples.csv takes its name: the build stays resumable, and says the same
            raise BuildError(no_sample(build_plan.scan.num_samples,
                                       [s for a in assemblers.values() for s in a.skipped]))
        stream.close()
        if out.is_local:
            os.replace(partial, out.path(SAMPLES_NAME))
        else:
            out.upload(partial, SAMPLES_NAME)
    except BaseException:
        results.close()  # stops the workers before their parts are removed, not after
        for assembler in assemblers.values():
            assembler.abort()
        stream.close()
        raise
    skipped = [skip for a in assemblers.values() for skip in a.skipped]
    bytes_written = sum(a.bytes_written for a in assemblers.values())
    return splits, skipped, bytes_written + out.size(SAMPLES_NAME)


def no_sample(images: int, skipped: list[Skip]) -> str:
    """Why a build made no sample: its most frequent skip reason, with an example."""
    reasons = Counter(skip.reason.split(" (")[0] for skip in skipped)
    if not reasons:
        return f"none of the {images} images became a sample"
    reason, count = reasons.most_common(1)[0]
    example = next(skip for skip in skipped if skip.reason.split(" (")[0] == reason)
    return (f"none of the {images} images became a sample: {count} skipped as {reason} "
            f"(e.g. {example.path}: {example.reason})")


def _restore_split(assembler: SplitAssembler, restored: Restored, split: str) -> SplitInfo:
    """Give ``assembler`` the shards an interrupted run finished; describe them as a split."""
    assembler.restore(shards=restored.shards.get(split, []),
                      skipped=restored.skipped.get(split, []),
                      counts=restored.counts.get(split, {}),
                      inputs_seen=restored.inputs_seen.get(split, 0))
    return assembler.describe()


class _Checkpointer:
    """Logs a checkpoint whenever the finished shards cover exactly the tasks consumed."""

    def __init__(self, log: ProgressLog, stream, assemblers: dict[str, SplitAssembler],
                 tasks_done: int, *, carry_rows: bool) -> None:
        self.log, self.stream, self.assemblers = log, stream, assemblers
        self.tasks_done = tasks_done
        #: On an object store the log cannot point into a local file: it carries the rows.
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
        rows = self._rows_since_last() if self.carry_rows else None
        self.log.checkpoint(tasks_done=self.tasks_done, split=split,
                            shards=assembler.shards[shards:], skipped=assembler.skipped[skips:],
                            counts=added, inputs_seen=assembler.inputs_seen, finished=finished,
                            samples_bytes=self.stream.tell(), samples_rows=rows)
        self.logged[split] = (len(assembler.shards), len(assembler.skipped),
                              dict(assembler.counts))

    def _rows_since_last(self) -> str:
        """The ``samples.csv`` rows written since the last checkpoint (remote logs carry them)."""
        end = self.stream.tell()
        with open(self.stream.name, "rb") as written:
            written.seek(self.rows_logged)
            rows = written.read(end - self.rows_logged)
        self.rows_logged = end
        return rows.decode("utf-8", "surrogateescape")


def _remove_parts(out: Location) -> None:
    """Remove the parts and temporary files of a failed build (its workers are stopped)."""
    try:
        remove_leftovers(out, out.temp_tag)
    except (OSError, ImgshardError):  # cleaning up after a failure must not hide it
        pass
