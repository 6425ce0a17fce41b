"""Every benchmark of imgshard, printed as one table.

Usage: python benchmarks/run_all.py --corpus /work/corpus [--repeat 3] [--scratch DIR]

Builds, then peak memory, then the reader (when ``imgshard.reader`` exists; its figures that
need Keras or TensorFlow are left out, with a note, when those are not installed). Needs the
``bench`` extra (psutil) and the corpus made by ``make_corpus.py``; see "Performance" in the
README for what each figure means.
"""

from __future__ import annotations

import importlib.util

import click

from bench_build import build_figures
from bench_memory import build_memory_figures
from harness import (corpus_option, echo_table, environment, remove_tree, repeat_option,
                     scratch_dir, scratch_option)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Run every benchmark and print one table."""
    folder = scratch_dir(scratch)
    notes = []
    try:
        figures = build_figures(corpus, repeat, folder)
        figures += build_memory_figures(corpus, folder)
        if importlib.util.find_spec("imgshard.reader") is None:
            notes.append("reader figures: not measured (imgshard.reader does not exist yet)")
        else:
            from bench_reader import reader_figures

            reader, reader_notes = reader_figures(corpus, repeat, folder)
            figures += reader
            notes += reader_notes
    finally:
        remove_tree(folder)
    echo_table(figures, environment())
    for note in notes:
        click.echo(note)


if __name__ == "__main__":
    main()
