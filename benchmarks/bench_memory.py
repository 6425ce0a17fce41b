"""Peak memory of a whole build (parent and workers) at 1x and 10x the input.

Usage: python benchmarks/bench_memory.py --corpus /work/corpus

The 10x input is the ``small`` set ten times over, as hard links (copies where links are not
possible) in a scratch folder, so it costs no disk space beyond the 10x output (~4.5 GB).
Memory is the peak PSS summed over the build's process tree (see ``harness.py``).
"""

from __future__ import annotations

import os
import shutil

from harness import (Figure, at_most, benchmark_command, corpus_option, corpus_set,
                     imgshard_command, peak_memory, print_figures, remove_tree, scratch_option)

MEMORY_GOAL = 1.10
TIMES = 10
MB = 1e6


def repeated_input(src: str, dest: str, times: int) -> str:
    """A folder holding every file of ``src`` ``times`` times (same class folders, new names)."""
    for root, _, files in os.walk(src):
        target = os.path.join(dest, os.path.relpath(root, src))
        os.makedirs(target, exist_ok=True)
        for name in files:
            for copy in range(times):
                _link_or_copy(os.path.join(root, name), os.path.join(target, f"{copy:02d}-{name}"))
    return dest


def _link_or_copy(source: str, link: str) -> None:
    try:
        os.link(source, link)
    except OSError:
        shutil.copyfile(source, link)


def build_peak(src: str, out: str) -> int:
    """Peak PSS in bytes of ``imgshard build SRC OUT --workers 2 --quiet`` (OUT removed after)."""
    try:
        peak, _ = peak_memory([*imgshard_command(), "build", src, out, "--workers", "2", "--quiet"])
    finally:
        remove_tree(out)
    return peak


def build_memory_figures(corpus: str, scratch: str) -> list[Figure]:
    src = corpus_set(corpus, "small")
    repeated = repeated_input(src, os.path.join(scratch, f"small-x{TIMES}"), TIMES)
    try:
        once = build_peak(src, os.path.join(scratch, "memory-1x"))
        tenfold = build_peak(repeated, os.path.join(scratch, f"memory-{TIMES}x"))
    finally:
        remove_tree(repeated)
    return [Figure(f"build peak memory {TIMES}x vs 1x input", "small", tenfold / MB, once / MB,
                   "MB (PSS)", f"<= {MEMORY_GOAL}x", at_most(MEMORY_GOAL))]


@benchmark_command
@corpus_option
@scratch_option
def main(corpus: str, scratch: str | None) -> None:
    """Print the memory figures as a table."""
    print_figures(scratch, lambda folder: (build_memory_figures(corpus, folder), []))


if __name__ == "__main__":
    main()
