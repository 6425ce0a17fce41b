"""What every peer script of ``bench_peers.py`` shares: the labelled files, Pillow's decode, epochs
timed one by one, and the one JSON line each script prints.

Imports nothing but numpy and Pillow, so that the peers' own virtual environments (torch for
litdata and MosaicML Streaming) can run these scripts too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image

SIZE = 224
BATCH = 32
#: Samples in a per-sample shuffle buffer (tf.data), as in TensorFlow's own tutorials.
SHUFFLE_BUFFER = 1000
TABLE = (np.arange(256) / 255).astype(np.float16)


def labelled_files(src: str) -> tuple[list[str], list[int]]:
    """Every JPEG under ``src``'s class folders, sorted, with its class index (sorted names)."""
    classes = sorted(name for name in os.listdir(src) if os.path.isdir(os.path.join(src, name)))
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(src, name)
        for file in sorted(os.listdir(folder)):
            if file.lower().endswith((".jpg", ".jpeg")):
                paths.append(os.path.join(folder, file))
                labels.append(label)
    return paths, labels


def pillow_float16(path: str) -> np.ndarray:
    """The pixels imgshard's default build stores, made as directly as Pillow allows (the floor's
    recipe): ``draft()`` to no less than twice the size, an antialiased bilinear resize, then
    pixel / 255 as float16 through a table."""
    with Image.open(path) as image:
        image.draft("RGB", (2 * SIZE, 2 * SIZE))
        image = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.take(TABLE, np.asarray(image))


def option(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def timed_epochs(epochs: int, epoch: Callable[[int], Iterable]) -> tuple[int, list[float]]:
    """Run ``epoch(seed)`` ``epochs`` times, counting the first dimension of each batch's first
    item; return the images of one epoch and the seconds of each."""
    seconds, images = [], 0
    for seed in range(epochs):
        images = 0
        started = time.perf_counter()
        for batch in epoch(seed):
            images += len(batch[0])
        seconds.append(time.perf_counter() - started)
    return images, seconds


def peak_rss() -> int:
    """This process's resident-memory high-water mark in bytes (Linux ``VmHWM``; not
    ``ru_maxrss``, which Linux carries over from the forked parent across ``exec``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def report(**facts) -> None:
    """Print the one JSON line the benchmark reads, with this process's peak memory."""
    sys.stdout.write(json.dumps({**facts, "peak_rss": peak_rss()}) + "\n")
