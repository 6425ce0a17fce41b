"""An append-only log of text records in a directory, each record durable once appended.

A location gives its own kind (:meth:`~.location.Location.record_log`). Local, it is one file
(``PROGRESS_NAME``) of lines, each fsynced before :meth:`RecordLog.append` returns, so that after
a crash the file holds a prefix of whole lines (a torn last line at worst). An object store
cannot append, so there each record is its own object, ``.imgshard-progress-{n:06d}.json``,
uploaded whole; the first gap in the numbers ends the log.
"""

from __future__ import annotations

import abc
import os
from typing import TYPE_CHECKING, TextIO

from ..errors import ShardError
from ..layout import PROGRESS_NAME, remote_progress_name

if TYPE_CHECKING:
    from .location import Location


class LogError(ShardError):
    """The log's file is not a regular file (a link, a FIFO, a device or a folder)."""


class RecordLog(abc.ABC):
    """The resume log of a build in ``out``: records appended in order, read back as lines."""

    def __init__(self, out: "Location") -> None:
        self.out = out

    @abc.abstractmethod
    def names(self) -> list[str]:
        """The names of the files that hold the log, the first record's first."""

    @abc.abstractmethod
    def read(self) -> list[str]:
        """The records, in order (none when there is no log; bytes that are not UTF-8 are
        replaced, which makes the record unreadable rather than the log).

        Raises:
            LogError: the local log is not a regular file.
        """

    @abc.abstractmethod
    def open(self, *, append: bool) -> None:
        """Start writing: after the records there are (``append``), else into a new, empty log."""

    def append(self, record: str) -> None:
        """Add one record (a line without its newline), durably."""
        self._store(f"{record}\n")

    @abc.abstractmethod
    def _store(self, line: str) -> None:
        """Write one line durably after the others."""

    def close(self) -> None:
        """Stop writing."""

    @abc.abstractmethod
    def cut(self, keep: int) -> None:
        """Keep only the first ``keep`` records, durably."""

    def remove(self) -> None:
        """Remove the whole log."""
        for name in self.names():
            self.out.remove(name, missing_ok=True)


class FileRecordLog(RecordLog):
    """One local file of lines, appended to and fsynced line by line."""

    stream: TextIO | None = None

    def names(self) -> list[str]:
        return [PROGRESS_NAME]

    def read(self) -> list[str]:
        try:
            with self.out.open_listed(PROGRESS_NAME) as stream:
                data = stream.read()
        except FileNotFoundError:
            return []
        except ShardError:
            raise LogError(f"{PROGRESS_NAME} is not a regular file") from None
        return data.decode("utf-8", "replace").split("\n")

    def open(self, *, append: bool) -> None:
        self.stream = open(self.out.path(PROGRESS_NAME), "a" if append else "w", encoding="utf-8")

    def _store(self, line: str) -> None:
        self.stream.write(line)
        self.stream.flush()
        os.fsync(self.stream.fileno())

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def remove(self) -> None:
        self.out.remove(PROGRESS_NAME)

    def cut(self, keep: int) -> None:
        path = self.out.path(PROGRESS_NAME)
        with open(path, "rb") as stream:
            kept = b"".join(stream.readline() for _ in range(keep))
        with open(path, "r+b") as stream:
            stream.truncate(len(kept))
            stream.flush()
            os.fsync(stream.fileno())


class ObjectRecordLog(RecordLog):
    """One object per record, numbered from 0, each uploaded whole (an object store cannot
    append); the first missing number ends the log."""

    records = 0

    def names(self) -> list[str]:
        names = set(self.out.listdir())
        found = []
        while remote_progress_name(len(found)) in names:
            found.append(remote_progress_name(len(found)))
        return found

    def read(self) -> list[str]:
        return [self.out.read_bytes(name).decode("utf-8", "replace") for name in self.names()]

    def open(self, *, append: bool) -> None:
        self.records = len(self.names()) if append else 0

    def _store(self, line: str) -> None:
        self.out.write_bytes(remote_progress_name(self.records), line.encode())
        self.records += 1

    def cut(self, keep: int) -> None:
        for name in reversed(self.names()[keep:]):  # last first: no gap if cut short
            self.out.remove(name)
