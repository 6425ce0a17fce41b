"""An append-only log of text records in a directory, each record durable once appended.

Local, it is one file (``PROGRESS_NAME``) of lines, each fsynced before :meth:`RecordLog.append`
returns, so that after a crash the file holds a prefix of whole lines (a torn last line at
worst). An object store cannot append, so there each record is its own object,
``.imgshard-progress-{n:06d}.json``, uploaded whole; the first gap in the numbers ends the log.
"""

from __future__ import annotations

import os
from typing import TextIO

from ..errors import ShardError
from ..layout import PROGRESS_NAME, remote_progress_name
from . import Location


class LogError(ShardError):
    """The log's file is not a regular file (a link, a FIFO, a device or a folder)."""


class RecordLog:
    """The resume log of a build in ``out``: records appended in order, read back as lines."""

    def __init__(self, out: Location) -> None:
        self.out = out
        self.stream: TextIO | None = None
        self.records = 0

    def names(self) -> list[str]:
        """The names of the files that hold the log, the first record's first."""
        if self.out.is_local:
            return [PROGRESS_NAME]
        names = set(self.out.listdir())
        found = []
        while remote_progress_name(len(found)) in names:
            found.append(remote_progress_name(len(found)))
        return found

    def read(self) -> list[str]:
        """The records, in order (none when there is no log; bytes that are not UTF-8 are
        replaced, which makes the record unreadable rather than the log).

        Raises:
            LogError: the local log is not a regular file.
        """
        if not self.out.is_local:
            return [self.out.read_bytes(name).decode("utf-8", "replace") for name in self.names()]
        try:
            with self.out.open_regular(PROGRESS_NAME) as stream:
                data = stream.read()
        except FileNotFoundError:
            return []
        except ShardError:
            raise LogError(f"{PROGRESS_NAME} is not a regular file") from None
        return data.decode("utf-8", "replace").split("\n")

    def open(self, *, append: bool) -> None:
        """Start writing: after the records there are (``append``), else into a new, empty log."""
        if self.out.is_local:
            self.stream = open(self.out.path(PROGRESS_NAME), "a" if append else "w",
                               encoding="utf-8")
        self.records = len(self.names()) if append and not self.out.is_local else 0

    def append(self, record: str) -> None:
        """Add one record (a line without its newline), durably."""
        if self.stream is None:
            self.out.write_bytes(remote_progress_name(self.records), f"{record}\n".encode())
            self.records += 1
            return
        self.stream.write(f"{record}\n")
        self.stream.flush()
        os.fsync(self.stream.fileno())

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def cut(self, keep: int) -> None:
        """Keep only the first ``keep`` records, durably."""
        if not self.out.is_local:
            for name in reversed(self.names()[keep:]):  # last first: no gap if cut short
                self.out.remove(name)
            return
        path = self.out.path(PROGRESS_NAME)
        with open(path, "rb") as stream:
            kept = b"".join(stream.readline() for _ in range(keep))
        with open(path, "r+b") as stream:
            stream.truncate(len(kept))
            stream.flush()
            os.fsync(stream.fileno())

    def remove(self) -> None:
        """Remove the whole log."""
        for name in self.names():
            self.out.remove(name, missing_ok=not self.out.is_local)
