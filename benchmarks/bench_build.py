"""Build speed: ``imgshard build`` against the naive loop, the floor, and itself on 1 worker.

Usage: python benchmarks/bench_build.py --corpus /work/corpus [--thousands /work/corpus4500]
       [--repeat 3]

For each set of the corpus (``small``: ImageNet-sized photos, ``large``: ~3 megapixels) it runs,
``repeat`` times in turn: the naive loop (``naive.py``), the floor (``floor.py``) in 2 processes
and in 1, and the whole ``imgshard build SRC OUT --workers N --quiet`` process for N = 1 and 2
(224x224 float16, every other option at its default). Each figure is the ratio of the best times.
With ``--thousands DIR`` (a corpus made with ``make_corpus.py --out DIR --small 450 --large 1``:
4,500 photos), the whole build process (2 workers) against the floor on its ``small`` set: per
wall second and per CPU second of all the processes (the floor's CPU time counts its pool only,
not its start-up), which other load disturbs less.
The floor's own gain from a second process is printed beside the build's as context: it is what
this machine allows (two vCPUs may share a physical core, caches and memory bandwidth).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import click

from harness import (SETS, Figure, Run, at_least, benchmark_command, corpus_option, corpus_set,
                     count_images, imgshard_command, print_figures, remove_tree, repeat_option,
                     run_timed, scratch_option, script_command)

#: Goals of the ratio build (2 workers) / naive loop, per set.
NAIVE_GOALS = {"small": 3.5, "large": 4.0}
FLOOR_GOAL = 0.85
#: The goal of the whole build against the floor on a corpus of thousands of photos.
THOUSANDS_GOAL = 0.9
SCALING_GOAL = 1.8


def build_argv(src: str, out: str, workers: int) -> list[str]:
    return [*imgshard_command(), "build", src, out, "--workers", str(workers), "--quiet"]


def best_runs(commands: dict[str, Sequence[str]], repeat: int, out: str) -> dict[str, Run]:
    """Run every command ``repeat`` times, interleaved so that drift hits all alike; keep the best.

    ``out`` is removed before each run (untimed), so every build starts in an empty folder.
    """
    best: dict[str, Run] = {}
    for _ in range(repeat):
        for name, argv in commands.items():
            remove_tree(out)
            run = run_timed(argv)
            if name not in best or run.seconds < best[name].seconds:
                best[name] = run
    return best


def set_figures(corpus: str, name: str, repeat: int, scratch: str) -> list[Figure]:
    """The build figures of one corpus set."""
    src = corpus_set(corpus, name)
    images = count_images(src)
    out = os.path.join(scratch, f"build-{name}")
    runs = best_runs({
        "naive": [*script_command("naive.py"), src, os.path.join(scratch, "naive.npy")],
        "floor": [*script_command("floor.py"), src, "--workers", "2"],
        "floor1": [*script_command("floor.py"), src, "--workers", "1"],
        "build1": build_argv(src, out, 1),
        "build2": build_argv(src, out, 2),
    }, repeat, out)
    remove_tree(out)

    def rate(run: Run) -> float:
        return images / run.seconds

    def reported_rate(run: Run) -> float:
        report = run.report()
        return report["images"] / report["seconds"]

    build2 = rate(runs["build2"])
    goal = NAIVE_GOALS[name]
    return [
        Figure("build vs naive loop", name, build2, reported_rate(runs["naive"]), "images/s",
               f">= {goal}x", at_least(goal)),
        Figure("build vs floor", name, build2, reported_rate(runs["floor"]), "images/s",
               f">= {FLOOR_GOAL}x", at_least(FLOOR_GOAL)),
        Figure("build 2 workers vs 1", name, build2, rate(runs["build1"]), "images/s",
               f">= {SCALING_GOAL}x", at_least(SCALING_GOAL)),
        Figure("floor 2 processes vs 1", name, reported_rate(runs["floor"]),
               reported_rate(runs["floor1"]), "images/s", "context", None),
    ]


def thousands_figures(corpus: str, repeat: int, scratch: str) -> list[Figure]:
    """The whole build against the floor on the ``small`` set of ``corpus``, which holds
    thousands of distinct photos (made with ``make_corpus.py --small 450``: 4,500). Not the
    1,500 of the usual corpus linked 3 times: every image would then be an exact duplicate of
    two others, and the build's duplicate search would read all of its shards back to confirm
    them, which no ordinary dataset asks of it."""
    src = corpus_set(corpus, "small")
    images, out = count_images(src), os.path.join(scratch, "build-thousands")
    runs = best_runs({"floor": [*script_command("floor.py"), src, "--workers", "2"],
                      "build": build_argv(src, out, 2)}, repeat, out)
    remove_tree(out)
    floor, build = runs["floor"].report(), runs["build"]
    label, where, goal = "whole build vs floor", f"small ({images})", f">= {THOUSANDS_GOAL}x"
    return [Figure(label, where, images / build.seconds, floor["images"] / floor["seconds"],
                   "images/s", goal, at_least(THOUSANDS_GOAL)),
            Figure(label, where, images / build.cpu_seconds,
                   floor["images"] / floor["cpu_seconds"], "images/cpu-s", goal,
                   at_least(THOUSANDS_GOAL))]


def build_figures(corpus: str, thousands: str | None, repeat: int,
                  scratch: str) -> tuple[list[Figure], list[str]]:
    figures = [figure for name in SETS for figure in set_figures(corpus, name, repeat, scratch)]
    if thousands is None:
        return figures, ["whole build vs floor on thousands of photos: not measured "
                         "(give --thousands, a corpus made with make_corpus.py --small 450)"]
    return figures + thousands_figures(thousands, repeat, scratch), []


@benchmark_command
@corpus_option
@click.option("--thousands", type=click.Path(file_okay=False),
              help="A corpus of thousands of photos (make_corpus.py --small 450).")
@repeat_option
@scratch_option
def main(corpus: str, thousands: str | None, repeat: int, scratch: str | None) -> None:
    """Print the build figures as a table."""
    print_figures(scratch, lambda folder: build_figures(corpus, thousands, repeat, folder))


if __name__ == "__main__":
    main()
