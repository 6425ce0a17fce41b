"""Where a build's shard tasks run, chosen by name: worker processes on this machine
(``local``) or a Dask cluster (``dask``). A new executor is one module and one entry here.

An executor's module is imported when its name is asked for, so that ``import imgshard`` pays
for none it does not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from ..errors import ImgshardError
from ..storage import Location
from .interface import Executor

#: Each executor's name -> its class, as ``module:class`` under this package.
EXECUTORS: dict[str, str] = {"local": "local:LocalExecutor", "dask": "dask:DaskExecutor"}


def executor_kind(name: str) -> type[Executor]:
    """The executor class called ``name`` (one line naming the choices when there is none)."""
    try:
        module, _, kind = EXECUTORS[name].partition(":")
    except (KeyError, TypeError):
        raise ImgshardError(f"unknown executor {name!r} (choose {' or '.join(EXECUTORS)})"
                            ) from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), kind)


def executor_named(name: str, *, workers: int | None = None, scheduler: str | None = None,
                   reaches: Iterable[Location] = ()) -> Executor:
    """The executor called ``name`` for ``workers`` workers (default: all cores), not started
    yet (see :meth:`Executor.start`); ``scheduler`` is for the executors that take one."""
    return executor_kind(name)(workers, scheduler=scheduler, reaches=reaches)
