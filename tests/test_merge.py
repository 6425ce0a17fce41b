"""``imgshard merge`` and ``imgshard reshard``: pixels copied without decoding, byte for byte,
labels remapped to the union of the class names, inputs' checksums verified as they are read."""

from __future__ import annotations

import csv
import os
import shutil
import tracemalloc

import numpy as np
import pytest

from conftest import comparable, local_files, one_error_line, run, write_image
from imgshard import BuildConfig, ShardReader, build, merge, reshard
from imgshard.manifest import read_manifest


def build_classes(root, classes: dict[str, int], *, size=(6, 5), shard_size=3, seed=0,
                  **options) -> str:
    """ROOT/out built from seeded noise images (every one distinct) in class folders."""
    src = os.path.join(root, "src")
    for class_index, (name, count) in enumerate(sorted(classes.items())):
        for number in range(count):
            write_image(os.path.join(src, name, f"{name}{seed}-{number:02d}.png"), size=(9, 7),
                        seed=seed * 10_000 + class_index * 100 + number)
    out = os.path.join(root, "out")
    build(src, out, BuildConfig(size=size, shard_size=shard_size, val_split=0.25, **options),
          workers=1)
    return out


def samples_of(directory) -> dict[tuple[str, str], dict]:
    """Each sample of a shard directory by (source column or '', path): its split, class name,
    pixels (bytes) and label as stored."""
    manifest = read_manifest(directory)
    shards = {}
    found = {}
    with open(os.path.join(directory, "samples.csv"), newline="") as stream:
        for row in csv.DictReader(stream):
            if row["shard"] not in shards:
                shards[row["shard"]] = np.load(os.path.join(directory, row["shard"]))
            pixels = shards[row["shard"]][int(row["index"])]
            label = int(row["label"]) if row["label"] else None
            name = None if label is None else manifest.class_names[label]
            found[(row.get("source", ""), row["path"])] = {
                "split": row["split"], "class": name, "pixels": pixels.tobytes(), "label": label}
    return found


def stored_labels(directory, split) -> list[int]:
    manifest = read_manifest(directory)
    return [int(v) for shard in manifest.splits[split].shards
            for v in np.load(os.path.join(directory, shard.labels))]


