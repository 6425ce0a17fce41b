"""Duplicates across merged datasets: a merge keeps every input's hashes in its ``samples.csv``
and finds the groups of the whole (an image of one input's train split in another's val is
leakage the inputs' own reports cannot see); a reshard keeps them too."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
from conftest import run, write_image
from PIL import Image

from imgshard import BuildConfig, build, merge, reshard

CONFIG = BuildConfig(size=(16, 16), shard_size=3)


def two_datasets(root) -> tuple[str, str]:
    """A (train only) and B (train and val): B's val holds an exact copy of A's photo under
    another name and a brightened copy (near) of another of A's; the rest are distinct."""
    a_src, b_src = os.path.join(root, "a-src"), os.path.join(root, "b-src")
    for number in range(5):
        write_image(os.path.join(a_src, "train", "c0", f"a{number}.png"), size=(32, 32),
                    seed=number)
        write_image(os.path.join(b_src, "train", "c1", f"b{number}.png"), size=(32, 32),
                    seed=100 + number)
    os.makedirs(os.path.join(b_src, "val", "c0"))
    shutil.copy(os.path.join(a_src, "train", "c0", "a0.png"),
                os.path.join(b_src, "val", "c0", "copy.png"))
    brighter = np.clip(np.asarray(Image.open(os.path.join(a_src, "train", "c0", "a1.png")),
                                  dtype=np.int16) + 6, 0, 255).astype(np.uint8)
    Image.fromarray(brighter).save(os.path.join(b_src, "val", "c0", "bright.png"))
    a_out, b_out = os.path.join(root, "a"), os.path.join(root, "b")
    build(a_src, a_out, CONFIG, workers=1)
    build(b_src, b_out, CONFIG, workers=1)
    return a_out, b_out


def test_a_merge_finds_the_duplicates_across_its_inputs(tmp_path):
    a, b = two_datasets(tmp_path)
    assert json.load(open(os.path.join(a, "manifest.json")))["duplicates"] == []
    assert json.load(open(os.path.join(b, "manifest.json")))["duplicates"] == []
    out = str(tmp_path / "merged")
    manifest = merge([a, b], out).manifest
    assert manifest.extra["duplicates"] == [
        {"kind": "exact", "paths": [f"{a}: train/c0/a0.png", f"{b}: val/c0/copy.png"],
         "splits": ["train", "val"]},
        {"kind": "near", "paths": [f"{a}: train/c0/a1.png", f"{b}: val/c0/bright.png"],
         "splits": ["train", "val"]},
    ]
    with open(os.path.join(out, "samples.csv"), newline="") as stream:
        header = next(csv.reader(stream))
    assert header == ["path", "split", "shard", "index", "label", "pixel_hash", "dhash",
                      "source"]
    assert run("verify", out, "--deep").exit_code == 0


def test_the_merge_command_says_leakage_first(tmp_path):
    a, b = two_datasets(tmp_path)
    result = run("merge", a, b, "-o", str(tmp_path / "merged"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(
        "LEAKAGE: 2 duplicate groups span more than one split (1 exact, 1 near)"), result.output
    shown = run("inspect", str(tmp_path / "merged"))
    assert shown.output.splitlines()[0] == result.stdout.splitlines()[0]


def test_a_reshard_keeps_the_hashes_and_the_groups(tmp_path):
    a, b = two_datasets(tmp_path)
    merged = str(tmp_path / "merged")
    groups = merge([a, b], merged).manifest.extra["duplicates"]
    again = str(tmp_path / "again")
    assert reshard(merged, again, shard_size=4).manifest.extra["duplicates"] == groups
    single = str(tmp_path / "single")
    assert reshard(b, single, shard_size=5).manifest.extra["duplicates"] == []
    for out in (again, single):
        with open(os.path.join(out, "samples.csv"), newline="") as stream:
            assert {"pixel_hash", "dhash"} <= set(next(csv.reader(stream)))
        assert run("verify", out, "--deep").exit_code == 0


def test_a_merge_of_an_input_without_hashes_lists_no_groups(tmp_path):
    """An input built before duplicates were searched (no hash columns, no record): the merge
    cannot search the whole, so it says nothing rather than a partial answer."""
    a, b = two_datasets(tmp_path)
    rows = list(csv.reader(open(os.path.join(a, "samples.csv"), newline="")))
    with open(os.path.join(a, "samples.csv"), "w", newline="") as stream:
        csv.writer(stream).writerows([row[:5] for row in rows])
    path = os.path.join(a, "manifest.json")
    document = json.load(open(path))
    del document["duplicates"]
    with open(path, "w") as stream:
        json.dump(document, stream)
    manifest = merge([a, b], str(tmp_path / "merged")).manifest
    assert "duplicates" not in manifest.extra


def test_an_input_merged_twice_names_its_second_copies_apart(tmp_path):
    a, _ = two_datasets(tmp_path)
    out = str(tmp_path / "twice")
    groups = merge([a, a], out).manifest.extra["duplicates"]
    assert {"kind": "exact", "paths": [f"{a}: train/c0/a0.png", f"{a}: train/c0/a0.png #2"],
            "splits": ["train"]} in groups
    assert [group["kind"] for group in groups] == ["exact"] * 5  # each of A's 5 samples
    assert run("verify", out, "--deep").exit_code == 0
    assert run("inspect", out).exit_code == 0
