"""Several labels per image (``--labels`` cells ``cat|dog``, or a path on several rows) and
numeric targets per image (``--targets``): stored beside the shards, served by the reader as
``multi_hot`` / ``targets`` (or both with a tuple of modes), checked by verify, shown by inspect,
refused in one line where a command cannot keep them."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import comparable, local_files, one_error_line, run, stop_at_call, write_image
from imgshard import BuildConfig, ShardReader, build, merge, read_manifest
from imgshard.reader import ReaderError
from imgshard.samples import Sample, hold_out

FINDINGS = {  # path -> the classes of each image (a chest X-ray's findings)
    **{f"img{n:02d}.png": ("effusion",) for n in range(0, 6)},
    **{f"img{n:02d}.png": ("effusion", "nodule") for n in range(6, 10)},
    **{f"img{n:02d}.png": ("nodule",) for n in range(10, 14)},
    **{f"img{n:02d}.png": ("atelectasis", "effusion", "nodule") for n in range(14, 16)},
    **{f"img{n:02d}.png": ("normal",) for n in range(16, 22)},
}
CLASSES = ["atelectasis", "effusion", "nodule", "normal"]


def flat_images(src, names) -> None:
    for number, name in enumerate(sorted(names)):
        write_image(os.path.join(src, name), size=(8, 6), seed=number)


def multi_csv(path, findings=FINDINGS, *, rows_per_label=False) -> str:
    """A labels CSV: 'cat|dog' cells, or (``rows_per_label``) one row per label."""
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label"])
        for name, labels in findings.items():
            if rows_per_label:
                writer.writerows([name, label] for label in labels)
            else:
                writer.writerow([name, "|".join(labels)])
    return str(path)


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    src, out = str(root / "src"), str(root / "out")
    flat_images(src, FINDINGS)
    labels = multi_csv(root / "labels.csv")
    result = run("build", src, out, "--labels", labels, "--size", "4", "--shard-size", "5",
                 "--val-split", "0.25", "--workers", "1")
    assert result.exit_code == 0, result.output
    return src, out, labels, result.output


def stored(out) -> dict[str, dict]:
    """Each sample by path: its split and its stored label row and targets row."""
    manifest = read_manifest(out)
    found = {}
    with open(os.path.join(out, "samples.csv"), newline="") as stream:
        for row in csv.DictReader(stream):
            info = next(s for s in manifest.splits[row["split"]].shards
                        if s.images == row["shard"])
            index = int(row["index"])
            found[row["path"]] = {
                "split": row["split"], "csv_label": row["label"],
                "label": np.load(os.path.join(out, info.labels))[index]
                if info.labels else None,
                "targets": np.load(os.path.join(out, info.targets))[index]
                if getattr(info, "targets", None) else None}
    return found


# -- multi-label: the build --------------------------------------------------------------------

def test_a_multi_label_csv_is_stored_as_multi_hot_rows(multi):
    _, out, _, output = multi
    manifest = read_manifest(out)
    assert manifest.label_kind == "multi" and manifest.class_names == CLASSES
    found = stored(out)
    assert set(found) == set(FINDINGS)
    for path, labels in FINDINGS.items():
        expected = np.array([name in labels for name in CLASSES], np.uint8)
        assert found[path]["label"].dtype == np.uint8
        assert found[path]["label"].tolist() == expected.tolist(), path
        assert found[path]["csv_label"] == "|".join(str(CLASSES.index(n)) for n in labels)
    for split, info in manifest.splits.items():  # each label counted where it occurs
        paths = [p for p, s in found.items() if s["split"] == split]
        assert info.class_counts == {name: sum(name in FINDINGS[p] for p in paths)
                                     for name in CLASSES}
    assert "multi-label" in output
    assert run("verify", out, "--deep").exit_code == 0


def test_a_path_on_several_rows_adds_a_label_each(multi, tmp_path):
    src, out, _, _ = multi
    rows = multi_csv(tmp_path / "rows.csv", rows_per_label=True)
    again = str(tmp_path / "again")
    build(src, again, BuildConfig(labels=rows, size=(4, 4), shard_size=5, val_split=0.25),
          workers=2)
    ours, theirs = local_files(again), local_files(out)  # (the manifests name other CSVs)
    assert {n: d for n, d in ours.items() if n.endswith((".npy", ".csv"))} == \
        {n: d for n, d in theirs.items() if n.endswith((".npy", ".csv"))}
    assert read_manifest(again).splits == read_manifest(out).splits


def test_a_csv_with_one_label_per_file_stays_single(tmp_path):
    src = str(tmp_path / "src")
    single = {name: labels[:1] for name, labels in FINDINGS.items()}
    flat_images(src, single)
    labels = multi_csv(tmp_path / "labels.csv", single)
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(labels=labels, size=(4, 4)), workers=1)
    manifest = read_manifest(out)
    assert manifest.label_kind == "single"
    assert json.load(open(os.path.join(out, "manifest.json")))["label_kind"] == "single"
    assert stored(out)["img00.png"]["label"].dtype == np.int32


def test_the_val_split_of_multi_labels_follows_the_documented_rule(multi):
    """Each file is stratified by its rarest label (fewest files in the source; ties: the
    lower index), and each stratum holds out as a single-label class would."""
    _, out, _, _ = multi
    found = stored(out)
    counts = {name: sum(name in labels for labels in FINDINGS.values()) for name in CLASSES}
    strata = {path: min(labels, key=lambda n: (counts[n], CLASSES.index(n)))
              for path, labels in FINDINGS.items()}
    samples = [Sample(path, CLASSES.index(strata[path])) for path in sorted(FINDINGS)]
    _, val = hold_out(samples, 0.25, read_manifest(out).config["seed"])
    assert {p for p, s in found.items() if s["split"] == "val"} == {s.path for s in val}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sets(st.sampled_from("abcd"), min_size=1), min_size=2, max_size=40))
def test_every_class_with_two_files_keeps_one_in_train(label_sets):
    """Whatever the label sets: a file goes to val only if every class it carries keeps a
    file in train (a class never vanishes from training)."""
    from imgshard.samples import hold_out_multi

    samples = [Sample(f"{n}.png", tuple(sorted("abcd".index(c) for c in labels)))
               for n, labels in enumerate(label_sets)]
    train, val = hold_out_multi(samples, 0.3, 0)
    assert sorted(s.path for s in train + val) == sorted(s.path for s in samples)
    in_train = {label for s in train for label in s.label}
    assert in_train == {label for s in samples for label in s.label}


# -- multi-label: reading ----------------------------------------------------------------------

def test_the_reader_serves_multi_hot_float32(multi):
    _, out, _, _ = multi
    with ShardReader(out, "train", batch_size=64, shuffle=False,
                     label_mode="multi_hot") as reader:
        (x, y), = list(reader)
    assert y.dtype == np.float32 and y.shape == (len(x), len(CLASSES))
    found = stored(out)
    expected = [found[p]["label"] for p in sorted(found, key=lambda p: (
        found[p]["split"] != "train", p)) if found[p]["split"] == "train"]
    assert sorted(map(tuple, y.tolist())) == sorted(tuple(map(float, e)) for e in expected)


@pytest.mark.parametrize("mode", ["int", "categorical", "binary"])
def test_single_label_modes_on_a_multi_label_dataset_are_one_line(multi, mode):
    with pytest.raises(ReaderError, match="multi_hot"):
        ShardReader(multi[1], "train", label_mode=mode)


def test_multi_hot_of_a_single_label_dataset_is_one_hot(tmp_path):
    src = str(tmp_path / "src")
    for name in ("a", "b", "c"):
        write_image(os.path.join(src, name, "1.png"), size=(6, 6), seed=ord(name))
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(size=(4, 4)), workers=1)
    with ShardReader(out, "train", batch_size=8, shuffle=False, label_mode="multi_hot") as r:
        (_, y), = list(r)
    with ShardReader(out, "train", batch_size=8, shuffle=False, label_mode="categorical") as r:
        (_, categorical), = list(r)
    assert y.tolist() == categorical.tolist()


def test_multi_label_to_tf_dataset_and_keras(multi):
    pytest.importorskip("tensorflow")
    _, out, _, _ = multi
    reader = ShardReader(out, "train", batch_size=4, label_mode="multi_hot")
    dataset = reader.to_tf_dataset()
    assert dataset.element_spec[1].shape.as_list() == [None, len(CLASSES)]
    x, y = next(iter(dataset))
    assert y.dtype.name == "float32" and y.shape[1] == len(CLASSES)
    keras_batches = reader.to_keras()
    _, ky = keras_batches[0]
    assert ky.shape[1] == len(CLASSES)


def test_inspect_counts_each_label_and_says_multi(multi):
    _, out, _, _ = multi
    result = run("inspect", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["label_kind"] == "multi"
    text = run("inspect", out).output
    assert "multi-label" in text and "nodule" in text


def test_a_multi_hot_value_other_than_0_or_1_is_caught_by_verify_and_the_reader(multi,
                                                                               tmp_path):
    """Even with its checksum updated in the manifest (an edit, not corruption)."""
    import hashlib

    from imgshard.errors import ShardError

    out = str(tmp_path / "out")
    shutil.copytree(multi[1], out)
    manifest_path = os.path.join(out, "manifest.json")
    document = json.load(open(manifest_path))
    shard = document["splits"]["train"]["shards"][0]
    path = os.path.join(out, shard["labels"])
    labels = np.load(path)
    labels[0, 0] = 2
    np.save(path, labels)
    shard["labels_sha256"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    json.dump(document, open(manifest_path, "w"))
    result = run("verify", out)
    assert result.exit_code != 0
    assert f"{shard['labels']}: multi-hot value 2 (only 0 or 1)" in result.output
    with ShardReader(out, "train", label_mode="multi_hot", shuffle=False) as reader, \
            pytest.raises(ShardError, match="multi-hot value 2"):
        list(reader)


def test_merge_and_append_refuse_multi_label_datasets_in_one_line(multi, tmp_path):
    src, out, _, _ = multi
    one_error_line(run("merge", out, "-o", str(tmp_path / "m")), "multi-label")
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    one_error_line(run("append", src, copy), "multi-label")


def test_a_subset_of_classes_of_a_multi_label_dataset_is_refused(multi):
    with pytest.raises(ReaderError, match="multi-label"):
        ShardReader(multi[1], "train", classes=["nodule"], label_mode="multi_hot")


# -- numeric targets ---------------------------------------------------------------------------

AGES = {f"{c}/{n}.png": (20.0 + 3 * n + (c == "dog"), 0.5 * n) for c in ("cat", "dog")
        for n in range(7)}


def targets_csv(path, rows=AGES, header=("path", "age", "quality")) -> str:
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        for name, values in rows.items():
            writer.writerow([name, *values])
    return str(path)


@pytest.fixture(scope="module")
def aged(tmp_path_factory):
    root = tmp_path_factory.mktemp("aged")
    src, out = str(root / "src"), str(root / "out")
    for number, name in enumerate(sorted(AGES)):
        write_image(os.path.join(src, name), size=(8, 6), seed=number)
    targets = targets_csv(root / "targets.csv")
    result = run("build", src, out, "--targets", targets, "--size", "4", "--shard-size", "4",
                 "--val-split", "0.3", "--workers", "1")
    assert result.exit_code == 0, result.output
    return src, out, targets


def test_targets_are_stored_as_float32_rows_beside_the_shards(aged):
    _, out, _ = aged
    manifest = read_manifest(out)
    assert manifest.target_names == ["age", "quality"] and manifest.label_kind == "single"
    found = stored(out)
    for path, values in AGES.items():
        assert found[path]["targets"].dtype == np.float32
        assert found[path]["targets"].tolist() == list(np.float32(values))
        assert CLASSES_OF(path) == read_manifest(out).class_names[int(found[path]["label"])]
    assert run("verify", out, "--deep").exit_code == 0


def CLASSES_OF(path: str) -> str:
    return path.split("/")[0]


def test_the_reader_serves_targets_and_both_as_a_tuple(aged):
    _, out, _ = aged
    with ShardReader(out, "train", batch_size=64, shuffle=False, label_mode="targets") as r:
        (x, y), = list(r)
    assert y.dtype == np.float32 and y.shape == (len(x), 2)
    with ShardReader(out, "train", batch_size=64, shuffle=False,
                     label_mode=("int", "targets")) as r:
        (x2, (classes, targets)), = list(r)
    assert x2.tobytes() == x.tobytes() and targets.tolist() == y.tolist()
    assert classes.dtype == np.int32 and len(classes) == len(x)
    found = stored(out)
    train = {tuple(found[p]["targets"].tolist()): int(found[p]["label"]) for p in found
             if found[p]["split"] == "train"}
    assert {tuple(t): int(c) for t, c in zip(targets.tolist(), classes)} == train


def test_targets_to_tf_dataset_has_a_tuple_signature(aged):
    pytest.importorskip("tensorflow")
    reader = ShardReader(aged[1], "train", batch_size=4, label_mode=("categorical", "targets"))
    spec = reader.to_tf_dataset().element_spec
    assert spec[1][0].shape.as_list() == [None, 2] and spec[1][1].shape.as_list() == [None, 2]
    x, (c, t) = next(iter(reader.to_tf_dataset()))
    assert t.dtype.name == "float32"


def test_targets_without_labels(tmp_path):
    src = str(tmp_path / "src")
    flat = {name.replace("/", "-"): values for name, values in AGES.items()}
    flat_images(src, flat)
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(no_labels=True, targets=targets_csv(tmp_path / "t.csv", flat),
                                size=(4, 4)), workers=1)
    with ShardReader(out, "train", batch_size=64, label_mode="targets") as reader:
        (_, y), = list(reader)
    assert sorted(map(tuple, y.tolist())) == sorted(tuple(np.float32(v).tolist())
                                                    for v in flat.values())
    with pytest.raises(ReaderError, match="targets"):
        ShardReader(out, "train", label_mode="int")


def test_targets_mode_without_targets_is_one_line(multi):
    with pytest.raises(ReaderError, match="--targets"):
        ShardReader(multi[1], "train", label_mode="targets")


@pytest.mark.parametrize("cell, expected", [
    ("abc", "not a number"), ("nan", "not a number"), ("inf", "not a finite"), ("", "missing"),
])
def test_a_bad_target_cell_is_one_line_naming_the_row(aged, tmp_path, cell, expected):
    src, _, _ = aged
    rows = dict(AGES)
    rows["cat/3.png"] = (cell, 1.0)
    bad = targets_csv(tmp_path / "bad.csv", rows)
    one_error_line(run("build", src, str(tmp_path / "out"), "--targets", bad),
                   expected, "row")


@pytest.mark.parametrize("header, expected", [
    (("path",), "at least one"), (("file", "age", "quality"), "path"),
    (("path", "age", "age"), "twice"),
])
def test_a_bad_targets_header_is_one_line(aged, tmp_path, header, expected):
    src, _, _ = aged
    rows = {name: values[:len(header) - 1] for name, values in AGES.items()}
    one_error_line(run("build", src, str(tmp_path / "out"), "--targets",
                       targets_csv(tmp_path / "bad.csv", rows, header)), expected)


def test_a_file_without_targets_is_a_recorded_skip(aged, tmp_path):
    src, _, _ = aged
    rows = {name: values for name, values in AGES.items() if name != "dog/2.png"}
    rows["dog/99.png"] = (1.0, 2.0)
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(targets=targets_csv(tmp_path / "t.csv", rows), size=(4, 4)),
          workers=1)
    skipped = {s.path: s.reason for s in read_manifest(out).skipped}
    assert skipped["dog/2.png"] == "not in the targets file"
    assert skipped["dog/99.png"] == "listed in the targets file but not found"


def test_targets_builds_are_byte_identical_for_any_worker_count_and_resume(aged, tmp_path):
    src, out, targets = aged
    config = BuildConfig(targets=targets, size=(4, 4), shard_size=4, val_split=0.3)
    two = str(tmp_path / "two")
    build(src, two, config, workers=2)
    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        build(src, resumed, config, workers=1, progress=stop_at_call(2))
    build(src, resumed, config, workers=1, resume=True)
    assert comparable(local_files(two)) == comparable(local_files(resumed))
    assert comparable(local_files(two), ignore=("config",)) == \
        comparable(local_files(out), ignore=("config",))


def test_a_changed_targets_file_is_not_resumed(aged, tmp_path):
    src, _, _ = aged
    targets = targets_csv(tmp_path / "t.csv")
    out = str(tmp_path / "out")
    config = BuildConfig(targets=targets, size=(4, 4), shard_size=4)
    with pytest.raises(KeyboardInterrupt):
        build(src, out, config, workers=1, progress=stop_at_call(1))
    rows = dict(AGES)
    rows["cat/0.png"] = (99.0, 1.0)
    targets_csv(targets, rows)
    one_error_line(run("build", src, out, "--targets", targets, "--size", "4", "--shard-size",
                       "4", "--resume"), "targets file")


def test_merge_and_append_refuse_targets_and_overwrite_removes_them(aged, tmp_path):
    src, out, _ = aged
    one_error_line(run("merge", out, "-o", str(tmp_path / "m")), "a dataset with targets")
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    one_error_line(run("append", src, copy), "a dataset with targets")
    src = str(tmp_path / "other")
    write_image(os.path.join(src, "a", "1.png"), size=(6, 6))
    result = run("build", src, copy, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not [name for name in os.listdir(copy) if ".targets." in name]


def test_a_hostile_manifest_with_bad_target_fields_is_one_line(aged, tmp_path):
    for field, value in (("target_names", "age"), ("target_names", ["age", "age"]),
                         ("label_kind", "several")):
        copy = str(tmp_path / f"{field}-{len(str(value))}")
        shutil.copytree(aged[1], copy)
        path = os.path.join(copy, "manifest.json")
        document = json.load(open(path))
        document[field] = value
        json.dump(document, open(path, "w"))
        one_error_line(run("inspect", copy), field)


def test_inspect_names_the_targets(aged):
    report = json.loads(run("inspect", aged[1], "--json").output)
    assert report["target_names"] == ["age", "quality"]
    assert "age, quality" in run("inspect", aged[1]).output


def test_mean_of_served_targets_is_the_csv_mean(aged):
    """Every served target is a CSV value: over an epoch of both splits, the same multiset."""
    _, out, _ = aged
    served = []
    for split in ("train", "val"):
        with ShardReader(out, split, batch_size=3, label_mode="targets") as reader:
            served += [tuple(row) for _, y in reader for row in y.tolist()]
    assert sorted(served) == sorted(tuple(np.float32(v).tolist()) for v in AGES.values())
    assert math.isclose(np.mean([s[0] for s in served]), np.mean([v[0] for v in AGES.values()]),
                        rel_tol=1e-6)


# -- preview -----------------------------------------------------------------------------------

def test_preview_puts_a_multi_label_image_in_each_of_its_rows_with_its_names(multi, tmp_path):
    from PIL import Image

    from imgshard.preview import _pick, write_preview
    from imgshard.storage import Location

    out = multi[1]
    rows = _pick(Location.of(out), read_manifest(out), "train", 20, np.random.default_rng(0))
    by_class = {title: [text for _, text in samples] for title, samples in rows}
    found = stored(out)
    for name in CLASSES:
        expected = sorted("|".join(FINDINGS[p]) for p in found
                          if found[p]["split"] == "train" and name in FINDINGS[p])
        assert sorted(by_class[name]) == expected
    size = write_preview(out, str(tmp_path / "p.png"), per_class=2)
    assert Image.open(tmp_path / "p.png").size == size
    assert size[1] == len(CLASSES) * (4 + 12 + 2)  # each row: an image and its caption


def test_preview_writes_each_images_targets(aged):
    from imgshard.preview import _pick
    from imgshard.storage import Location

    rows = _pick(Location.of(aged[1]), read_manifest(aged[1]), "train", 20,
                 np.random.default_rng(0))
    captions = {text for _, samples in rows for _, text in samples}
    found = stored(aged[1])
    assert captions == {f"age={found[p]['targets'][0]:.4g} quality={found[p]['targets'][1]:.4g}"
                        for p in found if found[p]["split"] == "train"}


def test_mix_refuses_multi_hot_and_targets_in_one_line(multi, aged):
    from imgshard import mix

    for directory, mode in ((multi[1], "multi_hot"), (aged[1], "targets"),
                            (aged[1], ("int", "targets"))):
        reader = ShardReader(directory, "train", label_mode=mode)
        with pytest.raises(ReaderError, match="not yet"):
            mix([reader], seed=0)


def test_a_nan_target_is_caught_by_verify_and_the_reader(aged, tmp_path):
    """Even with its checksum updated in the manifest."""
    import hashlib

    from imgshard.errors import ShardError

    out = str(tmp_path / "out")
    shutil.copytree(aged[1], out)
    manifest_path = os.path.join(out, "manifest.json")
    document = json.load(open(manifest_path))
    shard = document["splits"]["train"]["shards"][0]
    path = os.path.join(out, shard["targets"])
    targets = np.load(path)
    targets[1, 0] = np.nan
    np.save(path, targets)
    shard["targets_sha256"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    json.dump(document, open(manifest_path, "w"))
    result = run("verify", out)
    assert f"{shard['targets']}: a target is NaN or infinite" in result.output
    assert result.exit_code != 0
    with ShardReader(out, "train", label_mode="targets", shuffle=False) as reader, \
            pytest.raises(ShardError, match="NaN or infinite"):
        list(reader)


def test_a_config_files_targets_path_is_relative_to_the_file(aged, tmp_path):
    src, _, _ = aged
    folder = tmp_path / "configs"
    folder.mkdir()
    targets_csv(folder / "ages.csv")
    (folder / "build.toml").write_text('targets = "ages.csv"\nsize = "4x4"\n')
    out = str(tmp_path / "out")
    result = run("build", src, out, "--config", folder / "build.toml", "-q")
    assert result.exit_code == 0, result.output
    assert read_manifest(out).target_names == ["age", "quality"]


def test_a_dry_run_counts_each_label_and_names_the_targets(multi, aged, tmp_path):
    src, _, labels, _ = multi
    result = run("build", src, str(tmp_path / "x"), "--labels", labels, "--dry-run")
    assert result.exit_code == 0, result.output
    counts = {name: sum(name in found for found in FINDINGS.values()) for name in CLASSES}
    for name, count in counts.items():
        assert any(line.split() == [name, str(count)] for line in result.output.splitlines())
    assert "multi-label" in result.output
    result = run("build", aged[0], str(tmp_path / "y"), "--targets", aged[2], "--dry-run")
    assert "Targets: age, quality" in result.output
