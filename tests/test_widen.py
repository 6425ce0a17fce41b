"""Float16 shards read as float32: every value exactly numpy's ``astype(np.float32)``, whichever
conversion runs (OpenCV's with the fast extra, numpy's without)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from conftest import write_image
from imgshard import BuildConfig, ShardReader, build, read_manifest
from imgshard.reader import widen as widen_module
from imgshard.reader.widen import widen_rows

EVERY_FLOAT16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16)


def float16_dataset(tmp_path, images: int, first_bits) -> tuple[str, np.ndarray]:
    """A float16 dataset of ``images`` 4x4 images in shards of 4, its first shard's first values
    set to the float16 bit patterns ``first_bits`` (same size: read without verify); the
    directory and that shard's values."""
    src = tmp_path / "src"
    for number in range(images):
        write_image(str(src / "a" / f"{number}.png"), size=(9, 7), seed=number)
    out = str(tmp_path / "out")
    build(str(src), out, BuildConfig(size=(4, 4), shard_size=4), workers=1)
    shard = os.path.join(out, read_manifest(out).splits["train"].shards[0].images)
    pixels = np.load(shard)
    pixels.reshape(-1)[:len(first_bits)].view(np.uint16)[:] = first_bits
    np.save(shard, pixels)
    return out, pixels


@pytest.mark.parametrize("shape", [(1, 65536), (16, 4096), (4, 128, 128), (2, 128, 128, 2)])
def test_every_float16_widens_bit_for_bit_as_numpy_casts_it(converter, shape):
    """Zeros of both signs, subnormals, infinities, quiet and signalling NaNs included."""
    rows = EVERY_FLOAT16.reshape(shape)
    out = np.empty(shape, np.float32)
    widen_rows(zip(rows, out))
    assert np.array_equal(out.view(np.uint32), rows.astype(np.float32).view(np.uint32))


def test_finite_rows_take_opencv_and_equal_numpy(converter):
    finite = EVERY_FLOAT16[np.isfinite(EVERY_FLOAT16)]
    rows = np.random.default_rng(0).choice(finite, (8, 64, 64, 3))
    rows = rows[:, :, ::-1]  # not contiguous
    out = np.empty(rows.shape, np.float32)
    widen_rows(zip(rows, out))
    assert np.array_equal(out.view(np.uint32), rows.astype(np.float32).view(np.uint32))
    assert (widen_module.opencv() is not None) == (converter == "opencv")


def test_the_reader_serves_float32_batches_equal_to_the_float16_ones_cast(tmp_path, converter):
    """Through both of the reader's paths (a run of one shard, and rows of several), with a
    shard edited to hold infinities, NaNs (signalling too) and subnormals."""
    out, _ = float16_dataset(tmp_path, 10, [0x7C00, 0xFC00, 0x7E01, 0x7C01, 0x0001, 0x8000])
    for shuffle in (False, True):
        with ShardReader(out, batch_size=3, shuffle=shuffle, dtype="float16",
                         label_mode=None) as half, \
                ShardReader(out, batch_size=3, shuffle=shuffle, dtype="float32",
                            label_mode=None) as full:
            for x16, x32 in zip(half, full):
                assert x32.dtype == np.float32
                assert np.array_equal(x32.view(np.uint32), x16.astype(np.float32).view(np.uint32))


def test_the_reader_widens_float16_rows_straight_from_the_maps(tmp_path, monkeypatch):
    """Both of the reader's paths hand float16 rows to widen_rows (the fast conversion) as views
    of the mapped shards: one pass from the map into the batch, no gathered copy first."""
    from imgshard.reader import batches

    calls = []

    def recording(rows):
        rows = list(rows)
        calls.extend((source.dtype, source.flags.owndata) for source, _ in rows)
        widen_rows(rows)

    monkeypatch.setattr(batches, "widen_rows", recording)
    out, _ = float16_dataset(tmp_path, 10, [])
    for shuffle in (False, True):
        with ShardReader(out, batch_size=3, shuffle=shuffle, dtype="float32") as reader:
            assert sum(len(x) for x, _ in reader) == 10
    assert len(calls) == 2 * 10 and set(calls) == {(np.dtype(np.float16), False)}


def test_a_batch_is_widened_by_two_threads_with_the_same_values(tmp_path, monkeypatch):
    """Batches of many bytes are converted half in the reading thread and half in a helper
    thread (2 cores share the work); the values are those of one thread."""
    from imgshard.reader import batches

    threads = set()

    def recording(rows):
        threads.add(threading.current_thread().name)
        widen_rows(rows)

    monkeypatch.setattr(batches, "widen_rows", recording)
    monkeypatch.setattr(batches, "SPLIT_BYTES", 0)
    out, _ = float16_dataset(tmp_path, 10, [0x7C01, 0x0001])
    for shuffle in (False, True):
        with ShardReader(out, batch_size=5, shuffle=shuffle, dtype="float16",
                         label_mode=None) as half, \
                ShardReader(out, batch_size=5, shuffle=shuffle, dtype="float32",
                            label_mode=None, prefetch=0) as full:
            for x16, x32 in zip(half, full):
                assert np.array_equal(x32.view(np.uint32), x16.astype(np.float32).view(np.uint32))
    assert threading.current_thread().name in threads and len(threads) == 2


def test_widen_rows_from_a_map_into_a_batch_are_numpys_cast(tmp_path, converter):
    """Row by row from a memory map into rows of a batch, in any order; a row holding an
    infinity or a NaN among finite rows is numpy's cast too."""
    finite = EVERY_FLOAT16[np.isfinite(EVERY_FLOAT16)]
    stored = np.random.default_rng(1).choice(finite, (5, 16, 16, 3))
    stored[3, 2, 1] = EVERY_FLOAT16[0x7C01]  # a signalling NaN
    stored[1, 0, 0] = EVERY_FLOAT16[0xFC00]  # -inf
    np.save(tmp_path / "shard.npy", stored)
    mapped = np.load(tmp_path / "shard.npy", mmap_mode="r")
    chosen = [4, 3, 0, 1]
    batch = np.full((len(chosen), 16, 16, 3), -7, np.float32)
    widen_rows(zip((mapped[row] for row in chosen), batch))
    expected = stored[chosen].astype(np.float32)
    assert np.array_equal(batch.view(np.uint32), expected.view(np.uint32))


def test_float32_batches_through_tf_data_keep_float16_subnormals(tmp_path, converter):
    """TensorFlow runs the reader on a thread that flushes subnormal floats to zero: a float16
    subnormal (a normal float32) must still come out as numpy casts it."""
    pytest.importorskip("tensorflow")
    out, pixels = float16_dataset(tmp_path, 4, np.arange(1, 49))  # subnormal float16s
    reader = ShardReader(out, batch_size=4, shuffle=False, dtype="float32", label_mode=None)
    served = np.concatenate([x.numpy() for x in reader.to_tf_dataset()])
    assert np.array_equal(served.view(np.uint32), pixels.astype(np.float32).view(np.uint32))
