"""What every benchmark shares: the machine's description, timed runs, peak memory, the table.

Every figure is a ratio of two runs made side by side in the same benchmark run, on the same
machine and corpus, so that the absolute speed of a machine cancels out. Times are the best of
``repeat`` runs (as ``timeit`` reports), which is the least disturbed by other load.

Memory is the peak, over the whole run, of the proportional set size (PSS) summed over a process
and all its descendants, sampled every few milliseconds with psutil. PSS charges a page shared by
several processes (a worker forked from its parent, a memory-mapped shard) to each of them in
proportion, so the sum is the memory the whole build really holds, unlike a sum of RSS.
"""

from __future__ import annotations

import compileall
import dataclasses
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import click

#: Seconds between two memory samples.
SAMPLE_INTERVAL = 0.005
SETS = ("small", "large")


@dataclass(frozen=True)
class Figure:
    """One row of the table: imgshard's measure against its baseline, and the goal for the ratio."""

    name: str
    corpus_set: str
    measured: float
    baseline: float
    unit: str
    goal: str
    #: None for a row that gives context (what the machine allows), not a goal.
    ratio_meets: Callable[[float], bool] | None = dataclasses.field(repr=False, compare=False)

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.ratio_meets is None else self.ratio_meets(self.ratio)


@dataclass(frozen=True)
class Run:
    """A timed run of a whole process: its wall time, what it printed on stdout, and the CPU
    time of it and its children (threads included; None: not measured)."""

    seconds: float
    stdout: str
    cpu_seconds: float | None = None

    def report(self) -> dict:
        """The JSON object a benchmark script printed as its last line."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def at_least(goal: float) -> Callable[[float], bool]:
    return lambda ratio: ratio >= goal


def at_most(goal: float) -> Callable[[float], bool]:
    return lambda ratio: ratio <= goal


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def environment() -> dict[str, str]:
    """The facts a reader needs to compare a table with their own machine."""
    import numpy
    import PIL
    from PIL import features

    import imgshard

    facts = {
        "cores": str(cores()),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "imgshard": imgshard.__version__ + (" (editable install)" if _is_editable() else ""),
        "pillow": PIL.__version__,
        "libjpeg-turbo": str(features.version("libjpeg_turbo")),
        "numpy": numpy.__version__,
    }
    optional = {"keras": ["keras"], "tensorflow": ["tensorflow", "tensorflow-cpu"], "jax": ["jax"]}
    for name, distributions in optional.items():
        version = next(filter(None, map(_version_of, distributions)), None)
        if version:
            facts[name] = version
    return facts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _is_editable() -> bool:
    """Whether imgshard is installed with ``pip install -e``: its import hook costs every start
    of ``imgshard build`` ~50M instructions (~20 ms here) that an installed imgshard does not."""
    from importlib import metadata

    direct_url = metadata.distribution("imgshard").read_text("direct_url.json") or "{}"
    return json.loads(direct_url).get("dir_info", {}).get("editable", False)


def _version_of(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def imgshard_command() -> list[str]:
    """How a user starts imgshard from this environment: the console script next to python."""
    script = os.path.join(os.path.dirname(sys.executable), "imgshard")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "imgshard"]


def script_command(name: str) -> list[str]:
    """Run one of the benchmark scripts in this folder with this interpreter."""
    return [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), name)]


def run_timed(argv: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` as a whole process (in ``env``, default ours) and time it from start to exit."""
    started, cpu = time.perf_counter(), children_cpu_seconds()
    done = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise click.ClickException(f"{' '.join(argv)} failed:\n{done.stderr.strip()}")
    return Run(seconds, done.stdout, children_cpu_seconds() - cpu)


def children_cpu_seconds() -> float:
    """User and system CPU time of this process's ended (and waited for) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def best_of(repeat: int, run: Callable[[], Run], before: Callable[[], None] = lambda: None) -> Run:
    """The fastest of ``repeat`` runs (``before`` runs ahead of each, e.g. to clear an output)."""
    runs = []
    for _ in range(repeat):
        before()
        runs.append(run())
    return min(runs, key=lambda r: r.seconds)


def peak_memory(argv: Sequence[str]) -> tuple[int, Run]:
    """Run ``argv``; return the peak PSS in bytes summed over its process tree, and the run."""
    import psutil

    started = time.perf_counter()
    process = psutil.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_pss(process))
            time.sleep(SAMPLE_INTERVAL)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    if process.returncode:
        raise click.ClickException(f"{' '.join(argv)} failed:\n{stderr.strip()}")
    return peak[0], Run(seconds, stdout)


def _tree_pss(process) -> int:
    import psutil

    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_full_info().pss
        except psutil.Error:
            pass  # the process ended between listing and sampling
    return total


def benchmark_command(function: Callable) -> click.Command:
    """A benchmark's command line (a new ``click.command`` each: one shared decorator kept the
    help text of the first script it made, so run_all.py's --help was bench_append.py's)."""
    return click.command(context_settings={"help_option_names": ["-h", "--help"]})(function)



corpus_option = click.option(
    "--corpus", required=True, type=click.Path(file_okay=False),
    help="Folder made by make_corpus.py (holds small/ and large/).")
repeat_option = click.option(
    "--repeat", default=3, show_default=True, help="Runs per measurement; the best counts.")
scratch_option = click.option(
    "--scratch", type=click.Path(file_okay=False), help="Where outputs go (default: /tmp).")


def scratch_dir(parent: str | None) -> str:
    """A fresh folder for outputs, removed by :func:`remove_tree` when the benchmark ends."""
    return tempfile.mkdtemp(prefix="imgshard-bench-", dir=parent)


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def corpus_set(corpus: str, name: str) -> str:
    path = os.path.join(corpus, name)
    if not os.path.isdir(path):
        raise click.ClickException(
            f"{path} is missing: make the corpus with "
            f"`python make_corpus.py --out {corpus}` (see docs/performance.md)")
    return path


def count_images(folder: str) -> int:
    return sum(1 for _, _, files in os.walk(folder) for name in files if name.endswith(".jpg"))


def print_figures(scratch: str | None,
                  measure: Callable[[str], tuple[list[Figure], list[str]]]) -> None:
    """Run ``measure`` (figures and notes) in a fresh scratch folder, then print the table."""
    compile_imgshard()
    folder = scratch_dir(scratch)
    try:
        figures, notes = measure(folder)
    finally:
        remove_tree(folder)
    echo_table(figures, environment())
    for note in notes:
        click.echo(note)


def compile_imgshard() -> None:
    """Compile imgshard's modules to bytecode before any timed run, as ``pip install`` does.

    An editable install where PYTHONDONTWRITEBYTECODE is set (as on the machines here) would
    otherwise compile them anew at every start of ``imgshard build``: 185M instructions, about
    70 ms of a 2-second build, which no user of an installed imgshard pays.
    """
    package = os.path.dirname(importlib.util.find_spec("imgshard").origin)
    if not compileall.compile_dir(package, quiet=1):
        raise click.ClickException(f"could not compile {package} to bytecode")


def echo_table(figures: Sequence[Figure], facts: dict[str, str]) -> None:
    """Print the machine's facts and one row per figure."""
    click.echo("  ".join(f"{key}: {value}" for key, value in facts.items()))
    header = ("figure", "set", "imgshard", "baseline", "unit", "ratio", "goal", "met")
    rows = [(f.name, f.corpus_set, number(f.measured), number(f.baseline), f.unit,
             f"{f.ratio:.2f}x", f.goal, {True: "yes", False: "NO", None: "-"}[f.met]) for f in figures]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        click.echo(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
