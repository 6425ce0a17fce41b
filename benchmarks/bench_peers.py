"""imgshard against the tools its users would pick instead, side by side in one run.

Usage: python benchmarks/bench_peers.py --corpus /work/corpus [--repeat 3]
       [--peers imgshard,tf-cache,tfrecord,litdata,streaming] [--peers-python PYTHON]

On the ``small`` set (1,500 ImageNet-sized photos), each tool writes every image as a float16
array of 224x224x3 with its label, then serves shuffled batches of 32 (see each peer script's
docstring for its recipe, each at its best; docs/performance.md says why each choice):
- ``imgshard``: ``imgshard.build(SRC, OUT, workers=2)``, then ``ShardReader`` (peer_imgshard.py);
- ``tf-cache``: ``image_dataset_from_directory`` + ``.cache(file)``; ``tfrecord``: TFRecords
  written and read with tf.data (peer_tf.py; need TensorFlow here);
- ``litdata``: ``optimize`` + ``StreamingDataset``; ``streaming``: MosaicML's ``MDSWriter`` +
  ``StreamingDataset`` (peer_torch.py, run by ``--peers-python``, a venv with torch, litdata
  and mosaicml-streaming: ``pip install torch==2.13.0 litdata mosaicml-streaming 'numpy<2.2'``).
A peer whose package does not import is skipped with a one-line message.

Every run is a process of its own. Builds: a first run, not timed, samples the peak memory (PSS
of the process tree, every 5 ms) and the bytes on disk; then ``repeat`` timed rounds, the tools
in turn, each into an empty folder: images/s of the whole process (start to exit) and of the
work after the imports (reported by the process). Epochs: one process per tool and dtype reads
``max(repeat, 3)`` epochs (float16 batches, then float32 batches); its resident-memory
high-water mark (``VmHWM``, mapped shard pages included) is the epoch's peak memory. Each
figure is the best run, with the spread of all; ratios are imgshard / peer.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import click

from harness import (benchmark_command, compile_imgshard, corpus_option, corpus_set, number,
                     environment, peak_memory, remove_tree, repeat_option, run_timed,
                     scratch_dir, scratch_option, script_command)

PEERS = ("imgshard", "tf-cache", "tfrecord", "litdata", "streaming")
#: Each tool's script and the names of its build and epochs commands.
RECIPES = {"imgshard": ("peer_imgshard.py", "build", "epochs"),
           "tf-cache": ("peer_tf.py", "build-cache", "epochs-cache"),
           "tfrecord": ("peer_tf.py", "build-tfrecord", "epochs-tfrecord"),
           "litdata": ("peer_torch.py", "build-litdata", "epochs-litdata"),
           "streaming": ("peer_torch.py", "build-streaming", "epochs-streaming")}
TORCH_PEERS = {"litdata": "litdata", "streaming": "streaming"}
DEFAULT_PEERS_PYTHON = "/tmp/peers-venv/bin/python"
#: The goal of issue 18: imgshard's float32 epoch against TensorFlow's cache cast to float32.
FLOAT32_GOAL = 1.2
MB = 1e6


@dataclass(frozen=True)
class Measured:
    """One figure of one tool over its runs; ``higher`` says whether more is better."""

    values: tuple[float, ...]
    higher: bool = True

    @property
    def best(self) -> float:
        return max(self.values) if self.higher else min(self.values)

    def spread(self) -> str:
        low, high = min(self.values), max(self.values)
        return number(low) if len(self.values) == 1 else f"{number(low)}-{number(high)}"


@dataclass(frozen=True)
class Tool:
    """How to run one tool's script: the command that starts it, its build and epochs."""

    name: str
    command: tuple[str, ...]
    build: str
    epochs: str

    def argv(self, action: str, src: str, out: str, *options: str) -> list[str]:
        return [*self.command, action, src, out, *options]


def select_peers(names: str) -> tuple[str, ...]:
    """The tools named in ``--peers`` (comma-separated), in the table's order; imgshard always."""
    asked = {name.strip() for name in names.split(",") if name.strip()}
    unknown = sorted(asked - set(PEERS))
    if unknown:
        raise click.BadParameter(f"unknown peer {', '.join(unknown)}; choose from "
                                 f"{', '.join(PEERS)}", param_hint="--peers")
    return tuple(name for name in PEERS if name == "imgshard" or name in asked)


