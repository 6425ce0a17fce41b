"""What a build will do, known before any pixel is decoded: the scan of the source and the
config (:class:`BuildPlan`, also what ``--dry-run`` shows), the shard tasks it is cut into, and
the plan record an interrupted build is resumed against (``resume.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import BuildConfig
from .executors.interface import Executor
from .fast_decode import require_decoder
from .formats import shard_format
from .resume import plan_record
from .scan import ScanResult, scan
from .storage import Location
from .worker import ShardTask

#: Below this many shards per worker, shards are cut into pieces (see :func:`pieces_per_shard`).
MIN_SHARDS_PER_WORKER = 2
#: Pieces per worker when shards are cut: every piece is joined by the build process anyway,
#: so small pieces cost little more, and a worker never waits long for the other's last one.
PIECES_PER_WORKER = 4


@dataclass(frozen=True)
class BuildPlan:
    """What a build will do, known before any pixel is decoded (also what ``--dry-run`` shows)."""

    scan: ScanResult
    config: BuildConfig

    def bytes_per_image(self, dtype: str | None = None) -> int:
        height, width, channels = self.config.image_shape
        return height * width * channels * np.dtype(dtype or self.config.dtype).itemsize

    def num_shards(self, split: str) -> int:
        return -(-len(self.scan.splits[split]) // self.config.shard_size)

    def estimated_bytes(self, dtype: str | None = None) -> int:
        """Bytes on disk if every image decodes (stored as ``dtype``): pixels, labels (int32, or
        a byte per class multi-hot), targets (float32), headers."""
        scan = self.scan
        labels = 0 if scan.class_names is None else (
            len(scan.class_names) if scan.label_kind == "multi" else 4)
        labels += 4 * len(scan.target_names or ())
        shards = sum(self.num_shards(split) for split in self.scan.splits)
        files_per_shard = 1 + (scan.class_names is not None) + (scan.target_names is not None)
        per_shard_headers = shard_format().ESTIMATED_HEADER_BYTES * files_per_shard
        return self.scan.num_samples * (self.bytes_per_image(dtype) + labels) + shards * per_shard_headers


def plan(src: str | Location, config: BuildConfig, executor: Executor | None = None, *,
         dedupe: bool = True) -> BuildPlan:  # dedupe False: a dry run's, which decodes nothing
    require_decoder(config.decoder)  # before anything is written
    src = src if isinstance(src, Location) else Location.of(src)
    return BuildPlan(scan(src, config, dedupe=dedupe, executor=executor), config)


def plan_of(build_plan: BuildPlan, workers: int) -> dict:
    files = ((split, s.path) for split, samples in build_plan.scan.splits.items() for s in samples)
    return plan_record(build_plan.config.to_dict(), files, pieces_per_shard(build_plan, workers),
                       build_plan.scan.labels_sha256, build_plan.scan.targets_sha256)


def pieces_per_shard(build_plan: BuildPlan, workers: int) -> int:
    """Into how many tasks each shard is cut: 1, unless the build has fewer shards than
    ``MIN_SHARDS_PER_WORKER`` per worker; then enough pieces to keep every worker busy to the end.
    """
    shards = sum(build_plan.num_shards(split) for split in build_plan.scan.splits)
    if workers > 1 and shards < workers * MIN_SHARDS_PER_WORKER:
        return -(-workers * PIECES_PER_WORKER // max(shards, 1))
    return 1


def make_tasks(build_plan: BuildPlan, src: Location, out: Location,
               pieces: int = 1) -> list[ShardTask]:
    """One task per shard-sized run of each split's samples (or per piece of one, see
    :func:`pieces_per_shard`), in split then shard order; pieces are joined by the assembler
    into the same shard bytes.
    """
    size = build_plan.config.shard_size
    tasks = []
    for split, samples in build_plan.scan.splits.items():
        starts = [start for shard_start in range(0, len(samples), size)
                  for start in piece_starts(shard_start, min(size, len(samples) - shard_start),
                                            pieces)]
        for index, (start, end) in enumerate(zip(starts, [*starts[1:], len(samples)])):
            paths = tuple(s.path for s in samples[start:end])
            tasks.append(ShardTask(split, index, paths, src, out, build_plan.config, start=start,
                                   whole=pieces == 1))
    return tasks


def piece_starts(start: int, length: int, pieces: int) -> list[int]:
    """Where each of ``pieces`` near-equal pieces of ``length`` samples from ``start`` begins."""
    return [start + length * piece // min(pieces, length) for piece in range(min(pieces, length))]
