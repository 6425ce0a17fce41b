"""Where a build's shard tasks run, chosen by name: worker processes on this machine
(``local``) or a Dask cluster (``dask``). A new executor is one module and one entry here."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ImgshardError
from ..storage import Location
from .dask import DaskExecutor
from .interface import Executor
from .local import LocalExecutor

EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "dask": DaskExecutor}


def executor_kind(name: str) -> type[Executor]:
    """The executor class called ``name`` (one line naming the choices when there is none)."""
    try:
        return EXECUTORS[name]
    except (KeyError, TypeError):
        raise ImgshardError(f"unknown executor {name!r} (choose {' or '.join(EXECUTORS)})"
                            ) from None


def executor_named(name: str, *, workers: int | None = None, scheduler: str | None = None,
                   reaches: Iterable[Location] = ()) -> Executor:
    """The executor called ``name`` for ``workers`` workers (default: all cores), not started
    yet (see :meth:`Executor.start`); ``scheduler`` is for the executors that take one."""
    return executor_kind(name)(workers, scheduler=scheduler, reaches=reaches)
