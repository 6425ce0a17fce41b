"""``manifest.json``: what a shard directory holds, written last so that its presence means done.

The manifest is the only index of a shard directory. Readers, ``inspect`` and ``verify`` trust
nothing else, so it is written atomically (temporary name, then rename) with sorted keys, and it
is read back with a format check that fails loudly rather than guessing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ImgshardError
from .storage import Location

MANIFEST_NAME = "manifest.json"
SAMPLES_NAME = "samples.csv"
FORMAT = "imgshard"
FORMAT_VERSION = 1


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
        """Parse a manifest document; raise :class:`ManifestError` naming the first bad key."""
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ManifestError("not an imgshard manifest (its 'format' is not 'imgshard')")
        version = document.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"manifest format_version {version!r} is not supported by this imgshard "
                f"(it reads version {FORMAT_VERSION}); upgrade imgshard or rebuild the shards"
            )
        try:
            known = set(cls.__dataclass_fields__) | {"format", "format_version"}
            return cls(
                imgshard_version=str(document["imgshard_version"]),
                created=str(document["created"]),
                source=str(document["source"]),
                image_shape=tuple(int(n) for n in document["image_shape"]),  # type: ignore[arg-type]
                dtype=str(document["dtype"]),
                class_names=document["class_names"],
                config=dict(document["config"]),
                splits={name: _split_from_json(s) for name, s in document["splits"].items()},
                skipped=[Skip(str(s["path"]), str(s["reason"])) for s in document["skipped"]],
                samples=str(document["samples"]),
                extra={k: v for k, v in document.items() if k not in known},
            )
        except KeyError as error:
            raise ManifestError(f"manifest lacks the key {error.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise ManifestError(f"manifest is malformed: {error}") from None


def _split_to_json(split: SplitInfo) -> dict[str, Any]:
    return {
        "num_samples": split.num_samples,
        "class_counts": split.class_counts,
        "shards": [
            {k: v for k, v in asdict(shard).items() if v is not None} for shard in split.shards
        ],
    }


def _split_from_json(document: dict[str, Any]) -> SplitInfo:
    shards = [
        ShardInfo(
            images=str(s["images"]),
            num_samples=int(s["num_samples"]),
            sha256=str(s["sha256"]),
            labels=s.get("labels"),
            labels_sha256=s.get("labels_sha256"),
        )
        for s in document["shards"]
    ]
    counts = document["class_counts"]
    return SplitInfo(
        num_samples=int(document["num_samples"]),
        class_counts=None if counts is None else {str(k): int(v) for k, v in counts.items()},
        shards=shards,
    )


def write_manifest(directory: str | os.PathLike[str] | Location, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically; call it only once every shard is in place."""
    text = json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n"
    _location(directory).write_bytes(MANIFEST_NAME, text.encode("utf-8"))


def read_manifest(directory: str | os.PathLike[str] | Location) -> Manifest:
    """Load and check ``manifest.json``; every failure is a one-line :class:`ManifestError`."""
    location = _location(directory)
    if location.is_local and not os.path.isdir(location.url):
        raise ManifestError(f"{location} is not a directory")
    if not location.is_local and not location.exists():
        raise ManifestError(f"{location} does not exist (check the bucket and prefix)")
    path = location.display(MANIFEST_NAME)
    try:
        document = json.loads(location.read_bytes(MANIFEST_NAME))
    except FileNotFoundError:
        raise ManifestError(
            f"{path} is missing: not a shard directory, or its build did not finish "
            "(run `imgshard build ... --resume` to complete it)"
        ) from None
    except OSError as error:
        raise ManifestError(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise ManifestError(f"{path} is not valid JSON: {error}") from None
    return Manifest.from_json(document)


def _location(directory: str | os.PathLike[str] | Location) -> Location:
    return directory if isinstance(directory, Location) else Location.of(directory)
