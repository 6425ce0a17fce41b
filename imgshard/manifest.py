"""``manifest.json``: what a shard directory holds, written last so that its presence means done.

The manifest is the only index of a shard directory. Readers, ``inspect`` and ``verify`` trust
nothing else, so it is written atomically (temporary name, then rename) with sorted keys, and it
is read back with a format check that fails loudly rather than guessing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from .errors import ImgshardError, MissingShardError, ShardError
from .layout import FORMAT, FORMAT_VERSION, MANIFEST_NAME, SAMPLES_COLUMNS, SAMPLES_NAME
from .manifest_check import FieldError, check_manifest, show
from .resources import available_memory
from .storage import Location
from .storage.files import open_regular

#: The largest ``manifest.json`` read (1 GiB): a build of ten million files with every one
#: skipped writes about a tenth of that; a larger file is refused before it is read whole.
MAX_MANIFEST_BYTES = 1 << 30
#: How much of a manifest is read at a time.
READ_CHUNK_BYTES = 1 << 20
#: The longest row of ``samples.csv`` read (1 MiB, in characters): a row names one source file
#: (at most 4 KiB on Linux) and four short values.
MAX_SAMPLES_ROW_BYTES = 1 << 20
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,18}")


class ManifestError(ImgshardError):
    """A manifest is missing, malformed, or of a format this version cannot read."""


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its images file, its labels file (None without labels) and their checksums."""

    images: str
    num_samples: int
    sha256: str
    labels: str | None = None
    labels_sha256: str | None = None


@dataclass(frozen=True)
class SplitInfo:
    """One split (``train``, ``val``, ``test``): its shards in reading order."""

    num_samples: int
    class_counts: dict[str, int] | None
    shards: list[ShardInfo]


@dataclass(frozen=True)
class Skip:
    """An input file that is not in any shard, and why (paths are relative to the source)."""

    path: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of a shard directory (see the README for every key)."""

    imgshard_version: str
    created: str
    source: str
    image_shape: tuple[int, int, int]
    dtype: str
    class_names: list[str] | None
    config: dict[str, Any]
    splits: dict[str, SplitInfo]
    skipped: list[Skip] = field(default_factory=list)
    samples: str = SAMPLES_NAME
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    @property
    def shard_samples(self) -> int:
        """The samples the shards of every split hold: the rows ``samples.csv`` should have
        (a split's own ``num_samples`` may disagree; ``verify`` reports that)."""
        return sum(shard.num_samples for split in self.splits.values() for shard in split.shards)

    def to_json(self) -> dict[str, Any]:
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "imgshard_version": self.imgshard_version,
            "created": self.created,
            "source": self.source,
            "image_shape": list(self.image_shape),
            "dtype": self.dtype,
            "class_names": self.class_names,
            "config": self.config,
            "splits": {name: _split_to_json(split) for name, split in self.splits.items()},
            "skipped": [asdict(skip) for skip in self.skipped],
            "samples": self.samples,
        }
        document.update(self.extra)
        return document

    @classmethod
    def from_json(cls, document: Any) -> "Manifest":
        """Parse a manifest document; raise :class:`ManifestError` naming the first bad field.

        Every field is checked for type and range before anything uses it (see
        :mod:`imgshard.manifest_check`): a manifest may have been edited or written by anyone.
        """
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ManifestError("not an imgshard manifest (its 'format' is not 'imgshard')")
        version = document.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise ManifestError(
                f"manifest format_version {version!r} is not supported by this imgshard "
                f"(it reads version {FORMAT_VERSION}); upgrade imgshard or rebuild the shards"
            )
        try:
            fields = check_manifest(document)
        except FieldError as error:
            raise ManifestError(str(error)) from None
        known = set(cls.__dataclass_fields__) | {"format", "format_version"}
        return cls(
            imgshard_version=fields["imgshard_version"],
            created=fields["created"],
            source=fields["source"],
            image_shape=tuple(fields["image_shape"]),  # type: ignore[arg-type]
            dtype=fields["dtype"],
            class_names=fields["class_names"],
            config=fields["config"],
            splits={name: _split_from_json(split) for name, split in fields["splits"].items()},
            skipped=[Skip(s["path"], s["reason"]) for s in fields["skipped"]],
            samples=fields["samples"],
            extra={k: v for k, v in document.items() if k not in known},
        )


def _split_to_json(split: SplitInfo) -> dict[str, Any]:
    return {
        "num_samples": split.num_samples,
        "class_counts": split.class_counts,
        "shards": [
            {k: v for k, v in asdict(shard).items() if v is not None} for shard in split.shards
        ],
    }


def _split_from_json(document: dict[str, Any]) -> SplitInfo:
    """A split whose fields :func:`~imgshard.manifest_check.check_manifest` has checked."""
    shards = [
        ShardInfo(images=s["images"], num_samples=s["num_samples"], sha256=s["sha256"],
                  labels=s.get("labels"), labels_sha256=s.get("labels_sha256"))
        for s in document["shards"]
    ]
    return SplitInfo(num_samples=document["num_samples"],
                     class_counts=document["class_counts"], shards=shards)


