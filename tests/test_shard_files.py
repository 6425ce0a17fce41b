"""Writing shard files row by row: standard .npy bytes, true checksums, nothing half-written."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from imgshard.formats.npy import RowStream, read_rows, write_rows_atomically
from imgshard.storage.files import atomic_file


def test_rows_streamed_from_one_reused_buffer_make_the_same_file_as_np_save(tmp_path):
    images = np.arange(5 * 2 * 3, dtype=np.float16).reshape(5, 2, 3)
    buffer = np.empty((1, 2, 3), dtype=np.float16)

    def rows():
        for image in images:
            buffer[0] = image
            yield buffer

    path = str(tmp_path / "train-00000.npy")
    digest = write_rows_atomically(path, rows(), rows=5, row_shape=(2, 3), dtype=np.float16)
    np.save(tmp_path / "reference.npy", images)
    written = open(path, "rb").read()
    assert written == (tmp_path / "reference.npy").read_bytes()
    assert digest == hashlib.sha256(written).hexdigest()


def test_a_row_count_other_than_the_header_s_leaves_no_file(tmp_path):
    path = str(tmp_path / "train-00000.npy")
    with pytest.raises(ValueError, match="2 rows written but the header says 3"):
        write_rows_atomically(path, [np.zeros((2, 4), np.uint8)], rows=3, row_shape=(4,),
                              dtype=np.uint8)
    assert os.listdir(tmp_path) == []


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
