"""The record of a build's source files, so that a resume can name a file that changed.

``OUT/.imgshard-sources.jsonl.gz`` (:data:`~imgshard.layout.SOURCES_NAME`) holds every file the
scan saw, skipped ones too, as ``[path, size, stamp]`` lines in walk order (the stamp is the
modification time in nanoseconds, or a hash of an object's ETag or time). It is written before
any shard and removed when the build completes; a resume streams it against its own scan.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from collections.abc import Iterator
from typing import BinaryIO

from .errors import ShardError
from .layout import SOURCES_KEPT, SOURCES_NAME
from .scan import Sources
from .storage import Location

#: Lines of the sources record encoded at a time: bounded memory, few writes.
SOURCES_BATCH = 10_000
#: The longest line of a sources record read (characters): a path of 4 KiB, every byte of it
#: escaped, and two numbers. A longer one is damage (or a gzip bomb), never read whole.
MAX_RECORD_LINE = 1 << 16


class IrregularRecord(ShardError):
    """The sources record is not a regular file (a link, a FIFO, a device or a folder)."""


def write_sources(out: Location, sources: Sources, name: str = SOURCES_NAME) -> None:
    """Write the sources record into OUT, durably, before the first shard (or, as ``name``,
    the record a dataset keeps)."""
    with out.atomic_file(name) as stream:
        with gzip.GzipFile(filename="", fileobj=stream, mode="wb", compresslevel=1,
                           mtime=0) as packed:  # no name, no time: the same bytes every build
            for start in range(0, len(sources.paths), SOURCES_BATCH):
                end = start + SOURCES_BATCH
                lines = map(json.dumps, zip(sources.paths[start:end],
                                            sources.sizes[start:end].tolist(),
                                            sources.stamps[start:end].tolist()))
                packed.write(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))


def keep_sources(out: Location) -> None:
    """Copy the sources record to :data:`SOURCES_KEPT`, which outlives the build (before the
    manifest that lists it; the record itself stays until the build is complete, for a resume)."""
    with out.open_listed(SOURCES_NAME) as record, out.atomic_file(SOURCES_KEPT) as kept:
        shutil.copyfileobj(record, kept, 1 << 20)


def record_lines(stream: BinaryIO) -> Iterator[str]:
    """The lines of the gzip-packed record open as ``stream``, each read with bounded memory.

    Raises:
        ValueError: a line longer than :data:`MAX_RECORD_LINE`.
    """
    with io.TextIOWrapper(gzip.GzipFile(fileobj=stream), encoding="utf-8",
                          errors="surrogateescape") as text:
        for line in iter(lambda: text.readline(MAX_RECORD_LINE + 1), ""):
            if len(line) > MAX_RECORD_LINE:
                raise ValueError(f"a line of more than {MAX_RECORD_LINE} characters")
            yield line


def changed_source(out: Location, sources: Sources) -> str | None:
    """Why the source differs from the one the build in OUT started with (naming one file),
    or None when every file has its recorded size and stamp.

    The record is streamed against the scan, line by line: memory does not grow with it.

    Raises:
        IrregularRecord: a link, FIFO, device or folder stands in the record's place.
    """
    try:
        stream = out.open_listed(SOURCES_NAME)
    except FileNotFoundError:
        return ("the output has no record of its source files (an older imgshard started "
                "this build, or the record was removed)")
    except ShardError:
        raise IrregularRecord(f"{SOURCES_NAME} is not a regular file") from None
    records = 0
    with stream:
        try:
            for line in record_lines(stream):
                path, size, stamp = json.loads(line)
                if records == len(sources.paths):
                    return f"{path} was removed since the build started"
                if sources.paths[records] != path:
                    if path in set(sources.paths[records:]):
                        return f"{sources.paths[records]} was added since the build started"
                    return f"{path} was removed since the build started"
                if sources.sizes[records] != size or sources.stamps[records] != stamp:
                    return (f"{path} changed since the build started (size or modification "
                            "time)")
                records += 1
        except (OSError, EOFError, ValueError, TypeError, RecursionError):
            return "the output's record of its source files is damaged"
    if records < len(sources.paths):
        return f"{sources.paths[records]} was added since the build started"
    return None
