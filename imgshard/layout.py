"""The on-disk layout of a shard directory: what each file is, and every name built in one place.

This docstring is the specification of the format (``format_version`` 1); the code below builds
every name from the format strings it names, so the names and the spec cannot drift apart.

A finished build
----------------
::

    OUT/
      manifest.json              MANIFEST_NAME, written last: its presence means "finished"
      samples.csv                SAMPLES_NAME: one row per sample
      train-00000.npy            SHARD_NAME: images shaped (n, H, W, C) in the stored dtype
      train-00000.labels.npy     LABELS_NAME: labels shaped (n,), int32 (absent without labels);
                                 a multi-label dataset's: (n, classes), uint8 multi-hot
      train-00000.targets.npy    TARGETS_NAME: numeric targets shaped (n, k), float32 (with
                                 --targets only)
      train-00001.npy ...
      val-00000.npy ...

A shard's name is ``{split}-{index:05d}{suffix}``: the index has 5 digits at least and keeps
counting past 99,999 (``train-100000.npy``). ``{suffix}`` is the shard format's: ``.npy`` for
the only format a manifest can name today (it names none: absent means npy). Shard and label
files are written by that format (see ``imgshard.formats``; npy's are standard ``.npy`` files,
``np.load(path, mmap_mode="r")`` opens them). Every shard of a split but its last holds exactly
``config.shard_size`` samples (after ``imgshard append``: but the last of each build or append,
whose shards follow the old ones and leave them as they were); the bytes depend only on the inputs, the options and the decoder's
versions.

``samples.csv`` has the header ``path,split,shard,index,label`` (:data:`SAMPLES_COLUMNS`): the
path relative to SRC, the split, the shard's file name, the row inside it, and the label index
(empty without labels; a multi-label dataset's: the indices joined by ``|``, as ``0|3``).
Names that are not valid UTF-8 are written byte for byte (Python's ``surrogateescape``). A
build's (since duplicates are found) adds ``pixel_hash,dhash`` (:data:`HASH_COLUMNS`): 32
hexadecimal digits of the sha256 (its first 128 bits) of every 8th row of the sample's stored
values (a fingerprint: samples sharing one are compared in full) and 16 of its 64-bit
difference hash (``imgshard/image_hash.py``), from which the manifest's
``duplicates`` are found. A merged dataset's has a sixth column, ``source``
(:data:`SOURCE_COLUMN`): the input each sample came from (and no hash columns).

``manifest.json`` is one JSON object, keys sorted:

- ``format``, ``format_version``: ``"imgshard"`` (:data:`FORMAT`), ``1`` (:data:`FORMAT_VERSION`).
- ``imgshard_version``; ``created`` (ISO 8601 UTC, when the build finished); ``source`` (SRC as
  given).
- ``image_shape``: ``[H, W, C]`` of one image, C 1, 3 or 4; ``dtype``: ``float16``, ``float32``
  or ``uint8``; ``class_names``: label index -> name, ``null`` without labels.
- ``label_kind``: ``"single"`` (one class per sample, int32 labels) or ``"multi"`` (several:
  multi-hot uint8 rows; class counts count each label); absent in manifests written before it
  existed (single). ``target_names``: the names of the numeric targets of ``--targets`` (the
  columns of each shard's ``targets`` file), absent without.
- ``config``: every effective build option (``size``, ``color``, ``resize``, ``interpolation``,
  ``dtype``, ``rescale``, ``offset``, ``shard_size``, ``val_split``, ``seed``, ``shuffle``,
  ``labels``, ``no_labels``, ``classes``, ``follow_links``, ``max_pixels``, ``dedupe`` (only when
  ``"exact"``: absent means ``"none"``), ``decoder`` (only when ``"fast"``: absent means
  ``"pillow"``) and ``bit_depth``:
  ``16`` in a full-depth float build, absent in an 8-bit one, which is how every build before
  it existed, ``--bit-depth 8`` builds and ``uint8`` builds read: 16-bit and float images are
  stored at full depth exactly when it is 16). A ``uint8`` dataset stores the pixels; its
  ``rescale`` and ``offset`` say the floats a reader serves (``pixel * rescale + offset``, as a
  float build stores them; before they were applied they could only be 1/255 and 0).
- ``splits``: per split (``train``, ``val``, ``test``) ``num_samples``, ``class_counts`` (name ->
  count, ``null`` without labels) and ``shards`` in reading order, each ``images`` (file name),
  ``labels`` (file name, absent without labels), ``num_samples``, ``sha256`` (of the images
  file) and ``labels_sha256``; with targets, ``targets`` and ``targets_sha256`` too.
- ``skipped``: ``[{"path": ..., "reason": ...}]`` sorted by path (relative to SRC).
- ``samples``: the provenance file's name, ``samples.csv``.
- ``decoder``: the versions of the libraries that made the pixels (``pillow``,
  ``libjpeg_turbo``, ``numpy``; a full-depth build's also ``opencv``, which decodes its 16-bit
  colour PNGs and TIFFs, ``null`` when it was not installed and such files were skipped; a
  ``--decoder fast`` build's also ``simplejpeg`` and ``opencv``);
  text or ``null`` each (absent in manifests written before it existed).
- ``dataset_id``: the sha256 of the canonical JSON (sorted keys, no spaces, ASCII) of
  ``{"class_names", "config", "splits": {name: [[sha256, labels_sha256], ...]}}`` (a
  multi-label dataset's also holds ``"label_kind": "multi"``, and one with targets
  ``"target_names"`` and each shard's ``targets_sha256`` third): what the
  data is, not when or where it was built (absent in manifests written before it existed; a
  reader computes it and trusts only that); ``parent_id``: the ``dataset_id`` this dataset grew
  from (a reshard's input), ``null`` for a build or a merge.
- ``duplicates``: every group of duplicate samples, ``[{"kind": "exact"|"near", "paths": [...],
  "splits": [...]}]`` (see ``imgshard/duplicates.py``); a group in two or more splits is leakage.
  Absent: not searched (written before it existed, a merge).
- A merge's only: ``merged_from`` (``[{"source", "dataset_id"}]``, its inputs in order) and
  ``duplicate_paths`` (``{"count", "examples": [{"path", "sources"}]}``).

What a reader must check
------------------------
Everything, before it is used: the directory may have been edited or written by anyone.
``format`` must be ``"imgshard"`` and ``format_version`` exactly 1 (refuse others loudly). Every
field has the type and range above (``imgshard.manifest_check``); file and split names are plain
(:func:`is_plain_name`); counts are whole numbers up to 2**40 that the shard files' headers and
sizes must match; checksums are 64 hex digits; no file is listed twice; labels lie in
``[0, len(class_names))``. A listed file is opened only if it is a regular file (never a link,
FIFO, device or directory). ``verify`` also reports a shard or label file that the manifest does
not list (:func:`is_own_file`).

While a build runs, or after it was interrupted
-----------------------------------------------
- ``.tmp-{build}-{name}.{pid}`` (:data:`TEMP_NAME`): every file is written under a hidden
  temporary name in OUT, then renamed to ``name``; so a half-written file never has a final
  name. ``{build}`` is the build id (12 hex digits, :data:`BUILD_ID`); the pid keeps two writers
  apart. A file written outside a build has no id (:data:`UNTAGGED_TEMP_NAME`).
- ``.part-{build}-{split}-{index:05d}{suffix}`` (:data:`PART_NAME`): what one worker task wrote;
  renamed into place as a shard, or joined into shards when images were skipped.
- ``.imgshard-progress.jsonl`` (:data:`PROGRESS_NAME`; on an object store numbered records
  ``.imgshard-progress-{number:06d}.json``, :data:`REMOTE_PROGRESS_NAME`): the resume log. Its
  first line is the plan (the effective config, a sha256 of the file list, the build id, the
  pieces each shard was cut into and how many shards each split may have); then a checkpoint
  each time the finished shards cover exactly the tasks consumed so far (the tasks, the shards,
  skips and class counts they added, and the length of ``samples.csv`` written so far).
- ``.samples.csv.partial`` (:data:`SAMPLES_PARTIAL`): ``samples.csv`` until the build finishes.
- ``.imgshard-sources.jsonl.gz`` (:data:`SOURCES_NAME`): the size and modification time (or
  ETag) of every file the scan saw, so that a resume can name a file that changed.
- ``.imgshard-lock`` (:data:`LOCK_NAME`): the OS lock a build holds on a local OUT; it holds the
  pid of that build.
- ``.imgshard-replaced-manifest.json`` (:data:`RETIRED_NAME`): where ``--overwrite`` keeps the
  earlier manifest until the files it lists are deleted, so an interrupted overwrite never looks
  finished and still accounts for its files.

The progress log, partial samples file and sources record are deleted once ``manifest.json`` is
written; a copy of the sources record stays, as ``sources.jsonl.gz`` (:data:`SOURCES_KEPT`, the
manifest's ``sources``), so that ``imgshard append`` can tell a file that changed since.
``--overwrite`` deletes only the files these records account for.
"""

