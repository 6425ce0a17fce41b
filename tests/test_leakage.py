"""Duplicates found while building: the manifest's groups equal a reference computed here from
the stored pixels, whatever the worker count, executor or interruptions; leakage is said first."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import disk_full_at, edit_manifest, one_error_line, run, write_image
from PIL import Image, ImageEnhance, ImageFilter
from test_depth import png16
from test_duplicates import brute_components, brute_near, reference_dhash, reference_thumbnail

from imgshard import BuildConfig, build
from imgshard.duplicates import NEAR_DISTANCE

CONFIG = BuildConfig(size=(16, 16), shard_size=3, dtype="uint8")


def make_source(root) -> str:
    """A pre-split source: an exact copy across train and val, a brightened copy (near)
    across train and test, an exact pair inside train, and distinct images."""
    src = os.path.join(root, "src")
    for number in range(8):
        write_image(os.path.join(src, "train", f"c{number % 2}", f"{number}.png"), seed=number)
    os.makedirs(os.path.join(src, "val", "c0"))
    shutil.copy(os.path.join(src, "train", "c0", "0.png"),
                os.path.join(src, "val", "c0", "0.png"))
    brighter = np.clip(np.asarray(Image.open(os.path.join(src, "train", "c1", "1.png")),
                                  dtype=np.int16) + 6, 0, 255).astype(np.uint8)
    os.makedirs(os.path.join(src, "test", "c1"))
    Image.fromarray(brighter).save(os.path.join(src, "test", "c1", "bright.png"))
    shutil.copy(os.path.join(src, "train", "c0", "2.png"), os.path.join(src, "train", "c0", "2b.png"))
    write_image(os.path.join(src, "val", "c1", "9.png"), seed=9)
    write_image(os.path.join(src, "test", "c0", "10.png"), seed=10)
    return src


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("leakage"))


def stored(out) -> list[tuple[str, str, np.ndarray]]:
    """(path, split, stored image) of every sample, from samples.csv and the shards."""
    with open(os.path.join(out, "samples.csv"), newline="") as stream:
        rows = list(csv.DictReader(stream))
    return [(row["path"], row["split"], np.load(os.path.join(out, row["shard"]))[int(row["index"])])
            for row in rows]


def reference_groups(samples, as_uint8, rescale: float) -> list[dict]:
    """The groups by the definitions: equal stored bytes; components of 'reference dHashes
    within NEAR_DISTANCE bits and reference thumbnails within NEAR_PIXELS' that are not one
    exact group."""
    def group(kind, members):
        splits = {samples[i][1] for i in members}
        return {"kind": kind, "paths": sorted(samples[i][0] for i in members),
                "splits": [s for s in ("train", "val", "test") if s in splits]}
    by_bytes: dict[bytes, list[int]] = {}
    for i, (_, _, image) in enumerate(samples):
        by_bytes.setdefault(image.tobytes(), []).append(i)
    exact = [members for members in by_bytes.values() if len(members) > 1]
    exact_of = {i: n for n, members in enumerate(by_bytes.values()) for i in members}
    near = [sorted(c) for c in brute_near(
        [reference_dhash(as_uint8(image)) for _, _, image in samples],
        np.array([reference_thumbnail(image, rescale, 0.0) for _, _, image in samples]),
        NEAR_DISTANCE)
        if len(c) > 1 and len({exact_of[i] for i in c}) > 1]
    groups = [group("exact", m) for m in exact] + [group("near", m) for m in near]
    return sorted(groups, key=lambda g: (g["paths"][0], g["kind"] != "exact", g["paths"]))


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_the_groups_are_those_of_the_stored_pixels(source, tmp_path, dtype):
    out = str(tmp_path / "out")
    manifest = build(source, out, BuildConfig(size=(16, 16), shard_size=3, dtype=dtype),
                     workers=1).manifest
    samples = stored(out)
    as_uint8 = (lambda x: x) if dtype == "uint8" else (
        lambda x: np.rint(x.astype(np.float64) * 255).astype(np.uint8))
    expected = reference_groups(samples, as_uint8, 1.0 if dtype == "uint8" else 1 / 255)
    assert manifest.extra["duplicates"] == expected
    # the fixture holds what it means to: a leak of each kind and a pair inside one split
    assert {"kind": "exact", "paths": ["train/c0/0.png", "val/c0/0.png"],
            "splits": ["train", "val"]} in expected
    assert {"kind": "exact", "paths": ["train/c0/2.png", "train/c0/2b.png"],
            "splits": ["train"]} in expected
    assert any(g["kind"] == "near" and {"train/c1/1.png", "test/c1/bright.png"} <= set(g["paths"])
               for g in expected)
    for path, _, image in samples:  # the hash cells of samples.csv are the stored image's
        row = next(r for r in csv.DictReader(open(os.path.join(out, "samples.csv")))
                   if r["path"] == path)
        assert row["pixel_hash"] == hashlib.sha256(  # every 8th stored row: the fingerprint
            np.ascontiguousarray(image[::8]).tobytes()).hexdigest()[:32]
        assert int(row["dhash"], 16) == reference_dhash(as_uint8(image))


def test_the_bundled_example_holds_no_duplicates(tmp_path):
    """The README's quickstart example: coloured shapes on plain backgrounds, each drawn at
    random, none a copy. Their difference hashes (edges of flat shapes) lie within
    NEAR_DISTANCE bits for a dozen pairs (a yellow circle and a blue square among them); the
    stored pixels tell them apart."""
    examples = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "make_shapes.py")
    assert subprocess.run([sys.executable, examples, str(tmp_path / "shapes")],
                          capture_output=True).returncode == 0
    manifest = build(str(tmp_path / "shapes"), str(tmp_path / "out"),
                     BuildConfig(size=(64, 64), val_split=0.2), workers=1).manifest
    assert manifest.extra["duplicates"] == []


def photo_variants(src: str) -> list[str]:
    """A smooth photo-like image and what happens to photos on the web: re-encoded at JPEG
    quality 40, brightened by 6 %, halved in size, blurred, and cropped by 2 % on each side."""
    rng = np.random.default_rng(5)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC)
    os.makedirs(os.path.join(src, "c0"))
    os.makedirs(os.path.join(src, "c1"))
    photo.save(os.path.join(src, "c0", "photo.jpg"), quality=95)
    photo.save(os.path.join(src, "c1", "q40.jpg"), quality=40)
    ImageEnhance.Brightness(photo).enhance(1.06).save(os.path.join(src, "c1", "bright.png"))
    photo.resize((160, 120), Image.Resampling.BICUBIC).save(os.path.join(src, "c1", "half.png"))
    photo.filter(ImageFilter.GaussianBlur(1)).save(os.path.join(src, "c1", "blur.png"))
    photo.crop((6, 5, 314, 235)).save(os.path.join(src, "c1", "crop.png"))
    for seed in range(4):
        write_image(os.path.join(src, "c0", f"other{seed}.png"), size=(320, 240), seed=seed + 20)
    return ["c0/photo.jpg", "c1/blur.png", "c1/bright.png", "c1/crop.png", "c1/half.png",
            "c1/q40.jpg"]


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_a_photo_and_its_web_copies_are_one_near_group(tmp_path, dtype):
    variants = photo_variants(str(tmp_path / "src"))
    manifest = build(str(tmp_path / "src"), str(tmp_path / "out"),
                     BuildConfig(size=(64, 64), dtype=dtype, val_split=0.3), workers=1).manifest
    assert [group["paths"] for group in manifest.extra["duplicates"]] == [variants]


def test_any_worker_count_and_a_resume_find_the_same_groups(source, tmp_path, monkeypatch):
    reference = build(source, str(tmp_path / "one"), CONFIG, workers=1).manifest
    two = build(source, str(tmp_path / "two"), CONFIG, workers=2).manifest
    assert two.extra["duplicates"] == reference.extra["duplicates"]
    build_module = importlib.import_module("imgshard.build")
    monkeypatch.setattr(build_module, "run_shard_task", disk_full_at(2))
    with pytest.raises(OSError):
        build(source, str(tmp_path / "resumed"), CONFIG, workers=1)
    monkeypatch.undo()
    resumed = build(source, str(tmp_path / "resumed"), CONFIG, workers=2, resume=True).manifest
    assert resumed.extra["duplicates"] == reference.extra["duplicates"]
    for name in ("two", "resumed"):
        assert open(tmp_path / name / "samples.csv", "rb").read() == \
            open(tmp_path / "one" / "samples.csv", "rb").read()


def test_a_dask_build_finds_the_same_groups(source, tmp_path):
    pytest.importorskip("dask.distributed")
    reference = build(source, str(tmp_path / "local"), CONFIG, workers=1).manifest
    dask = build(source, str(tmp_path / "dask"), CONFIG, workers=2, executor="dask",
                 scheduler="local").manifest
    assert dask.extra["duplicates"] == reference.extra["duplicates"]


def test_the_build_summary_and_inspect_say_leakage_first(source, tmp_path):
    out = tmp_path / "out"
    result = run("build", source, out, "--size", "16", "--dtype", "uint8", "--workers", "1")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]  # the progress bar is on stderr
    assert first.startswith("LEAKAGE: 2 duplicate groups span more than one split "
                            "(1 exact, 1 near)"), result.output
    assert "  exact  train/c0/0.png, val/c0/0.png  (train, val)" in result.output
    assert "duplicates: 2 exact groups (2 extra copies), 1 near group; 2 across splits" \
        in result.output
    shown = run("inspect", out)
    assert shown.output.splitlines()[0] == first
    summary = json.loads(run("inspect", out, "--json").output)["duplicates"]
    assert summary["exact_groups"] == 2 and summary["near_groups"] == 1
    assert summary["extra_exact_copies"] == 2
    assert summary["leakage"]["groups"] == 2 and summary["leakage"]["exact"] == 1
    assert {"kind": "exact", "paths": ["train/c0/0.png", "val/c0/0.png"],
            "splits": ["train", "val"]} in summary["leakage"]["examples"]


def test_a_dataset_without_duplicates_says_so_after_the_counts(tmp_path):
    for number in range(4):
        write_image(str(tmp_path / "src" / "c" / f"{number}.png"), seed=number)
    result = run("build", tmp_path / "src", tmp_path / "out", "--size", "16", "--workers", "1")
    assert result.stdout.splitlines()[0].startswith("Built ")
    assert "duplicates: none found" in result.output
    assert json.loads(run("inspect", tmp_path / "out", "--json").output)["duplicates"][
        "leakage"]["groups"] == 0


def test_a_manifest_written_before_duplicates_reads_as_before(source, tmp_path):
    out = tmp_path / "out"
    build(source, str(out), CONFIG, workers=1)
    edit_manifest(out, lambda document: document.pop("duplicates"))
    shown = run("inspect", out)
    assert shown.exit_code == 0 and "LEAKAGE" not in shown.output
    assert "duplicates" not in shown.output
    assert json.loads(run("inspect", out, "--json").output)["duplicates"] is None
    assert run("verify", out, "--deep").exit_code == 0


@pytest.mark.parametrize("value, message", [
    ("many", "duplicates must be a list of groups"),
    ([["a", "b"]], "duplicates[0] must be an object of kind, paths and splits"),
    ([{"kind": "same", "paths": ["a", "b"], "splits": ["train"]}], "duplicates[0].kind"),
    ([{"kind": "exact", "paths": ["a"], "splits": ["train"]}], "duplicates[0].paths"),
    ([{"kind": "exact", "paths": ["a", "a"], "splits": ["train"]}], "duplicates[0].paths"),
    ([{"kind": "exact", "paths": ["a", 7], "splits": ["train"]}], "duplicates[0].paths"),
    ([{"kind": "near", "paths": ["a", "b"], "splits": ["val", "val"]}], "duplicates[0].splits"),
    ([{"kind": "near", "paths": ["a", "b"], "splits": [["train"]]}], "duplicates[0].splits"),
    ([{"kind": "near", "paths": ["a", "b"], "splits": []}], "duplicates[0].splits"),
])
def test_a_hostile_duplicates_field_is_one_line(source, tmp_path, value, message):
    out = tmp_path / "out"
    build(source, str(out), CONFIG, workers=1)
    edit_manifest(out, lambda document: document.update(duplicates=value))
    one_error_line(run("inspect", out), message)


def test_a_huge_duplicates_list_is_summarised_quickly(source, tmp_path):
    out = tmp_path / "out"
    build(source, str(out), CONFIG, workers=1)
    groups = [{"kind": "near", "paths": [f"{n}a", f"{n}b"], "splits": ["train", "val"]}
              for n in range(200_000)]
    edit_manifest(out, lambda document: document.update(duplicates=groups))
    shown = run("inspect", out)
    assert shown.output.startswith("LEAKAGE: 200,000 duplicate groups")
    assert len(shown.output.splitlines()) < 40


def test_merge_finds_the_unions_groups_and_reshard_keeps_them(source, tmp_path):
    """Two builds of one source merged: every sample of one is an exact copy of the other's
    (the inputs' own groups join them), named with its input."""
    a, b = tmp_path / "a", tmp_path / "b"
    kept = build(source, str(a), CONFIG, workers=1).manifest.extra["duplicates"]
    build(source, str(b), CONFIG, workers=1)
    assert run("merge", a, b, "-o", tmp_path / "merged", "-q").exit_code == 0
    merged = json.loads((tmp_path / "merged" / "manifest.json").read_text())["duplicates"]
    paths = [path for path, _, _ in stored(str(a))]
    assert sorted(p for g in merged if g["kind"] == "exact" for p in g["paths"]) == sorted(
        f"{name}: {path}" for name in (a, b) for path in paths)
    assert run("reshard", a, tmp_path / "re", "--shard-size", "5", "-q").exit_code == 0
    assert json.loads((tmp_path / "re" / "manifest.json").read_text())["duplicates"] == kept


def test_an_append_reports_new_files_that_duplicate_old_samples(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for number in range(4):
        write_image(str(src / "c" / f"{number}.png"), seed=number)
    build(str(src), str(out), CONFIG, workers=1)
    old = {name: (out / name).read_bytes() for name in os.listdir(out) if name.endswith(".npy")}
    shutil.copy(src / "c" / "1.png", src / "c" / "1-again.png")
    result = run("append", src, out, "--workers", "1")
    assert result.exit_code == 0, result.output
    groups = json.loads((out / "manifest.json").read_text())["duplicates"]
    assert groups == [{"kind": "exact", "paths": ["c/1-again.png", "c/1.png"],
                       "splits": ["train"]}]
    assert "duplicates: 1 exact group (1 extra copy)" in result.output
    assert all((out / name).read_bytes() == data for name, data in old.items())


def test_pairs_of_every_group_really_are_close(source, tmp_path):
    """No group joins images by accident: every exact pair is byte-equal, and every near group
    is connected by steps of at most NEAR_DISTANCE bits (checked pair by pair here)."""
    out = str(tmp_path / "out")
    manifest = build(source, out, CONFIG, workers=1).manifest
    image = {path: pixels for path, _, pixels in stored(out)}
    for group in manifest.extra["duplicates"]:
        if group["kind"] == "exact":
            for p, q in itertools.combinations(group["paths"], 2):
                assert np.array_equal(image[p], image[q])
        else:
            hashes = [reference_dhash(image[p]) for p in group["paths"]]
            assert len(brute_components(hashes, NEAR_DISTANCE)) == 1


def test_verify_reports_groups_that_are_not_those_of_the_hashes(source, tmp_path):
    out = tmp_path / "out"
    build(source, str(out), CONFIG, workers=1)
    assert run("verify", out, "--deep").exit_code == 0
    edit_manifest(out, lambda document: document["duplicates"].pop())  # a group hidden
    assert run("verify", out).exit_code == 0  # without --deep no stored row is read
    result = run("verify", out, "--deep")
    assert result.exit_code == 1
    assert "manifest.json: its duplicates are not those of the hashes in samples.csv " \
           "(3 groups found, 2 listed)" in result.output
    edit_manifest(out, lambda document: document.pop("duplicates"))  # none recorded: no claim
    assert run("verify", out, "--deep").exit_code == 0


def test_a_reshard_and_a_merge_carry_the_hash_columns(source, tmp_path):
    a = tmp_path / "a"
    build(source, str(a), CONFIG, workers=1)
    assert run("reshard", a, tmp_path / "re", "--shard-size", "5", "-q").exit_code == 0
    assert run("merge", a, a, "-o", tmp_path / "merged", "-q").exit_code == 0
    for name, header in (("re", "path,split,shard,index,label,pixel_hash,dhash"),
                         ("merged", "path,split,shard,index,label,pixel_hash,dhash,source")):
        assert (tmp_path / name / "samples.csv").read_text().splitlines()[0] == header
        assert run("verify", tmp_path / name).exit_code == 0


def test_an_append_to_a_dataset_built_before_hashes_writes_rows_like_its_old_ones(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for number in range(4):
        write_image(str(src / "c" / f"{number}.png"), seed=number)
    build(str(src), str(out), CONFIG, workers=1)
    with open(out / "samples.csv", newline="") as stream:  # as an older imgshard wrote it
        rows = [row[:5] for row in csv.reader(stream)]
    with open(out / "samples.csv", "w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    edit_manifest(out, lambda document: document.pop("duplicates"))
    shutil.copy(src / "c" / "1.png", src / "c" / "1-again.png")
    write_image(str(src / "c" / "9.png"), seed=9)
    result = run("append", src, out, "--workers", "1")
    assert result.exit_code == 0, result.output
    with open(out / "samples.csv", newline="") as stream:
        grown = list(csv.reader(stream))
    assert grown[:5] == rows and len(grown) == 7 and {len(row) for row in grown} == {5}
    assert "duplicates" not in json.loads((out / "manifest.json").read_text())
    assert run("verify", out, "--deep").exit_code == 0


def test_images_alike_in_every_8th_row_are_told_apart_by_their_whole_pixels(tmp_path):
    """The workers' fingerprint hashes rows 0, 8, ...: two images that differ only in row 3
    share it, and the build reads both rows back before it calls them exact duplicates."""
    rng = np.random.default_rng(5)
    image = np.repeat(np.repeat(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), 4, 0), 4, 1)
    changed = image.copy()
    changed[3, 5] = 255 - changed[3, 5]
    for name, pixels in (("a.png", image), ("b.png", changed), ("c.png", image)):
        os.makedirs(tmp_path / "src" / "k", exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "src" / "k" / name)
    out = tmp_path / "out"
    manifest = build(str(tmp_path / "src"), str(out), BuildConfig(size=(16, 16), dtype="uint8"),
                     workers=1).manifest
    stored_image = {path: pixels for path, _, pixels in stored(out)}
    assert np.array_equal(stored_image["k/a.png"], image)  # stored as drawn: no resize
    with open(out / "samples.csv", newline="") as stream:
        fingerprints = {row["path"]: row["pixel_hash"] for row in csv.DictReader(stream)}
    assert len(set(fingerprints.values())) == 1
    assert [g for g in manifest.extra["duplicates"] if g["kind"] == "exact"] == [
        {"kind": "exact", "paths": ["k/a.png", "k/c.png"], "splits": ["train"]}]
    assert {"kind": "near", "paths": ["k/a.png", "k/b.png", "k/c.png"],
            "splits": ["train"]} in manifest.extra["duplicates"]
    assert run("verify", out, "--deep").exit_code == 0


def test_16_bit_images_are_found_by_their_stored_values(tmp_path):
    """A deep image's worker hashes its stored float values (fingerprint) and its pixel values
    rounded to 8 bits (difference hash); --dedupe hashes the stored values too."""
    ramp = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 83 % 65536).astype(np.uint16)
    src = tmp_path / "src" / "k"
    src.mkdir(parents=True)
    (src / "a.png").write_bytes(png16(ramp[:, :, None]))
    shutil.copy(src / "a.png", src / "b.png")
    (src / "c.png").write_bytes(png16((ramp // 2 + 1000)[:, :, None]))
    config = BuildConfig(size=(24, 32), color="grayscale", dtype="float32")
    manifest = build(str(tmp_path / "src"), str(tmp_path / "out"), config, workers=1).manifest
    images = {path: pixels for path, _, pixels in stored(tmp_path / "out")}
    assert len(np.unique(images["k/a.png"])) > 256  # kept at full depth
    assert [g for g in manifest.extra["duplicates"] if g["kind"] == "exact"] == [
        {"kind": "exact", "paths": ["k/a.png", "k/b.png"], "splits": ["train"]}]
    deduped = build(str(tmp_path / "src"), str(tmp_path / "deduped"),
                    dataclasses.replace(config, dedupe="exact"), workers=1).manifest
    assert [(s.path, s.reason) for s in deduped.skipped] == [("k/b.png", "duplicate of k/a.png")]
