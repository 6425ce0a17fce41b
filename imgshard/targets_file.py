"""The targets file of ``--targets``: a header ``path,<name>,<name>...`` and one row of numbers
per file, read once and checked cell by cell.

Paths are named as in a labels file (:func:`imgshard.labels_file.relative_label_path`: never
outside SRC). Every cell must be a finite number: a regression target that is NaN, infinite,
text or missing would train a model on garbage without a word, so it stops the build in one
line naming the row. Each file's targets are stored as float32 rows beside its shard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ImgshardError
from .labels_file import csv_rows, relative_label_path
from .storage.files import read_regular_file

#: The most targets a file may carry (a row of more is a table, not a target).
MAX_TARGETS = 1024
#: The least magnitude that float32 rounds to infinity: its largest value (2**128 - 2**104)
#: and half a step more; anything below is stored as a finite float32.
FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


class TargetsFileError(ImgshardError):
    """The targets file cannot be read or has a cell a build cannot use (one line, naming it)."""


@dataclass(frozen=True)
class Targets:
    """A targets file: the name of each column and each file's values, in column order."""

    names: list[str]
    rows: dict[str, tuple[float, ...]]


def read_targets_bytes(path: str) -> bytes:
    """The targets file's bytes, read once: they are parsed and hashed (for ``--resume``)."""
    try:
        return read_regular_file(path)
    except OSError as error:
        raise TargetsFileError(f"cannot read targets file {path}: {error.strerror}") from None


def parse_targets_csv(data: bytes, path: str) -> Targets:
    """The targets of a targets file's bytes (UTF-8, with or without a byte-order mark); rows are
    numbered as the file's lines, the header being row 1.

    Raises:
        TargetsFileError: the header is not ``path,<name>...``, a row has another number of
            cells, a cell is not a finite number, or a path is outside SRC or given twice.
    """
    rows = csv_rows(data, path, "targets", TargetsFileError)
    names = _names(next(rows, (0, None))[1], path)
    targets: dict[str, tuple[float, ...]] = {}
    for number, row in rows:
        if len(row) != len(names) + 1 or not row[0].strip():
            raise TargetsFileError(f"targets file {path}, row {number}: expected a path and "
                                   f"{len(names)} numbers, got {row[:len(names) + 2]!r}")
        rel = relative_label_path(row[0].strip(), path, number, "targets")
        if rel in targets:
            raise TargetsFileError(f"targets file {path}, row {number}: {rel} is given twice")
        targets[rel] = tuple(_number(cell, name, path, number)
                             for cell, name in zip(row[1:], names))
    if not targets:
        raise TargetsFileError(f"targets file {path} has no rows")
    return Targets(names, targets)


def _names(header: list[str] | None, path: str) -> list[str]:
    if header is None or header[0].strip().lower() != "path":
        raise TargetsFileError(f"targets file {path}: the first row must be the header "
                               "'path,<name>,<name>...'")
    names = [cell.strip() for cell in header[1:]]
    if not names or len(names) > MAX_TARGETS:
        raise TargetsFileError(f"targets file {path}: the header must name at least one target "
                               f"(at most {MAX_TARGETS}) after 'path'")
    for name in names:
        if not name or not name.isprintable():
            raise TargetsFileError(f"targets file {path}: the target name {name!r} is empty or "
                                   "not printable text")
        if names.count(name) > 1:
            raise TargetsFileError(f"targets file {path}: the target {name!r} is named twice")
    return names


def _number(cell: str, name: str, path: str, number: int) -> float:
    text = cell.strip()
    where = f"targets file {path}, row {number}, {name}"
    if not text:
        raise TargetsFileError(f"{where}: the value is missing")
    try:
        value = float(text)
    except ValueError:
        raise TargetsFileError(f"{where}: {text[:40]!r} is not a number") from None
    if math.isnan(value):
        raise TargetsFileError(f"{where}: {text[:40]!r} is not a number (NaN)")
    if not math.isfinite(value) or abs(value) >= FLOAT32_OVERFLOW:
        raise TargetsFileError(f"{where}: {text[:40]!r} is not a finite float32 number")
    return value
