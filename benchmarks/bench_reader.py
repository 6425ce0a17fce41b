"""Reader speed and memory: a shuffled ShardReader epoch against what it replaces.

Usage: python benchmarks/bench_reader.py --corpus /work/corpus [--repeat 3]

On shards built from the ``small`` set (224x224 float16, 1,500 images, ~450 MB, page cache
warm), with batches of 32:
- bytes/s of a shuffled epoch against plainly copying the same shards, batch by batch in file
  order, out of memory maps (``np.array(mmap[i:i + 32])``): the cost of shuffling and of the
  reader's own machinery; as context, a reader's first epoch with ``verify=True`` (every file's
  sha256 checked as it is first mapped) against one without;
- images/s against ``keras.utils.image_dataset_from_directory`` over the source JPEGs (needs
  TensorFlow, installed for the benchmark only);
- time per ``model.fit`` step of a small CNN fed by ``to_keras()``, against the same data held
  in memory as numpy arrays, each fit a process of its own (``fit_step.py``; needs Keras and a
  backend); as context, the same data in memory fed through the plainest PyDataset (what any
  input fed from Python costs in Keras), and ``to_keras()`` without each setting imgshard makes
  for TensorFlow: with TensorFlow's own CPU allocator, and without the glibc heap pad;
- peak memory (PSS) of a whole epoch's process over the 1x shards and over 10x as many.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

from bench_memory import TIMES, repeated_input
from harness import (Figure, at_least, at_most, benchmark_command, corpus_option, corpus_set,
                     imgshard_command, print_figures, remove_tree, repeat_option,
                     run_timed, scratch_option, script_command)

BATCH = 32
COPY_GOAL, KERAS_GOAL, STEP_GOAL, MEMORY_GOAL = 0.7, 10.0, 1.05, 1.10
#: The fit from numpy arrays ran some epochs at 1.5x its best time per step (106-108 against
#: 71 ms, the same CPU time: its input pipeline left the cores idle), and with 3 epochs often
#: had no fast one to take the best of; 6 gave every fit its steady state.
FIT_EPOCHS = 6
MB = 1e6


@dataclass(frozen=True)
class Epoch:
    images: int
    bytes: int
    seconds: float


def build_shards(src: str, out: str, *options: str) -> str:
    """``imgshard build SRC OUT`` with 2 workers and ``options``."""
    run_timed([*imgshard_command(), "build", src, out, "--workers", "2", "--quiet", *options])
    return out


def shard_files(shards: str) -> list[str]:
    from imgshard import read_manifest

    manifest = read_manifest(shards)
    return [os.path.join(shards, s.images) for s in manifest.splits["train"].shards]


def warm_page_cache(shards: str) -> None:
    for name in os.listdir(shards):
        with open(os.path.join(shards, name), "rb") as stream:
            while stream.read(1 << 24):
                pass


def reader_epoch(shards: str, seed: int, **options) -> Epoch:
    """One shuffled epoch of ``shards``' train split (``options``: more ShardReader options,
    e.g. ``verify`` or ``dtype``)."""
    from imgshard import ShardReader

    reader = ShardReader(shards, split="train", batch_size=BATCH, shuffle=True, seed=seed,
                         **options)
    images = moved = 0
    started = time.perf_counter()
    for x, _ in reader:
        images += len(x)
        moved += x.nbytes
    return Epoch(images, moved, time.perf_counter() - started)


def mmap_copy_epoch(shards: str) -> Epoch:
    """The plainest read of the same bytes: each shard in order, a batch at a time, copied."""
    images = moved = 0
    started = time.perf_counter()
    for path in shard_files(shards):
        rows = np.load(path, mmap_mode="r")
        for start in range(0, len(rows), BATCH):
            batch = np.array(rows[start:start + BATCH])
            images += len(batch)
            moved += batch.nbytes
        del rows
    return Epoch(images, moved, time.perf_counter() - started)


def keras_directory_epoch(src: str) -> Epoch:
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        src, image_size=(224, 224), batch_size=BATCH, shuffle=True, seed=0, verbose=False)
    images = moved = 0
    started = time.perf_counter()
    for x, _ in dataset:
        images += int(x.shape[0])
        moved += int(np.prod(x.shape)) * 4
    return Epoch(images, moved, time.perf_counter() - started)


#: The ``to_keras()`` fits that show what each of imgshard's TensorFlow settings is worth: the
#: reader's name for ``fit_step_times``, and the environment and ``fit_step.py`` options that
#: leave that setting out.
TENSORFLOW_VARIANTS = {
    "reader, TF allocator": ({"TF_CPU_ALLOCATOR_USE_BFC": "false"}, ()),
    "reader, no heap pad": ({}, ("--without-heap-pad",)),
}


def fit_step(shards: str, data: str, env: dict[str, str] | None = None,
             options: tuple[str, ...] = ()) -> float:
    """Seconds per ``fit`` step fed by ``data`` (``numpy``, ``pydataset`` or ``reader``), in a
    fresh process whose environment adds ``env``, with ``fit_step.py``'s ``options``."""
    argv = [*script_command("fit_step.py"), shards, "--data", data, "--epochs", str(FIT_EPOCHS),
            "--batch-size", str(BATCH), *options]
    return run_timed(argv, env=dict(os.environ, **env) if env else None).report()[
        "seconds_per_step"]