def write_manifest(directory: str | os.PathLike[str] | Location, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically; call it only once every shard is in place."""
    text = json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n"
    _location(directory).write_bytes(MANIFEST_NAME, text.encode("utf-8"))


def read_manifest(directory: str | os.PathLike[str] | Location) -> Manifest:
    """Load and check ``manifest.json``; every failure is a one-line :class:`ManifestError`.

    At most :data:`MAX_MANIFEST_BYTES` are read, and a local manifest must be a regular file
    (not a link, FIFO or device: see :func:`~imgshard.formats.npy.open_regular`).
    """
    location = _location(directory)
    if location.is_local and not os.path.isdir(location.url):
        raise ManifestError(f"{location} is not a directory")
    if not location.is_local and not location.exists():
        raise ManifestError(f"{location} does not exist (check the bucket and prefix)")
    path = location.display(MANIFEST_NAME)
    try:
        text = read_at_most(location, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise ManifestError(
            f"{path} is missing: not a shard directory, or its build did not finish "
            "(run `imgshard build ... --resume` to complete it)"
        ) from None
    except ShardError as error:  # a link, FIFO, device or directory
        detail = str(error).removeprefix(f"{location.path(MANIFEST_NAME)}: ")
        raise ManifestError(f"{path} is {detail}" if detail.startswith(("not ", "a "))
                            else f"cannot read {path}: {detail}") from None
    except OSError as error:
        raise ManifestError(f"cannot read {path}: {error.strerror}") from None
    if text is None:
        raise ManifestError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes, more than "
                            "imgshard reads as a manifest")
    needed, available = parse_memory(text), available_memory()
    if available is not None and needed > available:
        raise ManifestError(f"{path} would take about {needed / 1e9:,.1f} GB of memory to parse, "
                            f"more than the {available / 1e9:,.1f} GB this machine has available")
    try:
        document = parse_json(text)
    except RecursionError:
        raise ManifestError(f"{path} is nested too deeply to read") from None
    except ValueError as error:
        raise ManifestError(f"{path} is not valid JSON: {_json_problem(error)}") from None
    try:
        return Manifest.from_json(document)
    except ManifestError as error:
        raise ManifestError(f"{path}: {error}") from None


def parse_json(text: bytes) -> Any:
    """JSON as the standard defines it: ``NaN``/``Infinity`` and numbers too large for a float
    (``1e999``, which Python would read as infinity) are refused with ValueError, and so is an
    object giving one key twice (Python keeps the last value, other readers the first)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                      object_pairs_hook=_unique_keys)


def parse_memory(text: bytes) -> int:
    """An upper bound of the memory :func:`parse_json` takes for ``text``, counted in C.

    Python makes one object per JSON value, and the dearest per byte are containers: ``[],``
    costs 22 times its bytes and ``{"a":{}},`` 30 (measured), where a real manifest, mostly
    skip records, costs 5. So each container is counted at 128 bytes, each other value (after a
    ``,`` or ``:``) at 80 (a one-character non-ASCII string takes 76), and the text twice (its
    strings, and the text itself).
    """
    containers = text.count(b"[") + text.count(b"{")
    values = text.count(b",") + text.count(b":")
    return 128 * containers + 80 * values + 2 * len(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the key {show(twice)} is given twice")
    return document


def _refuse_constant(token: str) -> None:
    raise ValueError(f"{token} is not a JSON number")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"{token[:20]} is not a finite number")
    return value


def _json_problem(error: ValueError) -> str:
    """One line about a JSON error; Python's own words for an over-long integer are two."""
    if "integer string conversion" in str(error):
        return f"a number of more than {sys.get_int_max_str_digits()} digits"
    return " ".join(str(error).split())


def read_at_most(location: Location, name: str, limit: int) -> bytes | None:
    """The bytes of ``name``, or None when it holds more than ``limit``.

    A local file's size is looked at first, and any file is read a chunk at a time: a single
    ``read(limit + 1)`` allocates the whole limit (1 GiB) up front, even for a small file.
    """
    with open_listed(location, name) as stream:
        if location.is_local and os.fstat(stream.fileno()).st_size > limit:
            return None
        chunks, size = [], 0
        while size <= limit:
            chunk = stream.read(min(READ_CHUNK_BYTES, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return None if size > limit else b"".join(chunks)


def open_listed(location: Location, name: str) -> BinaryIO:
    """Open a file of the shard directory for reading; a local one only if it is a regular file
    (no link, FIFO or device: see :func:`~imgshard.formats.npy.open_regular`).

    Raises:
        FileNotFoundError: it is not there.
        ShardError: a local link or special file.
    """
    if not location.is_local:
        return location.open_read(name)
    try:
        return os.fdopen(open_regular(location.path(name)), "rb")
    except MissingShardError:
        raise FileNotFoundError(location.path(name)) from None


@dataclass(frozen=True)
class SampleRow:
    """One row of ``samples.csv``: where the sample of source file ``path`` is stored."""

    line: int
    path: str
    split: str
    shard: str
    index: int
    label: int | None


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
                            _whole_number(label, "label", reader.line_num) if label else None)
    except csv.Error as error:
        raise ManifestError(f"line {reader.line_num}: not CSV: {error}") from None
    except RowTooLong:
        raise ManifestError(f"line {lines.row_start}: a row of more than "
                            f"{MAX_SAMPLES_ROW_BYTES} bytes") from None


class RowTooLong(Exception):
    """A row of ``samples.csv`` is longer than :data:`MAX_SAMPLES_ROW_BYTES`."""


class _BoundedLines:
    """The lines of a text stream for :mod:`csv`, raising :class:`RowTooLong` as soon as the
    row being read (its lines since :meth:`row_done`) exceeds the limit: no line, however long,
    is read whole."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._text, self._row = text, 0
        self.lines, self.row_start = 0, 1  # lines read; the line the current row starts on

    def __iter__(self) -> "_BoundedLines":
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


def _location(directory: str | os.PathLike[str] | Location) -> Location:
    return directory if isinstance(directory, Location) else Location.of(directory)
