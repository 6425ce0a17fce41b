"""The on-disk layout of a shard directory: every name imgshard writes, built in one place.

(The full specification of the format follows in this docstring; see ``ARCHITECTURE.md``.)
"""

from __future__ import annotations

import os
import re

FORMAT = "imgshard"
FORMAT_VERSION = 1

MANIFEST_NAME = "manifest.json"
SAMPLES_NAME = "samples.csv"
#: The columns of ``samples.csv``, in order.
SAMPLES_COLUMNS = ("path", "split", "shard", "index", "label")
#: A shard or label file name, as ``verify`` looks for files the manifest does not list.
OWN_FILE = re.compile(r"[\w.-]+-\d{5,}(\.labels)?\.npy")

PROGRESS_NAME = ".imgshard-progress.jsonl"
#: Remote progress records: ``{REMOTE_PROGRESS_PREFIX}{n:06d}.json``.
REMOTE_PROGRESS_PREFIX = ".imgshard-progress-"
SAMPLES_PARTIAL = ".samples.csv.partial"
#: The size and modification time (or ETag) of every file the scan saw, written when a build
#: starts and removed when it completes, so that a resume can name a file that changed.
SOURCES_NAME = ".imgshard-sources.jsonl.gz"
#: The lock a build holds on a local OUT; the file holds the pid of the build holding it.
LOCK_NAME = ".imgshard-lock"
#: Where an overwrite keeps the earlier manifest until the files it lists are deleted.
RETIRED_NAME = ".imgshard-replaced-manifest.json"
#: A build id: the tag of every temporary and part name a build writes.
BUILD_ID = re.compile(r"[0-9a-f]{12}")
PART_PREFIX = ".part-"


def remote_progress_name(number: int) -> str:
    return f"{REMOTE_PROGRESS_PREFIX}{number:06d}.json"


def part_name(split: str, index: int, build: str) -> str:
    return f"{part_prefix(build)}{split}-{index:05d}.npy"


def part_prefix(build: str) -> str:
    """How the part names of the build ``build`` begin."""
    return f"{PART_PREFIX}{build}-"


TEMP_PREFIX = ".tmp-"


def shard_stem(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


def images_name(split: str, index: int) -> str:
    return f"{shard_stem(split, index)}.npy"


def labels_name(split: str, index: int) -> str:
    return f"{shard_stem(split, index)}.labels.npy"


def temp_path(path: str, tag: str = "") -> str:
    """The hidden name a file is written under before it is renamed to ``path`` (``tag``: the
    build id of the build writing it, if any)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f"{temp_prefix(tag)}{tail}.{os.getpid()}")


def temp_prefix(tag: str = "") -> str:
    """How the temporary names of the build ``tag`` begin."""
    return f"{TEMP_PREFIX}{tag}-" if tag else TEMP_PREFIX


def is_plain_name(name: object) -> bool:
    """Whether ``name`` names a file directly inside a directory: a non-empty string of at most
    255 characters with no separator (``/`` or ``\\``), and neither ``.`` nor ``..``; so never
    absolute. Every character must be printable: imgshard writes no name with a control (NUL,
    newline, escape), format (a right-to-left override) or lone surrogate character, and a name
    is shown in one-line messages and on terminals."""
    return (isinstance(name, str) and name not in ("", ".", "..") and len(name) <= 255
            and name.isprintable() and not any(c in name for c in "/\\"))
