"""Shard files: .npy rows written as a stream (true checksums, nothing half-written), the names
of a shard directory, and the format seam (a second format, defined here, used for a build)."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import types

import numpy as np
import pytest
from conftest import build_small, disk_full_at
from hypothesis import given
from hypothesis import strategies as st

from imgshard import ImgshardError, ShardReader
from imgshard.config import stored_values
from imgshard.errors import ShardError
from imgshard.formats import DEFAULT_FORMAT, FORMATS, shard_format
from imgshard.formats.npy import RowStream, read_rows
from imgshard.layout import (
    images_name,
    is_own_file,
    labels_name,
    part_name,
    part_prefix,
    remote_progress_name,
    temp_path,
    temp_prefix,
)
from imgshard.preview import write_preview
from imgshard.storage.files import atomic_file
from imgshard.verify import verify_directory


def test_rows_streamed_from_one_reused_buffer_make_the_same_file_as_np_save(tmp_path):
    images = np.arange(5 * 2 * 3, dtype=np.float16).reshape(5, 2, 3)
    buffer = np.empty((1, 2, 3), dtype=np.float16)

    def rows():
        for image in images:
            buffer[0] = image
            yield buffer

    path = str(tmp_path / "train-00000.npy")
    with atomic_file(path) as stream:
        writer = RowStream(stream, expected_rows=5, row_shape=(2, 3), dtype=np.float16)
        for row in rows():
            writer.append(row)
        digest = writer.finish()
    np.save(tmp_path / "reference.npy", images)
    written = open(path, "rb").read()
    assert written == (tmp_path / "reference.npy").read_bytes()
    assert digest == hashlib.sha256(written).hexdigest()


@pytest.mark.parametrize("checksum", [True, False])
@pytest.mark.parametrize("appended", [0, 3, 12])
def test_a_row_stream_that_falls_short_rewrites_its_header_and_checksum(tmp_path, appended,
                                                                        checksum):
    images = np.random.default_rng(0).random((appended, 4, 5)).astype(np.float32)
    path = str(tmp_path / ".part-train-00000.npy")
    with atomic_file(path, durable=False) as stream:
        writer = RowStream(stream, expected_rows=12, row_shape=(4, 5), dtype=np.float32,
                           checksum=checksum)
        for image in images:
            writer.append(image[np.newaxis])
        digest = writer.finish()
    np.save(tmp_path / "reference.npy", images)
    written = open(path, "rb").read()
    assert written == (tmp_path / "reference.npy").read_bytes()
    assert digest == (hashlib.sha256(written).hexdigest() if checksum else None)
    assert np.load(path).shape == (appended, 4, 5)


@pytest.mark.parametrize("chunk_bytes", [1, 7 * 4, 1 << 22])
def test_read_rows_yields_the_asked_rows_in_chunks_of_whole_rows(tmp_path, chunk_bytes):
    images = np.arange(12 * 7, dtype=np.float32).reshape(12, 7)
    np.save(tmp_path / "part.npy", images)
    chunks = [chunk.copy() for chunk in read_rows(str(tmp_path / "part.npy"), 3, 8,
                                                  chunk_bytes=chunk_bytes)]
    np.testing.assert_array_equal(np.concatenate(chunks), images[3:11])
    assert max(len(chunk) for chunk in chunks) == max(1, min(8, chunk_bytes // (7 * 4)))


# -- the names of a shard directory (imgshard.layout) ---------------------------------------------

SPLITS = st.sampled_from(["train", "val", "test"]) | st.from_regex(r"[\w.-]+", fullmatch=True)
INDICES = st.integers(min_value=0, max_value=10**8)


@given(split=SPLITS, index=INDICES, suffix=st.sampled_from([".npy", ".raw", ".rows.bin"]))
def test_every_shard_and_label_name_the_format_strings_make_is_own(split, index, suffix):
    assert is_own_file(images_name(split, index, suffix), suffix)
    assert is_own_file(labels_name(split, index, suffix), suffix)
    assert is_own_file(images_name(split, index, ".npy"), ".npy")
    assert is_own_file(labels_name(split, index, ".npy"), ".npy")
    if suffix != ".npy":  # another format's files are not the default format's
        assert not is_own_file(images_name(split, index, suffix), ".npy")


@pytest.mark.parametrize("name", [
    "train-0000.npy",  # four digits
    "train-00000.npz", "train-00000.labels.npz", "train-00000.NPY", "train-00000.npy ",
    " train-00000.npy", "train-00000", "train-00000.labels", "train-00000.label.npy",
    "train-0000a.npy", "train_00000.npy", "-00000.npy", "train-00000.labels.labels.npy",
    "train-00000.npy.tmp", "tr/ain-00000.npy", "train-00000.raw", "manifest.json",
    "samples.csv", ".tmp-0123456789ab-train-00000.npy.4242", ".imgshard-progress.jsonl",
])
def test_near_misses_are_not_own(name):
    assert not is_own_file(name, ".npy")


def test_names_are_those_imgshard_always_wrote():
    build = "0123456789ab"
    assert images_name("train", 7, ".npy") == "train-00007.npy"
    assert labels_name("val", 123456, ".npy") == "val-123456.labels.npy"
    assert part_name("train", 7, build, ".npy") == f".part-{build}-train-00007.npy"
    assert part_prefix(build) == f".part-{build}-"
    assert remote_progress_name(3) == ".imgshard-progress-000003.json"
    assert temp_path(os.path.join("a", "x.npy"), build) == \
        os.path.join("a", f".tmp-{build}-x.npy.{os.getpid()}")
    assert temp_path("x.npy") == f".tmp-x.npy.{os.getpid()}"
    assert (temp_prefix(build), temp_prefix()) == (f".tmp-{build}-", ".tmp-")


# -- a second shard format, defined here: the seam (imgshard.formats) ---------------------------

#: Larger than any .npy header, so that a size checked as .npy fails.
RAW_HEADER_BYTES = 16384


def _raw_header(rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    text = json.dumps({"shape": [rows, *row_shape], "dtype": np.dtype(dtype).str})
    return text.encode("ascii").ljust(RAW_HEADER_BYTES - 1) + b"\n"


class RawRowStream:
    """Raw C-ordered rows after a fixed-size JSON header, rewritten when rows fall short."""

    def __init__(self, stream, *, expected_rows, row_shape, dtype, checksum=True):
        self._stream, self._row_shape, self._dtype = stream, tuple(row_shape), np.dtype(dtype)
        self._checksum, self.rows = checksum, 0
        stream.write(_raw_header(expected_rows, self._row_shape, self._dtype))

    def append(self, rows):
        self._stream.write(np.ascontiguousarray(rows, dtype=self._dtype).tobytes())
        self.rows += len(rows)

    def finish(self):
        self._stream.flush()
        with open(self._stream.name, "r+b") as file:
            file.write(_raw_header(self.rows, self._row_shape, self._dtype))
            file.seek(0)
            return hashlib.file_digest(file, "sha256").hexdigest() if self._checksum else None


def _raw_expected(path, stream, shape, dtype):
    header = json.loads(stream.read(RAW_HEADER_BYTES))
    found_shape, found_dtype = tuple(header["shape"]), np.dtype(header["dtype"])
    if (shape is not None and found_shape != tuple(shape)) or \
            (dtype is not None and found_dtype != np.dtype(dtype)):
        raise ShardError(f"{path}: {found_shape} {found_dtype}, not what the manifest says")
    return found_shape, found_dtype


def raw_open_shard(path, *, shape=None, dtype=None, sha256=None, identity=None):
    with open(path, "rb") as file:
        if sha256 is not None and hashlib.file_digest(file, "sha256").hexdigest() != sha256:
            raise ShardError(f"{path}: checksum does not match the manifest")
        file.seek(0)
        found_shape, found_dtype = _raw_expected(path, file, shape, dtype)
    if not math.prod(found_shape):
        return np.zeros(found_shape, found_dtype)
    return np.memmap(path, found_dtype, "r", RAW_HEADER_BYTES, found_shape)


def raw_read_rows(path, start, count, *, chunk_bytes=1 << 22):
    yield from np.array_split(raw_open_shard(path)[start:start + count], max(1, count // 4))


def raw_check_size(path, size, *, shape, dtype):
    if size != RAW_HEADER_BYTES + math.prod(shape) * np.dtype(dtype).itemsize:
        raise ShardError(f"{path}: {size} bytes cannot hold {shape} {dtype}")


def raw_check_stream(path, stream, size, *, shape, dtype):
    _raw_expected(path, stream, shape, dtype)
    raw_check_size(path, size, shape=shape, dtype=dtype)


RAW = types.SimpleNamespace(
    SUFFIX=".raw", ESTIMATED_HEADER_BYTES=RAW_HEADER_BYTES, RowStream=RawRowStream,
    read_rows=raw_read_rows, open_shard=raw_open_shard, check_size=raw_check_size,
    check_stream=raw_check_stream,
    cast_table=lambda config: None if config.dtype == "uint8" else stored_values(
        config.rescale, config.offset, config.dtype),
    store_pixels=lambda pixels, table, out: np.copyto(
        out, pixels if table is None else table[pixels]))


def test_a_format_registered_by_name_writes_and_opens_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setitem(FORMATS, "raw", RAW)
    raw = shard_format("raw")
    images = np.random.default_rng(0).random((6, 3, 2)).astype(np.float32)
    path = str(tmp_path / images_name("train", 0, raw.SUFFIX))
    with atomic_file(path) as stream:
        writer = raw.RowStream(stream, expected_rows=8, row_shape=(3, 2), dtype=np.float32)
        for image in images:
            writer.append(image[np.newaxis])
        digest = writer.finish()
    assert os.listdir(tmp_path) == ["train-00000.raw"] and is_own_file("train-00000.raw", ".raw")
    np.testing.assert_array_equal(raw.open_shard(path, shape=(6, 3, 2), dtype="float32",
                                                 sha256=digest), images)
    np.testing.assert_array_equal(np.concatenate(list(raw.read_rows(path, 1, 4))), images[1:5])
    raw.check_size(path, os.path.getsize(path), shape=(6, 3, 2), dtype="float32")
    with pytest.raises(ShardError):
        raw.check_size(path, os.path.getsize(path), shape=(7, 3, 2), dtype="float32")


def test_an_unknown_format_name_is_one_line():
    with pytest.raises(ImgshardError, match="unknown shard format 'tar' .imgshard knows: npy."):
        shard_format("tar")


def _everything_served(directory: str) -> list:
    batches = []
    for split in ("train", "val"):
        with ShardReader(directory, split, shuffle=False) as reader:
            batches += [(images.copy(), labels.copy()) for images, labels in reader]
    return batches


def test_a_build_verify_and_read_go_through_the_format_alone(tmp_path, monkeypatch):
    """The default format swapped for the one above: every file a build writes, verify checks,
    a reader serves and preview shows is the format's, and the samples are those of .npy."""
    npy_out = build_small(tmp_path / "npy", broken=True)
    npy_batches = _everything_served(npy_out)
    write_preview(npy_out, str(tmp_path / "npy.png"))
    monkeypatch.setitem(FORMATS, DEFAULT_FORMAT, RAW)
    raw_out = build_small(tmp_path / "raw", broken=True)
    assert [name.replace(".npy", ".raw") for name in sorted(os.listdir(npy_out))] == \
        sorted(os.listdir(raw_out))
    assert verify_directory(raw_out, deep=True) == []
    for (raw_x, raw_y), (npy_x, npy_y) in zip(_everything_served(raw_out), npy_batches,
                                              strict=True):
        np.testing.assert_array_equal(raw_x, npy_x)
        np.testing.assert_array_equal(raw_y, npy_y)
    write_preview(raw_out, str(tmp_path / "raw.png"))
    assert (tmp_path / "raw.png").read_bytes() == (tmp_path / "npy.png").read_bytes()


