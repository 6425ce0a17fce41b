"""Check every field of a parsed ``manifest.json`` before anything uses it.

A manifest may have been edited, truncated or written by someone else, so nothing in it is
trusted: file names must be plain names of files directly in the shard directory (never a path
that could lead a read elsewhere), counts whole numbers in a sane range, the image shape small
enough that one image fits in memory, the dtype one imgshard writes, and the build config of the
types :class:`~imgshard.config.BuildConfig` declares and consistent with the shape and dtype.
Nothing is allocated from a value before it passed here. The first bad field is named in a
one-line :class:`~imgshard.manifest.ManifestError`; the checks mirror what ``build`` writes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from .config import COLOR_CHANNELS, DTYPES, OPTION_TYPES, BuildConfig, ConfigError
from .errors import ImgshardError
from .layout import is_plain_name
from .targets_file import MAX_TARGETS
from .values import is_whole_number

#: The most samples a split or shard may claim (about 10^12): far beyond any real dataset, small
#: enough that sample indices never overflow 64 bits.
MAX_COUNT = 1 << 40
#: The most bytes one image may take (2 GiB): a batch is allocated from this.
MAX_IMAGE_BYTES = 1 << 31
SHA256 = re.compile(r"[0-9a-f]{64}")
#: How a dataset labels a sample: one class, or several (multi-hot rows).
LABEL_KINDS = ("single", "multi")
#: The channel counts of the colour modes a build writes (what preview can draw).
CHANNELS = sorted(set(COLOR_CHANNELS.values()))


class FieldError(ImgshardError):
    """One field of a manifest is wrong (becomes a ManifestError naming the file)."""


def check_manifest(document: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields of ``document``, each checked; raise :class:`FieldError`."""
    fields = {key: _required(document, key, "") for key in (
        "imgshard_version", "created", "source", "image_shape", "dtype", "class_names",
        "config", "splits", "skipped", "samples")}
    for key in ("imgshard_version", "created", "source"):
        _expect(isinstance(fields[key], str), key, "a string", fields[key])
    shape, dtype = fields["image_shape"], fields["dtype"]
    _expect(isinstance(shape, list) and len(shape) == 3 and all(is_whole_number(n) and n >= 1
                                                                 for n in shape[:2])
            and shape[2] in CHANNELS and is_whole_number(shape[2]), "image_shape",
            "3 whole numbers >= 1 (height, width, channels 1, 3 or 4)", shape)
    _expect(dtype in DTYPES, "dtype", f"one of {', '.join(DTYPES)}", dtype)
    image_bytes = math.prod(shape) * np.dtype(dtype).itemsize
    if image_bytes > MAX_IMAGE_BYTES:
        raise FieldError(f"image_shape {show(shape)} makes images of {image_bytes} bytes, more "
                         f"than the {MAX_IMAGE_BYTES} imgshard reads")
    check_class_names(fields["class_names"])
    check_config(fields["config"], shape, dtype)
    check_labelled(fields["class_names"], fields["config"])
    check_name(fields["samples"], "samples")
    check_splits(fields["splits"], reserved={"manifest.json", fields["samples"]})
    fields["label_kind"], fields["target_names"] = check_label_kinds(document, fields)
    for key in ("dataset_id", "parent_id"):  # absent from manifests of earlier versions
        fields[key] = document.get(key)
        _expect(fields[key] is None or isinstance(fields[key], str)
                and SHA256.fullmatch(fields[key]) is not None, key, "64 hex digits or null",
                fields[key])
    decoder = document.get("decoder")  # absent from manifests of earlier versions
    _expect(decoder is None or isinstance(decoder, dict) and all(
        isinstance(value, str) or value is None for value in decoder.values()), "decoder",
        "an object of library name to version (text or null)", decoder)
    if "duplicates" in document:  # absent from manifests written before duplicates were found
        check_duplicates(document["duplicates"])
    skipped = fields["skipped"]
    _expect(isinstance(skipped, list), "skipped", "a list", skipped)
    for index, skip in enumerate(skipped):
        _expect(isinstance(skip, dict) and isinstance(skip.get("path"), str)
                and isinstance(skip.get("reason"), str), f"skipped[{index}]",
                "an object with a text path and reason", skip)
    return fields


