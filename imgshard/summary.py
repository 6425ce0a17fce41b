"""``imgshard inspect``: what a shard directory holds, from its manifest alone.

Nothing here opens a shard: sizes come from one listing of the directory (local or a URL),
counts from the manifest, so a manifest of a million samples is summarised in well under a
second.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .leakage import duplicate_lines, leakage_lines, reason_group, summarize_duplicates
from .manifest import Manifest, read_manifest
from .storage import Location
from .wording import counted, option_text

EXAMPLES_PER_REASON = 3


def summarize_directory(directory: str | Location) -> dict[str, Any]:
    """The machine-readable summary that ``inspect --json`` prints (keys in docs/check.md)."""
    directory = directory if isinstance(directory, Location) else Location.of(directory)
    manifest = read_manifest(directory)
    sizes = directory.sizes()
    return {
        "directory": str(directory),
        "format_version": 1,
        "imgshard_version": manifest.imgshard_version,
        "created": manifest.created,
        "source": manifest.source,
        "dataset_id": manifest.dataset_id,
        "parent_id": manifest.parent_id,
        "config": manifest.config,
        "image_shape": list(manifest.image_shape),
        "dtype": manifest.dtype,
        "class_names": manifest.class_names,
        "label_kind": manifest.label_kind,
        "target_names": manifest.target_names,
        "splits": {name: _split_summary(sizes, manifest, name) for name in manifest.splits},
        "skipped": _skips_by_reason(manifest),
        "num_skipped": len(manifest.skipped),
        "duplicates": summarize_duplicates(manifest.extra.get("duplicates")),
    }


def _split_summary(sizes: dict[str, int], manifest: Manifest, name: str) -> dict[str, Any]:
    split = manifest.splits[name]
    files = [name for s in split.shards for name in (s.images, s.labels, s.targets) if name]
    size = sum(sizes.get(f, 0) for f in files)
    summary: dict[str, Any] = {"num_samples": split.num_samples, "num_shards": len(split.shards),
                               "bytes": size}
    if split.class_counts is not None:
        total = max(1, split.num_samples)
        # in label order (the manifest's counts may be in any: they are written sorted by name)
        order = {cls: index for index, cls in enumerate(manifest.class_names or ())}
        counts = sorted(split.class_counts.items(), key=lambda item: (
            order.get(item[0], len(order)), item[0]))
        summary["classes"] = {cls: {"count": n, "share": n / total} for cls, n in counts}
    return summary


def _skips_by_reason(manifest: Manifest) -> dict[str, dict[str, Any]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for skip in manifest.skipped:
        grouped[reason_group(skip.reason)].append(skip.path)
    ordered = sorted(grouped.items(), key=lambda item: (-len(item[1]), item[0]))
    return {reason: {"count": len(paths), "examples": paths[:EXAMPLES_PER_REASON]}
            for reason, paths in ordered}


def render(summary: dict[str, Any], human_bytes) -> list[str]:
    """The readable form of :func:`summarize_directory`, as lines: leakage first."""
    height, width, channels = summary["image_shape"]
    lines = leakage_lines(summary["duplicates"]) + [
        f"{summary['directory']}: imgshard format 1, built by imgshard "
        f"{summary['imgshard_version']} at {summary['created']}",
        f"source: {summary['source']}",
        f"dataset: {summary['dataset_id']}"
        + (f" (parent: {summary['parent_id']})" if summary["parent_id"] else ""),
        f"images: {height}x{width}x{channels} {summary['dtype']}",
        "options: " + ", ".join(f"{k}={option_text(k, v)}"
                                for k, v in sorted(summary["config"].items())),
        *label_lines(summary["label_kind"], summary["target_names"]),
    ]
    for name, split in summary["splits"].items():
        shards = split["num_shards"]
        lines.append(f"split {name}: {counted(split['num_samples'], 'sample')} in "
                     f"{counted(shards, 'shard')}, {human_bytes(split['bytes'])}")
        classes = split.get("classes", {})
        width_ = max((len(c) for c in classes), default=0)
        for cls, count in classes.items():
            lines.append(f"  {cls:<{width_}}  {count['count']:>9,}  {count['share']:6.1%}")
    lines.append(f"skipped: {counted(summary['num_skipped'], 'file')}")
    for reason, group in summary["skipped"].items():
        lines.append(f"  {group['count']:>7,}  {reason}  (e.g. {', '.join(group['examples'])})")
    lines += duplicate_lines(summary["duplicates"])
    return [printable(line) for line in lines]


def label_lines(label_kind: str, target_names: list[str] | None) -> list[str]:
    """What a dataset's labels and targets are, and the ``label_mode`` that reads them."""
    lines = []
    if label_kind == "multi":
        lines.append("labels: multi-label (several classes an image; each label counted; read "
                     "with label_mode='multi_hot')")
    if target_names is not None:
        lines.append(f"targets: {', '.join(target_names)} (float32; read with "
                     "label_mode='targets')")
    return lines


def printable(text: str) -> str:
    """``text`` with every character that is not printable written as a Python escape: a
    manifest's text (source, class names, skipped paths) must not reach a terminal as control
    sequences (retitling the window, rewriting the screen) or split a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
