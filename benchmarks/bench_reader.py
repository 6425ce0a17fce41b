"""Reader speed and memory: a shuffled ShardReader epoch against what it replaces.

Usage: python benchmarks/bench_reader.py --corpus /work/corpus [--repeat 3]

On shards built from the ``small`` set (224x224 float16, 1,500 images, ~450 MB, page cache
warm), with batches of 32:
- bytes/s of a shuffled epoch against plainly copying the same shards, batch by batch in file
  order, out of memory maps (``np.array(mmap[i:i + 32])``): the cost of shuffling and of the
  reader's own machinery;
- images/s against ``keras.utils.image_dataset_from_directory`` over the source JPEGs (needs
  TensorFlow, installed for the benchmark only);
- time per ``model.fit`` step of a small CNN fed by ``to_keras()``, against the same data held
  in memory as numpy arrays (needs Keras and a backend);
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
FIT_EPOCHS = 3
MB = 1e6


@dataclass(frozen=True)
class Epoch:
    images: int
    bytes: int
    seconds: float


def build_shards(src: str, out: str) -> str:
    run_timed([*imgshard_command(), "build", src, out, "--workers", "2", "--quiet"])
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


def reader_epoch(shards: str, seed: int) -> Epoch:
    from imgshard import ShardReader

    reader = ShardReader(shards, split="train", batch_size=BATCH, shuffle=True, seed=seed)
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


def small_cnn(shape: tuple[int, ...], classes: int):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input(shape),
        layers.Conv2D(16, 3, strides=2, activation="relu"),
        layers.Conv2D(32, 3, strides=2, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(classes),
    ])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def seconds_per_step(fit_data, steps: int, shape: tuple[int, ...], classes: int,
                     **fit_options) -> float:
    """The best time per step over the epochs after the first (which compiles)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    timer = EpochTimer()
    small_cnn(shape, classes).fit(*fit_data, epochs=FIT_EPOCHS, verbose=0, callbacks=[timer],
                                  **fit_options)
    return min(timer.seconds[1:]) / steps


def fit_step_times(shards: str, repeat: int) -> tuple[float, float]:
    """Seconds per step fed by ``to_keras()`` and by the same data as in-memory numpy arrays."""
    from imgshard import ShardReader, read_manifest

    manifest = read_manifest(shards)
    x = np.concatenate([np.load(path) for path in shard_files(shards)])
    y = np.concatenate([np.load(path.removesuffix(".npy") + ".labels.npy")
                        for path in shard_files(shards)])
    shape, classes = tuple(manifest.image_shape), len(manifest.class_names)
    steps = -(-len(x) // BATCH)
    reader_steps, numpy_steps = [], []
    for _ in range(repeat):
        numpy_steps.append(seconds_per_step((x, y), steps, shape, classes, batch_size=BATCH,
                                            shuffle=True))
        dataset = ShardReader(shards, split="train", batch_size=BATCH, shuffle=True).to_keras()
        reader_steps.append(seconds_per_step((dataset,), steps, shape, classes))
    return min(reader_steps), min(numpy_steps)


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
    figures = [Figure("reader epoch vs copying mmaps", "small", epoch.bytes / epoch.seconds / MB,
                      copy.bytes / copy.seconds / MB, "MB/s", f">= {COPY_GOAL}x",
                      at_least(COPY_GOAL))]
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
        reader_step, numpy_step = fit_step_times(shards, repeat)
        figures.append(Figure("model.fit step: to_keras() vs numpy", "small", reader_step * 1000,
                              numpy_step * 1000, "ms/step", f"<= {STEP_GOAL}x", at_most(STEP_GOAL)))
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
