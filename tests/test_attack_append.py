"""A hostile user against ``imgshard append``: damaged records of what a dataset holds, manifests
that contradict themselves, a merged dataset, a source whose layout changed or whose only new
files are skips, and build --resume or Ctrl-C over an interrupted append. Each test is one
finding: it failed before its fix (or is marked xfail where it is not fixed)."""

from __future__ import annotations

import csv
import gzip
import importlib
import json
import os
import tracemalloc

import pytest
from conftest import edit_manifest, one_error_line, run
from test_append import add_images, rows

from imgshard import BuildConfig, build
from imgshard.append import append, kept_record
from imgshard.manifest import read_manifest
from imgshard.storage import Location

CONFIG = BuildConfig(size=(5, 5), shard_size=3, val_split=0.25, seed=3)
OPTIONS = ["--size", "5", "--shard-size", "3", "--val-split", "0.25", "--seed", "3"]


@pytest.fixture
def dataset(tmp_path):
    """A dataset of cat/dog (val held out), and its source with two more cats."""
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    add_images(src, {"cat": range(7), "dog": range(5)})
    build(src, out, CONFIG, workers=1)
    add_images(src, {"cat": range(7, 9)})
    return src, out


def test_a_truncated_samples_csv_is_refused_not_taken_for_new_files(dataset):
    # Found: the rows cut from samples.csv were appended again as new files, an old val
    # image among them now in train too (a leak), and the command said it succeeded.
    src, out = dataset
    path = os.path.join(out, "samples.csv")
    with open(path) as stream:
        kept = stream.readlines()[:5]
    with open(path, "w") as stream:
        stream.writelines(kept)
    before = read_manifest(out)
    one_error_line(run("append", src, out, "--workers", "1"), "samples.csv")
    assert read_manifest(out) == before


