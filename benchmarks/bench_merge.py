"""What ``imgshard reshard`` and ``imgshard merge`` cost against copying the files.

Usage: python benchmarks/bench_merge.py --corpus /work/corpus [--repeat 3]

The small set (1,500 ImageNet-sized photos) is built once into float16 shards of 64 (about
430 MB). Each run then times, as whole processes, best of ``repeat``, side by side:
``imgshard reshard DATA OUT --shard-size 100`` on one thread and on every core, a merge of the
dataset with a copy of itself (twice the bytes, on every core), and the floor any re-cut of
these bytes pays: ``cp -r DATA OUT && sync`` (the same bytes read and written to disk, nothing
hashed). A reshard also verifies every input file's checksum and hashes every file it writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from harness import (
    Figure,
    at_least,
    at_most,
    benchmark_command,
    best_of,
    cores,
    corpus_option,
    corpus_set,
    imgshard_command,
    print_figures,
    remove_tree,
    repeat_option,
    run_timed,
    scratch_option,
)

#: A reshard on every core: at most this many times the plain copy of the files.
GOAL = 3.0
#: Every core against one thread, on a machine with at least two.
PARALLEL_GOAL = 1.2


def merge_figures(corpus: str, repeat: int, scratch: str) -> tuple[list[Figure], list[str]]:
    data, twin, out = (os.path.join(scratch, name) for name in ("data", "twin", "out"))
    run_timed([*imgshard_command(), "build", corpus_set(corpus, "small"), data, "--workers", "2",
               "--shard-size", "64", "--quiet"])
    shutil.copytree(data, twin)

    def empty() -> None:
        remove_tree(out)
        subprocess.run(["sync"], check=True)

    def timed(*argv: str):
        return best_of(repeat, lambda: run_timed([*argv]), empty)

    copied = timed("sh", "-c", f"cp -r '{data}' '{out}' && sync")
    reshard = [*imgshard_command(), "reshard", data, out, "--shard-size", "100", "--quiet"]
    one = timed(*reshard, "--workers", "1")
    every = timed(*reshard, "--workers", str(cores()))
    merged = timed(*imgshard_command(), "merge", data, twin, "-o", out, "--quiet", "--workers",
                   str(cores()))
    figures = [
        Figure("reshard (all cores) vs cp -r + sync", "small", every.seconds, copied.seconds,
               "s", f"<= {GOAL}x", at_most(GOAL)),
        Figure("merge of two (all cores) vs 2 x cp -r + sync", "small", merged.seconds,
               2 * copied.seconds, "s", f"<= {GOAL}x", at_most(GOAL)),
        Figure(f"reshard: 1 thread vs {cores()}", "small", one.seconds, every.seconds, "s",
               f">= {PARALLEL_GOAL}x" if cores() > 1 else "context",
               at_least(PARALLEL_GOAL) if cores() > 1 else None),
    ]
    return figures, []


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print the cost of a reshard and a merge against copying the files."""
    print_figures(scratch, lambda folder: merge_figures(corpus, repeat, folder))


if __name__ == "__main__":
    main()
