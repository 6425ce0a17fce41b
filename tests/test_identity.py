"""A dataset's identity: ``dataset_id`` is the hash of what it holds (class names, config, each
split's shard checksums in order), the same for every build of the same input and config, shown
by ``inspect``, checked by ``verify``, and never trusted from the file by a reader."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from conftest import edit_manifest, one_error_line, run

from imgshard import BuildConfig, ShardReader, build, read_manifest
from imgshard.manifest import SplitInfo, dataset_id_of


def test_a_build_records_the_hash_of_what_it_holds(built):
    with open(os.path.join(built, "manifest.json")) as stream:
        document = json.load(stream)
    content = {"class_names": document["class_names"], "config": document["config"],
               "splits": {name: [[s["sha256"], s.get("labels_sha256")] for s in split["shards"]]
                          for name, split in document["splits"].items()}}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert document["dataset_id"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert document["parent_id"] is None
    assert read_manifest(built).dataset_id == document["dataset_id"]


def test_the_same_input_and_config_give_the_same_id_whatever_the_workers(make_class_folders,
                                                                          tmp_path):
    src = make_class_folders({"a": 5, "b": 4})
    config = BuildConfig(size=(8, 8), shard_size=2)
    ids = []
    for workers in (1, 2):
        out = str(tmp_path / f"out{workers}")
        build(src, out, config, workers=workers)
        ids.append(read_manifest(out).dataset_id)
    build(src, str(tmp_path / "other"), BuildConfig(size=(8, 8), shard_size=3), workers=1)
    assert ids[0] == ids[1] != read_manifest(str(tmp_path / "other")).dataset_id


def test_the_id_changes_with_a_checksum_a_class_name_or_the_order_of_shards():
    from imgshard.manifest import ShardInfo

    shards = [ShardInfo("a.npy", 2, "1" * 64), ShardInfo("b.npy", 2, "2" * 64)]
    base = dataset_id_of(["x"], {"size": [2, 2]}, {"train": SplitInfo(4, None, shards)})
    changed = [
        dataset_id_of(["y"], {"size": [2, 2]}, {"train": SplitInfo(4, None, shards)}),
        dataset_id_of(["x"], {"size": [3, 2]}, {"train": SplitInfo(4, None, shards)}),
        dataset_id_of(["x"], {"size": [2, 2]}, {"train": SplitInfo(4, None, shards[::-1])}),
        dataset_id_of(["x"], {"size": [2, 2]}, {"val": SplitInfo(4, None, shards)}),
    ]
    assert len({base, *changed}) == 5
    # what is not the data does not count: the split's claimed count, file names
    renamed = [ShardInfo("c.npy", 2, "1" * 64), ShardInfo("d.npy", 2, "2" * 64)]
    assert dataset_id_of(["x"], {"size": [2, 2]}, {"train": SplitInfo(9, None, renamed)}) == base


def test_inspect_shows_the_id(built):
    manifest = read_manifest(built)
    text = run("inspect", built)
    assert text.exit_code == 0 and f"dataset: {manifest.dataset_id}\n" in text.output
    summary = json.loads(run("inspect", built, "--json").output)
    assert summary["dataset_id"] == manifest.dataset_id and summary["parent_id"] is None


def test_verify_reports_a_manifest_whose_recorded_id_lies(copy):
    edit_manifest(copy, lambda d: d.update(dataset_id="0" * 64))
    result = run("verify", copy, "-q")
    assert result.exit_code == 1
    assert f"manifest.json: dataset_id {'0' * 64} is not the hash" in result.output
    assert ShardReader(str(copy)).state_dict()["dataset_id"] == read_manifest(copy).dataset_id
    assert read_manifest(copy).dataset_id != "0" * 64  # a reader computes it, never trusts it


def test_a_manifest_written_before_ids_still_reads(copy, built):
    edit_manifest(copy, lambda d: [d.pop("dataset_id"), d.pop("parent_id")])
    assert read_manifest(copy).dataset_id == read_manifest(built).dataset_id
    assert run("verify", copy, "-q").exit_code == 0


@pytest.mark.parametrize("key, value", [("dataset_id", 7), ("dataset_id", "xyz"),
                                        ("dataset_id", "A" * 64), ("parent_id", "0" * 65),
                                        ("parent_id", ["0" * 64]), ("dataset_id", "0" * 63 + "\n")])
def test_a_malformed_id_is_one_line(copy, key, value):
    edit_manifest(copy, lambda d: d.update({key: value}))
    one_error_line(run("inspect", copy), f"{key} must be 64 hex digits or null")
