"""Time per ``model.fit`` step of a small CNN, fed one way, as a process of its own.

Usage: python fit_step.py SHARDS --data numpy|pydataset|reader|tfdata [--epochs 6] [--batch-size 32]
                         [--dtype float32] [--without-heap-pad]

``numpy``: the train split's shards loaded into memory as numpy arrays, ``fit(x, y,
shuffle=True)``; ``pydataset``: the same arrays served by the plainest ``keras.utils.PyDataset``
(random batches by fancy indexing, 2 worker threads), which is what feeding Keras from Python
costs whatever the reader; ``reader``: ``ShardReader(...).to_keras()``; ``tfdata``:
``ShardReader(...).to_tf_dataset()`` (on the TensorFlow backend). ``--dtype``: the images
in that dtype (the arrays cast once when loaded; the reader's ``dtype``), else as stored. Prints
one JSON line: the
best seconds per step over the epochs after the first (which compiles), and the process's page
faults.

A process of its own because what one fit leaves behind (TensorFlow's allocator, glibc's heap)
changes the next one's speed: in one process, a fit from a PyDataset after a fit from numpy ran
as fast as the numpy one, while run first, as a user runs it, it was 1.6-1.9x slower (see the
allocator note in ``imgshard/reader/tf.py``). Both ways import imgshard, so both get its
allocator default; set ``TF_CPU_ALLOCATOR_USE_BFC=false`` to see TensorFlow's own.
``--without-heap-pad``: ``to_keras()`` leaves glibc's heap settings alone (see
``TENSORFLOW_HEAP_PAD`` in ``imgshard/reader/tf.py``), to show what the pad is worth.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

# imported first: importing imgshard sets TensorFlow's allocator before Keras starts
from imgshard import read_manifest  # noqa: E402


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


def fit_inputs(shards: str, data: str, batch_size: int, dtype: str | None
               ) -> tuple[tuple, dict, int]:
    """``fit``'s positional data, its options, and the number of steps in an epoch."""
    import numpy as np

    from imgshard import ShardReader

    if data in ("reader", "tfdata"):
        reader = ShardReader(shards, split="train", batch_size=batch_size, shuffle=True,
                             dtype=dtype)
        fed = reader.to_keras(workers=int(os.environ.get("W", "2"))) if data == "reader" else reader.to_tf_dataset()
        return (fed,), {}, len(reader)
    shard_list = read_manifest(shards).splits["train"].shards
    x = np.concatenate([np.load(os.path.join(shards, s.images)) for s in shard_list])
    x = x if dtype is None else x.astype(dtype)
    y = np.concatenate([np.load(os.path.join(shards, s.labels)) for s in shard_list])
    steps = -(-len(x) // batch_size)
    if data == "pydataset":
        return (in_memory_pydataset(x, y, batch_size),), {}, steps
    return (x, y), {"batch_size": batch_size, "shuffle": True}, steps


def in_memory_pydataset(x, y, batch_size: int):
    """Arrays in memory as a PyDataset: a new random order per epoch, batches gathered in order."""
    import keras
    import numpy as np

    class InMemory(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=2)
            self.epoch = 0
            self.order = np.random.default_rng(self.epoch).permutation(len(x))

        def __len__(self) -> int:
            return -(-len(x) // batch_size)

        def __getitem__(self, index: int):
            chosen = np.sort(self.order[index * batch_size:(index + 1) * batch_size])
            return x[chosen], y[chosen]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = np.random.default_rng(self.epoch).permutation(len(x))

    return InMemory()


def seconds_per_step(shards: str, data: str, epochs: int, batch_size: int,
                     dtype: str | None) -> float:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    manifest = read_manifest(shards)
    inputs, options, steps = fit_inputs(shards, data, batch_size, dtype)
    timer = EpochTimer()
    model = small_cnn(tuple(manifest.image_shape), len(manifest.class_names))
    model.fit(*inputs, epochs=epochs, verbose=0, callbacks=[timer], **options)
    return min(timer.seconds[1:]) / steps


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Time per model.fit step, fed one way.")
    parser.add_argument("shards")
    parser.add_argument("--data", required=True, choices=["numpy", "pydataset", "reader", "tfdata"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--without-heap-pad", action="store_true")
    args = parser.parse_args(argv)
    if args.without_heap_pad:
        from imgshard.reader import keras as keras_adapter

        keras_adapter.keep_heap_for_keras = lambda: False
    step = seconds_per_step(args.shards, args.data, args.epochs, args.batch_size, args.dtype)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    sys.stdout.write(json.dumps({"seconds_per_step": step, "page_faults": faults}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
