"""What finding duplicates costs a build: at most 5% of its time.

Usage: python benchmarks/bench_duplicates.py --corpus /work/corpus [--repeat 3]

For each set (``small``: 1,500 ImageNet-sized photos, ``large``: 200 of 3 megapixels), in this
process, alternating, best of ``repeat`` each: ``imgshard.build(SET, OUT, workers=2)`` with
default options, against the same build without the search: its workers' hashing replaced by
24 constant bytes (the same ``samples.csv`` size) and the grouping at the end left out. The
ratio is the search's whole cost in the build's wall time (and, less disturbed by other load on
the machine, in the CPU time of the build and its workers): hashing every image in the workers
(the first 128 bits of the sha256 of its pixels, the difference hash), the hash columns of ``samples.csv``, reading
them back and grouping them.

Two context rows: the search's own time, measured apart (every image decoded first, then only
``image_hashes`` timed; plus ``duplicates_in`` on the built output), as a share of the build;
and ``--dedupe exact``, which decodes every file a second time before the split, against the
plain build.
"""

from __future__ import annotations

import importlib
import os
import resource
import time

import numpy as np

from harness import (Figure, at_most, benchmark_command, corpus_option, corpus_set,
                     print_figures, remove_tree, repeat_option, scratch_option)

GOAL = 1.05
WORKERS = 2


def _no_hashes(pixels, stored) -> bytes:
    return bytes(24)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children reaped so far."""
    return sum(getattr(resource.getrusage(who), field) for who in (
        resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for field in ("ru_utime", "ru_stime"))


def timed_build(src: str, out: str, *, search: bool, dedupe: str = "none") -> tuple[float, float]:
    """Wall and CPU seconds of one build of ``src`` into an empty ``out`` (workers forked after
    patching, and reaped when the build ends: their CPU time counts)."""
    from imgshard import BuildConfig

    # the modules (``imgshard.build`` the attribute is the function)
    builder = importlib.import_module("imgshard.build")
    worker = importlib.import_module("imgshard.worker")
    remove_tree(out)
    real = worker.image_hashes, builder.found_duplicates
    if not search:
        worker.image_hashes = _no_hashes
        builder.found_duplicates = lambda out, config, splits: {}
    try:
        started, cpu = time.perf_counter(), cpu_seconds()
        builder.build(src, out, BuildConfig(dedupe=dedupe), workers=WORKERS)
        return time.perf_counter() - started, cpu_seconds() - cpu
    finally:
        worker.image_hashes, builder.found_duplicates = real


def search_seconds(src: str, out: str) -> float:
    """The search's own time apart from the build: hashing every image of ``src`` as the
    workers do, shared by the workers, plus grouping the hashes of the built ``out``."""
    from imgshard import BuildConfig
    from imgshard.formats import shard_format
    from imgshard.image_hash import image_hashes
    from imgshard.leakage import duplicates_in
    from imgshard.manifest import read_manifest
    from imgshard.storage import Location
    from imgshard.transform import load_pixels

    config, hashing = BuildConfig(), 0.0
    file_format = shard_format()
    table = file_format.cast_table(config)
    for folder, _, files in os.walk(src):
        for name in sorted(files):
            pixels = load_pixels(os.path.join(folder, name), config)
            stored = np.empty(pixels.shape, config.dtype)
            file_format.store_pixels(pixels, table, stored)
            started = time.perf_counter()
            image_hashes(pixels, stored)
            hashing += time.perf_counter() - started
    location = Location.of(out)
    started = time.perf_counter()
    manifest = read_manifest(location)
    duplicates_in(location, BuildConfig.from_dict(manifest.config), manifest.splits)
    return hashing / WORKERS + time.perf_counter() - started


def duplicate_figures(corpus: str, repeat: int, scratch: str) -> tuple[list[Figure], list[str]]:
    figures = []
    for name in ("small", "large"):
        src, out = corpus_set(corpus, name), os.path.join(scratch, name)
        with_search, without = [], []
        for _ in range(repeat):
            with_search.append(timed_build(src, out, search=True))
            without.append(timed_build(src, out, search=False))
        plain = min(wall for wall, _ in without)
        searched = min(wall for wall, _ in with_search)
        figures.append(Figure("build with duplicate search vs without", name, searched, plain,
                              "s", f"<= {GOAL}x", at_most(GOAL)))
        figures.append(Figure("  the same, CPU time of all processes", name,
                              min(cpu for _, cpu in with_search), min(cpu for _, cpu in without),
                              "s", f"<= {GOAL}x", at_most(GOAL)))
        timed_build(src, out, search=True)
        figures.append(Figure("duplicate search alone vs build without it", name,
                              search_seconds(src, out), plain, "s", "context", None))
        deduped = min(timed_build(src, out, search=True, dedupe="exact")[0]
                      for _ in range(repeat))
        figures.append(Figure("build --dedupe exact vs build", name, deduped, searched,
                              "s", "context", None))
    return figures, []


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print what the duplicate search costs a build."""
    print_figures(scratch, lambda folder: duplicate_figures(corpus, repeat, folder))


if __name__ == "__main__":
    main()