def test_a_samples_csv_naming_a_path_twice_is_refused(dataset):
    # The same as a cut file, with the row count intact: an edited row repeats another's path.
    src, out = dataset
    with open(os.path.join(out, "samples.csv"), newline="") as stream:
        table = list(csv.DictReader(stream))
    table[1]["path"] = table[0]["path"]
    with open(os.path.join(out, "samples.csv"), "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    one_error_line(run("append", src, out, "--workers", "1"), "samples.csv")


@pytest.mark.parametrize("edit", [
    lambda d: d["config"].__setitem__("no_labels", True),
    lambda d: (d.__setitem__("class_names", None),
               [split.__setitem__("class_counts", None) for split in d["splits"].values()]),
], ids=["no_labels-with-classes", "classes-null-with-labels"])
def test_a_manifest_whose_labels_contradict_its_config_is_one_line(dataset, edit):
    # Found: a traceback (TypeError in the assembler / IndexError in the plan), and new shard
    # files left in OUT unlisted.
    src, out = dataset
    edit_manifest(out, edit)
    names = set(os.listdir(out))
    one_error_line(run("append", src, out, "--workers", "1"), "class_names")
    assert set(os.listdir(out)) == names


def test_a_sources_record_of_one_huge_line_is_read_in_bounded_memory(dataset):
    # Found: 1 MB of gzip (a 1 GiB line) took 2 GB of memory and 13 s; here 64 MiB.
    _, out = dataset
    with gzip.open(os.path.join(out, "sources.jsonl.gz"), "wb") as packed:
        packed.write(b'["')
        for _ in range(64):
            packed.write(b"0" * (1 << 20))
    tracemalloc.start()
    try:
        record = kept_record(Location.of(out), read_manifest(out))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert record is None  # damaged: changed files cannot be told, and the summary says so
    assert peak < 16 << 20


def test_an_append_to_a_merged_dataset_is_refused(tmp_path):
    # Found: a merged dataset's paths are relative to several sources; a new file of SRC whose
    # path one of the other inputs holds was silently left out, the other input's files
    # reported as gone from SRC, and "built by an older imgshard" printed.
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    add_images(first, {"cat": range(4), "dog": range(3)})
    add_images(second, {"cat": range(4, 8)})
    for src, out in ((first, tmp_path / "A"), (second, tmp_path / "B")):
        build(src, str(out), CONFIG, workers=1)
    merged = str(tmp_path / "M")
    assert run("merge", tmp_path / "A", tmp_path / "B", "-o", merged).exit_code == 0
    add_images(first, {"cat": range(4, 6)})  # new to `a`; `b`'s cat/004.png is another image
    before = read_manifest(merged)
    one_error_line(run("append", first, merged, "--workers", "1"), "merge")
    assert read_manifest(merged) == before


def interrupt_before_the_manifest(monkeypatch) -> None:
    append_module = importlib.import_module("imgshard.append")  # imgshard.append: the function

    def stop(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(append_module, "write_manifest", stop)


def test_build_resume_over_an_interrupted_append_names_the_append(dataset, monkeypatch):
    # Found: "out is already complete: nothing to resume", exit 0, the append left unfinished.
    src, out = dataset
    interrupt_before_the_manifest(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        append(src, out, workers=1)
    monkeypatch.undo()
    one_error_line(run("build", src, out, *OPTIONS, "--resume", "--workers", "1"),
                   "interrupted append", "imgshard append", "--resume")
    assert run("append", src, out, "--resume", "--workers", "1").exit_code == 0
    assert "cat/008.png" in rows(out)


def test_an_interrupted_append_says_how_to_finish_it(dataset, monkeypatch):
    # Found: Ctrl-C during an append printed "Interrupted." alone; the next plain append is
    # refused until --resume is given.
    src, out = dataset
    interrupt_before_the_manifest(monkeypatch)
    result = run("append", src, out, "--workers", "1", "--quiet")
    assert result.exit_code == 130 and "--resume" in result.output, result.output


def test_the_sources_record_written_after_a_damaged_one_still_parses(dataset):
    # A guard: after a damaged record the append writes a whole new one, which reads back.
    src, out = dataset
    with open(os.path.join(out, "sources.jsonl.gz"), "wb") as stream:
        stream.write(b"not gzip")
    append(src, out, workers=1)
    record = kept_record(Location.of(out), read_manifest(out))
    assert record is not None and "cat/008.png" in record
    with gzip.open(os.path.join(out, "sources.jsonl.gz"), "rt") as lines:
        assert json.loads(next(lines))[0] == "cat/000.png"


def test_an_append_of_new_skips_alone_succeeds_and_keeps_the_chain(dataset):
    # Found: a link and a FIFO as SRC's only new files: the manifest was replaced, then
    # "Error: cannot write or read out/.imgshard-progress.jsonl", exit 1 (an append that
    # never wrote a progress log removed it); and the dataset "grew from" itself.
    src, out = dataset
    for name in ("cat/007.png", "cat/008.png"):
        os.remove(os.path.join(src, name))
    os.symlink("/etc/hostname", os.path.join(src, "cat", "link.png"))
    os.mkfifo(os.path.join(src, "dog", "fifo.png"))
    before = read_manifest(out)
    result = run("append", src, out, "--workers", "1")
    assert result.exit_code == 0, result.output
    after = read_manifest(out)
    assert {skip.path for skip in after.skipped} == {"cat/link.png", "dog/fifo.png"}
    assert after.dataset_id == before.dataset_id  # the same samples in the same places
    assert after.parent_id == before.parent_id != after.dataset_id
    assert "nothing new" in run("append", src, out, "--workers", "1").output


def test_a_damaged_sources_record_is_not_blamed_on_an_older_imgshard(dataset):
    # Found: a record of garbage made the summary say the dataset was "built by an older
    # imgshard"; the record is rewritten from this scan, so the user must hear why.
    src, out = dataset
    with open(os.path.join(out, "sources.jsonl.gz"), "wb") as stream:
        stream.write(b"garbage")
    result = run("append", src, out, "--workers", "1")
    said = result.output.replace(out, "OUT")  # the test's folder is named after it
    assert result.exit_code == 0 and "record is damaged" in said, said


def test_a_resharded_dataset_keeps_its_sources_record(dataset, tmp_path):
    src, out = dataset
    resharded = str(tmp_path / "R")
    assert run("reshard", out, resharded, "--shard-size", "2").exit_code == 0
    assert kept_record(Location.of(resharded), read_manifest(resharded)) is not None


def test_a_pre_split_source_that_gains_another_folder_is_refused(tmp_path):
    # Found: SRC of train/ and val/ gaining extra/ is scanned as class folders: the append
    # added the classes extra, train and val, called all 13 old files changed, and put
    # extra/'s images in train under the label "extra".
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    add_images(os.path.join(src, "train"), {"cat": range(5), "dog": range(4)})
    add_images(os.path.join(src, "val"), {"cat": range(5, 7), "dog": range(4, 6)})
    build(src, out, BuildConfig(size=(5, 5), shard_size=3), workers=1)
    add_images(os.path.join(src, "extra"), {"cat": range(2)})
    before = read_manifest(out)
    one_error_line(run("append", src, out, "--workers", "1"), "train/")
    assert read_manifest(out) == before
    os.rename(os.path.join(src, "extra"), os.path.join(src, "test"))  # a split: welcome
    assert run("append", src, out, "--workers", "1").exit_code == 0
    assert read_manifest(out).class_names == ["cat", "dog"]


@pytest.mark.parametrize("option, value", [("rescale", 2.0), ("shard_size", 2), ("seed", 4)])
def test_a_manifest_whose_config_was_edited_is_refused(dataset, option, value):
    # Found: an edited option (one that implies no other field) was taken as the dataset's:
    # the new shards were written with it (pixels scaled otherwise than the old ones, val
    # held out by another seed), and verify called the result fine. Its dataset_id says so.
    src, out = dataset
    edit_manifest(out, lambda document: document["config"].__setitem__(option, value))
    one_error_line(run("append", src, out, "--workers", "1"), "dataset_id")
