"""Worker processes on this machine: started the fastest safe way, stopped at once.

A build's local executor and ``verify``'s checksums both run on such processes. They ignore
Ctrl-C (the parent stops them), take the parent's environment as it is when they start, exit
when the parent dies (even by ``kill -9``), and are killed, not drained, when the parent stops
early.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

#: Ctrl-C and SIGTERM: held while this process forks a worker (see :func:`stop_signals_held`).
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def stop_workers(pool: ProcessPoolExecutor, also: Iterable = ()) -> None:
    """Kill the pool's worker processes (and the processes ``also``) and wait until they are
    gone, so that none writes into OUT after this returns (what Python 3.14's
    ``ProcessPoolExecutor.kill_workers`` does).

    Queued futures are not cancelled: the killed workers break the pool, which fails them all,
    and Python 3.11's pool thread, failing a future cancelled just before, printed a traceback
    (``InvalidStateError``) under the one-line ``Interrupted`` message.
    """
    processes = {*(pool._processes or {}).values(), *also}  # noqa: SLF001 - no public API < 3.14
    pool.shutdown(wait=False)
    for process in processes:
        with contextlib.suppress(ProcessLookupError, ValueError):
            process.kill()
    for process in processes:
        with contextlib.suppress(ValueError):
            process.join()


#: Libraries that run native threads of their own: forking a process that loaded one may
#: deadlock the child (JAX says so), so such a process starts its workers with forkserver.
THREADED_LIBRARIES = ("jax", "tensorflow", "torch")


#: How long a worker's answer to :func:`started_pool` takes: long enough that one worker does
#: not answer for all while another is still starting.
ANSWER_SECONDS = 0.005


def _answer(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def started_pool(workers: int) -> ProcessPoolExecutor | None:
    """A process pool whose workers are already running (None for one worker).

    Started before the scan, forked workers do not inherit the build's per-file records: the
    build touches them (reference counts) as it assembles shards, which would otherwise copy
    their pages, so that memory grew with the number of files once per process. Their start-up
    also overlaps the scan. It returns once every worker has answered, so has run
    :func:`_start_worker`: a worker still starting (a forkserver's child has Python's Ctrl-C
    handler until then) would die of a Ctrl-C with a traceback and break the pool.
    """
    if workers <= 1:
        return None
    earlier = set(multiprocessing.active_children())
    pool = process_pool(workers)
    try:
        answered: set[int] = set()
        while len(answered) < workers:  # every worker, not one twice: each has its handlers
            with stop_signals_held():
                started = [pool.submit(_answer, ANSWER_SECONDS) for _ in range(workers)]
            answered |= {done.result() for done in started}
    except BaseException:
        # Ctrl-C or SIGTERM mid-start: nothing else would stop these workers (one may be forked
        # but not yet known to the pool), and Python's exit would wait for them for ever.
        stop_workers(pool, set(multiprocessing.active_children()) - earlier)
        raise
    return pool


@contextlib.contextmanager
def stoppable_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool for the block, whose workers are killed if the block raises: they leave
    Ctrl-C to this process, and would otherwise finish every task queued before they exit."""
    pool = process_pool(workers)
    try:
        yield pool
    except BaseException:
        stop_workers(pool)
        raise
    pool.shutdown()


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the block runs (it forks workers); they arrive after it.

    Python runs a signal's handler at its next chance, which may be inside a fork's Python
    hooks (logging registers one), where an exception is printed as 'Exception ignored' and
    dropped: the stop was lost, the build went on to the end, and a later SIGTERM was ignored.
    Workers inherit the held signals, so they release them as they start.
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows: no fork either
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool started the fastest way that is safe in this process (see below).

    Workers take this process's environment as it is now: a forkserver started earlier would
    otherwise hand them the environment of that moment (credentials set since, for one).
    """
    return ProcessPoolExecutor(workers, mp_context=_context(), initializer=_start_worker,
                               initargs=(dict(os.environ), os.getpid()))


#: Seconds between a worker's checks that the build that started it is still alive.
PARENT_CHECK_SECONDS = 1.0


def _start_worker(environment: dict[str, str], parent: int) -> None:
    """Take the build's environment, leave its objects shared, leave stopping to the build, and
    exit when the build dies.

    A build killed with ``kill -9`` cannot tell its workers to stop, and a forked worker holds
    the ends of its own task pipe, so it would wait for a task forever.
    """
    # A forked worker shares the build's objects (one per input file) copy-on-write; the
    # garbage collector would touch every one and copy their pages into each worker.
    gc.freeze()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker may inherit the CLI's handler
    # Ctrl-C reaches the whole process group; the build kills its workers when it stops, and a
    # worker of its own would print a KeyboardInterrupt traceback over the one-line message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # held while the build forked it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    os.environ.clear()
    os.environ.update(environment)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True,
                     name="imgshard-parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        try:
            os.kill(parent, 0)
        except (ProcessLookupError, PermissionError):  # gone, or its pid reused by another user
            os._exit(1)


def _context() -> multiprocessing.context.BaseContext:
    """``fork`` (no start-up cost) when it is safe, else ``forkserver`` (or ``spawn``)."""
    methods = multiprocessing.get_all_start_methods()
    threaded = threading.active_count() > 1 or any(m in sys.modules for m in THREADED_LIBRARIES)
    if "fork" in methods and not threaded:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
