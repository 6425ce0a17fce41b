"""Run shard tasks on local worker processes, yielding results as they finish.

``concurrent.futures.ProcessPoolExecutor`` rather than ``multiprocessing.Pool``: when a worker
dies (killed, or a decoder crashes the interpreter) the former raises ``BrokenProcessPool``
instead of waiting forever for a result that will never come. The tasks that were in flight are
then retried once on a fresh pool; a task that breaks the pool twice fails the build.

When the build stops early (a failed task, Ctrl-C, SIGTERM, which only the build process gets)
its workers are killed at once rather than left to finish tasks whose parts would be thrown
away; the build then removes what they were writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..config import BuildConfig
from ..processes import process_pool, started_pool, stop_signals_held, stop_workers
from ..resources import check_memory, local_workers
from .interface import MAX_ATTEMPTS, Executor, Result, Task, WorkerCrashed

#: Tasks a worker may have queued beyond the one it runs: enough to never idle, few enough
#: that an interrupted build has little half-done work.
QUEUE_PER_WORKER = 2



class LocalExecutor(Executor):
    """Worker processes on this machine, at most one per core; with one worker, the tasks run
    in this process (no start-up cost, and the same bytes)."""

    only_other_processes = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pool: ProcessPoolExecutor | None = None

    @staticmethod
    def worker_count(requested: int | None) -> int:
        return local_workers(requested)

    @property
    def workers_here(self) -> int:
        return self.workers

    def start(self, config: BuildConfig) -> None:
        """Refuse images too big for the workers' memory, then start the workers: before the
        scan, forked workers do not inherit its records (see :func:`started_pool`)."""
        check_memory(config, self.workers)
        self.pool = started_pool(self.workers)

    def run(self, run: Callable[[Task], Result], tasks: Iterable[Task], *, workers: int,
            describe: Callable[[Task], str] = str) -> Iterator[Result]:
        pool, self.pool = self.pool, None  # run_local shuts it down
        return run_local(run, tasks, workers=workers, describe=describe, pool=pool)

    def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown()


def run_local(run: Callable[[Task], Result], tasks: Iterable[Task], *, workers: int,
              describe: Callable[[Task], str] = str,
              pool: ProcessPoolExecutor | None = None) -> Iterator[Result]:
    """Yield ``run(task)`` for every task, in completion order, on ``workers`` processes.

    ``pool``: workers started earlier (see :func:`started_pool`), used first and shut down.

    With one worker the tasks run in this process: no start-up cost, and the same bytes.
    """
    if workers <= 1:
        yield from map(run, tasks)
        return
    pending = list(tasks)[::-1]
    suspects: list = []
    attempts: dict[int, int] = {}
    while pending or suspects:
        # After a crash, the tasks that were in flight run one at a time, so that a second
        # crash is blamed on the task that caused it and not on its innocent neighbours.
        batch, limit = (suspects, 1) if suspects else (pending, workers * (1 + QUEUE_PER_WORKER))
        with (pool or process_pool(workers)) as active:
            pool = None  # after a crash, a fresh pool
            try:
                lost = yield from _drain(active, run, batch, limit)
            except BaseException:  # includes GeneratorExit: the build stopped taking results
                stop_workers(active)
                raise
        for task in lost:
            attempts[id(task)] = attempts.get(id(task), 1) + 1
            if attempts[id(task)] > MAX_ATTEMPTS:
                raise WorkerCrashed(f"a worker process died twice while building {describe(task)}")
        suspects.extend(lost)


def _drain(pool: ProcessPoolExecutor, run: Callable, pending: list, limit: int):
    """Run ``pending`` (popped from the end, at most ``limit`` in flight) on ``pool``.

    Returns the tasks lost when the pool breaks (a worker died), else an empty list.
    """
    in_flight: dict[Future, object] = {}
    try:
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                with stop_signals_held():  # a fresh pool forks its workers on a submission
                    in_flight[pool.submit(run, pending[-1])] = pending[-1]
                pending.pop()  # only once submitted: a broken pool refuses submissions too
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                task = in_flight.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    in_flight[future] = task
                    raise
                yield result
    except BrokenProcessPool:
        return list(in_flight.values())
    return []
