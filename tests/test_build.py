"""Whole builds: shard files, labels, provenance, manifest, skips and determinism."""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np
import pytest
from conftest import CLASS_COLOURS, write_image

from imgshard import BuildConfig, build, read_manifest
from imgshard.outdir import OutputError

MANIFEST_KEYS = {"format", "format_version", "imgshard_version", "created", "source",
                 "image_shape", "dtype", "class_names", "config", "splits", "skipped", "samples"}


def shard_bytes(out) -> dict[str, bytes]:
    return {name: open(os.path.join(out, name), "rb").read()
            for name in sorted(os.listdir(out)) if name.endswith((".npy", ".csv"))}


def read_samples(out) -> list[dict]:
    with open(os.path.join(out, "samples.csv"), newline="") as stream:
        return list(csv.DictReader(stream))


def test_manifest_has_every_key_and_true_checksums(make_class_folders, tmp_path):
    src = make_class_folders({"blue": 5, "red": 6})
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(size=(8, 8), shard_size=4), workers=1)
    document = json.loads(open(os.path.join(out, "manifest.json")).read())
    assert MANIFEST_KEYS <= set(document)
    assert document["format"] == "imgshard" and document["format_version"] == 1
    assert document["image_shape"] == [8, 8, 3] and document["dtype"] == "float16"
    assert document["class_names"] == ["blue", "red"]
    assert document["source"] == src
    assert document["config"]["size"] == [8, 8] and document["config"]["shard_size"] == 4
    train = document["splits"]["train"]
    assert train["num_samples"] == 11 and train["class_counts"] == {"blue": 5, "red": 6}
    assert [s["num_samples"] for s in train["shards"]] == [4, 4, 3]
    for shard in train["shards"]:
        for key, name in (("sha256", shard["images"]), ("labels_sha256", shard["labels"])):
            digest = hashlib.sha256(open(os.path.join(out, name), "rb").read()).hexdigest()
            assert shard[key] == digest
    assert sorted(os.listdir(out)) == ["manifest.json", "samples.csv", "sources.jsonl.gz"] + sorted(
        f"train-0000{i}{kind}.npy" for i in range(3) for kind in ("", ".labels"))


def test_pixels_and_labels_stay_aligned(make_class_folders, tmp_path):
    src = make_class_folders({"blue": 7, "green": 5, "red": 6})
    out = str(tmp_path / "out")
    manifest = build(src, out, BuildConfig(size=(6, 6), shard_size=5), workers=2).manifest
    rows = read_samples(out)
    assert len(rows) == 18
    for row in rows:
        images = np.load(os.path.join(out, row["shard"]), mmap_mode="r")
        labels = np.load(os.path.join(out, row["shard"].replace(".npy", ".labels.npy")))
        index, label = int(row["index"]), int(row["label"])
        assert labels[index] == label
        name = manifest.class_names[label]
        assert row["path"].startswith(name + "/")
        expected = np.array(CLASS_COLOURS[name]) / 255
        np.testing.assert_allclose(images[index].astype(np.float64), np.broadcast_to(expected, (6, 6, 3)),
                                   atol=1e-3)


