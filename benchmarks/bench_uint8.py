"""Half the disk: a ``--dtype uint8`` dataset read as floats, against copying float16 shards.

Usage: python benchmarks/bench_uint8.py --corpus /work/corpus [--repeat 3]

On the ``small`` set built twice (224x224, 1,500 images), as float16 and as uint8, page cache
warm, batches of 32, in one run, best of ``repeat`` each, taken in turn:
- images/s of a shuffled ``ShardReader(uint8, dtype="float16")`` epoch, and of one with
  ``dtype="float32"``, against the plainest read of the float16 shards: each shard in order, a
  batch at a time, copied out of a memory map (``np.array(mmap[i:i + 32])``); the goal is 0.7x;
- as context, the float16 reader's own epoch against the same copy (its row in
  bench_reader.py), and the bytes on disk of the two builds.
"""

from __future__ import annotations

import os

from bench_reader import Epoch, build_shards, mmap_copy_epoch, reader_epoch, warm_page_cache
from harness import (Figure, at_least, benchmark_command, corpus_option, corpus_set,
                     print_figures, repeat_option, scratch_option)

UINT8_GOAL = 0.7


def disk_bytes(shards: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(shards) if entry.is_file())


def uint8_figures(corpus: str, repeat: int, scratch: str) -> tuple[list[Figure], list[str]]:
    """The uint8 dataset's figures (no notes: it needs nothing but imgshard)."""
    src = corpus_set(corpus, "small")
    halves = build_shards(src, os.path.join(scratch, "uint8-as-float16"))
    bytes_ = build_shards(src, os.path.join(scratch, "uint8"), "--dtype", "uint8")
    warm_page_cache(halves)
    warm_page_cache(bytes_)
    runs: dict[str, list[Epoch]] = {}
    for seed in range(repeat):  # in turn, so that a slow spell of the machine hits all alike
        runs.setdefault("copy", []).append(mmap_copy_epoch(halves))
        runs.setdefault("float16 reader", []).append(reader_epoch(halves, seed, dtype="float16"))
        for dtype in ("float16", "float32"):
            runs.setdefault(f"uint8 as {dtype}", []).append(reader_epoch(bytes_, seed, dtype=dtype))
    best = {name: max(e.images / e.seconds for e in epochs) for name, epochs in runs.items()}
    figures = [Figure(f"uint8 read as {dtype} vs copying float16 mmaps", "small",
                      best[f"uint8 as {dtype}"], best["copy"], "images/s",
                      f">= {UINT8_GOAL}x", at_least(UINT8_GOAL))
               for dtype in ("float16", "float32")]
    figures.append(Figure("float16 reader vs copying float16 mmaps", "small",
                          best["float16 reader"], best["copy"], "images/s", "context", None))
    figures.append(Figure("disk: uint8 build vs float16 build", "small", disk_bytes(bytes_) / 1e6,
                          disk_bytes(halves) / 1e6, "MB", "context", None))
    return figures, []


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print the uint8 figures as a table."""
    print_figures(scratch, lambda folder: uint8_figures(corpus, repeat, folder))


if __name__ == "__main__":
    main()
