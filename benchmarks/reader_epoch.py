"""One shuffled ShardReader epoch over a shard directory, as a process of its own.

Usage: python reader_epoch.py SHARDS [--batch-size 32] [--seed 0]

Prints one JSON line: images, bytes and seconds of the epoch, and ``peak_rss``, this process's
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

    batch_size = int(argv[argv.index("--batch-size") + 1]) if "--batch-size" in argv else 32
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    reader = ShardReader(argv[0], split="train", batch_size=batch_size, shuffle=True, seed=seed)
    images = moved = 0
    started = time.perf_counter()
    for x, _ in reader:
        images += len(x)
        moved += x.nbytes
    seconds = time.perf_counter() - started
    sys.stdout.write(json.dumps({"images": images, "bytes": moved, "seconds": seconds,
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
