"""One task = one shard's worth of input files, decoded and written by a worker process.

A worker gets a :class:`ShardTask` (the file list of one shard and the frozen config), decodes
every file, writes the pixels itself as one ``.npy`` *part* file in OUT, and returns a small
:class:`ShardResult` (counts, checksum, skips). Pixels never travel back through a pipe.

A part whose files all decoded is renamed into place as the final shard; when files were skipped
the build re-cuts the parts into fixed-size shards (see ``assemble.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .config import BuildConfig
from .shards import write_array_atomically
from .transform import SkipImage, cast_table, load_pixels, store_pixels

PART_PREFIX = ".part-"


@dataclass(frozen=True)
class ShardTask:
    """The input files of one shard, in order, and everything needed to write it."""

    split: str
    index: int
    paths: tuple[str, ...]
    src: str
    out: str
    config: BuildConfig

    @property
    def part_path(self) -> str:
        return os.path.join(self.out, part_name(self.split, self.index))


@dataclass(frozen=True)
class ShardResult:
    """What a worker reports: which inputs were skipped (by position) and the part it wrote."""

    split: str
    index: int
    num_samples: int
    skipped: tuple[tuple[int, str], ...]
    part_path: str
    sha256: str


def part_name(split: str, index: int) -> str:
    return f"{PART_PREFIX}{split}-{index:05d}.npy"


def run_shard_task(task: ShardTask) -> ShardResult:
    """Decode the task's files into one part file; bad files are skipped, never raised."""
    table = cast_table(task.config)
    rows = np.empty((len(task.paths), *task.config.image_shape), dtype=task.config.dtype)
    skipped: list[tuple[int, str]] = []
    count = 0
    for position, rel in enumerate(task.paths):
        try:
            pixels = load_pixels(os.path.join(task.src, rel), task.config)
        except SkipImage as skip:
            skipped.append((position, str(skip)))
            continue
        store_pixels(pixels, table, rows[count])
        count += 1
    digest = write_array_atomically(task.part_path, rows[:count])
    return ShardResult(task.split, task.index, count, tuple(skipped), task.part_path, digest)