def test_output_is_byte_identical_for_one_and_two_workers(tmp_path):
    src = str(tmp_path / "src")
    for number in range(23):
        write_image(os.path.join(src, f"c{number % 3}", f"{number}.jpg"), size=(30 + number, 20),
                    seed=number)
    (tmp_path / "src" / "c1" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    config = BuildConfig(size=(12, 10), shard_size=4, val_split=0.25)
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    build(src, one, config, workers=1)
    build(src, two, config, workers=2)
    assert shard_bytes(one) == shard_bytes(two)
    assert read_manifest(one).splits == read_manifest(two).splits


def test_skipped_files_keep_shards_full_and_are_listed(tmp_path):
    src = tmp_path / "src"
    for number in range(10):
        write_image(str(src / "cat" / f"{number:02d}.png"), colour=(number * 20, 0, 0))
    (src / "cat" / "00a-empty.png").write_bytes(b"")
    (src / "cat" / "00b-text.jpg").write_text("not an image")
    (src / "cat" / "readme.md").write_text("hello")
    good = src / "cat" / "05.png"
    cut = src / "cat" / "05-cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    out = str(tmp_path / "out")
    manifest = build(str(src), out, BuildConfig(size=(4, 4), shard_size=3, shuffle=False),
                     workers=2).manifest
    assert [s.num_samples for s in manifest.splits["train"].shards] == [3, 3, 3, 1]
    assert {s.path: s.reason for s in manifest.skipped} == {
        "cat/00a-empty.png": "empty file",
        "cat/00b-text.jpg": "cannot decode: not a recognised image format",
        "cat/05-cut.png": "truncated",
        "cat/readme.md": "not an image extension",
    }
    reds = [round(float(np.load(os.path.join(out, r["shard"]))[int(r["index"]), 0, 0, 0]) * 255)
            for r in read_samples(out)]
    assert reds == [number * 20 for number in range(10)]
    assert not [name for name in os.listdir(out) if name.startswith(".")]


def test_every_input_file_is_a_sample_or_a_skip(tmp_path):
    src = tmp_path / "src"
    write_image(str(src / "a" / "1.png"), colour=(1, 2, 3))
    write_image(str(src / "a" / "deep" / "2.bmp"), colour=(1, 2, 3))
    write_image(str(src / "b" / "3.webp"), colour=(1, 2, 3))
    write_image(str(src / "b" / "4.tif"), colour=(1, 2, 3))
    (src / "b" / "5.gif").write_bytes(b"GIF89a broken")
    (src / "b" / ".hidden.png").write_bytes(b"")
    (src / "top.txt").write_text("x")
    out = str(tmp_path / "out")
    manifest = build(str(src), out, BuildConfig(size=(4, 4), val_split=0.5), workers=1).manifest
    files = {os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/")
             for d, _, names in os.walk(src) for f in names}
    built = {row["path"] for row in read_samples(out)}
    skipped = {s.path for s in manifest.skipped}
    assert built | skipped == files and not built & skipped
    assert sum(split.num_samples for split in manifest.splits.values()) == len(built) == 4


def test_no_labels_writes_no_label_files(tmp_path):
    write_image(str(tmp_path / "src" / "x.png"), colour=(1, 2, 3))
    out = str(tmp_path / "out")
    manifest = build(str(tmp_path / "src"), out, BuildConfig(size=(4, 4), no_labels=True)).manifest
    assert manifest.class_names is None
    assert manifest.splits["train"].shards[0].labels is None
    assert sorted(os.listdir(out)) == ["manifest.json", "samples.csv", "sources.jsonl.gz",
                                       "train-00000.npy"]
    stored = np.load(os.path.join(out, "train-00000.npy"))[0]  # float16: rows 0 of 4 hashed
    assert np.array_equal(stored, (np.full((4, 4, 3), (1, 2, 3)) / 255).astype(np.float16))
    assert read_samples(out) == [{"path": "x.png", "split": "train", "shard": "train-00000.npy",
                                  "index": "0", "label": "",
                                  "pixel_hash":
                                      hashlib.sha256(stored[:1].tobytes()).hexdigest()[:32],
                                  "dhash": "0" * 16}]  # flat: no block brighter than another


@pytest.mark.parametrize("dtype", ["float16", "float32", "uint8"])
def test_shards_are_standard_npy_files_in_the_chosen_dtype(make_class_folders, tmp_path, dtype):
    src = make_class_folders({"red": 3})
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(size=(5, 7), dtype=dtype, color="grayscale"))
    images = np.load(os.path.join(out, "train-00000.npy"), mmap_mode="r")
    assert images.shape == (3, 5, 7, 1) and images.dtype == np.dtype(dtype)
    labels = np.load(os.path.join(out, "train-00000.labels.npy"))
    assert labels.dtype == np.int32 and labels.tolist() == [0, 0, 0]


def test_out_must_be_empty_unless_overwrite(make_class_folders, tmp_path):
    src = make_class_folders({"red": 2})
    out = tmp_path / "out"
    build(src, str(out), BuildConfig(size=(4, 4)))
    with pytest.raises(OutputError, match="is not empty"):
        build(src, str(out), BuildConfig(size=(4, 4)))
    build(src, str(out), BuildConfig(size=(6, 6)), overwrite=True)
    assert read_manifest(str(out)).image_shape == (6, 6, 3)
    (out / "mine.txt").write_text("precious")
    with pytest.raises(OutputError, match="'mine.txt', which imgshard did not write"):
        build(src, str(out), BuildConfig(size=(4, 4)), overwrite=True)
    assert (out / "mine.txt").read_text() == "precious"


def test_a_config_that_differs_from_its_plan_is_refused(make_class_folders, tmp_path):
    """One source of truth: a plan made for one config cannot build under another's manifest."""
    from imgshard import plan
    from imgshard.build import BuildError

    src = make_class_folders({"red": 2})
    scanned = plan(src, BuildConfig(size=(6, 6)))
    with pytest.raises(BuildError, match="config differs from the build plan's"):
        build(src, str(tmp_path / "out"), BuildConfig(size=(4, 4)), build_plan=scanned)
    assert not (tmp_path / "out").exists()
    manifest = build(src, str(tmp_path / "planned"), build_plan=scanned).manifest
    assert manifest.image_shape == (6, 6, 3)
