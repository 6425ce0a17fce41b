"""What appending 10% more photos costs, against building the whole grown folder again.

Usage: python benchmarks/bench_append.py --corpus /work/corpus [--repeat 3]

Each set (``small``: 1,500 ImageNet-sized photos, ``large``: 200 of 3 megapixels, in class
folders) is linked into a scratch folder without every tenth file of each class; that is built
once; the small set also 4 times over under other names (6,000 photos), where the
interpreter's start-up (about 0.16 s, paid by both) weighs less. Each run then links the rest
in and times the whole ``imgshard append SRC OUT --workers 2 --quiet`` process on a copy of
that dataset, against the whole ``imgshard build`` of the grown folder into an empty OUT, best
of ``repeat`` each, side by side. Both decode with the same pool; the append also reads the
dataset's ``samples.csv`` and record of sources. The small set is also timed in this process
(``imgshard.append`` against ``imgshard.build``, alternating, best of ``repeat``): the cost of
the operations themselves, without the start-up of an interpreter.
"""

from __future__ import annotations

import os
import shutil
import time

from harness import (Figure, at_most, benchmark_command, best_of, corpus_option, corpus_set,
                     imgshard_command, print_figures, remove_tree, repeat_option, run_timed,
                     scratch_option)

GOAL = 0.15
HELD_BACK = 10  # every tenth photo of each class arrives later
LARGER = 4  # the small set linked this many times over: 6,000 photos


def link_tree(corpus: str, target: str, *, late: bool | None, copies: int = 1) -> None:
    """Hard-link (or copy) the photos of ``corpus`` into ``target``, ``copies`` times under
    other names: the early ones (``late=False``), the late ones (``True``) or all (None)."""
    for folder, _, files in os.walk(corpus):
        for copy in range(copies):
            for number, name in enumerate(sorted(files)):
                if late is not None and (number % HELD_BACK == HELD_BACK - 1) != late:
                    continue
                source = os.path.join(folder, name)
                linked = os.path.join(target, os.path.relpath(folder, corpus),
                                      name if copies == 1 else f"{copy}-{name}")
                os.makedirs(os.path.dirname(linked), exist_ok=True)
                try:
                    os.link(source, linked)
                except OSError:
                    shutil.copy2(source, linked)


def append_figures(corpus: str, repeat: int, scratch: str) -> tuple[list[Figure], list[str]]:
    figures = [append_figure(corpus, name, copies, repeat,
                             os.path.join(scratch, f"{name}{copies}"))
               for name, copies in (("small", 1), ("large", 1), ("small", LARGER))]
    return [*figures, in_process_figure(os.path.join(scratch, "small1"), repeat)], []


def in_process_figure(scratch: str, repeat: int) -> Figure:
    """The append and the build of :func:`append_figure`'s small set, called in this process."""
    import imgshard

    grown, dataset, out = (os.path.join(scratch, name) for name in ("grown", "data", "out"))
    appends, builds = [], []
    for _ in range(repeat):
        remove_tree(out)
        shutil.copytree(dataset, out)
        started = time.perf_counter()
        imgshard.append(grown, out, workers=2)
        appends.append(time.perf_counter() - started)
        remove_tree(out)
        started = time.perf_counter()
        imgshard.build(grown, out, workers=2)
        builds.append(time.perf_counter() - started)
    return Figure("append 10% vs build, in one process", "small", min(appends), min(builds),
                  "s", f"<= {GOAL}x", at_most(GOAL))


def append_figure(corpus: str, set_name: str, copies: int, repeat: int, scratch: str) -> Figure:
    photos = corpus_set(corpus, set_name)
    grown, early, dataset = (os.path.join(scratch, name) for name in ("grown", "early", "data"))
    link_tree(photos, early, late=False, copies=copies)
    link_tree(photos, grown, late=None, copies=copies)
    build = [*imgshard_command(), "build"]
    run_timed([*build, early, dataset, "--workers", "2", "--quiet"])
    out = os.path.join(scratch, "out")

    def fresh_copy() -> None:
        remove_tree(out)
        shutil.copytree(dataset, out)

    def empty() -> None:
        remove_tree(out)

    appended = best_of(repeat, lambda: run_timed(
        [*imgshard_command(), "append", grown, out, "--workers", "2", "--quiet"]), fresh_copy)
    rebuilt = best_of(repeat, lambda: run_timed([*build, grown, out, "--workers", "2", "--quiet"]),
                      empty)
    label = set_name if copies == 1 else f"{set_name} x{copies}"
    return Figure("append 10% vs build of the whole", label, appended.seconds,
                  rebuilt.seconds, "s", f"<= {GOAL}x", at_most(GOAL))


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print the cost of an append against a whole build."""
    print_figures(scratch, lambda folder: append_figures(corpus, repeat, folder))


if __name__ == "__main__":
    main()
