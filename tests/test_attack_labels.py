"""A hostile tester against multi-label builds and numeric targets (``--labels`` cells
``cat|dog``, ``--targets``): labels and targets CSV files, appends, overwrites, verify and the
reader's memory check. Each test is one finding: it failed before its fix."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from conftest import one_error_line, run, stop_at_call, write_image

from imgshard import BuildConfig, ShardReader, build, read_manifest
from imgshard.reader import ReaderError

NAMES = [f"img{n}.png" for n in range(8)]


def images(src, names=NAMES) -> str:
    for number, name in enumerate(names):
        write_image(os.path.join(src, name), size=(8, 6), seed=number)
    return str(src)


def write_csv(path, header, rows) -> str:
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def src(tmp_path) -> str:
    return images(tmp_path / "src")


def test_verify_counts_the_targets_files_it_checks(src, tmp_path):
    # Found: verify said "(2 files checked)" for a shard with images, labels and targets
    # (its progress bar's total too, which then ran past it): targets files were not counted.
    targets = write_csv(tmp_path / "t.csv", ["path", "age"], [[n, 1] for n in NAMES])
    labels = write_csv(tmp_path / "l.csv", ["path", "label"], [[n, "a|b"] for n in NAMES])
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(labels=labels, targets=targets, size=(4, 4)), workers=1)
    result = run("verify", out, "--workers", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "(3 files checked)" in result.output, result.output


def test_a_targets_path_outside_src_names_the_targets_file(src, tmp_path):
    # Found: "Error: labels file t.csv, row 2: ..." for a row of the targets file (no labels
    # file given at all): the path check of both files always called it a labels file.
    targets = write_csv(tmp_path / "t.csv", ["path", "age"], [["../secret.png", 1]])
    one_error_line(run("build", src, tmp_path / "out", "--targets", targets, "--no-labels"),
                   "targets file", "row 2", "'../secret.png'")


@pytest.mark.parametrize("cell", ["3.4028234e38", "-3.4028234e38", "3.40282356e38"])
def test_the_largest_float32_targets_are_stored(src, tmp_path, cell):
    # Found: "'3.4028234e38' is not a finite float32 number": float32's largest value (and
    # any above 3.4e38 that rounds to it) was refused, the bound being 3.4e38 itself.
    targets = write_csv(tmp_path / "t.csv", ["path", "v"], [[n, cell] for n in NAMES])
    out = str(tmp_path / "out")
    result = run("build", src, out, "--targets", targets, "--no-labels", "--size", "4")
    assert result.exit_code == 0, result.output
    shard = read_manifest(out).splits["train"].shards[0]
    stored = np.load(os.path.join(out, shard.targets))
    assert stored.dtype == np.float32 and np.isfinite(stored).all()
    assert (stored == np.float32(float(cell))).all()


def test_overwrite_of_an_interrupted_build_keeps_a_users_targets_named_file(src, tmp_path):
    # Found: an interrupted build without --targets, a file of the user's named
    # train-00000.targets.npy put in OUT, then build --overwrite: the file was deleted (the
    # progress log's plan was taken to account for targets files it never writes).
    labels = write_csv(tmp_path / "l.csv", ["path", "label"], [[n, "ab"[i % 2]]
                                                                for i, n in enumerate(NAMES)])
    out = str(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        build(src, out, BuildConfig(labels=labels, size=(4, 4), shard_size=2), workers=1,
              progress=stop_at_call(1))
    mine = os.path.join(out, "train-00001.targets.npy")
    with open(mine, "wb") as stream:
        stream.write(b"the user's own file")
    one_error_line(run("build", src, out, "--labels", labels, "--size", "4", "--overwrite"),
                   "train-00001.targets.npy")
    with open(mine, "rb") as stream:
        assert stream.read() == b"the user's own file"
    os.remove(mine)  # an interrupted build with targets: --overwrite removes its targets files
    targets = write_csv(tmp_path / "t.csv", ["path", "age"], [[n, 1] for n in NAMES])
    config = BuildConfig(labels=labels, targets=targets, size=(4, 4), shard_size=2)
    with pytest.raises(KeyboardInterrupt):
        build(src, out, config, workers=1, overwrite=True, progress=stop_at_call(2))
    assert "train-00000.targets.npy" in os.listdir(out)
    build(src, out, BuildConfig(labels=labels, size=(4, 4)), workers=1, overwrite=True)
    assert not [name for name in os.listdir(out) if ".targets." in name]


def test_append_with_a_labels_file_grown_multi_label_is_one_line(src, tmp_path):
    # Found: a single-label dataset, its labels file grown with a cell 'a|b' for a new image,
    # then imgshard append: "TypeError: list indices must be integers or slices, not tuple"
    # (a traceback), the multi-label scan's tuple used as one class index.
    rows = [[n, "ab"[i % 2]] for i, n in enumerate(NAMES)]
    labels = write_csv(tmp_path / "l.csv", ["path", "label"], rows)
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(labels=labels, size=(4, 4)), workers=1)
    images(src, ["new.png"])
    write_csv(labels, ["path", "label"], [*rows, ["new.png", "a|b"]])
    one_error_line(run("append", src, out, "--labels", labels), "multi-label")
    assert read_manifest(out).splits["train"].num_samples == len(NAMES)


def test_a_multi_hot_labels_copy_larger_than_memory_is_refused_before_it_is_made(
        tmp_path, monkeypatch):
    # Found: the reader copies each shard's labels file it maps (to check it), a byte a class
    # a sample for multi-hot rows, but its memory check counted 4 bytes a sample: a shard of
    # 3,000 images of 20,000 classes (60 MB of labels) was copied on a machine with 20 MB.
    out = many_classes(tmp_path, classes=20_000, rows=3000)
    monkeypatch.setattr("imgshard.reader.checks.available_memory", lambda: 20_000_000)
    with pytest.raises(ReaderError, match="memory"), \
            ShardReader(out, "train", batch_size=1, prefetch=0, label_mode="multi_hot") as r:
        next(iter(r))


def many_classes(tmp_path, *, classes: int, rows: int) -> str:
    """A multi-label dataset of ``classes`` classes (the labels file names them on files that
    are gone) whose one shard claims ``rows`` samples (see :func:`grow_shard`)."""
    src = images(tmp_path / "src", NAMES[:2])
    names = [f"c{n:05d}" for n in range(classes)]
    listed = [["img0.png", "|".join(names[:2])], ["img1.png", names[2]]]
    listed += [[f"gone/{n}.png", name] for n, name in enumerate(names)]
    labels = write_csv(tmp_path / "l.csv", ["path", "label"], listed)
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(labels=labels, size=(2, 2), dtype="uint8"), workers=1)
    grow_shard(out, rows)
    return out


def grow_shard(out: str, rows: int) -> None:
    """Make the first train shard of ``out`` hold ``rows`` samples (files of zeros, the
    manifest's counts edited: what a reader sizes its memory by)."""
    import json

    path = os.path.join(out, "manifest.json")
    with open(path) as stream:
        document = json.load(stream)
    split = document["splits"]["train"]
    shard = split["shards"][0]
    files = [(shard["images"], document["image_shape"])]
    if shard.get("labels"):
        files.append((shard["labels"], [len(document["class_names"])]))
    if shard.get("targets"):
        files.append((shard["targets"], [len(document["target_names"])]))
    for name, columns in files:
        stored = np.load(os.path.join(out, name), mmap_mode="r")
        grown = np.lib.format.open_memmap(os.path.join(out, name + ".new"), mode="w+",
                                          dtype=stored.dtype, shape=(rows, *columns))
        grown[:len(stored)] = stored
        grown.flush()
        del grown, stored
        os.replace(os.path.join(out, name + ".new"), os.path.join(out, name))
    split["num_samples"] += rows - shard["num_samples"]
    shard["num_samples"] = rows
    document.pop("dataset_id", None)
    with open(path, "w") as stream:
        json.dump(document, stream)


def test_verify_compares_samples_csv_with_multi_hot_labels_without_copying_them(tmp_path):
    # Found: verify copied each labels file whole to compare it with samples.csv, a byte a
    # class a sample: 69 MB held for a shard of 3,000 images of 20,000 classes (and a sparse
    # file named by an edited manifest can claim any size).
    import csv
    import tracemalloc

    from imgshard.verify import verify_directory

    out = many_classes(tmp_path, classes=20_000, rows=3000)
    with open(os.path.join(out, "samples.csv"), "a", newline="") as stream:
        csv.writer(stream).writerows([f"x{n}.png", "train", "train-00000.npy", n, ""]
                                     for n in range(2, 3000))
    tracemalloc.start()
    try:
        problems = verify_directory(out, deep=False, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert any("disagree" in str(problem) for problem in problems), problems
    assert peak < 30_000_000, f"{peak:,} bytes"


def test_a_manifest_listing_no_labels_file_for_one_shard_is_refused(src, tmp_path):
    # Found: a multi-label dataset's manifest edited to drop one shard's labels file was read,
    # and batches mixing that shard and another came with fewer label rows than images
    # ((2, 3) multi-hot rows for 4 images and 4 targets rows): labels silently misaligned.
    from conftest import edit_manifest

    from imgshard.errors import ImgshardError

    labels = write_csv(tmp_path / "l.csv", ["path", "label"],
                       [[n, "a|b" if i % 3 == 0 else "abc"[i % 3]] for i, n in enumerate(NAMES)])
    targets = write_csv(tmp_path / "t.csv", ["path", "age"], [[n, i] for i, n in enumerate(NAMES)])
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(labels=labels, targets=targets, size=(4, 4), shard_size=3),
          workers=1)

    def drop(document):
        document["splits"]["train"]["shards"][0].pop("labels")
        document["splits"]["train"]["shards"][0].pop("labels_sha256")

    edit_manifest(out, drop)
    one_error_line(run("inspect", out), "shards[0].labels")
    with pytest.raises(ImgshardError, match="labels"), \
            ShardReader(out, "train", batch_size=4, label_mode=("multi_hot", "targets")) as r:
        for x, (hot, values) in r:
            assert len(x) == len(hot) == len(values)


@pytest.mark.parametrize("kind", ["labels", "targets"])
def test_a_cell_longer_than_the_csv_modules_limit_is_one_line(src, tmp_path, kind):
    # Found: a labels cell of 30,000 labels (legal: 'c0|c1|...'), or a quote left open in a
    # labels or targets file, stopped the build with "_csv.Error: field larger than field
    # limit (131072)" and a traceback.
    path = tmp_path / f"{kind}.csv"
    many = "|".join(f"c{n}" for n in range(30_000))
    if kind == "labels":
        path.write_text(f"path,label\nimg0.png,{many}\nimg1.png,a\n")
    else:
        path.write_text('path,age\nimg0.png,1\nimg1.png,"2\n' + "9" * 200_000 + "\n")
    one_error_line(run("build", src, tmp_path / "out", f"--{kind}", path, "--size", "4"),
                   f"{kind} file", "row ")


@pytest.mark.parametrize("mode", [("binary",), ("binary", "targets"), ["targets", "binary"]])
def test_binary_in_a_tuple_of_modes_checks_the_subsets_labels_as_alone(src, tmp_path, mode):
    # Found: classes=['b', 'c'], relabel=False and label_mode=('binary', 'targets') served
    # binary labels 1.0 and 2.0 (the classes' own indices) without a word; label_mode='binary'
    # alone refuses them ("pass relabel=True").
    labels = write_csv(tmp_path / "l.csv", ["path", "label"],
                       [[n, "abc"[i % 3]] for i, n in enumerate(NAMES)])
    targets = write_csv(tmp_path / "t.csv", ["path", "age"], [[n, i] for i, n in enumerate(NAMES)])
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(labels=labels, targets=targets, size=(4, 4)), workers=1)
    with pytest.raises(ReaderError, match="relabel=True"):
        ShardReader(out, "train", batch_size=4, label_mode=mode, classes=["b", "c"],
                    relabel=False)


