"""Per-image work of one decoder, once started: imgshard's (``pillow`` or ``fast``) or
TensorFlow's first pass.

Usage: python decode_work.py SRC imgshard-pillow|imgshard-fast|tensorflow|tensorflow-antialias
       [--workers 2]

``imgshard-*``: imgshard's own per-image code (``transform.load_pixels`` and the float16 cast of
``worker.store_row``, 224x224, every other option at its default) in a pool of forked processes
that write nothing, as ``floor.py`` runs the floor (chunks of ``floor.CHUNK`` images). ``tensorflow``: a first pass over
``keras.utils.image_dataset_from_directory(SRC, image_size=(224, 224))`` after TensorFlow is
imported (its bilinear resize does no antialiasing: 25.8 dB from Pillow's pixels at worst);
``tensorflow-antialias``: the same work at imgshard's quality, which that function cannot ask
for: a ``tf.data`` map (parallel, autotuned) of ``decode_jpeg`` and ``tf.image.resize(...,
antialias=True)`` over the files, batched (45.2 dB from Pillow's pixels at worst, over 100
photos of ``small``). Prints one JSON line: images, seconds and
cpu_seconds (as ``floor.py``), from before the pool starts (or the dataset is made) until the
last image is done.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from floor import CHUNK, cpu_seconds
from naive import list_jpegs

BATCH = 64


def imgshard_work(paths: list[str], decoder: str) -> None:
    """Decode and cast ``paths`` as a worker does (with OpenCV on one thread for ``fast``)."""
    from imgshard.config import BuildConfig
    from imgshard.fast_decode import one_thread
    from imgshard.formats import shard_format
    from imgshard.transform import load_pixels
    from imgshard.worker import store_row

    config = BuildConfig(decoder=decoder)
    row = np.empty(config.image_shape, dtype=np.float16)
    table = shard_format().cast_table(config)
    with one_thread(decoder):
        for path in paths:
            store_row(load_pixels(path, config), config, table, row)


def imgshard_pass(paths: list[str], decoder: str, workers: int) -> float:
    import imgshard.transform  # noqa: F401 - imported before the fork, as a build does

    chunks = [paths[start:start + CHUNK] for start in range(0, len(paths), CHUNK)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for _ in pool.imap_unordered(functools.partial(imgshard_work, decoder=decoder), chunks):
            pass
    return time.perf_counter() - started


def tensorflow_pass(src: str) -> tuple[int, float]:
    import keras

    started = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(
        src, image_size=(224, 224), batch_size=BATCH, shuffle=False, verbose=False)
    images = sum(int(x.shape[0]) for x, _ in dataset)
    return images, time.perf_counter() - started


def tensorflow_antialias_pass(paths: list[str]) -> tuple[int, float]:
    import tensorflow as tf

    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, (224, 224), method="bilinear", antialias=True)

    started = time.perf_counter()
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        load, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH)
    images = sum(int(x.shape[0]) for x in dataset)
    return images, time.perf_counter() - started


def main(argv: list[str]) -> None:
    src, kind = argv[0], argv[1]
    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    if kind.startswith("tensorflow"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import keras  # noqa: F401 - imported before the clock starts: work only
    paths = list_jpegs(src)
    cpu = cpu_seconds()
    if kind == "tensorflow":
        images, seconds = tensorflow_pass(src)
    elif kind == "tensorflow-antialias":
        images, seconds = tensorflow_antialias_pass(paths)
    else:
        images, seconds = len(paths), imgshard_pass(paths, kind.removeprefix("imgshard-"), workers)
    sys.stdout.write(json.dumps({"images": images, "seconds": seconds,
                                 "cpu_seconds": cpu_seconds() - cpu}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
