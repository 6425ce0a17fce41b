"""What full bit depth costs: a build of 16-bit images at full depth against ``--bit-depth 8``.

Usage: python benchmarks/bench_depth.py [--scratch DIR] [--images 40] [--repeat 3]

Writes ``images`` 16-bit grayscale and as many 48-bit RGB TIFFs (1024x768, LZW, smooth fields
with sensor-like noise) into a scratch folder with OpenCV (the ``depth`` extra), then times
``imgshard.build`` of each folder in this process (one worker, 256x256 float16, best of
``repeat``) at bit depth 16 and 8, and counts the distinct values of the first stored image.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from imgshard import BuildConfig, build


def write_folder(root: str, kind: str, count: int) -> str:
    import cv2

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:768, 0:1024] / 1024
    for index in range(count):
        folder = os.path.join(root, kind, f"c{index % 2}")
        os.makedirs(folder, exist_ok=True)
        field = np.sin((7 + index) * x + 3 * y) + np.cos(5 * y - (2 + index % 5) * x)
        field = (field - field.min()) / (field.max() - field.min()) * 60000
        plane = np.clip(field + rng.normal(0, 300, field.shape), 0, 65535).astype(np.uint16)
        image = plane if kind == "gray" else np.stack([plane, plane[::-1], plane[:, ::-1]], 2)
        cv2.imwrite(os.path.join(folder, f"{index:03d}.tif"), image)
    return os.path.join(root, kind)


def timed_build(src: str, out: str, bit_depth: int, repeat: int) -> tuple[float, int]:
    """Best seconds of ``repeat`` builds, and the distinct values of the first stored image."""
    best = float("inf")
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        build(src, out, BuildConfig(size=(256, 256), bit_depth=bit_depth), workers=1)
        best = min(best, time.perf_counter() - started)
    first = np.load(os.path.join(out, "train-00000.npy"), mmap_mode="r")[0]
    return best, len(np.unique(first))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", default=None)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="bench-depth-", dir=args.scratch)
    try:
        print("| folder | bit depth 16 | bit depth 8 | ratio | distinct values (16 / 8) |")
        print("| --- | --- | --- | --- | --- |")
        for kind in ("gray", "rgb"):
            src = write_folder(scratch, kind, args.images)
            deep, deep_values = timed_build(src, os.path.join(scratch, "out"), 16, args.repeat)
            eight, eight_values = timed_build(src, os.path.join(scratch, "out"), 8, args.repeat)
            print(f"| {args.images} 16-bit {kind} TIFFs | {deep:.2f} s | {eight:.2f} s | "
                  f"{deep / eight:.2f}x | {deep_values:,} / {eight_values:,} |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
