"""litdata's and MosaicML Streaming's side of ``bench_peers.py``, one process a run, in the
virtual environment that holds them (torch, and for Streaming numpy < 2.2 and a stand-in for
torchvision, which it imports when it loads but never calls to write or read MDS).

Usage: python peer_torch.py build-litdata SRC OUT | build-streaming SRC OUT
       python peer_torch.py epochs-litdata SRC OUT | epochs-streaming SRC OUT
                            [--dtype float16] [--epochs 3]

Each writes every image as a float16 array of 224x224x3 decoded by Pillow exactly as imgshard's
default build does (``peer_common.pillow_float16``), with its label, in 2 worker processes:
- ``litdata``: ``optimize(fn, inputs, OUT, chunk_bytes="64MB", num_workers=2)`` with forked
  workers (the default ``spawn`` re-imports torch in each, ~1.6 s); its epochs are
  ``StreamingDataLoader(StreamingDataset(OUT, shuffle=True), batch_size=32)`` with
  ``LITDATA_BATCH_DECODE=0`` (its default decodes a 16 MB window to serve one sample here).
- ``streaming``: one ``MDSWriter`` per half of the files, each in its own process, then
  ``merge_index`` (its documented recipe that does not pickle every array through a pipe);
  its epochs are ``DataLoader(StreamingDataset(local=OUT, shuffle=True, batch_size=32),
  batch_size=32)``.
Float32 batches are torch's ``.float()`` of each float16 batch. Prints one JSON line: images,
``seconds`` of the work after the imports (per epoch for ``epochs-*``), ``peak_rss``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

os.environ.setdefault("LITDATA_BATCH_DECODE", "0")

import torch

from peer_common import BATCH, SIZE, labelled_files, option, pillow_float16, report, timed_epochs

WORKERS = 2
MDS_COLUMNS = {"image": f"ndarray:float16:{SIZE},{SIZE},3", "label": "int"}


def sample(item: tuple[str, int]) -> dict:
    path, label = item
    return {"image": pillow_float16(path), "label": label}


def build_litdata(src: str, out: str) -> int:
    from litdata import optimize

    items = list(zip(*labelled_files(src)))
    optimize(fn=sample, inputs=items, output_dir=out, chunk_bytes="64MB", num_workers=WORKERS,
             start_method="fork", verbose=False)
    return len(items)


def write_mds(part: tuple[str, list[tuple[str, int]]]) -> None:
    from streaming import MDSWriter

    out, items = part
    with MDSWriter(out=out, columns=MDS_COLUMNS) as writer:
        for item in items:
            writer.write(sample(item))


def build_streaming(src: str, out: str) -> int:
    from streaming.base.util import merge_index

    items = list(zip(*labelled_files(src)))
    half = (len(items) + 1) // 2
    parts = [(os.path.join(out, str(i)), items[i * half:(i + 1) * half]) for i in range(WORKERS)]
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        pool.map(write_mds, parts)
    merge_index(out, keep_local=True)
    return len(items)


def batches(loader, dtype: str):
    for batch in loader:
        images = batch["image"]
        yield (images.float() if dtype == "float32" else images), batch["label"]


def litdata_loader(out: str):
    from litdata import StreamingDataLoader, StreamingDataset

    dataset = StreamingDataset(out, shuffle=True, seed=0)
    return StreamingDataLoader(dataset, batch_size=BATCH)


def streaming_loader(out: str):
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    dataset = StreamingDataset(local=out, shuffle=True, shuffle_seed=0, batch_size=BATCH)
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH)


def main(argv: list[str]) -> None:
    command, src, out = argv[:3]
    dtype, epochs = option(argv, "--dtype", "float16"), int(option(argv, "--epochs", "3"))
    started = time.perf_counter()
    if command.startswith("build-"):
        build = build_litdata if command == "build-litdata" else build_streaming
        images = build(src, out)
        report(images=images, seconds=time.perf_counter() - started)
        return
    loader = (litdata_loader if command == "epochs-litdata" else streaming_loader)(out)
    images, seconds = timed_epochs(epochs, lambda seed: batches(loader, dtype))
    report(images=images, seconds=seconds)


if __name__ == "__main__":
    main(sys.argv[1:])