from __future__ import annotations

import os
import re
import string

FORMAT = "imgshard"
FORMAT_VERSION = 1

MANIFEST_NAME = "manifest.json"
SAMPLES_NAME = "samples.csv"
#: The columns of ``samples.csv``, in order.
SAMPLES_COLUMNS = ("path", "split", "shard", "index", "label")
#: The columns a build's ``samples.csv`` adds after those: each sample's fingerprint (the sha256
#: of every 8th row of its pixels, first 128 bits) and its 64-bit difference hash, in hexadecimal
#: (see ``image_hash.py``).
HASH_COLUMNS = ("pixel_hash", "dhash")
#: The column a merged dataset's ``samples.csv`` adds: the input dataset each sample came from.
SOURCE_COLUMN = "source"
SHARD_NAME = "{split}-{index:05d}{suffix}"
LABELS_NAME = "{split}-{index:05d}.labels{suffix}"
TARGETS_NAME = "{split}-{index:05d}.targets{suffix}"
PART_NAME = ".part-{build}-{split}-{index:05d}{suffix}"
TEMP_NAME = ".tmp-{build}-{name}.{pid}"
UNTAGGED_TEMP_NAME = ".tmp-{name}.{pid}"
REMOTE_PROGRESS_NAME = ".imgshard-progress-{number:06d}.json"

