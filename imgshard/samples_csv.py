"""``samples.csv``: where each source file's sample is stored, one row a sample.

Written row by row while a build runs (:func:`open_samples_csv`, non-UTF-8 names kept byte for
byte) and read back by ``verify`` and ``preview`` (:func:`read_samples`) with time and memory
bounded per row, whatever the file holds: it may have been edited by anyone.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .layout import HASH_COLUMNS, SAMPLES_COLUMNS, SOURCE_COLUMN
from .manifest import ManifestError

#: The longest row of ``samples.csv`` read (1 MiB, in characters): a row names one source file
#: (at most 4 KiB on Linux) and four short values.
MAX_SAMPLES_ROW_BYTES = 1 << 20
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,18}")


def open_samples_csv(path: str, keep_bytes: int = 0, *, source_column: bool = False,
                     hash_columns: bool = False, header: bool = True):
    """Open ``samples.csv`` for writing (non-UTF-8 names kept byte for byte).

    ``keep_bytes`` > 0 continues a file an interrupted build wrote, cut after its last
    checkpoint; otherwise the file starts anew with its header: with ``hash_columns`` a
    build's (the :data:`HASH_COLUMNS` after the first five), with ``source_column`` a merge's
    (the column :data:`SOURCE_COLUMN` after them); without ``header``, none: the caller copies
    an earlier file's rows, header included.
    """
    if keep_bytes:
        with open(path, "r+b") as partial:
            partial.truncate(keep_bytes)
        stream = open(path, "a", newline="", encoding="utf-8", errors="surrogateescape")
        return stream, csv.writer(stream)
    stream = open(path, "w", newline="", encoding="utf-8", errors="surrogateescape")
    writer = csv.writer(stream)
    if header:
        writer.writerow((*SAMPLES_COLUMNS, *(HASH_COLUMNS if hash_columns else ()),
                         *((SOURCE_COLUMN,) if source_column else ())))
    return stream, writer


def has_hash_columns(header_line: str) -> bool:
    """Whether a ``samples.csv`` header line names the :data:`HASH_COLUMNS`."""
    names = next(csv.reader([header_line]), [])
    return all(column in names for column in HASH_COLUMNS)


@dataclass(frozen=True)
class SampleRow:
    """One row of ``samples.csv``: where the sample of source file ``path`` is stored."""

    line: int
    path: str
    split: str
    shard: str
    index: int
    label: int | tuple[int, ...] | None  # a multi-label dataset's: its class indices
    source: str | None = None  # the dataset a merged sample came from (None: not merged)
    hashes: tuple[str, str] | None = None  # the HASH_COLUMNS' cells, as written (None: no such)


def read_samples(stream: BinaryIO, max_rows: int) -> Iterator[SampleRow]:
    """The rows of a ``samples.csv`` open as ``stream``, each with whole-number index and label.

    The values are only parsed here; whether a shard, index or label exists is for the caller
    to check against the manifest. Time and memory per row are bounded whatever the file holds:
    a row (which may span lines inside quotes) of more than :data:`MAX_SAMPLES_ROW_BYTES` is
    refused, and only the named columns are looked up, however many the header names. A file
    of more than ``max_rows`` rows (the manifest's sample count) is refused at the row after.

    Raises:
        ManifestError: a missing column, a row that is not CSV or too long, a value that is
            not a whole number, or more than ``max_rows`` rows, naming the line.
    """
    lines = _BoundedLines(io.TextIOWrapper(stream, newline="", encoding="utf-8",
                                           errors="surrogateescape"))
    reader = csv.reader(lines)
    try:
        header = next(reader, [])
        lines.row_done()
        missing = [c for c in SAMPLES_COLUMNS if c not in header]
        if missing:
            raise ManifestError(f"lacks the columns {', '.join(missing)}")
        columns = [header.index(c) for c in SAMPLES_COLUMNS]
        source = header.index(SOURCE_COLUMN) if SOURCE_COLUMN in header else None
        hashes = ([header.index(c) for c in HASH_COLUMNS]
                  if all(c in header for c in HASH_COLUMNS) else None)
        rows = 0
        for values in reader:
            lines.row_done()
            if not values:  # a blank line, as csv.DictReader skips it
                continue
            rows += 1
            if rows > max_rows:
                raise ManifestError(f"line {reader.line_num}: more rows than the {max_rows} "
                                    "samples the manifest lists")
            path, split, shard, index, label = (
                values[i] if i < len(values) else "" for i in columns)
            yield SampleRow(reader.line_num, path, split, shard,
                            _whole_number(index, "index", reader.line_num),
                            _label(label, reader.line_num),
                            None if source is None else _cell(values, source),
                            None if hashes is None else (_cell(values, hashes[0]),
                                                         _cell(values, hashes[1])))
    except csv.Error as error:
        raise ManifestError(f"line {reader.line_num}: not CSV: {error}") from None
    except RowTooLong:
        raise ManifestError(f"line {lines.row_start}: a row of more than "
                            f"{MAX_SAMPLES_ROW_BYTES} bytes") from None


def _label(cell: str, line: int) -> int | tuple[int, ...] | None:
    """A label cell: empty, an index, or a multi-label dataset's indices joined by ``|``."""
    if not cell:
        return None
    if "|" not in cell:
        return _whole_number(cell, "label", line)
    return tuple(_whole_number(part, "label", line) for part in cell.split("|"))


def _cell(values: list[str], column: int) -> str:
    return values[column] if column < len(values) else ""


class RowTooLong(Exception):
    """A row of ``samples.csv`` is longer than :data:`MAX_SAMPLES_ROW_BYTES`."""


class _BoundedLines:
    """The lines of a text stream for :mod:`csv`, raising :class:`RowTooLong` as soon as the
    row being read (its lines since :meth:`row_done`) exceeds the limit: no line, however long,
    is read whole."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._text, self._row = text, 0
        self.lines, self.row_start = 0, 1  # lines read; the line the current row starts on

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self._text.readline(MAX_SAMPLES_ROW_BYTES + 1 - self._row)
        if not line:
            raise StopIteration
        self._row += len(line)
        self.lines += 1
        if self._row > MAX_SAMPLES_ROW_BYTES:
            raise RowTooLong
        return line

    def row_done(self) -> None:
        self._row, self.row_start = 0, self.lines + 1


def _whole_number(value: str, column: str, line: int) -> int:
    if not _WHOLE_NUMBER.fullmatch(value):
        raise ManifestError(f"line {line}: {column} {value[:40]!r} is not a whole number")
    return int(value)
