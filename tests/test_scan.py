"""Scanning: label inference, layouts, ordering, the val split and the accounting of every file."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from conftest import write_image
from hypothesis import given, settings
from hypothesis import strategies as st

from imgshard.config import BuildConfig
from imgshard.samples import Sample, hold_out, order
from imgshard.scan import ScanError, scan


def paths(result, split="train"):
    return sorted(s.path for s in result.splits[split])


def test_class_names_are_sorted_folder_names_and_labels_their_index(make_class_folders):
    src = make_class_folders({"zebra": 1, "Apple": 1, "mango": 2})
    result = scan(src, BuildConfig())
    assert result.class_names == ["Apple", "mango", "zebra"]
    labels = {s.path: s.label for s in result.splits["train"]}
    assert labels == {"Apple/000.png": 0, "mango/000.png": 1, "mango/001.png": 1, "zebra/000.png": 2}


def test_images_are_found_recursively_inside_class_folders(tmp_path):
    write_image(str(tmp_path / "cat" / "a" / "b" / "deep.JPG"), colour=(1, 2, 3))
    write_image(str(tmp_path / "dog" / "x.png"), colour=(1, 2, 3))
    result = scan(str(tmp_path), BuildConfig())
    assert {s.path: s.label for s in result.splits["train"]} == {"cat/a/b/deep.JPG": 0, "dog/x.png": 1}


def test_empty_class_folders_still_take_a_label(tmp_path):
    write_image(str(tmp_path / "b" / "x.png"), colour=(1, 2, 3))
    os.makedirs(tmp_path / "a")
    result = scan(str(tmp_path), BuildConfig())
    assert result.class_names == ["a", "b"]
    assert result.splits["train"] == [Sample("b/x.png", 1)]


def test_every_file_is_a_sample_or_a_skip_with_a_reason(tmp_path):
    write_image(str(tmp_path / "cat" / "ok.png"), colour=(1, 2, 3))
    (tmp_path / "cat" / "notes.txt").write_text("x")
    (tmp_path / "cat" / ".DS_Store").write_text("x")
    os.makedirs(tmp_path / ".git" / "objects")
    (tmp_path / ".git" / "objects" / "a").write_text("x")
    write_image(str(tmp_path / "loose.png"), colour=(1, 2, 3))
    os.symlink(tmp_path / "cat" / "ok.png", tmp_path / "cat" / "link.png")
    result = scan(str(tmp_path), BuildConfig())
    assert paths(result) == ["cat/ok.png"]
    assert {s.path: s.reason for s in result.skipped} == {
        ".git/": "hidden folder",
        "cat/.DS_Store": "hidden file",
        "cat/link.png": "symbolic link (not followed; use --follow-links)",
        "cat/notes.txt": "not an image extension",
        "loose.png": "not in a class folder",
    }


def test_follow_links_follows_and_reports_loops(tmp_path):
    write_image(str(tmp_path / "cat" / "ok.png"), colour=(1, 2, 3))
    os.symlink(tmp_path / "cat" / "ok.png", tmp_path / "cat" / "link.png")
    os.symlink(tmp_path / "cat", tmp_path / "cat" / "again")
    result = scan(str(tmp_path), BuildConfig(follow_links=True))
    assert paths(result) == ["cat/link.png", "cat/ok.png"]
    assert [(s.path, s.reason) for s in result.skipped] == [("cat/again/", "symbolic link loop")]


def test_presplit_folders_become_splits_with_shared_class_indices(tmp_path):
    write_image(str(tmp_path / "train" / "cat" / "1.png"), colour=(1, 2, 3))
    write_image(str(tmp_path / "train" / "dog" / "1.png"), colour=(1, 2, 3))
    write_image(str(tmp_path / "validation" / "dog" / "2.png"), colour=(1, 2, 3))
    write_image(str(tmp_path / "test" / "emu" / "3.png"), colour=(1, 2, 3))
    result = scan(str(tmp_path), BuildConfig(shuffle=False))
    assert result.class_names == ["cat", "dog", "emu"]
    assert result.splits == {
        "train": [Sample("train/cat/1.png", 0), Sample("train/dog/1.png", 1)],
        "val": [Sample("validation/dog/2.png", 1)],
        "test": [Sample("test/emu/3.png", 2)],
    }


def test_presplit_with_val_folder_refuses_val_split(tmp_path):
    write_image(str(tmp_path / "train" / "cat" / "1.png"), colour=(1, 2, 3))
    write_image(str(tmp_path / "val" / "cat" / "2.png"), colour=(1, 2, 3))
    with pytest.raises(ScanError, match="already has a val/ folder"):
        scan(str(tmp_path), BuildConfig(val_split=0.5))


def test_labels_csv_assigns_labels_and_accounts_for_unlisted_files(tmp_path):
    src = tmp_path / "src"
    for name in ("a.png", "b.png", "c.png"):
        write_image(str(src / "flat" / name), colour=(1, 2, 3))
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\nflat/a.png,dog\nflat/b.png,cat\nflat/gone.png,cat\n")
    result = scan(str(src), BuildConfig(labels=str(csv_path), shuffle=False))
    assert result.class_names == ["cat", "dog"]
    assert result.splits["train"] == [Sample("flat/b.png", 0), Sample("flat/a.png", 1)]
    assert {s.path: s.reason for s in result.skipped} == {
        "flat/c.png": "not in the labels file",
        "flat/gone.png": "listed in the labels file but not found",
    }


def test_labels_csv_with_integer_labels_sorts_them_numerically(tmp_path):
    rows = ["path,label"]
    for number in (2, 10, 1):
        write_image(str(tmp_path / f"{number}.png"), colour=(1, 2, 3))
        rows.append(f"{number}.png,{number}")
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    result = scan(str(tmp_path), BuildConfig(labels=str(tmp_path / "labels.csv")))
    assert result.class_names == ["1", "2", "10"]
    assert [s.reason for s in result.skipped] == ["the labels file itself"]


def test_labels_csv_unknown_class_is_an_error(tmp_path):
    write_image(str(tmp_path / "a.png"), colour=(1, 2, 3))
    (tmp_path / "labels.csv").write_text("a.png,wolf\n")
    with pytest.raises(ScanError, match="unknown class 'wolf'"):
        scan(str(tmp_path), BuildConfig(labels=str(tmp_path / "labels.csv"), classes=("cat",)))


def test_classes_option_orders_labels_and_skips_other_folders(make_class_folders):
    src = make_class_folders({"blue": 1, "green": 1, "red": 1})
    result = scan(src, BuildConfig(classes=("red", "blue")))
    assert result.class_names == ["red", "blue"]
    assert {s.path: s.label for s in result.splits["train"]} == {"blue/000.png": 1, "red/000.png": 0}
    assert [s.reason for s in result.skipped] == ["class 'green' not in --classes"]


def test_no_labels_takes_every_image_below_src(tmp_path):
    write_image(str(tmp_path / "a.png"), colour=(1, 2, 3))
    write_image(str(tmp_path / "sub" / "b.jpg"), colour=(1, 2, 3))
    result = scan(str(tmp_path), BuildConfig(no_labels=True, shuffle=False))
    assert result.class_names is None
    assert result.splits["train"] == [Sample("a.png", None), Sample("sub/b.jpg", None)]


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("x"), "is not a folder"),
    (lambda p: p.mkdir(), "no images found"),
])
def test_unusable_sources_raise_one_line_errors(tmp_path, make, message):
    src = tmp_path / "src"
    make(src)
    with pytest.raises(ScanError, match=message):
        scan(str(src), BuildConfig())


def test_order_never_depends_on_listing_order(make_class_folders, monkeypatch):
    src = make_class_folders({"blue": 5, "red": 5})
    first = scan(src, BuildConfig())
    real_scandir = os.scandir

    class ReversedListing:
        def __init__(self, path):
            self.entries = list(real_scandir(path))[::-1]

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(os, "scandir", ReversedListing)
    assert scan(src, BuildConfig()) == first


def test_shuffled_order_mixes_classes_and_depends_on_seed(make_class_folders):
    src = make_class_folders({"blue": 20, "red": 20})
    labels = [s.label for s in scan(src, BuildConfig(seed=1)).splits["train"]]
    assert labels != sorted(labels)
    assert scan(src, BuildConfig(seed=1)) == scan(src, BuildConfig(seed=1))
    assert scan(src, BuildConfig(seed=1)).splits != scan(src, BuildConfig(seed=2)).splits


sample_lists = st.lists(
    st.tuples(st.text("abcdefgh/", min_size=1, max_size=8), st.integers(0, 3)),
    min_size=1, max_size=60, unique_by=lambda t: t[0],
).map(lambda rows: [Sample(path, label) for path, label in rows])


@settings(max_examples=150, deadline=None)
@given(samples=sample_lists, fraction=st.floats(0.01, 0.99), seed=st.integers(0, 2**32))
def test_val_split_is_a_stratified_partition_independent_of_input_order(samples, fraction, seed):
    train, val = hold_out(samples, fraction, seed)
    assert sorted(train + val, key=lambda s: s.path) == sorted(samples, key=lambda s: s.path)
    per_class = Counter(s.label for s in samples)
    val_per_class = Counter(s.label for s in val)
    for label, count in per_class.items():
        expected = min(int(fraction * count + 0.5), count - 1)
        assert val_per_class.get(label, 0) == expected
    again_train, again_val = hold_out(samples[::-1], fraction, seed)
    assert {s.path for s in again_val} == {s.path for s in val}
    shuffled = order(samples, seed=seed, shuffle=True)
    assert order(samples[::-1], seed=seed, shuffle=True) == shuffled
