"""What an append adds, decided before decoding: new files only, old files never moved, each
class's val share exactly a fresh build's, new classes after the old ones, changes reported."""

from __future__ import annotations

import csv
import gzip
import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_image
from imgshard import BuildConfig, build
from imgshard.append_plan import held_out_new, plan_append, val_quota
from imgshard.manifest import read_manifest
from imgshard.samples import Sample, hold_out
from imgshard.scan import scan

CONFIG = BuildConfig(size=(4, 4), shard_size=3, val_split=0.25, seed=7)


@settings(max_examples=200, deadline=None)
@given(old=st.integers(0, 40), new=st.integers(0, 40), fraction=st.floats(0.0, 0.9),
       seed=st.integers(0, 2**31))
def test_old_val_plus_new_val_is_what_a_fresh_build_holds_out(old, new, fraction, seed):
    olds = [Sample(f"c/old{i}.png", 0) for i in range(old)]
    news = [Sample(f"c/new{i}.png", 0) for i in range(new)]
    _, old_val = hold_out(olds, fraction, seed)
    held = held_out_new(news, old_total=old, old_val=len(old_val), fraction=fraction, seed=seed)
    _, fresh_val = hold_out(olds + news, fraction, seed)
    assert len(old_val) + len(held) == len(fresh_val) == val_quota(fraction, old + new)
    assert held <= {s.path for s in news}


def make(src, classes: dict[str, range]) -> None:
    for name, numbers in classes.items():
        for number in numbers:
            write_image(os.path.join(src, name, f"{number:03d}.png"), size=(5, 5),
                        seed=hash((name, number)) % 1000)


def held_paths(out) -> dict[str, int | None]:
    with open(os.path.join(out, "samples.csv"), newline="") as stream:
        held = {row["path"]: int(row["label"]) for row in csv.DictReader(stream)}
    held.update({skip.path: None for skip in read_manifest(out).skipped})
    return held


def record(out) -> dict[str, tuple[int, int]]:
    with gzip.open(os.path.join(out, "sources.jsonl.gz"), "rt") as stream:
        return {path: (size, stamp) for path, size, stamp in map(json.loads, stream)}


def test_a_grown_folder_adds_only_its_new_files_with_honest_splits(tmp_path):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    make(src, {"cat": range(9), "dog": range(5)})
    build(src, out, CONFIG, workers=1)
    make(src, {"cat": range(9, 20), "dog": range(5, 7), "emu": range(6)})
    os.utime(os.path.join(src, "cat", "000.png"), ns=(1, 1))  # changed since the build
    os.remove(os.path.join(src, "dog", "000.png"))  # gone
    manifest = read_manifest(out)
    plan = plan_append(manifest, CONFIG, scan(src, CONFIG), held=held_paths(out),
                       record=record(out))
    assert plan.class_names == ["cat", "dog", "emu"] and plan.new_classes == ["emu"]
    added = {s.path: s.label for samples in plan.splits.values() for s in samples}
    assert set(added) == ({f"cat/{n:03d}.png" for n in range(9, 20)}
                          | {f"dog/{n:03d}.png" for n in range(5, 7)}
                          | {f"emu/{n:03d}.png" for n in range(6)})
    assert {added[f"emu/{n:03d}.png"] for n in range(6)} == {2}
    assert plan.changed.examples == ["cat/000.png"] and plan.disappeared.examples == ["dog/000.png"]
    fresh = str(tmp_path / "fresh")  # the same files built at once
    make(str(tmp_path / "all"), {"cat": range(20), "dog": range(7), "emu": range(6)})
    build(str(tmp_path / "all"), fresh, CONFIG, workers=1)
    fresh_val = read_manifest(fresh).splits["val"].class_counts
    for label, name in enumerate(plan.class_names):
        new_val = sum(s.label == label for s in plan.splits.get("val", []))
        old_val = (manifest.splits["val"].class_counts or {}).get(name, 0)
        assert old_val + new_val == fresh_val[name]


def test_a_presplit_source_sends_new_files_to_their_folders_split(tmp_path):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    config = BuildConfig(size=(4, 4), shard_size=3)
    make(os.path.join(src, "train"), {"a": range(3), "b": range(3)})
    make(os.path.join(src, "val"), {"a": range(2), "b": range(2)})
    build(src, out, config, workers=1)
    make(os.path.join(src, "val"), {"a": range(2, 4)})
    make(os.path.join(src, "test"), {"b": range(2)})
    plan = plan_append(read_manifest(out), config, scan(src, config), held=held_paths(out),
                       record=record(out))
    assert {split: sorted(s.path for s in samples) for split, samples in plan.splits.items()} == {
        "val": ["val/a/002.png", "val/a/003.png"], "test": ["test/b/000.png", "test/b/001.png"]}
    assert plan.changed.count == plan.disappeared.count == 0


def test_without_a_record_changes_cannot_be_told_but_disappearances_can(tmp_path):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    make(src, {"a": range(4), "b": range(4)})
    build(src, out, CONFIG, workers=1)
    os.remove(os.path.join(src, "a", "001.png"))
    plan = plan_append(read_manifest(out), CONFIG, scan(src, CONFIG), held=held_paths(out),
                       record=None)
    assert plan.changed is None and plan.disappeared.examples == ["a/001.png"]
    assert plan.num_samples == 0