def stored_rows(directory, split) -> np.ndarray:
    manifest = read_manifest(directory)
    return np.concatenate([np.load(os.path.join(directory, shard.images))
                           for shard in manifest.splits[split].shards])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two datasets of the same pixel options: classes cat/dog and dog/fox."""
    a = build_classes(tmp_path_factory.mktemp("a"), {"cat": 5, "dog": 4}, seed=1)
    b = build_classes(tmp_path_factory.mktemp("b"), {"dog": 3, "fox": 6}, seed=2)
    return a, b


# -- reshard ----------------------------------------------------------------------------------

def test_reshard_recuts_the_same_rows_into_shards_of_the_new_size(pair, tmp_path):
    source = pair[0]
    out = str(tmp_path / "re")
    result = run("reshard", source, out, "--shard-size", "2")
    assert result.exit_code == 0, result.output
    before, after = read_manifest(source), read_manifest(out)
    assert after.config["shard_size"] == 2 and after.parent_id == before.dataset_id
    for split in before.splits:
        sizes = [s.num_samples for s in after.splits[split].shards]
        assert all(size == 2 for size in sizes[:-1]) and 1 <= sizes[-1] <= 2
        assert stored_rows(out, split).tobytes() == stored_rows(source, split).tobytes()
        assert stored_labels(out, split) == stored_labels(source, split)
        assert after.splits[split].class_counts == before.splits[split].class_counts
    assert samples_of(out) == samples_of(source)
    assert after.class_names == before.class_names and after.skipped == before.skipped
    assert run("verify", out).exit_code == 0


def test_reshard_is_byte_identical_run_after_run(pair, tmp_path):
    first, second = str(tmp_path / "one"), str(tmp_path / "two")
    reshard(pair[1], first, shard_size=4)
    reshard(pair[1], second, shard_size=4)
    assert comparable(local_files(first)) == comparable(local_files(second))


def test_reshard_to_the_same_size_gives_the_same_shard_files(pair, tmp_path):
    out = str(tmp_path / "same")
    reshard(pair[0], out, shard_size=3)
    ours, theirs = local_files(out), local_files(pair[0])
    shards = [name for name in theirs if name.endswith(".npy")]
    assert shards and all(ours[name] == theirs[name] for name in shards)
    assert read_manifest(out).dataset_id == read_manifest(pair[0]).dataset_id


def test_reshard_needs_a_whole_positive_size(pair, tmp_path):
    one_error_line(run("reshard", pair[0], str(tmp_path / "x"), "--shard-size", "0"),
                   "shard size")


# -- merge ------------------------------------------------------------------------------------

def test_merge_concatenates_splits_and_remaps_labels_to_the_union(pair, tmp_path):
    a, b = pair
    out = str(tmp_path / "merged")
    result = run("merge", a, b, "-o", out, "--shard-size", "4")
    assert result.exit_code == 0, result.output
    merged = read_manifest(out)
    assert merged.class_names == ["cat", "dog", "fox"]
    inputs = {a: samples_of(a), b: samples_of(b)}
    found = samples_of(out)
    assert len(found) == sum(len(rows) for rows in inputs.values())
    for (source, path), sample in found.items():
        original = inputs[source][("", path)]  # the source column names the input as given
        assert sample["pixels"] == original["pixels"] and sample["split"] == original["split"]
        assert sample["class"] == original["class"]  # the same class name, a new label index
    for split in merged.splits:  # each split: A's rows, then B's, in their stored order
        rows = [stored_rows(d, split) for d in (a, b) if split in read_manifest(d).splits]
        assert stored_rows(out, split).tobytes() == np.concatenate(rows).tobytes()
        counts = merged.splits[split].class_counts
        assert counts == {name: sum((read_manifest(d).splits[split].class_counts or {})
                                    .get(name, 0) for d in (a, b)) for name in counts}
    assert merged.extra["merged_from"] == [
        {"source": d, "dataset_id": read_manifest(d).dataset_id} for d in (a, b)]
    assert run("verify", out).exit_code == 0
    assert "Merged 2 datasets" in result.output and "no path in two inputs" in result.output


def test_a_merged_dataset_reads_back_through_the_reader(pair, tmp_path):
    out = str(tmp_path / "merged")
    merge([pair[0], pair[1]], out)
    with ShardReader(out, "train", batch_size=4, shuffle=False) as reader:
        labels = np.concatenate([y for _, y in reader])
    assert labels.tolist() == stored_labels(out, "train")
    assert set(labels.tolist()) == {0, 1, 2}


def test_paths_in_two_inputs_are_reported_as_duplicates(pair, tmp_path):
    a = pair[0]
    twin = str(tmp_path / "twin")
    shutil.copytree(a, twin)
    out = str(tmp_path / "merged")
    result = run("merge", a, twin, "-o", out)
    assert result.exit_code == 0, result.output
    total = len(samples_of(a))
    assert f"{total} paths occur in more than one input" in result.output
    recorded = read_manifest(out).extra["duplicate_paths"]
    assert recorded["count"] == total and len(recorded["examples"]) == min(total, 10)
    assert all(len(example["sources"]) == 2 for example in recorded["examples"])


@pytest.mark.parametrize("option, value, named", [
    ("size", (7, 5), "size"),
    ("dtype", "uint8", "dtype"),
    ("rescale", 1 / 127.5, "rescale"),
    ("offset", -1.0, "offset"),
    ("color", "grayscale", "color"),
    ("resize", "crop", "resize"),
    ("interpolation", "bicubic", "interpolation"),
])
def test_merge_refuses_other_pixel_options_naming_the_first_difference(pair, tmp_path, option,
                                                                       value, named):
    other = build_classes(tmp_path, {"dog": 3}, **{option: value})
    result = run("merge", pair[0], other, "-o", str(tmp_path / "merged"))
    one_error_line(result, named)
    assert not os.path.exists(tmp_path / "merged" / "manifest.json")


def test_merge_refuses_labelled_with_unlabelled(pair, tmp_path):
    src = tmp_path / "flat"
    for number in range(3):
        write_image(str(src / f"{number}.png"), size=(9, 7), seed=number)
    out = str(tmp_path / "unlabelled")
    build(str(src), out, BuildConfig(size=(6, 5), no_labels=True), workers=1)
    one_error_line(run("merge", pair[0], out, "-o", str(tmp_path / "merged")), "labels")


def test_merge_refuses_an_output_that_is_an_input_and_leaves_it_alone(pair, tmp_path):
    a = str(tmp_path / "a")
    shutil.copytree(pair[0], a)
    before = local_files(a)
    one_error_line(run("merge", a, pair[1], "-o", a, "--overwrite"), "overlap")
    one_error_line(run("merge", pair[1], a, "-o", os.path.join(a, "inner")), "overlap")
    assert local_files(a) == before


def test_merge_into_a_directory_with_foreign_files_is_refused(pair, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_error_line(run("merge", pair[0], "-o", str(out), "--overwrite"), "notes.txt")
    assert (out / "notes.txt").read_text() == "mine"


def test_a_corrupt_input_shard_is_one_line_and_no_output_looks_finished(pair, tmp_path):
    a = str(tmp_path / "a")
    shutil.copytree(pair[0], a)
    shard = read_manifest(a).splits["train"].shards[-1].images
    with open(os.path.join(a, shard), "r+b") as stream:  # same size, one byte changed
        stream.seek(-1, os.SEEK_END)
        last = stream.read(1)
        stream.seek(-1, os.SEEK_END)
        stream.write(bytes([last[0] ^ 1]))
    out = str(tmp_path / "merged")
    one_error_line(run("merge", a, pair[1], "-o", out, "-q"), "checksum")
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    result = run("merge", pair[0], pair[1], "-o", out, "--overwrite")  # cleans what it left
    assert result.exit_code == 0, result.output
    assert run("verify", out).exit_code == 0


def test_an_edited_input_samples_csv_is_refused(pair, tmp_path):
    a = str(tmp_path / "a")
    shutil.copytree(pair[0], a)
    path = os.path.join(a, "samples.csv")
    lines = open(path).read().splitlines(keepends=True)
    open(path, "w").write("".join(lines[:-1]))  # a sample without its row
    one_error_line(run("merge", a, pair[1], "-o", str(tmp_path / "m"), "-q"), "samples.csv")


def test_merge_and_reshard_work_on_urls(pair, tmp_path):
    a, b = "memory://merge-test/a", "memory://merge-test/b"
    reshard(pair[0], a, shard_size=3)
    reshard(pair[1], b, shard_size=3)
    merge([a, b], "memory://merge-test/merged", shard_size=4)
    local = str(tmp_path / "local")
    merge([pair[0], pair[1]], local, shard_size=4)
    remote = ShardReader("memory://merge-test/merged", "train", batch_size=64, shuffle=False,
                         cache_dir=str(tmp_path / "cache"))
    with remote, ShardReader(local, "train", batch_size=64, shuffle=False) as mine:
        assert [x.tobytes() for x, _ in remote] == [x.tobytes() for x, _ in mine]


def test_merge_streams_in_memory_bounded_by_a_shard(tmp_path):
    """30 shards of 300 KB: the Python heap never holds much more than one."""
    source = build_classes(tmp_path, {"a": 45, "b": 45}, size=(128, 128), shard_size=3)
    shard_bytes = 3 * 128 * 128 * 3 * 2
    tracemalloc.start()
    try:
        reshard(source, str(tmp_path / "re"), shard_size=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = sum(os.path.getsize(os.path.join(source, n)) for n in os.listdir(source))
    assert peak < 4 * shard_bytes + 1_000_000 < total / 3


def test_a_merge_of_merges_keeps_the_source_of_each_sample(pair, tmp_path):
    a, b = pair
    c = build_classes(tmp_path / "c", {"emu": 2}, seed=3)
    first, second = str(tmp_path / "ab"), str(tmp_path / "abc")
    merge([a, b], first)
    merge([first, c], second)
    sources = {source for source, _ in samples_of(second)}
    assert sources == {a, b, c}
    assert read_manifest(second).class_names == ["cat", "dog", "emu", "fox"]


def test_a_corrupt_input_on_a_url_names_the_file_where_it_lies(pair, tmp_path):
    import fsspec

    url = "memory://merge-test/corrupt"
    reshard(pair[0], url, shard_size=3)
    shard = read_manifest(url).splits["val"].shards[0].images
    memory = fsspec.filesystem("memory")
    data = bytearray(memory.cat(f"{url}/{shard}"))
    data[-1] ^= 1
    memory.pipe(f"{url}/{shard}", bytes(data))
    result = run("merge", url, "-o", str(tmp_path / "m"), "-q")
    one_error_line(result, f"{url}/{shard}: checksum")


# -- workers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shard_size", [2, 4, 7])
def test_merge_is_byte_identical_for_any_worker_count(pair, tmp_path, shard_size):
    """Output shards that take rows from two input shards, and input shards cut across two
    output shards, whatever thread writes which."""
    outputs = []
    for workers in (1, 2, 5):
        out = str(tmp_path / f"w{workers}")
        result = run("merge", *pair, "-o", out, "--shard-size", shard_size, "--workers", workers,
                     "-q")
        assert result.exit_code == 0, result.output
        outputs.append(comparable(local_files(out)))
    assert outputs[0] == outputs[1] == outputs[2]
    assert run("verify", str(tmp_path / "w5")).exit_code == 0


def test_reshard_takes_workers_and_keeps_the_bytes(pair, tmp_path):
    one, many = str(tmp_path / "one"), str(tmp_path / "many")
    reshard(pair[0], one, shard_size=2, workers=1)
    result = run("reshard", pair[0], many, "--shard-size", "2", "--workers", "3", "-q")
    assert result.exit_code == 0, result.output
    assert comparable(local_files(one)) == comparable(local_files(many))


def test_each_input_file_is_hashed_once_however_many_output_shards_read_it(pair, tmp_path,
                                                                          monkeypatch):
    """An input shard cut across two output shards (written by two threads) is verified once:
    parallel copying must not hash the inputs twice."""
    from imgshard.formats import npy

    hashed = []
    original = npy.descriptor_sha256

    def counting(descriptor):
        hashed.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        return original(descriptor)

    monkeypatch.setattr(npy, "descriptor_sha256", counting)
    merge(list(pair), str(tmp_path / "m"), shard_size=2, workers=3)
    shards = [(d, s) for d in pair for split in read_manifest(d).splits.values()
              for s in split.shards]
    images = sorted(os.path.realpath(os.path.join(d, s.images)) for d, s in shards)
    labels = {os.path.realpath(os.path.join(d, s.labels)) for d, s in shards}
    assert sorted(name for name in hashed if not name.endswith(".labels.npy")) == images
    assert {name for name in hashed if name.endswith(".labels.npy")} == labels  # (small: they
    # are read again, with the samples.csv rows, to check each row's label)


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_merge_workers_must_be_a_positive_whole_number(pair, tmp_path, workers):
    result = run("merge", *pair, "-o", str(tmp_path / "m"), "--workers", workers)
    assert result.exit_code != 0 and "workers" in result.output.lower()
    assert "Traceback" not in result.output
    assert not os.path.exists(tmp_path / "m" / "manifest.json")


def test_a_corrupt_input_with_many_workers_stops_every_thread_and_leaves_no_finished_output(
        pair, tmp_path):
    a = str(tmp_path / "a")
    shutil.copytree(pair[0], a)
    shard = read_manifest(a).splits["train"].shards[0].images
    with open(os.path.join(a, shard), "r+b") as stream:
        stream.seek(-1, os.SEEK_END)
        last = stream.read(1)
        stream.seek(-1, os.SEEK_END)
        stream.write(bytes([last[0] ^ 1]))
    out = str(tmp_path / "merged")
    one_error_line(run("merge", a, pair[1], "-o", out, "-q", "--workers", "4",
                       "--shard-size", "1"), f"{shard}: checksum")
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]  # threads stopped
    result = run("merge", pair[0], pair[1], "-o", out, "--overwrite", "-q", "--workers", "4")
    assert result.exit_code == 0, result.output
    assert run("verify", out).exit_code == 0


def test_a_bit_depth_difference_names_an_unrecorded_bit_depth_as_8(pair, tmp_path):
    """An 8-bit build records no bit_depth (its config and id are what they were); the message
    said 'bit_depth None'."""
    eight = build_classes(tmp_path, {"dog": 3}, bit_depth=8)
    assert "bit_depth" not in read_manifest(eight).config
    assert read_manifest(pair[0]).config["bit_depth"] == 16
    one_error_line(run("merge", pair[0], eight, "-o", str(tmp_path / "m")), "bit_depth 8",
                   "with 16")


def test_merge_shows_a_differing_size_as_it_is_typed(pair, tmp_path):
    other = build_classes(tmp_path, {"dog": 3}, size=(8, 8))
    one_error_line(run("merge", pair[0], other, "-o", str(tmp_path / "merged")), " 8x8")
