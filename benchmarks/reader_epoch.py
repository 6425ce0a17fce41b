"""One shuffled ShardReader epoch over a shard directory, as a process of its own.

Usage: python reader_epoch.py SHARDS [--batch-size 32] [--seed 0] [--verify]
       [--num-replicas R --rank r] [--epochs 1] [--start-at UNIX_TIME]

``--verify`` reads with ``ShardReader(verify=True)`` (each file's sha256 checked when first
mapped). ``--num-replicas``/``--rank`` read one process's part of each epoch; ``--start-at``
waits, reader made, until that time, so that processes started together read together.
Prints one JSON line: images, bytes, seconds and CPU seconds of the epochs (the process's
threads together, from the reader's construction on, so that its checks count; ``seconds``
from the start, after any wait), ``bytes_mapped`` (shard bytes the reader mapped), and
``peak_rss``, this process's
resident-memory high-water mark as the kernel counts it (``VmHWM``: exact, where sampling from
outside misses the short peak of a small epoch), mapped shard pages included. Not
``ru_maxrss``: Linux carries that over from the forked parent across ``exec``.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> None:
    from imgshard import ShardReader

    def option(name: str, default: float) -> float:
        return float(argv[argv.index(name) + 1]) if name in argv else default

    options = {"verify": True} if "--verify" in argv else {}  # older readers lack verify=
    if "--num-replicas" in argv:
        options.update(num_replicas=int(option("--num-replicas", 1)), rank=int(option("--rank", 0)))
    started, cpu_started = time.perf_counter(), time.process_time()
    reader = ShardReader(argv[0], split="train", batch_size=int(option("--batch-size", 32)),
                         shuffle=True, seed=int(option("--seed", 0)), **options)
    if "--start-at" in argv:
        time.sleep(max(0.0, option("--start-at", 0) - time.time()))
        started = time.perf_counter()
    images = moved = 0
    for _ in range(int(option("--epochs", 1))):
        for x, _ in reader:
            images += len(x)
            moved += x.nbytes
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    sys.stdout.write(json.dumps({"images": images, "bytes": moved, "seconds": seconds,
                                 "cpu_seconds": cpu_seconds,
                                 "bytes_mapped": getattr(reader, "bytes_mapped", None),
                                 "peak_rss": peak_rss()}) + "\n")


def peak_rss() -> int:
    """This process's resident-memory high-water mark in bytes (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


if __name__ == "__main__":
    main(sys.argv[1:])