def check_duplicates(groups: Any) -> None:
    """``duplicates``: groups of two or more distinct paths, of a known kind, in one or more
    distinct splits (``inspect`` counts leakage from these). Whether they are the samples'
    own groups is ``verify``'s to say: a report that went stale (a split edited away) must not
    stop a reader."""
    _expect(isinstance(groups, list), "duplicates", "a list of groups", groups)
    for index, group in enumerate(groups):
        field = f"duplicates[{index}]"
        _expect(isinstance(group, dict) and set(group) == {"kind", "paths", "splits"}, field,
                "an object of kind, paths and splits", group)
        _expect(group["kind"] in ("exact", "near"), f"{field}.kind", "'exact' or 'near'",
                group["kind"])
        paths, splits = group["paths"], group["splits"]
        _expect(isinstance(paths, list) and len(paths) >= 2
                and all(isinstance(p, str) for p in paths) and len(set(paths)) == len(paths),
                f"{field}.paths", "a list of two or more distinct paths", paths)
        _expect(isinstance(splits, list) and splits
                and all(isinstance(n, str) for n in splits) and len(set(splits)) == len(splits),
                f"{field}.splits", "a list of one or more distinct split names", splits)


def check_class_names(names: Any) -> None:
    _expect(names is None or isinstance(names, list) and all(isinstance(n, str) for n in names),
            "class_names", "null or a list of strings", names)
    seen: set[str] = set()
    for name in names or ():
        if name in seen:
            raise FieldError(f"class_names names {name!r} twice")
        seen.add(name)


def check_labelled(names: list[str] | None, config: dict[str, Any]) -> None:
    """A dataset has class names exactly when its config has labels: an append (or a reader)
    trusting one of the two would give labels to unlabelled samples, or none to labelled ones."""
    if "no_labels" in config and (config["no_labels"] is True) != (names is None):
        raise FieldError(f"class_names {'null' if names is None else 'a list'} disagrees with "
                         f"config (no_labels {json.dumps(config['no_labels'])})")


def check_label_kinds(document: dict[str, Any], fields: dict[str, Any]
                      ) -> tuple[str, list[str] | None]:
    """``label_kind`` (absent before it existed: single) and ``target_names`` (absent without
    targets), each consistent with the class names, the config and every shard's files."""
    kind = document.get("label_kind", "single")
    _expect(kind in LABEL_KINDS, "label_kind", f"one of {', '.join(LABEL_KINDS)}", kind)
    if kind == "multi" and fields["class_names"] is None:
        raise FieldError("label_kind 'multi' without class_names")
    names = document.get("target_names")
    _expect(names is None or isinstance(names, list) and 1 <= len(names) <= MAX_TARGETS
            and all(isinstance(n, str) and n and n.isprintable() for n in names),
            "target_names", f"absent or a list of 1 to {MAX_TARGETS} names", names)
    if names is not None and len(set(names)) != len(names):
        raise FieldError("target_names names a target twice")
    if (names is None) == isinstance(fields["config"].get("targets"), str):
        raise FieldError("target_names disagrees with config (targets)")
    labelled = fields["class_names"] is not None
    for split, info in fields["splits"].items():
        for index, shard in enumerate(info["shards"]):
            if (shard.get("targets") is None) != (names is None):
                raise FieldError(f"splits.{split}.shards[{index}].targets disagrees with "
                                 "target_names")
            if (shard.get("labels") is None) == labelled:  # a batch's labels would not align
                raise FieldError(f"splits.{split}.shards[{index}].labels disagrees with "
                                 "class_names (every shard of a labelled dataset has one)")
    return kind, names