def ratio(measured: Measured, baseline: Measured) -> float:
    return measured.best / baseline.best


def torchvision_stand_in(folder: str) -> str:
    """A folder holding an empty ``torchvision`` with the two names MosaicML Streaming imports
    when it loads (its vision datasets, unused here): torchvision's wheels here are CUDA builds,
    which fail to import against CPU torch."""
    package = os.path.join(folder, "torchvision")
    files = {"__init__.py": "", "datasets/__init__.py": "class VisionDataset:\n    pass\n",
             "transforms/__init__.py": "",
             "transforms/functional.py": "def to_tensor(*args, **kwargs):\n"
                                         "    raise NotImplementedError\n"}
    for name, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(package, name)), exist_ok=True)
        with open(os.path.join(package, name), "w") as stream:
            stream.write(text)
    return folder


def tool_for(name: str, peers_python: str, stand_in: str) -> Tool | str:
    """The tool named ``name``, or the one-line reason it is skipped."""
    script, build, epochs = RECIPES[name]
    if name in TORCH_PEERS:
        command = ["env", f"PYTHONPATH={stand_in}", peers_python]
        probe = subprocess.run([*command, "-c", f"import {TORCH_PEERS[name]}"],
                               capture_output=True, text=True) if os.path.exists(
                                   peers_python) else None
        if probe is None or probe.returncode:
            return (f"{name}: skipped ({TORCH_PEERS[name]} does not import with {peers_python}; "
                    f"see --peers-python)")
        return Tool(name, (*command, script_command(script)[1]), build, epochs)
    if name != "imgshard" and importlib.util.find_spec("tensorflow") is None:
        return f"{name}: skipped (TensorFlow is not installed here; pip install tensorflow-cpu)"
    return Tool(name, tuple(script_command(script)), build, epochs)


def bytes_under(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, files in os.walk(folder) for name in files)


def build_figures(tools: Sequence[Tool], src: str, repeat: int,
                  scratch: str) -> dict[str, dict[str, Measured]]:
    """Per tool: peak memory and bytes of a first build, then whole-process and work-only
    images/s over ``repeat`` rounds, the tools in turn (drift hits all alike)."""
    figures: dict[str, dict[str, Measured]] = {tool.name: {} for tool in tools}
    for tool in tools:
        out = fresh_folder(scratch, tool.name)
        peak, _ = peak_memory(tool.argv(tool.build, src, out))
        figures[tool.name]["build peak memory (MB, PSS)"] = Measured((peak / MB,), higher=False)
        figures[tool.name]["bytes on disk (MB)"] = Measured((bytes_under(out) / MB,), False)
    runs: dict[str, list[tuple[float, float]]] = {tool.name: [] for tool in tools}
    for _ in range(repeat):
        for tool in tools:
            out = fresh_folder(scratch, tool.name)
            run = run_timed(tool.argv(tool.build, src, out))
            report = run.report()
            runs[tool.name].append((report["images"] / run.seconds,
                                    report["images"] / report["seconds"]))
    for name, rates in runs.items():
        figures[name]["build, whole process (img/s)"] = Measured(tuple(r[0] for r in rates))
        figures[name]["build, work only (img/s)"] = Measured(tuple(r[1] for r in rates))
    return figures


def fresh_folder(scratch: str, name: str) -> str:
    out = os.path.join(scratch, name)
    remove_tree(out)
    os.makedirs(out)
    return out


def epoch_figures(tools: Sequence[Tool], src: str, repeat: int, scratch: str,
                  figures: dict[str, dict[str, Measured]]) -> None:
    """Add each tool's epoch rates (float16, float32 batches) and the float16 epoch's peak
    memory to ``figures``, reading what its last build wrote."""
    epochs = str(max(repeat, 3))
    for dtype in ("float16", "float32"):
        for tool in tools:
            out = os.path.join(scratch, tool.name)
            report = run_timed(tool.argv(tool.epochs, src, out, "--dtype", dtype,
                                         "--epochs", epochs)).report()
            rates = tuple(report["images"] / seconds for seconds in report["seconds"])
            figures[tool.name][f"epoch, {dtype} batches (img/s)"] = Measured(rates)
            if dtype == "float16":
                figures[tool.name]["epoch peak memory (MB, VmHWM)"] = Measured(
                    (report["peak_rss"] / MB,), higher=False)


