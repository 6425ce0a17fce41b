"""``--dedupe exact``: skip every file whose stored pixels repeat those of a file before it.

Which files are duplicates must be known before the val split is drawn (so that the split is
exactly the one a build of the deduplicated folder draws), and the split comes before any shard
is written. So a deduplicating build decodes every file twice: once here, only to hash its
stored pixels (``image_hash.pixel_digest``, on the build's executor, a task per
:data:`FILES_PER_TASK` files, nothing written), then once more to write it. That roughly doubles
the decoding time; a resumed build hashes again (a pure function of the files, so it finds the
same duplicates, and the plan's fingerprint of the kept files proves it).

Of each group of files with identical stored pixels, the first by sorted path is kept and the
others become skips with the reason ``duplicate of PATH``. A file that cannot be decoded is no
one's duplicate: the build skips it later with its own reason. Memory: 16 bytes a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import BuildConfig
from .executors.interface import Executor
from .image_hash import DIGEST_BYTES, pixel_digest
from .leakage import DUPLICATE_REASON
from .formats import shard_format
from .libc import release_freed_memory
from .manifest import Skip
from .samples import Sample
from .storage import Location
from .transform import SkipImage, load_pixels, read_source
from .worker import store_row

#: Files hashed per task: enough to make a task's overhead small, few enough to balance workers.
FILES_PER_TASK = 64

Labelled = dict[str, list[Sample]]


@dataclass(frozen=True)
class HashTask:
    """Files to decode and hash only (``index``: the task's place, for the result)."""

    index: int
    paths: tuple[str, ...]
    src: Location
    config: BuildConfig


@dataclass(frozen=True)
class HashResult:
    """Each file's digest, in the task's order (zeros: it cannot be decoded), and which decoded."""

    index: int
    digests: bytes
    decoded: tuple[bool, ...]


def run_hash_task(task: HashTask) -> HashResult:
    """Decode the task's files and hash their stored values; a bad file is marked, never
    raised."""
    table = shard_format().cast_table(task.config)
    row = np.empty(task.config.image_shape, dtype=task.config.dtype)
    digests, decoded = bytearray(), []
    for rel in task.paths:
        try:
            with read_source(task.src, rel) as source:
                pixels = load_pixels(source, task.config)
        except SkipImage:
            digests += bytes(DIGEST_BYTES)
            decoded.append(False)
            continue
        store_row(pixels, task.config, table, row)
        digests += pixel_digest(row)
        decoded.append(True)
    release_freed_memory()
    return HashResult(task.index, bytes(digests), tuple(decoded))


def drop_exact_duplicates(labelled: Labelled, src: Location, config: BuildConfig,
                          executor: Executor | None) -> tuple[Labelled, list[Skip]]:
    """The samples without the exact duplicates, and a skip for each duplicate (module
    docstring); run on ``executor``, or in this process without one."""
    paths = sorted(sample.path for samples in labelled.values() for sample in samples)
    digests, decoded = hash_files(paths, src, config, executor)
    dropped = first_of_each(digests, decoded)
    skips = [Skip(paths[i], DUPLICATE_REASON + paths[first]) for i, first in dropped.items()]
    gone = {skip.path for skip in skips}
    kept = {split: [sample for sample in samples if sample.path not in gone]
            for split, samples in labelled.items()}
    return kept, skips


def hash_files(paths: list[str], src: Location, config: BuildConfig,
               executor: Executor | None) -> tuple[np.ndarray, np.ndarray]:
    """The (n, 16) digests of the files' stored pixels and whether each decoded."""
    tasks = [HashTask(number, tuple(paths[start:start + FILES_PER_TASK]), src, config)
             for number, start in enumerate(range(0, len(paths), FILES_PER_TASK))]
    digests = np.zeros((len(paths), DIGEST_BYTES), np.uint8)
    decoded = np.zeros(len(paths), bool)
    if executor is None:
        results = map(run_hash_task, tasks)
    else:
        results = executor.run(run_hash_task, tasks, workers=min(executor.workers,
                                                                  max(1, len(tasks))),
                               describe=lambda task: f"hashing files {task.index}")
    try:
        for result in results:
            start = result.index * FILES_PER_TASK
            rows = np.frombuffer(result.digests, np.uint8).reshape(-1, DIGEST_BYTES)
            digests[start:start + len(rows)] = rows
            decoded[start:start + len(rows)] = result.decoded
    finally:
        if hasattr(results, "close"):
            results.close()  # stops the workers' other tasks when one failed
    return digests, decoded


def first_of_each(digests: np.ndarray, decoded: np.ndarray) -> dict[int, int]:
    """For each decoded file whose digest an earlier one has: its index -> the earliest's."""
    candidates = np.flatnonzero(decoded)
    if not len(candidates):
        return {}
    keys = np.ascontiguousarray(digests[candidates]).view(np.dtype((np.void, DIGEST_BYTES)))
    _, first, inverse = np.unique(keys.ravel(), return_index=True, return_inverse=True)
    earliest = candidates[first[inverse.ravel()]]
    repeated = np.flatnonzero(earliest != candidates)
    return {int(candidates[i]): int(earliest[i]) for i in repeated}
