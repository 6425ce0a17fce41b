"""Attacks on the near-duplicate confirmation: many images sharing one difference hash, and
hostile inputs of the thumbnail comparison."""

from __future__ import annotations

import csv
import importlib
import json
import os

import numpy as np
import pytest
from conftest import disk_full_at, one_error_line, run, write_image
from test_attack_dupes import edit_hashes
from test_leakage import CONFIG, make_source
from test_merge_duplicates import two_datasets

from imgshard import build, duplicates
from imgshard.duplicates import (
    NEAR_DISTANCE,
    NEAR_PIXELS,
    PAIRS_AT_ONCE,
    _ValueMembers,
    near_components,
)
from imgshard.image_hash import THUMBNAIL_SIDE


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("attack_near"))


def test_the_pairs_of_one_crowded_hash_value_come_a_bounded_number_at_a_time():
    """k distinct images sharing one difference hash (flat images of k colours all hash to 0)
    make k^2 / 2 candidate pairs: they must come in slices of at most PAIRS_AT_ONCE, or 20,000
    such images hold 2*10^8 pairs (gigabytes) at once."""
    count = 300  # 44,850 pairs
    members = _ValueMembers(np.zeros(count, np.int64), 1)
    slices = list(members.pairs(np.array([0]), np.array([0])))
    assert max(len(left) for left, _ in slices) <= PAIRS_AT_ONCE
    found = {(a, b) for left, right in slices for a, b in zip(left.tolist(), right.tolist())}
    assert {(min(p), max(p)) for p in found} == {(a, b) for a in range(count)
                                                 for b in range(a + 1, count)}
    assert sum(len(left) for left, _ in slices) == count * (count - 1) // 2


class CountingRows(np.ndarray):
    """Thumbnail rows that count how many are fetched to be compared."""

    fetched = 0

    def __getitem__(self, key):
        if isinstance(key, np.ndarray):
            CountingRows.fetched += len(key)
        return super().__getitem__(key)


def count_fetched(monkeypatch) -> None:
    """Count the thumbnail rows near_components fetches to compare, in CountingRows.fetched."""
    made = duplicates._ThumbnailTable.__init__

    def counting(self, *args):
        made(self, *args)
        self.rows = self.rows.view(CountingRows)
    monkeypatch.setattr(duplicates._ThumbnailTable, "__init__", counting)
    CountingRows.fetched = 0


def test_flat_images_of_other_colours_sharing_one_hash_are_not_compared_pixel_by_pixel(
        monkeypatch):
    """2,000 flat images of other colours all hash to 0: 2*10^6 candidate pairs. Their channel
    means alone tell most apart (a mean difference of the sums bounds the mean difference of
    the pixels from below), so few thumbnails are compared; the components stay exact."""
    count = 2000
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (count, 3), dtype=np.uint8)
    thumbs = np.repeat(colours[:, None, :], THUMBNAIL_SIDE ** 2, axis=1).reshape(count, -1)
    count_fetched(monkeypatch)
    labels = near_components(np.zeros(count, np.uint64), NEAR_DISTANCE,
                             lambda samples: thumbs[samples])
    assert CountingRows.fetched < count * (count - 1) // 2 // 20  # was every pair, twice
    spread = np.abs(colours[:, None, :].astype(int) - colours[None, :, :]).mean(axis=2)
    near = spread <= NEAR_PIXELS  # flat images: the thumbnails' mean difference
    expected = np.arange(count)
    while True:  # the components of `near`: each takes its least neighbour's label
        smaller = np.where(near, expected[None, :], count).min(axis=1)
        if np.array_equal(smaller, expected):
            break
        expected = smaller
    assert _same_partition(labels, expected)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(x, y) for x, y in zip(a.tolist(), b.tolist())}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("replacement", [
    np.zeros((3,), np.uint8),  # rows without an image's shape (the thumbnail unpacked none)
    np.zeros((2, 16, 16, 3), np.uint8),  # a row too few: its last sample is not there
    np.zeros((3, 8, 8, 3), np.uint8),  # rows of another size: thumbnails of other images
])
def test_verify_deep_of_a_replaced_shard_reports_it_without_a_traceback(source, tmp_path,
                                                                      replacement):
    """The shard holding the near pair's and the exact pair's samples is replaced by another
    array: verify --deep lists problems; the duplicates check neither fails nor compares what
    is not the dataset's images."""
    out = tmp_path / "out"
    build(source, str(out), CONFIG, workers=1)
    np.save(out / "train-00000.npy", replacement)
    result = run("verify", out, "--deep", "--workers", "1")
    assert result.exit_code == 1
    assert "train-00000.npy" in result.output
    assert "duplicates" not in result.output  # not a consequence reported as a second problem