def tensorflow_backend() -> bool:
    """Whether the fits run on TensorFlow: installed, and Keras not told to use another backend."""
    return (importlib.util.find_spec("tensorflow") is not None
            and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow")


def fit_step_times(shards: str, repeat: int) -> dict[str, float]:
    """Best seconds per step fed by ``numpy`` arrays, an in-memory ``pydataset``, the ``reader``
    and, on TensorFlow, the reader without each of the settings imgshard makes for it
    (:data:`TENSORFLOW_VARIANTS`); each fit in a process of its own, in turn."""
    runs: dict[str, list[float]] = {}
    for _ in range(repeat):
        for data in ("numpy", "pydataset", "reader"):
            runs.setdefault(data, []).append(fit_step(shards, data))
        if tensorflow_backend():
            for name, (env, options) in TENSORFLOW_VARIANTS.items():
                runs.setdefault(name, []).append(fit_step(shards, "reader", env, options))
    return {data: min(seconds) for data, seconds in runs.items()}


def reader_peak(shards: str) -> int:
    """The resident-memory high-water mark of a process that reads one epoch of ``shards``."""
    run = run_timed([*script_command("reader_epoch.py"), shards])
    return json.loads(run.stdout)["peak_rss"]


def reader_figures(corpus: str, repeat: int, scratch: str) -> tuple[list[Figure], list[str]]:
    """The reader's figures, and notes on those that could not be measured here."""
    src = corpus_set(corpus, "small")
    shards = build_shards(src, os.path.join(scratch, "reader-1x"))
    warm_page_cache(shards)
    epochs = [reader_epoch(shards, seed) for seed in range(repeat)]
    epoch = min(epochs, key=lambda e: e.seconds)
    copy = min((mmap_copy_epoch(shards) for _ in range(repeat)), key=lambda e: e.seconds)
    checked = min((reader_epoch(shards, seed, verify=True) for seed in range(repeat)),
                  key=lambda e: e.seconds)
    figures = [Figure("reader epoch vs copying mmaps", "small", epoch.bytes / epoch.seconds / MB,
                      copy.bytes / copy.seconds / MB, "MB/s", f">= {COPY_GOAL}x",
                      at_least(COPY_GOAL)),
               Figure("first epoch, verify=True vs without", "small",
                      checked.bytes / checked.seconds / MB, epoch.bytes / epoch.seconds / MB,
                      "MB/s", "context", None)]
    notes = []
    if importlib.util.find_spec("tensorflow") is None:
        notes.append("reader vs image_dataset_from_directory: not measured (TensorFlow is not "
                     "installed here; pip install tensorflow-cpu)")
    else:
        keras_epoch = min((keras_directory_epoch(src) for _ in range(repeat)),
                          key=lambda e: e.seconds)
        figures.append(Figure("reader vs image_dataset_from_directory", "small",
                              epoch.images / epoch.seconds,
                              keras_epoch.images / keras_epoch.seconds, "images/s",
                              f">= {KERAS_GOAL:g}x", at_least(KERAS_GOAL)))
    if importlib.util.find_spec("keras") is None:
        notes.append("model.fit step figure: not measured (Keras is not installed here; "
                     "pip install 'imgshard[keras]')")
    else:
        steps = {data: seconds * 1000 for data, seconds in fit_step_times(shards, repeat).items()}
        figures.append(Figure("model.fit step: to_keras() vs numpy", "small", steps["reader"],
                              steps["numpy"], "ms/step", f"<= {STEP_GOAL}x", at_most(STEP_GOAL)))
        figures.append(Figure("model.fit step: in-memory PyDataset vs numpy", "small",
                              steps["pydataset"], steps["numpy"], "ms/step", "context", None))
        for name, label in (("reader, TF allocator", "to_keras(), TF's allocator"),
                            ("reader, no heap pad", "to_keras() without the heap pad")):
            if name in steps:
                figures.append(Figure(f"model.fit step: {label}, vs numpy", "small", steps[name],
                                      steps["numpy"], "ms/step", "context", None))
    figures.append(reader_memory_figure(src, shards, scratch))
    return figures, notes


def reader_memory_figure(src: str, shards: str, scratch: str) -> Figure:
    repeated = repeated_input(src, os.path.join(scratch, f"reader-input-x{TIMES}"), TIMES)
    try:
        big = build_shards(repeated, os.path.join(scratch, f"reader-{TIMES}x"))
    finally:
        remove_tree(repeated)
    try:
        warm_page_cache(big)
        once, tenfold = reader_peak(shards), reader_peak(big)
    finally:
        remove_tree(big)
    return Figure(f"reader peak memory {TIMES}x vs 1x shards", "small", tenfold / MB, once / MB,
                  "MB (max RSS)", f"<= {MEMORY_GOAL}x", at_most(MEMORY_GOAL))


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print the reader figures as a table."""
    print_figures(scratch, lambda folder: reader_figures(corpus, repeat, folder))


if __name__ == "__main__":
    main()
