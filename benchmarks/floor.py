"""The floor of a build: decode, resize and cast every image in 2 processes that write nothing.

Usage: python floor.py SRC [--size 224] [--workers 2]

What no build can avoid, done as directly as Pillow allows: ``draft()`` (DCT scaling) to no
less than twice the target for JPEGs, a bilinear resize, and a float16 lookup-table cast (numpy's
fastest: two pixels a lookup, :func:`imgshard.lookup.look_up` without OpenCV), in a
pool of forked processes that return nothing. Prints one JSON line: images and seconds, timed
from before the pool starts until it has finished (the interpreter's start-up, imports and the
file listing are not timed, so every cost of imgshard's own start-up counts against it), and
``cpu_seconds``: the CPU time of the pool's processes and this one over the same span (less
disturbed than the wall time by other load on a shared machine).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import resource
import sys
import time

import numpy as np
from PIL import Image

from imgshard.lookup import look_up
from naive import list_jpegs

#: Images handed to a worker at a time: small enough to balance the two processes at the end.
CHUNK = 8
TABLE = (np.arange(256) / 255).astype(np.float16)


#: One float16 image per process, reused: the cast's output, which nothing reads.
_ROWS: dict[int, np.ndarray] = {}


def decode_resize_cast(path: str, size: int) -> None:
    with Image.open(path) as image:
        image.draft("RGB", (2 * size, 2 * size))
        image = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    row = _ROWS.setdefault(size, np.empty((size, size, 3), dtype=np.float16))
    look_up(TABLE, np.asarray(image), row, None)


def main(argv: list[str]) -> None:
    size = int(argv[argv.index("--size") + 1]) if "--size" in argv else 224
    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    paths = list_jpegs(argv[0])
    started, cpu = time.perf_counter(), cpu_seconds()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        work = functools.partial(decode_resize_cast, size=size)
        for _ in pool.imap_unordered(work, paths, chunksize=CHUNK):
            pass
    seconds = time.perf_counter() - started
    sys.stdout.write(json.dumps({"images": len(paths), "seconds": seconds,
                                 "cpu_seconds": cpu_seconds() - cpu}) + "\n")


def cpu_seconds() -> float:
    """User and system CPU time of this process and its ended children (and their threads)."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


if __name__ == "__main__":
    main(sys.argv[1:])
