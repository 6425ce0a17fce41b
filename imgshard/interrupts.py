"""Stopping a build: SIGTERM as Ctrl-C, and no stop lost where Python swallows exceptions.

``timeout``, Docker and Kubernetes stop a process with SIGTERM, and only the build process gets
it; the command line turns it into :class:`Terminated`, a ``KeyboardInterrupt``, so that the
build stops exactly as on Ctrl-C (its workers killed, their files removed, exit code 143).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Docker, Kubernetes), stopping a build just as Ctrl-C does."""


#: How soon a SIGTERM that Python swallowed is sent again (see :func:`sigterm_as_interrupt`).
RESEND_SECONDS = 0.05


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Raise :class:`Terminated` in the main thread on SIGTERM while the block runs.

    Only the build process gets SIGTERM (Ctrl-C reaches its workers too), so it must stop like
    Ctrl-C: the build kills its workers and removes their files. A second SIGTERM is ignored
    while the first one's cleanup runs. A :class:`Terminated` or a Ctrl-C's KeyboardInterrupt
    raised where Python swallows exceptions (a ``__del__``, logging's hook after a fork)
    reaches ``sys.unraisablehook``: then its signal is sent again once the hook has returned
    (from a timer thread: sent from the hook, it would be handled inside the hook and
    swallowed again), to stop the build where it can. Library users keep their own handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def stop(signum: int, frame: object) -> None:
        nonlocal raised
        if not raised:  # else the first one's cleanup runs
            raised = True
            raise Terminated

    def swallowed(unraisable) -> None:
        nonlocal raised
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            terminated = isinstance(unraisable.exc_value, Terminated)
            raised = raised and not terminated
            again = signal.SIGTERM if terminated else signal.SIGINT
            threading.Timer(RESEND_SECONDS, os.kill, (os.getpid(), again)).start()
        else:
            previous_hook(unraisable)

    previous, previous_hook = signal.signal(signal.SIGTERM, stop), sys.unraisablehook
    sys.unraisablehook = swallowed
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook
