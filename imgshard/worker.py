"""One task = one shard's worth of input files, decoded and written by a worker process.

A worker gets a :class:`ShardTask` (the file list of one shard and the frozen config), decodes
every file, writes the pixels itself as one *part* file in OUT (in the shard format), and returns a small
:class:`ShardResult` (counts, checksum, skips). Pixels never travel back through a pipe.

A part whose files all decoded is renamed into place as the final shard; when files were skipped
the build re-cuts the parts into fixed-size shards (see ``assemble.py``). Parts are not synced
to disk by the worker: the parent does that before a part takes a shard's name, while the
workers go on decoding. A build of fewer shards
than workers can share cuts each shard into pieces, one task each, joined the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import BuildConfig
from .depth import store_values
from .fast_decode import one_thread
from .formats import shard_format
from .image_hash import image_hashes
from .layout import part_name
from .libc import release_freed_memory
from .storage import Location
from .transform import SkipImage, load_pixels, read_source


@dataclass(frozen=True)
class ShardTask:
    """The input files of one shard (or of a piece of one), in order, and how to write them.

    ``index`` numbers the tasks of a split; ``start`` is the position of the first file among
    the split's samples. A piece of a shard (not ``whole``) is always joined, never renamed into
    place, so its worker does not hash it: the parent hashes the shard it joins.
    """

    split: str
    index: int
    paths: tuple[str, ...]
    src: Location
    out: Location
    config: BuildConfig
    start: int = 0
    whole: bool = True

    @property
    def part(self) -> str:
        """The name of the part file this task writes in OUT (tagged with the build id)."""
        return part_name(self.split, self.index, self.out.temp_tag, shard_format().SUFFIX)


@dataclass(frozen=True)
class ShardResult:
    """What a worker reports: which inputs were skipped (by position), the part it wrote
    (with its sha256, None for a piece) and the hashes of its rows (``image_hash.py``:
    24 bytes a row, in order), from which the build finds duplicates."""

    split: str
    index: int
    num_samples: int
    skipped: tuple[tuple[int, str], ...]
    part: str
    sha256: str | None
    hashes: bytes = b""


def store_row(pixels: np.ndarray, config: BuildConfig, table: np.ndarray, row: np.ndarray) -> None:
    """Cast one image's pixels into ``row`` as the shard stores them."""
    if pixels.dtype == np.uint8:
        shard_format().store_pixels(pixels, table, row)
    else:  # a deep image's float pixel values (see transform.load_pixels)
        store_values(pixels, config.rescale, config.offset, row)


def run_shard_task(task: ShardTask) -> ShardResult:
    """Decode the task's files into one part file; bad files are skipped, never raised.

    Each image is cast into one reused row and streamed to the file and its checksum as soon as
    it is decoded, so a worker holds one image at a time, whatever the shard size.
    """
    config = task.config
    file_format = shard_format()
    table = file_format.cast_table(config)
    row = np.empty((1, *config.image_shape), dtype=config.dtype)
    skipped: list[tuple[int, str]] = []
    hashes = bytearray()
    with one_thread(config.decoder), task.out.atomic_file(task.part, durable=False) as stream:
        part = file_format.RowStream(stream, expected_rows=len(task.paths),
                                     row_shape=config.image_shape, dtype=np.dtype(config.dtype),
                                     checksum=task.whole)
        for position, rel in enumerate(task.paths):
            try:
                with read_source(task.src, rel) as source:
                    pixels = load_pixels(source, config)
            except SkipImage as skip:
                skipped.append((position, str(skip)))
                continue
            store_row(pixels, config, table, row[0])
            hashes += image_hashes(pixels, row[0])
            part.append(row)
        digest = part.finish()
    release_freed_memory()
    return ShardResult(task.split, task.index, part.rows, tuple(skipped), task.part, digest,
                       bytes(hashes))
