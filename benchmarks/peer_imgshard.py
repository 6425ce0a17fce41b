"""imgshard's side of ``bench_peers.py``: a build, or epochs of a built directory, as one process.

Usage: python peer_imgshard.py build SRC OUT
       python peer_imgshard.py epochs SRC OUT [--dtype float16] [--epochs 3]

``build`` calls ``imgshard.build(SRC, OUT, workers=2)`` (224x224 float16, every other option at
its default); ``epochs`` reads shuffled epochs of ``ShardReader(OUT, batch_size=32,
dtype=...)``, one reader for all (a new order each epoch). Prints one JSON line: images, the
seconds of the work after the imports (``seconds``, per epoch for ``epochs``) and ``peak_rss``.
"""

from __future__ import annotations

import sys
import time

from peer_common import BATCH, option, report, timed_epochs


def build(src: str, out: str) -> None:
    import imgshard

    started = time.perf_counter()
    result = imgshard.build(src, out, workers=2)
    seconds = time.perf_counter() - started
    report(images=sum(split.num_samples for split in result.manifest.splits.values()),
           seconds=seconds)


def epochs(out: str, dtype: str, count: int) -> None:
    from imgshard import ShardReader

    reader = ShardReader(out, split="train", batch_size=BATCH, shuffle=True, seed=0, dtype=dtype)
    images, seconds = timed_epochs(count, lambda seed: reader)
    report(images=images, seconds=seconds)


def main(argv: list[str]) -> None:
    if argv[0] == "build":
        build(argv[1], argv[2])
    else:
        epochs(argv[2], option(argv, "--dtype", "float16"), int(option(argv, "--epochs", "3")))


if __name__ == "__main__":
    main(sys.argv[1:])
