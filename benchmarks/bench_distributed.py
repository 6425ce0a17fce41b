"""Several training processes reading one shard directory, each its own part of every epoch.

Usage: python benchmarks/bench_distributed.py --corpus /work/corpus [--repeat 3]

On shards built from the ``small`` set (224x224 float16, 1,500 images, cut into shards of
``SHARD_SIZE`` so that a process's part spans many of them; page cache warm), batches of 32:

- per-process throughput when 2 processes (``num_replicas=2``, ranks 0 and 1) read their parts
  at the same time, against one process reading its part alone (rank 0 of 2: the same half):
  the slower of the two, best of ``repeat``;
- bytes each process maps per epoch with ``num_replicas`` of 2, 4 and 8 (``bytes_mapped``, the
  most of any rank, per epoch) against ``1/num_replicas`` of the split: a process's part is one
  contiguous run of the epoch's shard order, so it maps its share plus at most the two shards
  it shares with its neighbours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench_reader import build_shards, warm_page_cache
from harness import (Figure, at_least, at_most, benchmark_command, corpus_option, corpus_set,
                     print_figures, repeat_option, scratch_option, script_command)

BATCH = 32
SHARD_SIZE = 32
EPOCHS = 10  # about half a second of reading a process: long enough to time
MAPPED_EPOCHS = 3
THROUGHPUT_GOAL = 0.8
REPLICAS = (2, 4, 8)


def read_parts(shards: str, ranks: list[int], num_replicas: int) -> list[dict]:
    """Each of ``ranks`` reads its part of :data:`EPOCHS` epochs in a process of its own, all
    starting at the same moment (readers made first); each process's report."""
    start_at = time.time() + 3.0  # after every process has imported and opened its reader
    processes = [subprocess.Popen(
        [*script_command("reader_epoch.py"), shards, "--batch-size", str(BATCH),
         "--num-replicas", str(num_replicas), "--rank", str(rank), "--epochs", str(EPOCHS),
         "--start-at", str(start_at)], stdout=subprocess.PIPE, text=True) for rank in ranks]
    reports = []
    for process in processes:
        stdout, _ = process.communicate()
        if process.returncode:
            sys.exit(f"reader_epoch.py failed ({process.returncode})")
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return reports


def images_per_second(report: dict) -> float:
    return report["images"] / report["seconds"]


def throughput_figure(shards: str, repeat: int) -> Figure:
    together, alone = [], []
    for _ in range(repeat):
        together.append(min(images_per_second(r) for r in read_parts(shards, [0, 1], 2)))
        alone.append(images_per_second(read_parts(shards, [0], 2)[0]))
    return Figure("per-process epoch: 2 processes together vs 1 alone", "small", max(together),
                  max(alone), "images/s", f">= {THROUGHPUT_GOAL}x", at_least(THROUGHPUT_GOAL))


def mapped_figures(shards: str) -> list[Figure]:
    """The most bytes any rank maps per epoch, against its share of the split's bytes."""
    from imgshard import ShardReader, read_manifest
    from imgshard.reader.checks import shard_bytes

    manifest = read_manifest(shards)
    infos = manifest.splits["train"].shards
    split = sum(shard_bytes(manifest, info) for info in infos)
    largest = max(shard_bytes(manifest, info) for info in infos)
    figures = []
    for num_replicas in REPLICAS:
        most = 0
        for rank in range(num_replicas):
            reader = ShardReader(shards, batch_size=BATCH, num_replicas=num_replicas, rank=rank,
                                 prefetch=0)
            for _ in range(MAPPED_EPOCHS):
                before = reader.bytes_mapped
                for _ in reader:
                    pass
                most = max(most, reader.bytes_mapped - before)
            reader.close()
        share = split / num_replicas
        bound = (share + 2 * largest) / share
        figures.append(Figure(f"bytes mapped per process per epoch, {num_replicas} processes, "
                              f"vs 1/{num_replicas} of the split", "small", most / 1e6,
                              share / 1e6, "MB", f"<= {bound:.2f}x (1/R + 2 shards)",
                              at_most(bound)))
    return figures


def distributed_figures(corpus: str, repeat: int, scratch: str) -> tuple[list[Figure], list[str]]:
    shards = build_shards(corpus_set(corpus, "small"), os.path.join(scratch, "distributed"),
                          "--shard-size", str(SHARD_SIZE))
    warm_page_cache(shards)
    return [throughput_figure(shards, repeat), *mapped_figures(shards)], []


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print the figures of several processes reading together."""
    print_figures(scratch, lambda folder: distributed_figures(corpus, repeat, folder))


if __name__ == "__main__":
    main()
