"""Every benchmark of imgshard, printed as one table.

Usage: python benchmarks/run_all.py --corpus /work/corpus [--repeat 3] [--scratch DIR]

Builds, then peak memory, appends, merges, the cost of finding duplicates, then the reader, a
uint8 dataset read as floats, and several processes reading together (when ``imgshard.reader`` exists; its figures that need Keras or TensorFlow are left out, with a note, when those are not installed). Needs the
``bench`` extra (psutil) and the corpus made by ``make_corpus.py``; see docs/performance.md
for what each figure means.
"""

from __future__ import annotations

import importlib.util
import os

from bench_append import append_figures
from bench_build import build_figures
from bench_decoder import decoder_figures
from bench_duplicates import duplicate_figures
from bench_memory import build_memory_figures
from bench_merge import merge_figures
from harness import (Figure, benchmark_command, corpus_option, print_figures, repeat_option,
                     scratch_option)


def measure_all(corpus: str, repeat: int, folder: str) -> tuple[list[Figure], list[str]]:
    """Build figures, then memory, then the reader's, one process and several (once
    imgshard.reader exists)."""
    figures, build_notes = build_figures(corpus, None, repeat, folder)
    figures += build_memory_figures(corpus, folder)
    figures += append_figures(corpus, repeat, os.path.join(folder, "append"))[0]
    figures += merge_figures(corpus, repeat, os.path.join(folder, "merge"))[0]
    figures += duplicate_figures(corpus, repeat, os.path.join(folder, "duplicates"))[0]
    decoder, decoder_notes = decoder_figures(corpus, repeat)
    figures += decoder
    decoder_notes = build_notes + decoder_notes
    if importlib.util.find_spec("imgshard.reader") is None:
        return figures, [*decoder_notes,
                         "reader figures: not measured (imgshard.reader does not exist yet)"]
    from bench_distributed import distributed_figures
    from bench_reader import reader_figures

    from bench_uint8 import uint8_figures

    from bench_float32 import float32_figures

    reader, notes = reader_figures(corpus, repeat, folder)
    reader += float32_figures(corpus, repeat, os.path.join(folder, "float32"))[0]
    uint8, _ = uint8_figures(corpus, repeat, folder)
    distributed, more_notes = distributed_figures(corpus, repeat, folder)
    return figures + reader + uint8 + distributed, decoder_notes + notes + more_notes


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Run every benchmark and print one table."""
    print_figures(scratch, lambda folder: measure_all(corpus, repeat, folder))


if __name__ == "__main__":
    main()