def test_a_second_format_overwrites_and_resumes_its_own_builds(tmp_path, monkeypatch):
    """--overwrite tells the format's files from foreign ones, and --resume replays the
    checkpoints of its shards, by the format's own file names."""
    build_module = importlib.import_module("imgshard.build")
    from imgshard import BuildConfig, build

    monkeypatch.setitem(FORMATS, DEFAULT_FORMAT, RAW)
    out = build_small(tmp_path)  # no skip: each task's part becomes a shard, checkpointed
    config = BuildConfig(size=(8, 10), shard_size=4, val_split=0.3)
    reference = {name: open(os.path.join(out, name), "rb").read()
                 for name in os.listdir(out) if name.endswith(".raw")}
    build(str(tmp_path / "src"), out, config, workers=1, overwrite=True)
    real_task = build_module.run_shard_task
    monkeypatch.setattr(build_module, "run_shard_task", disk_full_at(2))
    with pytest.raises(OSError, match="No space left"):
        build(str(tmp_path / "src"), out, config, workers=1, overwrite=True)
    kept = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)
            if name.startswith("train-00000")}
    assert kept, sorted(os.listdir(out))
    monkeypatch.setattr(build_module, "run_shard_task", real_task)
    build(str(tmp_path / "src"), out, config, workers=1, resume=True)
    assert {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in kept} == kept
    assert {name: open(os.path.join(out, name), "rb").read()
            for name in os.listdir(out) if name.endswith(".raw")} == reference
