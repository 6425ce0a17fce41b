"""``--dedupe exact``: every exact duplicate but the first (by sorted path) is a recorded skip,
decided before the val split, so the build is the build of the deduplicated folder."""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import disk_full_at, run, write_image
from PIL import Image

from imgshard import BuildConfig, build
from imgshard.dedupe import first_of_each

CONFIG = BuildConfig(size=(16, 16), shard_size=4, dtype="uint8", val_split=0.3, dedupe="exact")
PLAIN = BuildConfig(size=(16, 16), shard_size=4, dtype="uint8", val_split=0.3)

#: copy -> original, which comes first by sorted path ("00.png" < "00z.png": "." < "z")
COPIES = {"c0/00z.png": "c0/00.png", "c1/05z.png": "c0/02.png", "c1/07z.png": "c1/07.png"}


def make_source(root) -> tuple[str, str]:
    """SRC with exact duplicates (same bytes; same pixels in other bytes; across classes),
    a near copy (kept), a broken file; and CLEAN: SRC without the copies, as the user would
    have deduplicated it by hand."""
    src, clean = os.path.join(root, "src"), os.path.join(root, "clean")
    for number in range(14):
        write_image(os.path.join(src, f"c{number % 2}", f"{number:02d}.png"), seed=number)
    shutil.copy(os.path.join(src, "c0", "00.png"), os.path.join(src, "c0", "00z.png"))
    pixels = np.asarray(Image.open(os.path.join(src, "c0", "02.png")))
    Image.fromarray(pixels).save(os.path.join(src, "c1", "05z.png"), compress_level=0)
    shutil.copy(os.path.join(src, "c1", "07.png"), os.path.join(src, "c1", "07z.png"))
    near = np.clip(np.asarray(Image.open(os.path.join(src, "c1", "09.png")), np.int16) + 5,
                   0, 255).astype(np.uint8)
    Image.fromarray(near).save(os.path.join(src, "c1", "09-bright.png"))
    with open(os.path.join(src, "c0", "broken.png"), "wb") as stream:
        stream.write(b"\x89PNG broken")
    shutil.copytree(src, clean)
    for copy in COPIES:
        os.remove(os.path.join(clean, copy))
    return src, clean


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("dedupe"))


def placed(out) -> list[tuple[str, ...]]:
    with open(os.path.join(out, "samples.csv"), newline="") as stream:
        return [tuple(row.values())[:5] for row in csv.DictReader(stream)]


def shards(out) -> dict[str, bytes]:
    return {name: open(os.path.join(out, name), "rb").read()
            for name in sorted(os.listdir(out)) if name.endswith(".npy")}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_deduplicated_build_is_the_build_of_the_deduplicated_folder(sources, tmp_path,
                                                                      workers):
    src, clean = sources
    deduped = build(src, str(tmp_path / "deduped"), CONFIG, workers=workers).manifest
    reference = build(clean, str(tmp_path / "reference"), PLAIN, workers=1).manifest
    assert placed(tmp_path / "deduped") == placed(tmp_path / "reference")
    assert shards(tmp_path / "deduped") == shards(tmp_path / "reference")
    assert {s.path: s.reason for s in deduped.skipped} == {
        **{copy: f"duplicate of {original}" for copy, original in COPIES.items()},
        "c0/broken.png": "cannot decode: not a recognised image format"}
    assert [s.path for s in deduped.skipped] == sorted(s.path for s in deduped.skipped)
    assert not [g for g in deduped.extra["duplicates"] if g["kind"] == "exact"]
    assert deduped.extra["duplicates"] == reference.extra["duplicates"]  # the near pair stays
    assert deduped.config["dedupe"] == "exact" and "dedupe" not in reference.config


def test_the_first_path_of_a_group_is_kept_even_across_splits(tmp_path):
    src = tmp_path / "src"
    write_image(str(src / "val" / "a" / "0.png"), seed=1)
    shutil.copy(src / "val" / "a" / "0.png", src / "val" / "a" / "1.png")
    (src / "train" / "a").mkdir(parents=True)
    shutil.copy(src / "val" / "a" / "0.png", src / "train" / "a" / "9.png")
    write_image(str(src / "test" / "a" / "5.png"), seed=2)
    write_image(str(src / "train" / "a" / "6.png"), seed=3)
    manifest = build(str(src), str(tmp_path / "out"),
                     BuildConfig(size=(8, 8), dedupe="exact"), workers=1).manifest
    assert [(s.path, s.reason) for s in manifest.skipped] == [
        ("val/a/0.png", "duplicate of train/a/9.png"),
        ("val/a/1.png", "duplicate of train/a/9.png")]
    assert {name: split.num_samples for name, split in manifest.splits.items()} == {
        "train": 2, "test": 1}


