"""Float32 batches from float16 shards: what widening each batch costs the reader.

Usage: python benchmarks/bench_float32.py --corpus /work/corpus [--repeat 3]

The small set (1,500 ImageNet-sized photos) is built into float16 shards (224x224, about
450 MB, kept in the page cache). In this process, alternating, best of ``repeat`` each: a
shuffled epoch of ``ShardReader(dtype="float32")`` batches of 32, the same epoch with numpy's
cast alone (OpenCV hidden, as without the ``fast`` extra), and the same epoch of float16
batches (the stored dtype, no conversion).
"""

from __future__ import annotations

import os
import sys
from unittest import mock

from bench_reader import build_shards, reader_epoch, warm_page_cache
from harness import (Figure, at_least, benchmark_command, corpus_option, corpus_set,
                     print_figures, repeat_option, scratch_option)

#: float32 batches (OpenCV) against float16 batches: the conversion may cost at most a third.
GOAL = 0.75


def epoch_rate(shards: str, dtype: str, seed: int) -> float:
    """Images per second of one shuffled epoch of ``dtype`` batches."""
    epoch = reader_epoch(shards, seed, dtype=dtype)
    return epoch.images / epoch.seconds


def numpy_only_rate(shards: str, seed: int) -> float:
    from imgshard.reader import widen

    with mock.patch.dict(sys.modules, {"cv2": None}):
        widen._opencv.cache_clear()
        try:
            return epoch_rate(shards, "float32", seed)
        finally:
            widen._opencv.cache_clear()


def float32_figures(corpus: str, repeat: int, scratch: str) -> tuple[list[Figure], list[str]]:
    shards = build_shards(corpus_set(corpus, "small"), os.path.join(scratch, "shards"))
    warm_page_cache(shards)
    rates: dict[str, list[float]] = {"float32": [], "numpy": [], "float16": []}
    for seed in range(repeat):
        rates["float32"].append(epoch_rate(shards, "float32", seed))
        rates["numpy"].append(numpy_only_rate(shards, seed))
        rates["float16"].append(epoch_rate(shards, "float16", seed))
    best = {name: max(values) for name, values in rates.items()}
    notes = [f"{name}: {', '.join(f'{v:,.0f}' for v in values)} images/s"
             for name, values in rates.items()]
    return [
        Figure("float32 batches vs float16 batches", "small", best["float32"], best["float16"],
               "images/s", f">= {GOAL}x", at_least(GOAL)),
        Figure("float32 batches: OpenCV vs numpy's cast", "small", best["float32"],
               best["numpy"], "images/s", "context", None),
    ], notes


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print what float32 batches cost against float16 ones."""
    print_figures(scratch, lambda folder: float32_figures(corpus, repeat, folder))


if __name__ == "__main__":
    main()
