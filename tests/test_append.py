"""``imgshard append``: a grown folder's new files added to its dataset without moving, renaming
or rewriting anything the dataset holds; resumable, byte-identical, honest about splits."""

from __future__ import annotations

import csv
import importlib
import os
import shutil

import numpy as np
import pytest

from conftest import comparable, local_files, one_error_line, run, stop_at_call, write_image
from imgshard import BuildConfig, ShardReader, append, build  # the public API
from imgshard.config import ConfigError
from imgshard.manifest import read_manifest
from imgshard.resume import ResumeError

CONFIG = BuildConfig(size=(5, 5), shard_size=3, val_split=0.25, seed=3)
OPTIONS = ["--size", "5", "--shard-size", "3", "--val-split", "0.25", "--seed", "3"]


def add_images(src, classes: dict[str, range]) -> None:
    for name, numbers in classes.items():
        for number in numbers:
            write_image(os.path.join(src, name, f"{number:03d}.png"), size=(7, 6),
                        seed=sum(map(ord, name)) * 1000 + number)


def rows(out) -> dict[str, dict]:
    with open(os.path.join(out, "samples.csv"), newline="") as stream:
        return {row["path"]: row for row in csv.DictReader(stream)}


@pytest.fixture
def grown(tmp_path):
    """A dataset of cat/dog, and its source grown by more cats and dogs and a new class."""
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    add_images(src, {"cat": range(7), "dog": range(5)})
    build(src, out, CONFIG, workers=1)
    before = local_files(out)
    add_images(src, {"cat": range(7, 15), "dog": range(5, 8), "emu": range(4)})
    return src, out, before


def test_old_files_keep_their_names_bytes_and_rows(grown, tmp_path):
    src, out, before = grown
    old = read_manifest(out)
    old_rows = rows(out)
    result = append(src, out, workers=1)
    new = read_manifest(out)
    files = local_files(out)
    for name, data in before.items():
        if name.endswith(".npy"):
            assert files[name] == data  # no old shard rewritten
    for split, info in old.splits.items():
        assert new.splits[split].shards[:len(info.shards)] == info.shards
    now = rows(out)
    assert all(now[path] == row for path, row in old_rows.items())  # split, shard, row, label
    added = set(now) - set(old_rows)
    assert added == {f"{c}/{n:03d}.png" for c, r in
                     {"cat": range(7, 15), "dog": range(5, 8), "emu": range(4)}.items() for n in r}
    assert new.class_names == ["cat", "dog", "emu"] and result.plan.new_classes == ["emu"]
    assert new.parent_id == old.dataset_id != new.dataset_id
    assert {now[f"emu/{n:03d}.png"]["label"] for n in range(4)} == {"2"}
    fresh = str(tmp_path / "fresh")  # the grown folder built at once: the same val per class
    build(src, fresh, CONFIG, workers=1)
    assert new.splits["val"].class_counts == read_manifest(fresh).splits["val"].class_counts
    assert run("verify", out).exit_code == 0
    with ShardReader(out, "train", batch_size=4) as reader:
        assert sum(len(y) for _, y in reader) == new.splits["train"].num_samples


def test_an_append_is_byte_identical_for_any_worker_count(grown, tmp_path):
    src, out, _ = grown
    other = str(tmp_path / "other")
    shutil.copytree(out, other)
    append(src, out, workers=1)
    append(src, other, workers=2)
    assert comparable(local_files(out)) == comparable(local_files(other))


def test_an_interrupted_append_leaves_the_dataset_readable_and_resumes_identically(grown,
                                                                                    tmp_path):
    src, out, before = grown
    reference = str(tmp_path / "reference")
    shutil.copytree(out, reference)
    append(src, reference, workers=1)
    with pytest.raises(KeyboardInterrupt):
        append(src, out, workers=1, progress=stop_at_call(2))
    assert read_manifest(out).dataset_id == read_manifest(reference).parent_id  # still the old
    with pytest.raises(ResumeError, match="--resume"):
        append(src, out, workers=1)  # not over an interrupted append without --resume
    append(src, out, workers=2, resume=True)
    assert comparable(local_files(out)) == comparable(local_files(reference))