def test_an_interrupted_deduplicated_build_resumes_to_the_same_bytes(sources, tmp_path,
                                                                     monkeypatch):
    src, _ = sources
    build(src, str(tmp_path / "reference"), CONFIG, workers=1)
    build_module = importlib.import_module("imgshard.build")
    monkeypatch.setattr(build_module, "run_shard_task", disk_full_at(1))
    with pytest.raises(OSError):
        build(src, str(tmp_path / "out"), CONFIG, workers=1)
    monkeypatch.undo()
    resumed = build(src, str(tmp_path / "out"), CONFIG, workers=2, resume=True).manifest
    assert shards(tmp_path / "out") == shards(tmp_path / "reference")
    assert placed(tmp_path / "out") == placed(tmp_path / "reference")
    assert {s.path for s in resumed.skipped} >= set(COPIES)


def test_resuming_with_or_without_dedupe_is_refused(sources, tmp_path, monkeypatch):
    src, _ = sources
    build_module = importlib.import_module("imgshard.build")
    monkeypatch.setattr(build_module, "run_shard_task", disk_full_at(1))
    with pytest.raises(OSError):
        build(src, str(tmp_path / "out"), CONFIG, workers=1)
    monkeypatch.undo()
    result = run("build", src, tmp_path / "out", "--size", "16", "--shard-size", "4",
                 "--dtype", "uint8", "--val-split", "0.3", "--resume")
    assert result.exit_code == 1 and "dedupe changed" in result.output


def test_the_command_line_dedupes_and_a_dry_run_says_it_decodes_nothing(sources, tmp_path):
    src, _ = sources
    dry = run("build", src, tmp_path / "out", "--dedupe", "exact", "--dry-run")
    assert dry.exit_code == 0
    assert "--dedupe exact: exact duplicates are found when the build decodes" in dry.output
    result = run("build", src, tmp_path / "out", "--size", "16", "--dedupe", "exact",
                 "--workers", "2")
    assert result.exit_code == 0, result.output
    # one line for every duplicate, not a line per kept path; an example names what it repeats
    assert "      3  duplicate of an earlier path (--dedupe exact)  (e.g. c0/00z.png: " \
           "duplicate of c0/00.png)" in result.output
    skipped = json.loads(run("inspect", tmp_path / "out", "--json").output)["skipped"]
    assert skipped["duplicate of an earlier path (--dedupe exact)"] == {
        "count": 3, "examples": ["c0/00z.png", "c1/05z.png", "c1/07z.png"]}
    document = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert document["config"]["dedupe"] == "exact"
    assert {s["path"] for s in document["skipped"]} >= set(COPIES)
    bad = run("build", src, tmp_path / "other", "--dedupe", "near")
    assert bad.exit_code == 2 and "'near' is not one of 'none', 'exact'" in bad.output


def test_dedupe_none_is_the_default_and_writes_what_a_plain_build_writes(sources, tmp_path):
    src, _ = sources
    build(src, str(tmp_path / "a"), PLAIN, workers=1)
    config = BuildConfig(size=(16, 16), shard_size=4, dtype="uint8", val_split=0.3,
                         dedupe="none")
    manifest = build(src, str(tmp_path / "b"), config, workers=1).manifest
    assert shards(tmp_path / "a") == shards(tmp_path / "b") and "dedupe" not in manifest.config
    with pytest.raises(Exception, match="dedupe must be one of none, exact"):
        BuildConfig(dedupe="near")


def test_a_dask_cluster_dedupes_as_local_processes_do(sources, tmp_path):
    pytest.importorskip("dask.distributed")
    src, _ = sources
    local = build(src, str(tmp_path / "local"), CONFIG, workers=2).manifest
    dask = build(src, str(tmp_path / "dask"), CONFIG, workers=2, executor="dask",
                 scheduler="local").manifest
    assert shards(tmp_path / "dask") == shards(tmp_path / "local")
    assert dask.skipped == local.skipped and dask.extra["duplicates"] == local.extra["duplicates"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=60))
def test_each_duplicate_points_at_the_first_file_with_its_pixels(files):
    """Against a dictionary, file by file in sorted order (what the docstring promises)."""
    digests = np.array([[value] * 16 for value, _ in files], np.uint8).reshape(-1, 16)
    decoded = np.array([ok for _, ok in files], bool)
    expected, first = {}, {}
    for index, (value, ok) in enumerate(files):
        if ok:
            if value in first:
                expected[index] = first[value]
            else:
                first[value] = index
    assert first_of_each(digests, decoded) == expected


def test_a_dry_run_with_dedupe_exact_decodes_nothing(tmp_path, monkeypatch):
    """It decoded and hashed every file in this process (the plan ran --dedupe's first pass),
    then said 'a dry run decodes nothing'."""
    dedupe = importlib.import_module("imgshard.dedupe")

    src = tmp_path / "src"
    for number in range(3):
        write_image(str(src / "a" / f"{number}.png"), size=(6, 5), seed=0)  # the same image
    decoded = []
    real = dedupe.load_pixels
    monkeypatch.setattr(dedupe, "load_pixels",
                        lambda *args, **kwargs: decoded.append(1) or real(*args, **kwargs))
    result = run("build", src, tmp_path / "out", "--dedupe", "exact", "--dry-run")
    assert result.exit_code == 0, result.output
    assert not decoded and "Would build 3 images" in result.output