#: The table's rows, in order: rates (more is better), then sizes (less is better).
ROWS = ("build, whole process (img/s)", "build, work only (img/s)",
        "epoch, float16 batches (img/s)", "epoch, float32 batches (img/s)",
        "bytes on disk (MB)", "build peak memory (MB, PSS)", "epoch peak memory (MB, VmHWM)")


def table_rows(figures: dict[str, dict[str, Measured]]) -> list[tuple[str, ...]]:
    """One row per figure: imgshard's best [spread], then each peer's best [spread] and the
    ratio imgshard / peer."""
    names = list(figures)
    rows = [("figure", *(f"{name} [spread]" + (" ratio" if name != "imgshard" else "")
                         for name in names))]
    for row in ROWS:
        own = figures["imgshard"][row]
        cells = [row]
        for name in names:
            measured = figures[name][row]
            cell = f"{number(measured.best)} [{measured.spread()}]"
            cells.append(cell if name == "imgshard" else f"{cell} {ratio(own, measured):.2f}x")
        rows.append(tuple(cells))
    return rows


def goal_line(figures: dict[str, dict[str, Measured]]) -> str | None:
    """Issue 18's goal: imgshard's float32 epoch against TensorFlow's cache cast to float32."""
    if "tf-cache" not in figures:
        return None
    row = "epoch, float32 batches (img/s)"
    achieved = ratio(figures["imgshard"][row], figures["tf-cache"][row])
    met = "met" if achieved >= FLOAT32_GOAL else "NOT met"
    return (f"float32 epoch vs TensorFlow's .cache() cast to float32: {achieved:.2f}x "
            f"(goal >= {FLOAT32_GOAL}x: {met})")


def echo_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        click.echo(" | ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if index == 0:
            click.echo(" | ".join("-" * width for width in widths))


def measure(names: Sequence[str], src: str, repeat: int, peers_python: str,
            folder: str) -> dict[str, dict[str, Measured]]:
    """Every figure of every tool that imports; a line for each that is skipped."""
    stand_in = torchvision_stand_in(os.path.join(folder, "stand-in"))
    tools = []
    for name in names:
        tool = tool_for(name, peers_python, stand_in)
        if isinstance(tool, str):
            click.echo(tool)
        else:
            tools.append(tool)
    figures = build_figures(tools, src, repeat, folder)
    epoch_figures(tools, src, repeat, folder, figures)
    return figures


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
@click.option("--peers", "peer_names", default=",".join(PEERS), show_default=True,
              help="The tools to compare, comma-separated (imgshard always runs).")
@click.option("--peers-python", default=DEFAULT_PEERS_PYTHON, show_default=True,
              help="The python of a venv with torch, litdata and mosaicml-streaming.")
def main(corpus: str, repeat: int, scratch: str | None, peer_names: str,
         peers_python: str) -> None:
    """Print imgshard's builds and epochs beside its peers', with ratios."""
    names = select_peers(peer_names)
    src = corpus_set(corpus, "small")
    compile_imgshard()
    folder = scratch_dir(scratch)
    try:
        figures = measure(names, src, repeat, peers_python, folder)
    finally:
        remove_tree(folder)
    click.echo("  ".join(f"{key}: {value}" for key, value in environment().items()))
    echo_table(table_rows(figures))
    for line in ("ratio: imgshard / the peer (img/s: above 1, imgshard is faster; MB: below 1, "
                 "imgshard takes less)", goal_line(figures), "tf-cache and tfrecord decode with TensorFlow (a bilinear "
                 "resize without antialiasing): less work than the others' Pillow decode, and "
                 "other pixels."):
        if line:
            click.echo(line)


if __name__ == "__main__":
    main()
