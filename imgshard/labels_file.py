"""The labels file of ``--labels``: ``path,label`` rows, read once and checked row by row.

A file may carry several labels (a multi-label dataset): a cell ``cat|dog``, or the same path on
several rows, each adding its labels. A path's labels are the set of the labels named for it,
so repeating a row changes nothing.

Its bytes are read whole (the scan also records their sha256, so that ``--resume`` can refuse a
labels file whose content changed). A path names a file of SRC exactly as the walk does; one
that would name a file outside SRC is refused, never mapped onto another file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

from .errors import ImgshardError
from .storage.files import read_regular_file


class LabelsFileError(ImgshardError):
    """The labels file cannot be read or has a row a build cannot use (one line, naming it)."""


#: What separates several labels in one cell.
LABEL_SEPARATOR = "|"


def read_labels_csv(path: str) -> dict[str, tuple[str, ...]]:
    """Read ``path,label`` rows (a header row ``path,label`` is optional) into
    {path: its labels, sorted}."""
    return parse_labels_csv(read_labels_bytes(path), path)


def read_labels_bytes(path: str) -> bytes:
    """The labels file's bytes, read once: they are parsed and hashed (for ``--resume``)."""
    try:
        return read_regular_file(path)
    except OSError as error:
        raise LabelsFileError(f"cannot read labels file {path}: {error.strerror}") from None


def parse_labels_csv(data: bytes, path: str) -> dict[str, tuple[str, ...]]:
    """{path: its labels, sorted} from a labels file's bytes (UTF-8, with or without the
    byte-order mark Excel writes); rows are numbered as the file's lines, the header being row 1.

    Raises:
        LabelsFileError: a row is not ``path,label`` (or names an empty label between ``|``),
            names a path outside SRC, or a label that is not printable text.
    """
    labels: dict[str, set[str]] = {}
    first = True
    for number, row in csv_rows(data, path, "labels", LabelsFileError):
        is_header = first and [c.strip().lower() for c in row] == ["path", "label"]
        first = False
        if is_header:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise LabelsFileError(f"labels file {path}, row {number}: expected 'path,label', "
                                  f"got {row!r}")
        rel = relative_label_path(row[0].strip(), path, number)
        labels.setdefault(rel, set()).update(_cell_labels(row[1], path, number))
    if not labels:
        raise LabelsFileError(f"labels file {path} has no rows")
    return {rel: tuple(sorted(names)) for rel, names in labels.items()}


def csv_rows(data: bytes, path: str, kind: str, error: type[ImgshardError]
             ) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of each row of a labels (or ``kind``) file's bytes that is not blank
    (UTF-8, with or without the byte-order mark Excel writes); a row the csv module cannot read
    (a cell over its limit of 131,072 characters, a quote left open) is ``error``, naming it."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig", "surrogateescape"), newline=""))
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield reader.line_num, row
    except csv.Error as problem:
        raise error(f"{kind} file {path}, row {reader.line_num}: not CSV: {problem}") from None


def _cell_labels(cell: str, path: str, number: int) -> list[str]:
    names = [name.strip() for name in cell.split(LABEL_SEPARATOR)]
    for label in names:
        if not label:
            raise LabelsFileError(f"labels file {path}, row {number}: an empty label in "
                                  f"{cell.strip()!r}")
        if not label.isprintable():  # undecodable bytes (kept for paths) or control characters
            raise LabelsFileError(f"labels file {path}, row {number}: the label {label!r} is "
                                  "not printable UTF-8 text")
    return names


_DRIVE = re.compile(r"^[A-Za-z]:")


def relative_label_path(cell: str, path: str, number: int, kind: str = "labels") -> str:
    """A labels (or ``kind``) file's path as the walk names it: '/'-separated, a leading
    ``./`` dropped.

    A path that is absolute, starts with a drive letter or has a ``..`` component would name a
    file outside SRC (or silently another one inside it): it is refused, naming the row.
    """
    rel = cell.replace("\\", "/")
    if rel.startswith("/") or _DRIVE.match(rel) or ".." in rel.split("/"):
        raise LabelsFileError(f"{kind} file {path}, row {number}: {cell!r} is not a path inside "
                              "the source (absolute, a drive letter or '..')")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel
