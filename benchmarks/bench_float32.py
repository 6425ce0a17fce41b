"""Float32 batches from float16 shards: what widening each batch costs the reader.

Usage: python benchmarks/bench_float32.py --corpus /work/corpus [--repeat 3]

The small set (1,500 ImageNet-sized photos) is built into float16 shards (224x224, about
450 MB, kept in the page cache). In this process, alternating, best of ``repeat`` each: a
shuffled epoch of ``ShardReader(dtype="float32")`` batches of 32, the same epoch with numpy's
cast alone (OpenCV hidden, as without the ``fast`` extra), and the same epoch of float16
batches (the stored dtype, no conversion); then, where TensorFlow and Keras are installed, the
same float32 against float16 epochs through ``to_tf_dataset()`` and through ``to_keras()`` (read
by Keras' own PyDataset adapter, with its 2 worker threads, as ``fit`` reads it), and the
``model.fit`` step of a small CNN (``fit_step.py``, each fit a process of its own) fed
``to_keras()`` float32 batches, and ``to_tf_dataset()`` float32 batches, against the same images
held in memory as float32 arrays (and, as context, ``to_keras()`` fed the stored float16 batches,
which the model casts itself).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable
from unittest import mock

from bench_reader import build_shards, fit_step, reader_epoch, warm_page_cache
from harness import (Figure, at_least, at_most, benchmark_command, corpus_option, corpus_set,
                     print_figures, repeat_option, scratch_option)

#: float32 batches (OpenCV) against float16 batches: the conversion may cost at most a third.
GOAL = 0.75

#: A model.fit step fed ``to_keras()`` float32 batches against one fed in-memory float32 arrays.
FIT_GOAL = 1.05


def epoch_rate(shards: str, dtype: str, seed: int) -> float:
    """Images per second of one shuffled epoch of ``dtype`` batches."""
    epoch = reader_epoch(shards, seed, dtype=dtype)
    return epoch.images / epoch.seconds


def numpy_only_rate(shards: str, seed: int) -> float:
    from imgshard.reader import widen

    with mock.patch.dict(sys.modules, {"cv2": None}):
        widen.opencv.cache_clear()
        try:
            return epoch_rate(shards, "float32", seed)
        finally:
            widen.opencv.cache_clear()


def framework_rate(shards: str, dtype: str, seed: int, framework: str) -> float:
    """Images per second of one shuffled epoch of ``dtype`` batches through ``to_tf_dataset()``
    or, as ``fit`` reads it, ``to_keras()`` (Keras' PyDataset adapter and its worker threads)."""
    from imgshard import ShardReader

    reader = ShardReader(shards, split="train", batch_size=32, shuffle=True, seed=seed,
                         dtype=dtype)
    if framework == "tf":
        batches: Callable = reader.to_tf_dataset
    else:
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

        adapter = PyDatasetAdapter(reader.to_keras(), shuffle=False)
        adapter.on_epoch_begin()
        batches = adapter.get_numpy_iterator
    started, images = time.perf_counter(), 0
    for x, _ in batches():
        images += int(x.shape[0])
    return images / (time.perf_counter() - started)


def framework_figures(shards: str, repeat: int) -> tuple[list[Figure], list[str]]:
    """float32 against float16 epochs through TensorFlow and Keras, and the fit steps."""
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
        return [], ["to_tf_dataset(), to_keras() and model.fit: not measured (pip install "
                    "'imgshard[tf]')"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rates: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    for framework in ("tf", "keras"):  # untimed: importing and starting TensorFlow and Keras
        framework_rate(shards, "float16", 0, framework)
    for seed in range(repeat):
        for framework in ("tf", "keras"):
            for dtype in ("float32", "float16"):
                rates.setdefault(f"{framework} {dtype}", []).append(
                    framework_rate(shards, dtype, seed, framework))
        for name, data, dtype in (("arrays", "numpy", "float32"), ("float32", "reader", "float32"),
                                  ("tf float32", "tfdata", "float32"),
                                  ("float16", "reader", "float16")):
            steps.setdefault(name, []).append(
                1000 * fit_step(shards, data, options=("--dtype", dtype)))
    best = {name: max(values) for name, values in rates.items()}
    fastest = {name: min(values) for name, values in steps.items()}
    notes = [f"{name}: {', '.join(f'{v:,.0f}' for v in values)} images/s"
             for name, values in rates.items()]
    notes += [f"fit step, {name}: {', '.join(f'{v:.1f}' for v in values)} ms"
              for name, values in steps.items()]
    return [
        Figure("to_tf_dataset(): float32 vs float16 batches", "small", best["tf float32"],
               best["tf float16"], "images/s", f">= {GOAL}x", at_least(GOAL)),
        Figure("to_keras() (2 workers): float32 vs float16 batches", "small",
               best["keras float32"], best["keras float16"], "images/s", f">= {GOAL}x",
               at_least(GOAL)),
        Figure("model.fit step: to_keras() float32 vs float32 arrays", "small",
               fastest["float32"], fastest["arrays"], "ms/step", f"<= {FIT_GOAL}x",
               at_most(FIT_GOAL)),
        Figure("model.fit step: to_tf_dataset() float32 vs float32 arrays", "small",
               fastest["tf float32"], fastest["arrays"], "ms/step", f"<= {FIT_GOAL}x",
               at_most(FIT_GOAL)),
        Figure("model.fit step: to_keras() float16 vs float32 arrays", "small",
               fastest["float16"], fastest["arrays"], "ms/step", "context", None),
    ], notes


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
    framework, framework_notes = framework_figures(shards, repeat)
    return [
        Figure("float32 batches vs float16 batches", "small", best["float32"], best["float16"],
               "images/s", f">= {GOAL}x", at_least(GOAL)),
        Figure("float32 batches: OpenCV vs numpy's cast", "small", best["float32"],
               best["numpy"], "images/s", "context", None),
        *framework,
    ], notes + framework_notes


@benchmark_command
@corpus_option
@repeat_option
@scratch_option
def main(corpus: str, repeat: int, scratch: str | None) -> None:
    """Print what float32 batches cost against float16 ones."""
    print_figures(scratch, lambda folder: float32_figures(corpus, repeat, folder))


if __name__ == "__main__":
    main()