PROGRESS_NAME = ".imgshard-progress.jsonl"
SAMPLES_PARTIAL = ".samples.csv.partial"
SOURCES_NAME = ".imgshard-sources.jsonl.gz"
SOURCES_KEPT = "sources.jsonl.gz"
LOCK_NAME = ".imgshard-lock"
RETIRED_NAME = ".imgshard-replaced-manifest.json"
BUILD_ID = re.compile(r"[0-9a-f]{12}")

#: What each field of a shard or label file name may hold, for :func:`is_own_file`.
_FIELD_PATTERNS = {"split": r"[\w.-]+", "index": r"\d{5,}"}


def images_name(split: str, index: int, suffix: str) -> str:
    return SHARD_NAME.format(split=split, index=index, suffix=suffix)


def labels_name(split: str, index: int, suffix: str) -> str:
    return LABELS_NAME.format(split=split, index=index, suffix=suffix)


def targets_name(split: str, index: int, suffix: str) -> str:
    return TARGETS_NAME.format(split=split, index=index, suffix=suffix)


def shard_names(split: str, index: int, suffix: str) -> tuple[str, str, str]:
    """Every file name shard ``index`` of ``split`` may have: images, labels, targets."""
    return (images_name(split, index, suffix), labels_name(split, index, suffix),
            targets_name(split, index, suffix))


def part_name(split: str, index: int, build: str, suffix: str) -> str:
    return PART_NAME.format(build=build, split=split, index=index, suffix=suffix)


def part_prefix(build: str) -> str:
    """How the part names of the build ``build`` begin."""
    return _prefix(PART_NAME, build=build)


def remote_progress_name(number: int) -> str:
    return REMOTE_PROGRESS_NAME.format(number=number)


def temp_path(path: str, tag: str = "") -> str:
    """The hidden name a file is written under before it is renamed to ``path`` (``tag``: the
    build id of the build writing it, if any)."""
    head, tail = os.path.split(path)
    template = TEMP_NAME if tag else UNTAGGED_TEMP_NAME
    return os.path.join(head, template.format(build=tag, name=tail, pid=os.getpid()))


def temp_prefix(tag: str = "") -> str:
    """How the temporary names of the build ``tag`` begin (any build's, without a tag)."""
    return _prefix(TEMP_NAME, build=tag) if tag else _prefix(UNTAGGED_TEMP_NAME)


def _prefix(template: str, **fields: str) -> str:
    """The start of every name ``template`` makes with ``fields``: up to its first other field."""
    prefix = ""
    for literal, field, spec, _ in string.Formatter().parse(template):
        prefix += literal
        if field is None or field not in fields:
            return prefix
        prefix += format(fields[field], spec)
    return prefix


def is_own_file(name: str, suffix: str) -> bool:
    """Whether ``name`` is a shard, label or targets file name as imgshard gives them (of any
    split and index): what ``verify`` reports when the manifest does not list it."""
    return any(_name_pattern(template, suffix).fullmatch(name)
               for template in (SHARD_NAME, LABELS_NAME, TARGETS_NAME))


def _name_pattern(template: str, suffix: str) -> re.Pattern[str]:
    """The names ``template`` makes with ``suffix``, as a regular expression."""
    patterns = {**_FIELD_PATTERNS, "suffix": re.escape(suffix)}
    return re.compile("".join(re.escape(literal) + (patterns[field] if field else "")
                              for literal, field, _, _ in string.Formatter().parse(template)))


def is_plain_name(name: object) -> bool:
    """Whether ``name`` names a file directly inside a directory: a non-empty string of at most
    255 characters with no separator (``/`` or ``\\``), and neither ``.`` nor ``..``; so never
    absolute. Every character must be printable: imgshard writes no name with a control (NUL,
    newline, escape), format (a right-to-left override) or lone surrogate character, and a name
    is shown in one-line messages and on terminals."""
    return (isinstance(name, str) and name not in ("", ".", "..") and len(name) <= 255
            and name.isprintable() and not any(c in name for c in "/\\"))
