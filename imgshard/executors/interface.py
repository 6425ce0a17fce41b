"""What every executor offers the build, and the pieces the executors share.

An executor runs shard tasks somewhere (local processes, a Dask cluster) and yields their
results in completion order; both run the same tasks, so they write the same bytes. The build
knows only this interface; ``executors/__init__.py`` picks the implementation by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar, TypeVar

from ..config import BuildConfig
from ..errors import ImgshardError
from ..resources import default_workers
from ..storage import Location

Task = TypeVar("Task")
Result = TypeVar("Result")

#: How often a task may be tried before it fails the build (a crash or an error each time).
MAX_ATTEMPTS = 2


class WorkerCrashed(ImgshardError):
    """A worker process died twice while running the same task."""


class Executor:
    """Runs shard tasks on ``workers`` workers; a context manager that ends what it started.

    ``reaches``: the directories the workers read and write; a directory that only this
    process can see (``memory://``) leaves one worker, run in this process, or none at all.
    """

    #: Whether every worker is another process, even a single one.
    only_other_processes: ClassVar[bool] = True
    #: Whether the executor runs on a scheduler that ``scheduler`` names.
    takes_scheduler: ClassVar[bool] = False

    def __init__(self, workers: int | None = None, *, scheduler: str | None = None,
                 reaches: Iterable[Location] = ()) -> None:
        workers = self.worker_count(workers)
        for location in reaches:
            workers = location.worker_processes(
                workers, only_other_processes=self.only_other_processes)
        self.workers = workers

    @staticmethod
    def worker_count(requested: int | None) -> int:
        """How many workers to run when ``requested`` (None: one per core here)."""
        return requested or default_workers()

    @property
    def workers_here(self) -> int:
        """Worker processes on this machine, each holding one image at a time."""
        return 0

    def start(self, config: BuildConfig) -> None:
        """Check that the workers fit and start them, before the scan if it may (see local)."""

    def run(self, run: Callable[[Task], Result], tasks: Iterable[Task], *, workers: int,
            describe: Callable[[Task], str] = str) -> Iterator[Result]:
        """Yield ``run(task)`` for every task, in completion order, on ``workers`` workers."""
        raise NotImplementedError

    def close(self) -> None:
        """End what :meth:`start` started (nothing here)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
