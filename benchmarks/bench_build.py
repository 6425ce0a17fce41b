"""Build speed: ``imgshard build`` against the naive loop, the floor, and itself on 1 worker.

Usage: python benchmarks/bench_build.py --corpus /work/corpus [--repeat 3]

For each set of the corpus (``small``: ImageNet-sized photos, ``large``: ~3 megapixels) it runs,
``repeat`` times in turn: the naive loop (``naive.py``), the floor (``floor.py``) in 2 processes
and in 1, and the whole ``imgshard build SRC OUT --workers N --quiet`` process for N = 1 and 2
(224x224 float16, every other option at its default). Each figure is the ratio of the best times.
The floor's own gain from a second process is printed beside the build's as context: it is what
this machine allows (two vCPUs may share a physical core, caches and memory bandwidth).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from harness import (SETS, Figure, Run, at_least, benchmark_command, corpus_option, corpus_set,
                     count_images, imgshard_command, print_figures, remove_tree, repeat_option,
                     run_timed, scratch_option, script_command)

#: Goals of the ratio build (2 workers) / naive loop, per set.
NAIVE_GOALS = {"small": 3.5, "large": 4.0}
FLOOR_GOAL = 0.85
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


def build_figures(corpus: str, repeat: int, scratch: str) -> list[Figure]:
    return [figure for name in SETS for figure in set_figures(corpus, name, repeat, scratch)]


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print the build figures as a table."""
    print_figures(scratch, lambda folder: (build_figures(corpus, repeat, folder), []))


if __name__ == "__main__":
    main()