def test_nothing_new_changes_nothing(tmp_path):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    add_images(src, {"a": range(3), "b": range(3)})
    build(src, out, CONFIG, workers=1)
    before = local_files(out)
    result = append(src, out, workers=1)
    assert result.nothing_new and local_files(out) == before


def test_changed_and_disappeared_files_are_reported_and_kept(grown):
    src, out, _ = grown
    os.utime(os.path.join(src, "cat", "000.png"), ns=(5, 5))
    os.remove(os.path.join(src, "dog", "001.png"))
    result = append(src, out, workers=1)
    report = read_manifest(out).extra["append"]
    assert report["changed"] == {"count": 1, "examples": ["cat/000.png"]}
    assert report["disappeared"] == {"count": 1, "examples": ["dog/001.png"]}
    assert "dog/001.png" in rows(out) and result.plan.changed.count == 1
    again = append(src, out, workers=1)  # still reported: the dataset holds the old pixels
    assert again.nothing_new and again.plan.changed.examples == ["cat/000.png"]


def test_an_option_that_differs_from_the_dataset_is_refused(grown):
    src, out, before = grown
    with pytest.raises(ConfigError, match="--shard-size"):
        append(src, out, {"shard_size": 4}, workers=1)
    append(src, out, {"shard_size": 3, "val_split": 0.25}, workers=1)  # repeating is fine


def test_a_reader_mid_epoch_finishes_on_the_old_data(grown):
    src, out, _ = grown
    reader = ShardReader(out, "train", batch_size=2, shuffle=False, prefetch=0)
    expected = [x.copy() for x, _ in reader]
    served = []
    for index, (x, _) in enumerate(reader):
        if index == 1:
            append(src, out, workers=1)
        served.append(x.copy())
    assert len(served) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(served, expected))


def test_append_into_a_url(tmp_path):
    src = str(tmp_path / "src")
    add_images(src, {"a": range(4), "b": range(4)})
    out = "memory://append-test/out"
    build(src, out, CONFIG, workers=1)
    add_images(src, {"a": range(4, 8)})
    append(src, out, workers=1)
    manifest = read_manifest(out)
    assert sum(split.num_samples for split in manifest.splits.values()) == 12
    assert manifest.parent_id is not None
    assert run("verify", out).exit_code == 0


