"""``manifest.json``: what a shard directory holds, written last so that its presence means done.

The manifest is the only index of a shard directory. Readers, ``inspect`` and ``verify`` trust
nothing else, so it is written atomically (temporary name, then rename) with sorted keys, and it
is read back with a format check that fails loudly rather than guessing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ImgshardError, ShardError
from .layout import FORMAT, FORMAT_VERSION, MANIFEST_NAME, SAMPLES_NAME
from .manifest_check import FieldError, check_manifest, show
from .resources import available_memory
from .storage import Location, MissingDirectory

#: The largest ``manifest.json`` read (1 GiB): a build of ten million files with every one
#: skipped writes about a tenth of that; a larger file is refused before it is read whole.
MAX_MANIFEST_BYTES = 1 << 30


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
    targets: str | None = None
    targets_sha256: str | None = None


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
    """The parsed ``manifest.json`` of a shard directory (every key is in the docstring of
    :mod:`imgshard.layout`)."""

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
    parent_id: str | None = None  # the dataset_id of the dataset this one grew from
    recorded_id: str | None = None  # the dataset_id the file says (None: written before ids)
    label_kind: str = "single"  # "multi": several labels a sample, multi-hot label rows
    target_names: list[str] | None = None  # the columns of the targets files (--targets)

    @property
    def dataset_id(self) -> str:
        """What the data is, as a sha256: of the class names, the build config and every
        split's shard checksums in order (not of when or where it was built), so that two
        directories with this id serve the same samples in the same places."""
        return dataset_id_of(self.class_names, self.config, self.splits,
                             label_kind=self.label_kind, target_names=self.target_names)

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def labels_layout(self, rows: int) -> tuple[tuple[int, ...], str]:
        """The shape and dtype of a labels file of ``rows`` samples: int32 indices, or a
        multi-label dataset's uint8 multi-hot rows."""
        if self.label_kind == "multi":
            return (rows, self.num_classes or 0), "uint8"
        return (rows,), "int32"

    def targets_layout(self, rows: int) -> tuple[tuple[int, ...], str]:
        """The shape and dtype of a targets file of ``rows`` samples."""
        return (rows, len(self.target_names or ())), "float32"

    @property
    def richer_labels(self) -> str | None:
        """What the dataset holds beyond one class per image, in words ("a multi-label
        dataset", "a dataset with targets"); None when nothing: merge, reshard and append only
        copy one class per image so far."""
        if self.label_kind != "single":
            return "a multi-label dataset"
        return None if self.target_names is None else "a dataset with targets"

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
            "dataset_id": self.dataset_id,
            "parent_id": self.parent_id,
            "label_kind": self.label_kind,
        }
        if self.target_names is not None:
            document["target_names"] = self.target_names
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
        known = set(cls.__dataclass_fields__) | {"format", "format_version", "dataset_id"}
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
            parent_id=fields["parent_id"],
            recorded_id=fields["dataset_id"],
            label_kind=fields["label_kind"],
            target_names=fields["target_names"],
        )


def dataset_id_of(class_names: list[str] | None, config: dict[str, Any],
                  splits: dict[str, SplitInfo], *, label_kind: str = "single",
                  target_names: list[str] | None = None) -> str:
    """The sha256 of ``class_names``, ``config`` and each split's shard checksums, in order,
    as canonical JSON (sorted keys, no spaces); a multi-label dataset's and one with targets
    also hold those (a single-label dataset's id is what it was before they existed)."""
    content: dict[str, Any] = {
        "class_names": class_names, "config": config,
        "splits": {name: [[s.sha256, s.labels_sha256] + ([s.targets_sha256] if s.targets
                                                            else []) for s in split.shards]
                   for name, split in splits.items()}}
    if label_kind != "single":
        content["label_kind"] = label_kind
    if target_names is not None:
        content["target_names"] = target_names
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


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
                  labels=s.get("labels"), labels_sha256=s.get("labels_sha256"),
                  targets=s.get("targets"), targets_sha256=s.get("targets_sha256"))
        for s in document["shards"]
    ]
    return SplitInfo(num_samples=document["num_samples"],
                     class_counts=document["class_counts"], shards=shards)


def write_manifest(directory: str | os.PathLike[str] | Location, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically; call it only once every shard is in place."""
    text = json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n"
    _location(directory).write_bytes(MANIFEST_NAME, text.encode("utf-8"))


def _missing_manifest(location: Location, path: str) -> str:
    """Why ``location`` has no manifest: an interrupted build (its resume log is there), merge
    or reshard (its log's plan says ``merge``: no ``--resume``, only ``--overwrite``), or it is
    not a shard directory at all (an image folder given as one)."""
    try:
        logs = location.record_log_files()
    except OSError:
        logs = []
    missing = f"{path} is missing:"
    if not logs:
        return f"{missing} {location} is not a shard directory (`imgshard build` makes one)"
    if _plan_merges(location, logs[0]):
        return f"{missing} its merge or reshard did not finish (run it again with --overwrite)"
    return f"{missing} its build did not finish (run `imgshard build ... --resume` to complete it)"


def _plan_merges(location: Location, first_log: str) -> bool:
    """Whether the plan (the first record, read alone: the log may be long; a plan is a few
    KB, so a first line past 1 MiB is no merge's) is a merge's."""
    try:
        with location.open_listed(first_log) as stream:
            plan = json.loads(stream.readline(1 << 20))
    except (OSError, ImgshardError, ValueError, RecursionError):
        return False  # unreadable: a build's, as most logs are
    return isinstance(plan, dict) and "merge" in plan


def read_manifest(directory: str | os.PathLike[str] | Location) -> Manifest:
    """Load and check ``manifest.json``; every failure is a one-line :class:`ManifestError`.

    At most :data:`MAX_MANIFEST_BYTES` are read, and a local manifest must be a regular file
    (not a link, FIFO or device: see :meth:`~imgshard.storage.Location.open_listed`).
    """
    location = _location(directory)
    try:
        location.check_directory()
    except MissingDirectory as error:
        raise ManifestError(f"{location} {error}") from None
    path = location.display(MANIFEST_NAME)
    try:
        text = location.read_at_most(MANIFEST_NAME, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise ManifestError(_missing_manifest(location, path)) from None
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


def _location(directory: str | os.PathLike[str] | Location) -> Location:
    return directory if isinstance(directory, Location) else Location.of(directory)