def test_an_append_to_a_dataset_with_a_replaced_shard_is_one_line(tmp_path):
    src = make_source(tmp_path)
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    np.save(out / "train-00000.npy", np.zeros((3,), np.uint8))
    write_image(os.path.join(src, "train", "c0", "new.png"), seed=100)
    result = run("append", src, out, "--workers", "1", "--quiet")
    one_error_line(result, "train-00000.npy")


def strip_hash_columns(out) -> None:
    """samples.csv as a build before duplicates wrote it (its first five columns), the
    manifest's ``duplicates`` record kept: an edit no build makes."""
    path = os.path.join(out, "samples.csv")
    rows = list(csv.reader(open(path, newline="")))
    with open(path, "w", newline="") as stream:
        csv.writer(stream).writerows([row[:5] for row in rows])


def test_verify_deep_says_a_duplicates_record_without_hashes_to_back_it(source, tmp_path):
    out = tmp_path / "out"
    build(source, str(out), CONFIG, workers=1)
    strip_hash_columns(out)
    result = run("verify", out, "--deep", "--workers", "1")
    assert result.exit_code == 1
    assert "duplicates" in result.output and "no hashes" in result.output


def test_a_merge_refuses_an_input_whose_duplicates_record_has_no_hashes(tmp_path):
    """The leaked copy lies in A and B; A's rows carry no hashes although its manifest lists
    duplicates: merged, its rows had empty hash cells and the output said 'none across
    splits', a search that never looked at A."""
    a, b = two_datasets(tmp_path)
    strip_hash_columns(a)
    result = run("merge", a, b, "-o", tmp_path / "merged", "--quiet")
    one_error_line(result, "samples.csv", "no hashes")


def test_pairs_already_joined_are_not_compared_again(monkeypatch):
    """2,000 dark flat images a few levels apart (one hash, 0): every pair is near, one
    component; once the first pairs joined them, the rest need no thumbnail comparison."""
    count = 2000
    colours = np.random.default_rng(2).integers(0, 12, (count, 3), dtype=np.uint8)
    thumbs = np.repeat(colours[:, None, :], THUMBNAIL_SIDE ** 2, axis=1).reshape(count, -1)
    count_fetched(monkeypatch)
    labels = near_components(np.zeros(count, np.uint64), NEAR_DISTANCE,
                             lambda samples: thumbs[samples])
    assert (labels == 0).all()
    assert CountingRows.fetched < count * (count - 1) // 2 // 20


def test_a_resumed_build_reads_no_shard_its_manifest_does_not_list(tmp_path, monkeypatch):
    """The staged samples.csv of an interrupted build is edited (the row's length kept, as
    resume checks): its first row names '../evil0000.npy' and shares another row's fingerprint,
    so the duplicate search would read it back from outside OUT."""
    build_module = importlib.import_module("imgshard.build")
    src = make_source(tmp_path)
    out = tmp_path / "out"
    real_task = build_module.run_shard_task
    monkeypatch.setattr(build_module, "run_shard_task", disk_full_at(2))
    options = ("--size", "16", "--shard-size", "3", "--dtype", "uint8", "--workers", "1", "-q")
    assert run("build", src, out, *options).exit_code == 1
    staged = out / ".samples.csv.partial"
    lines = staged.read_bytes().decode().splitlines(keepends=True)
    header, first, second = (line.split(",") for line in lines[:3])
    assert first[header.index("shard")] == "train-00000.npy"
    first[header.index("shard")] = "../evil0000.npy"
    first[header.index("pixel_hash")] = second[header.index("pixel_hash")]
    staged.write_bytes("".join([lines[0], ",".join(first), *lines[2:]]).encode())
    np.save(tmp_path / "evil0000.npy", np.zeros((3,), np.uint8))
    monkeypatch.setattr(build_module, "run_shard_task", real_task)
    result = run("build", src, out, *options, "--resume")
    assert result.exit_code == 0, result.output


def hide_val_as_train(out) -> None:
    """samples.csv's val rows edited to say 'train': the exact copy in train and val would no
    longer look like leakage."""
    edit_hashes(out, lambda rows: [row.update(split="train") for row in rows
                                   if row["split"] == "val"])


def test_verify_says_rows_that_name_another_split_than_their_shards(source, tmp_path):
    out = tmp_path / "out"
    build(source, str(out), CONFIG, workers=1)
    hide_val_as_train(out)
    result = run("verify", out, "--workers", "1")
    assert result.exit_code == 1
    assert "val-00000.npy" in result.output and "split" in result.output


def test_an_append_finds_leakage_by_the_splits_of_the_shards_not_of_edited_rows(tmp_path):
    src = make_source(tmp_path)
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    hide_val_as_train(out)
    write_image(os.path.join(src, "train", "c0", "new.png"), seed=100)
    assert run("append", src, out, "--workers", "1", "--quiet").exit_code == 0
    groups = json.load(open(out / "manifest.json"))["duplicates"]
    assert {"kind": "exact", "paths": ["train/c0/0.png", "val/c0/0.png"],
            "splits": ["train", "val"]} in groups