def check_config(values: Any, shape: list[int], dtype: str) -> None:
    """The build config: known keys of the declared types, values a build accepts, and the
    image shape and dtype its keys imply equal to the manifest's."""
    _expect(isinstance(values, dict), "config", "an object", values)
    for key, value in values.items():
        if key not in OPTION_TYPES:
            raise FieldError(f"config: unknown option {key!r}")
        accepts, expected = OPTION_TYPES[key]  # the types BuildConfig takes, in JSON
        _expect(accepts(value), f"config.{key}", expected, value)
    try:
        config = BuildConfig.from_dict(values)
    except ConfigError as error:
        raise FieldError(f"config: {error}") from None
    implied = (*(config.size if "size" in values else shape[:2]),
               config.channels if "color" in values else shape[2])
    if tuple(shape) != implied:  # a key the config lacks implies nothing
        raise FieldError(f"image_shape {show(shape)} disagrees with config (size "
                         f"{show(list(config.size))}, color {config.color!r})")
    if "dtype" in values and dtype != config.dtype:
        raise FieldError(f"dtype {dtype!r} disagrees with config (dtype {config.dtype!r})")


def check_splits(splits: Any, reserved: set[Any]) -> None:
    """Every split and shard; no file may be listed twice (a repeated shard would serve its
    samples twice) or be the manifest or samples file."""
    _expect(isinstance(splits, dict), "splits", "an object of split name to split", splits)
    listed = set(reserved)
    for name, split in splits.items():
        if not is_plain_name(name):  # shard files are named after their split
            raise FieldError(f"splits: {show(name)} is not a plain split name")
        field = f"splits.{name}"
        _expect(isinstance(split, dict), field, "an object", split)
        check_count(_required(split, "num_samples", field), f"{field}.num_samples")
        counts = _required(split, "class_counts", field)
        _expect(counts is None or isinstance(counts, dict), f"{field}.class_counts",
                "null or an object of class name to count", counts)
        for class_name, count in (counts or {}).items():
            check_count(count, f"{field}.class_counts.{as_key(class_name)}")
        shards = _required(split, "shards", field)
        _expect(isinstance(shards, list), f"{field}.shards", "a list", shards)
        for index, shard in enumerate(shards):
            check_shard(shard, f"{field}.shards[{index}]", listed)
        total = sum(shard["num_samples"] for shard in shards)
        if total > MAX_COUNT:
            raise FieldError(f"{field}.shards hold {total} samples in all, more than {MAX_COUNT}")


def check_shard(shard: Any, field: str, listed: set[str]) -> None:
    _expect(isinstance(shard, dict), field, "an object", shard)
    files = [("images", "sha256")]
    if shard.get("labels") is not None:
        files.append(("labels", "labels_sha256"))
    if shard.get("targets") is not None:
        files.append(("targets", "targets_sha256"))
    for key, checksum_key in files:
        name = _required(shard, key, field)
        check_name(name, f"{field}.{key}")
        if name in listed:
            raise FieldError(f"{field}.{key} names {name}, already listed")
        listed.add(name)
        checksum = _required(shard, checksum_key, field)
        _expect(isinstance(checksum, str) and SHA256.fullmatch(checksum) is not None,
                f"{field}.{checksum_key}", "64 hexadecimal digits", checksum)
    check_count(_required(shard, "num_samples", field), f"{field}.num_samples")


def check_name(name: Any, field: str) -> None:
    """``name`` must name a file directly in the shard directory."""
    if not is_plain_name(name):
        raise FieldError(f"{field} is not a plain file name: {show(name)}")


def check_count(value: Any, field: str) -> None:
    _expect(is_whole_number(value) and 0 <= value <= MAX_COUNT, field,
            f"a whole number from 0 to {MAX_COUNT}", value)


def show(value: Any, limit: int = 80) -> str:
    """``value`` as a message shows it: text quoted as Python does, anything else as JSON."""
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def as_key(key: str) -> str:
    """A key of the manifest as a field name shows it: quoted when it holds a character that
    is not printable (a newline would split a one-line message) or is long."""
    return key if key.isprintable() and len(key) <= 80 else show(key)


def _required(document: dict[str, Any], key: str, field: str) -> Any:
    if key not in document:
        raise FieldError(f"{field} lacks the key {key!r}" if field else f"lacks the key {key!r}")
    return document[key]


def _expect(condition: bool, field: str, description: str, value: Any) -> None:
    if not condition:
        raise FieldError(f"{field} must be {description}, got {show(value)}")