def test_verify_checks_targets_finite_without_a_copy_of_their_size(tmp_path):
    # Found: verify's check that targets are finite made a bool array of the whole targets
    # file (a byte a target): 41 MB for a shard of 40,000 rows of 1,024 targets, where its
    # count of labels goes a chunk at a time to keep memory flat.
    import tracemalloc

    from imgshard.verify import verify_directory

    src = images(tmp_path / "src", NAMES[:2])
    names = [f"t{n}" for n in range(1024)]
    targets = write_csv(tmp_path / "t.csv", ["path", *names],
                        [[n, *range(1024)] for n in NAMES[:2]])
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(targets=targets, no_labels=True, size=(1, 1), color="grayscale",
                                dtype="uint8"), workers=1)
    grow_shard(out, 40_000)
    tracemalloc.start()
    try:
        verify_directory(out, deep=False, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"{peak:,} bytes"


@pytest.mark.parametrize("stray", ["gone.png", "notes.txt", "img7.png"])
def test_a_row_of_a_file_not_built_does_not_make_the_dataset_multi_label(src, tmp_path, stray):
    # Found: one row 'gone.png,a|b' for a file that is not in SRC (or not an image, or here
    # img7.png, left out for want of targets) made a dataset of one label per image
    # multi-label: multi-hot label files, and label_mode='int' refused ("use multi_hot"),
    # where the README says a build is multi-label when a file has more than one.
    rows = [[n, "ab"[i % 2]] for i, n in enumerate(NAMES) if n != stray] + [[stray, "a|b"]]
    labels = write_csv(tmp_path / "l.csv", ["path", "label"], rows)
    targets = write_csv(tmp_path / "t.csv", ["path", "age"],
                        [[n, i] for i, n in enumerate(NAMES) if n != "img7.png"])
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(labels=labels, targets=targets, size=(4, 4)), workers=1)
    assert read_manifest(out).label_kind == "single"
    with ShardReader(out, "train", batch_size=8, label_mode="int", shuffle=False) as reader:
        (_, classes), = list(reader)
    assert sorted(classes.tolist()) == [0, 0, 0, 0, 1, 1, 1]