def test_the_command_line_summarizes_and_dry_runs(grown):
    src, out, before = grown
    result = run("append", src, out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Would append 15 images" in result.output and local_files(out) == before
    result = run("append", src, out, *OPTIONS[:2], "--quiet")
    assert result.exit_code == 0, result.output
    one_error_line(run("append", src, out, "--size", "6"), "--size")
    result = run("append", src, out)
    assert "nothing new" in result.output


@pytest.mark.parametrize("stop", [1, 3, "manifest", "log"])
def test_an_append_stopped_anywhere_resumes_to_the_same_bytes(grown, tmp_path, monkeypatch,
                                                              stop):
    """Stopped after a shard, after most, between the records and the manifest, and after
    the manifest but before the log is gone: --resume ends where an unbroken append does."""
    append_module = importlib.import_module("imgshard.append")  # imgshard.append: the function

    src, out, _ = grown
    reference = str(tmp_path / "reference")
    shutil.copytree(out, reference)
    append(src, reference, workers=1)
    if isinstance(stop, int):
        with pytest.raises(KeyboardInterrupt):
            append(src, out, workers=1, progress=stop_at_call(stop))
    else:
        name = "write_manifest" if stop == "manifest" else "finish_log"
        real = getattr(append_module, name)

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(append_module, name, interrupted)
        with pytest.raises(KeyboardInterrupt):
            append(src, out, workers=1)
        monkeypatch.setattr(append_module, name, real)
    result = append(src, out, workers=2, resume=True)
    assert comparable(local_files(out)) == comparable(local_files(reference))
    assert not [name for name in os.listdir(out) if name.startswith(".")]
    assert result.manifest.dataset_id == read_manifest(reference).dataset_id


def test_an_append_on_dask_writes_the_same_bytes(grown, tmp_path):
    src, out, _ = grown
    other = str(tmp_path / "other")
    shutil.copytree(out, other)
    append(src, out, workers=1)
    append(src, other, workers=2, executor="dask", scheduler="local")
    assert comparable(local_files(out)) == comparable(local_files(other))


def test_a_grown_labels_file_labels_the_new_files(tmp_path):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    labels = tmp_path / "labels.csv"
    for number in range(6):
        write_image(os.path.join(src, f"{number}.png"), size=(7, 6), seed=number)
    labels.write_text("".join(f"{n}.png,{'odd' if n % 2 else 'even'}\n" for n in range(6)))
    config = BuildConfig(size=(5, 5), shard_size=3, labels=str(labels))
    build(src, out, config, workers=1)
    for number in range(6, 9):
        write_image(os.path.join(src, f"{number}.png"), size=(7, 6), seed=number)
    labels.write_text(labels.read_text() + "6.png,even\n7.png,odd\n8.png,big\n")
    result = run("append", src, out)
    assert result.exit_code == 0, result.output
    assert "New class big takes a label" in result.output and "no longer sorted" in result.output
    names = read_manifest(out).class_names
    assert names == ["even", "odd", "big"]
    now = rows(out)
    assert [names[int(now[f"{n}.png"]["label"])] for n in (6, 7, 8)] == ["even", "odd", "big"]


def test_a_labels_file_named_from_another_folder_is_the_same_option(tmp_path, monkeypatch):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    (tmp_path / "run").mkdir()
    for number in range(4):
        write_image(os.path.join(src, f"{number}.png"), size=(7, 6), seed=number)
    (tmp_path / "run" / "labels.csv").write_text("0.png,a\n1.png,b\n2.png,a\n3.png,b\n")
    monkeypatch.chdir(tmp_path / "run")
    build(src, out, BuildConfig(size=(5, 5), labels="labels.csv"), workers=1)
    write_image(os.path.join(src, "4.png"), size=(7, 6), seed=4)
    with open(tmp_path / "run" / "labels.csv", "a") as stream:
        stream.write("4.png,a\n")
    monkeypatch.chdir(tmp_path)
    one_error_line(run("append", src, out), "labels")  # labels.csv is not here
    result = run("append", src, out, "--labels", str(tmp_path / "run" / "labels.csv"))
    assert result.exit_code == 0, result.output
    assert rows(out)["4.png"]["label"] == "0"


def test_a_new_class_that_sorts_last_is_not_called_unsorted(grown):
    """cat, dog + emu: class_names stays sorted, and the summary must not say otherwise."""
    src, out, _ = grown
    result = run("append", src, out)
    assert result.exit_code == 0, result.output
    assert read_manifest(out).class_names == ["cat", "dog", "emu"]
    assert "New class emu takes a label after the old ones" in result.output
    assert "no longer sorted" not in result.output


def test_a_refused_option_is_shown_as_it_is_typed(tmp_path):
    """``--size 8x8 differs from the dataset's 6x6``, not ``[8, 8]`` and ``[6, 6]`` (Python's
    lists), and a string option without quotes."""
    src = tmp_path / "src"
    write_image(str(src / "a" / "x.png"), size=(9, 7), seed=0)
    out = tmp_path / "out"
    assert run("build", src, out, "--size", "6", "-q").exit_code == 0
    one_error_line(run("append", src, out, "--size", "8"),
                   "--size 8x8 differs from the dataset's 6x6: an append takes every option")
    one_error_line(run("append", src, out, "--resize", "crop"),
                   "--resize crop differs from the dataset's stretch")


def test_append_help_says_every_option_defaults_to_the_datasets():
    """Not a build's defaults ([224], [none]): an append takes them from OUT's manifest."""
    text = " ".join(run("append", "--help").output.split())
    assert "[224]" not in text and "[none]" not in text and "[float16]" not in text
    assert "one number means square. [the dataset's]" in text
    assert "before the val split. [the dataset's]" in text
    assert "one per shard task. [all cores]" in text  # how to run, not what to write


def test_append_help_says_labels_may_name_where_the_file_is_now():
    """The one option an append takes that may differ from the recorded one."""
    text = " ".join(run("append", "--help").output.split())
    assert "Where the dataset's labels CSV is now, if it moved" in text
