"""``imgshard preview``: a PNG contact sheet, K random samples of each class per row.

Pixels are shown as stored: float shards are mapped back through ``rescale``/``offset`` to
0..255, so a wrong crop, padding, colour mode, orientation or label is visible at a glance.
A multi-label dataset's image appears in the row of each class it carries, with all its label
names written under it; a dataset with targets writes each image's values under it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw

from .config import DEFAULT_MAX_PIXELS
from .errors import ImgshardError, ShardError
from .formats import shard_format
from .manifest import Manifest, ManifestError, read_manifest
from .samples_csv import SampleRow, read_samples
from .storage import Location

LABEL_WIDTH = 120
GAP = 2
#: The height of the line of text under each image of a multi-label dataset or one with
#: targets (its labels and values).
CAPTION_HEIGHT = 12
#: The largest contact sheet drawn (Pillow's own limit for an image it opens, doubled): about
#: 540 MB of RGB, whatever image shape or class count a manifest claims.
MAX_SHEET_PIXELS = 2 * DEFAULT_MAX_PIXELS
#: The sheet's file format, by the name's extension.
SHEET_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
#: libjpeg's largest side (JPEG_MAX_DIMENSION): a taller sheet fails only once it is drawn.
MAX_JPEG_SIDE = 65500


class PreviewError(ImgshardError):
    """The contact sheet cannot be made."""


def write_preview(directory: str | Location, output: str, *, split: str = "train",
                  per_class: int = 8, seed: int = 0) -> tuple[int, int]:
    """Write the contact sheet to ``output``; return its (width, height) in pixels.

    From a URL only the shards that hold the chosen samples are downloaded.
    """
    for value, name, low in ((per_class, "per_class", 1), (seed, "seed", 0)):
        if type(value) is not int or value < low:
            raise PreviewError(f"{name} must be a whole number >= {low}, got {repr(value)[:40]}")
    directory = directory if isinstance(directory, Location) else Location.of(directory)
    check_output(directory, output)
    manifest = read_manifest(directory)
    if split not in manifest.splits:
        raise PreviewError(f"split {split!r} is not in {directory} "
                           f"(it has: {', '.join(manifest.splits)})")
    height, width, _ = manifest.image_shape
    height += CAPTION_HEIGHT if _captioned(manifest) else 0
    sheet_width = LABEL_WIDTH + per_class * (width + GAP)
    sheet_height = (manifest.num_classes or 1) * (height + GAP)  # a row per class
    if sheet_width * sheet_height > MAX_SHEET_PIXELS:  # checked before a sample is read
        raise PreviewError(f"the contact sheet would have {sheet_width * sheet_height:,} pixels, "
                           f"more than {MAX_SHEET_PIXELS:,}: ask for fewer --per-class")
    if _format(output) == "JPEG" and max(sheet_width, sheet_height) > MAX_JPEG_SIDE:
        raise PreviewError(f"the contact sheet would be {sheet_width}x{sheet_height} pixels, "
                           f"more than JPEG's {MAX_JPEG_SIDE:,} a side: write a .png")
    rows = _pick(directory, manifest, split, per_class, np.random.default_rng(seed))
    sheet = Image.new("RGB", (sheet_width, len(rows) * (height + GAP)))
    pen = ImageDraw.Draw(sheet)
    for row_index, (name, samples) in enumerate(rows):
        top = row_index * (height + GAP)
        pen.text((4, top + 2), name, fill=(255, 255, 255))
        for column, (pixels, caption) in enumerate(samples):
            left = LABEL_WIDTH + column * (width + GAP)
            sheet.paste(to_display(pixels, manifest), (left, top))
            if caption:
                pen.text((left + 1, top + manifest.image_shape[0]), caption[:width // 6],
                         fill=(255, 255, 0))
    sheet.save(output, format=_format(output))
    return sheet.size


def check_output(directory: Location, output: str) -> None:
    """Refuse an ``output`` that would replace a file of the shard directory (its manifest,
    a shard, a link to one) or is a folder (a local file cannot be in a URL's directory), or
    whose name is not a .png or .jpg one: the sheet is written in the format its name says."""
    if os.path.isdir(output):
        raise PreviewError(f"-o {output} is a directory: give the name of the PNG file to write")
    if directory.holds(output):
        raise PreviewError(f"-o {output} is in the shard directory {directory} (or one of its "
                           "files): write the preview elsewhere")
    if _format(output) is None:
        raise PreviewError(f"-o: name a .png or .jpg file (the sheet's format), got {output}")


def _format(output: str) -> str | None:
    """The format the name ``output`` says (None: neither PNG nor JPEG)."""
    return SHEET_FORMATS.get(os.path.splitext(output)[1].lower())


def _pick(directory: Location, manifest: Manifest, split: str, per_class: int,
          rng: np.random.Generator) -> list[tuple[str, list[tuple[np.ndarray, str]]]]:
    """(row title, [(stored image, caption)]) per class: up to ``per_class`` random samples of
    each (a multi-label sample is one of each class it carries)."""
    shards = {shard.images: shard for shard in manifest.splits[split].shards}
    locations: dict[int | None, list[tuple[str, int, SampleRow]]] = {}
    for row in _samples_of(directory, manifest, split):
        label = row.label if manifest.class_names is not None else None
        for key in label if isinstance(label, tuple) else (label,):
            locations.setdefault(key, []).append((row.shard, row.index, row))
    names = manifest.class_names
    keys = range(len(names)) if names is not None else [None]
    picked = []
    for key in keys:
        found = locations.get(key, [])
        chosen = rng.choice(len(found), size=min(per_class, len(found)), replace=False) \
            if found else []
        picked.append((names[key] if names is not None else "samples",
                       [found[i] for i in sorted(chosen)]))
    with contextlib.ExitStack() as stack:
        maps: dict[str, np.ndarray] = {}
        targets: dict[str, np.ndarray] = {}
        for name in sorted({shard for _, chosen in picked for shard, _, _ in chosen}):
            info = shards[name]
            maps[name] = shard_format().open_shard(
                stack.enter_context(directory.local_copy(name)),
                shape=(info.num_samples, *manifest.image_shape), dtype=manifest.dtype)
            if info.targets:
                targets[name] = shard_format().open_shard(
                    stack.enter_context(directory.local_copy(info.targets)),
                    **dict(zip(("shape", "dtype"), manifest.targets_layout(info.num_samples))))
        return [(title, [(np.array(maps[shard][index]),
                          caption(manifest, row.label, targets[shard][index]
                                  if shard in targets else None))
                         for shard, index, row in chosen])
                for title, chosen in picked]


def _captioned(manifest: Manifest) -> bool:
    return manifest.label_kind == "multi" or manifest.target_names is not None


def caption(manifest: Manifest, label: int | tuple[int, ...] | None,
            targets: np.ndarray | None) -> str:
    """The text under an image: a multi-label sample's class names joined by ``|``, and its
    targets as ``name=value``; empty for a single-label dataset (its row names its class)."""
    parts = []
    if manifest.label_kind == "multi" and manifest.class_names is not None:
        labels = label if isinstance(label, tuple) else () if label is None else (label,)
        parts.append("|".join(manifest.class_names[i] for i in labels))
    if targets is not None:
        parts += [f"{name}={float(value):.4g}"
                  for name, value in zip(manifest.target_names or (), targets)]
    return " ".join(parts)


def _samples_of(directory: Location, manifest: Manifest, split: str) -> Iterator[SampleRow]:
    """The rows of ``samples.csv`` in ``split``, each naming a sample that the manifest lists.

    Raises:
        PreviewError: naming the first row of a shard that is not in the split, an index
            outside its shard or a label outside the classes.
    """
    path = directory.display(manifest.samples)
    sizes = {shard.images: shard.num_samples for shard in manifest.splits[split].shards}
    classes = manifest.num_classes
    try:
        with directory.open_listed(manifest.samples) as stream:
            for row in read_samples(stream, max_rows=manifest.shard_samples):
                if row.split != split:
                    continue
                where = f"{path}: line {row.line}:"
                if row.shard not in sizes:
                    raise PreviewError(f"{where} shard {row.shard[:80]!r} is not a shard of "
                                       f"split {split} in the manifest")
                if not 0 <= row.index < sizes[row.shard]:
                    raise PreviewError(f"{where} index {row.index} is outside [0, "
                                       f"{sizes[row.shard]}) of {row.shard}")
                labels = row.label if isinstance(row.label, tuple) else (
                    () if row.label is None else (row.label,))
                if classes is not None and not all(0 <= label < classes for label in labels):
                    raise PreviewError(f"{where} label {row.label} is outside [0, {classes})")
                yield row
    except FileNotFoundError:
        raise PreviewError(f"{path} is missing") from None
    except ManifestError as error:
        raise PreviewError(f"{path}: {error}") from None
    except ShardError as error:  # a link, FIFO or directory named like the samples file
        raise PreviewError(str(error)) from None


def to_display(pixels: np.ndarray, manifest: Manifest) -> Image.Image:
    """One stored image as an 8-bit Pillow image (grayscale, RGB or RGBA)."""
    if manifest.dtype != "uint8":
        rescale = manifest.config.get("rescale", 1 / 255)
        offset = manifest.config.get("offset", 0.0)
        pixels = (pixels.astype(np.float64) - offset) / rescale
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    image = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode)
    return image.convert("RGB")
