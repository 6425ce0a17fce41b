"""The loop a user would write instead of imgshard: one process, open, resize, cast, save.

Usage: python naive.py SRC OUT.npy [--size 224]

Prints one JSON line: the images converted and the seconds the loop took. Only the loop and
the final save are timed (not the interpreter's start-up nor the file listing), which favours
this baseline over imgshard, whose whole process is timed.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from PIL import Image


def list_jpegs(src: str) -> list[str]:
    return sorted(os.path.join(root, name) for root, _, files in os.walk(src)
                  for name in files if name.lower().endswith((".jpg", ".jpeg")))


def naive_loop(paths: list[str], out: str, size: int) -> None:
    images = []
    for path in paths:
        image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        images.append(np.array(image, dtype=np.float16) / 255.0)
    np.save(out, np.stack(images))


def main(argv: list[str]) -> None:
    src, out = argv[0], argv[1]
    size = int(argv[argv.index("--size") + 1]) if "--size" in argv else 224
    paths = list_jpegs(src)
    started = time.perf_counter()
    naive_loop(paths, out, size)
    seconds = time.perf_counter() - started
    sys.stdout.write(json.dumps({"images": len(paths), "seconds": seconds}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
