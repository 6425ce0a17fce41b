"""Run shard tasks on a Dask cluster (``imgshard build --executor dask``).

Each task is one ``client.submit``: the worker that runs it reads SRC and writes its part into
OUT itself (a shared file system or an object store), and only the small
:class:`~imgshard.worker.ShardResult` comes back, so pixels never travel through the scheduler
or this client. The client assembles the manifest from those results exactly as a local build
does, which is why both executors write the same bytes.

Failures: when a worker dies, the scheduler reruns its tasks elsewhere (up to Dask's
``distributed.scheduler.allowed-failures``); a task that keeps killing workers fails the build
with :class:`~imgshard.executors.interface.WorkerCrashed`. A task that raises is retried once more, on
whichever worker the scheduler picks.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError

from ..errors import ImgshardError
from .interface import MAX_ATTEMPTS, Executor, Result, Task, WorkerCrashed

#: Seconds to wait for the scheduler to answer before telling the user it cannot be reached.
CONNECT_TIMEOUT = 10
#: Seconds a stopped build waits for tasks already running on workers to end (Dask cannot
#: interrupt a running task; until it ends, it may still write its part into OUT).
STOP_TIMEOUT = 60


class DaskExecutor(Executor):
    """A Dask cluster: ``scheduler`` is its address, or ``"local"`` (the default) for a
    LocalCluster of ``workers`` processes on this machine, closed when the build ends."""

    takes_scheduler = True

    def __init__(self, *args, scheduler: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler = scheduler or "local"

    def run(self, run: Callable[[Task], Result], tasks: Iterable[Task], *, workers: int,
            describe: Callable[[Task], str] = str) -> Iterator[Result]:
        return run_dask(run, tasks, scheduler=self.scheduler, workers=workers, describe=describe)


def run_dask(run: Callable[[Task], Result], tasks: Iterable[Task], *, scheduler: str,
             workers: int, describe: Callable[[Task], str] = str) -> Iterator[Result]:
    """Yield ``run(task)`` for every task, in completion order, on the Dask cluster.

    ``scheduler`` is an address (``tcp://host:8786``) or ``"local"``: a LocalCluster of
    ``workers`` single-threaded processes on this machine, closed when the build ends.
    """
    distributed = _import_distributed()
    tasks = list(tasks)
    if not tasks:
        return
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(_connect(distributed, scheduler, workers))
        batch = secrets.token_hex(4)
        futures = {client.submit(run, task, key=f"imgshard-{batch}-{number}", pure=False,
                                 retries=MAX_ATTEMPTS - 1): task
                   for number, task in enumerate(tasks)}
        finished = False
        try:
            for future in distributed.as_completed(futures):
                try:
                    yield future.result()
                except distributed.KilledWorker:
                    raise WorkerCrashed(f"Dask workers died again and again while building "
                                        f"{describe(futures[future])}") from None
                except (distributed.comm.CommClosedError, CancelledError) as error:
                    # the scheduler went away (a task's own OSError is raised as it is)
                    raise ImgshardError(f"lost the Dask cluster at {scheduler} "
                                        f"({type(error).__name__}): rerun with --resume") from None
            finished = True
        finally:
            if not finished:  # stopped early: no task may write a part after this returns
                client.cancel(list(futures))
                _wait_until_stopped(client, {future.key for future in futures})


def _wait_until_stopped(client, keys: set) -> None:
    """Wait until no worker still runs one of ``keys``, so that the parts they would write
    exist before the build removes its parts, not after.

    Asked of the workers themselves: once cancelled, a task leaves the scheduler's books at
    once, while its thread on the worker runs on to the end.
    """
    deadline = time.monotonic() + STOP_TIMEOUT
    quiet = 0  # twice in a row: a queued task may start before the cancellation reaches it
    while time.monotonic() < deadline and quiet < 2:
        try:
            running = {key for found in client.run(_running_keys).values() for key in found}
        except Exception:  # noqa: BLE001 - the cluster is gone: nothing runs any more
            return
        quiet = quiet + 1 if not running & keys else 0
        time.sleep(0.2)


def _running_keys(dask_worker) -> list:
    """The keys of the tasks this worker's threads are running (called on each worker)."""
    with dask_worker.active_threads_lock:
        return list(dask_worker.active_threads.values())


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ImgshardError("--executor dask needs Dask: pip install 'imgshard[dask]'") from None
    return distributed


@contextlib.contextmanager
def _connect(distributed, scheduler: str, workers: int):
    """A client of the scheduler at ``scheduler``, or of a new LocalCluster for ``"local"``."""
    if scheduler == "local":
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise ImgshardError(f"cannot reach the Dask scheduler at {scheduler}: "
                            f"{' '.join(str(error).split())[:200]}") from None
    with client:
        yield client
