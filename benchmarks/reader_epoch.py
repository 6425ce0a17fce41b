"""One shuffled ShardReader epoch over a shard directory, as a process of its own.

Usage: python reader_epoch.py SHARDS [--batch-size 32] [--seed 0] [--verify]

``--verify`` reads with ``ShardReader(verify=True)`` (each file's sha256 checked when first
mapped). Prints one JSON line: images, bytes, seconds and CPU seconds of the epoch (the process's
threads together, from the reader's construction on, so that its checks count), and ``peak_rss``, this process's
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
    verify = "--verify" in argv
    started, cpu_started = time.perf_counter(), time.process_time()
    reader = ShardReader(argv[0], split="train", batch_size=batch_size, shuffle=True, seed=seed,
                         **({"verify": True} if verify else {}))  # older readers lack verify=
    images = moved = 0
    for x, _ in reader:
        images += len(x)
        moved += x.nbytes
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    sys.stdout.write(json.dumps({"images": images, "bytes": moved, "seconds": seconds,
                                 "cpu_seconds": cpu_seconds, "peak_rss": peak_rss()}) + "\n")


def peak_rss() -> int:
    """This process's resident-memory high-water mark in bytes (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


if __name__ == "__main__":
    main(sys.argv[1:])
