"""inspect, verify and preview on real shard directories, and the damage verify must catch."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CLASS_COLOURS, build_small
from PIL import Image

from imgshard import BuildConfig, build
from imgshard.cli import cli
from imgshard.manifest import read_manifest


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """conftest's small build, with one broken file for the skip list (``copy`` copies it)."""
    return build_small(tmp_path_factory.mktemp("trust"), broken=True)


def test_inspect_shows_counts_shares_options_and_skips(built):
    result = run("inspect", built)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "images: 8x10x3 float16" in text
    assert "split train:" in text and "split val:" in text
    assert "options: " in text and "shard_size=4" in text
    assert "1  cannot decode: not a recognised image format  (e.g. red/broken.png)" in text
    manifest = read_manifest(built)
    for name, count in manifest.splits["train"].class_counts.items():
        share = count / manifest.splits["train"].num_samples
        assert f"{count:>9,}  {share:6.1%}" in text


def test_inspect_json_is_machine_readable_and_sizes_are_true(built):
    summary = json.loads(run("inspect", built, "--json").output)
    train = summary["splits"]["train"]
    manifest = read_manifest(built)
    files = [s.images for s in manifest.splits["train"].shards] + \
        [s.labels for s in manifest.splits["train"].shards]
    assert train["bytes"] == sum(os.path.getsize(os.path.join(built, f)) for f in files)
    assert train["num_shards"] == len(manifest.splits["train"].shards)
    assert summary["skipped"] == {"cannot decode: not a recognised image format":
                                  {"count": 1, "examples": ["red/broken.png"]}}
    assert abs(sum(c["share"] for c in train["classes"].values()) - 1) < 1e-9


def test_inspect_never_opens_a_shard(built, copy):
    for name in os.listdir(copy):
        if name.endswith(".npy"):
            os.chmod(copy / name, 0)
            (copy / name).write_bytes(b"")
    assert run("inspect", copy).exit_code == 0


def test_verify_passes_a_clean_directory(built):
    for args in ([], ["--deep"], ["--workers", "2"]):
        result = run("verify", built, "-q", *args)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"OK: {built} matches its manifest")


def damage_flip(copy):
    path = copy / "train-00001.npy"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "train-00001.npy: checksum does not match"


def damage_truncate(copy):
    path = copy / "train-00000.npy"
    path.write_bytes(path.read_bytes()[:-100])
    return "train-00000.npy: not a readable .npy file"


def damage_delete(copy):
    os.remove(copy / "val-00000.npy")
    return "val-00000.npy: shard file is missing"


def damage_extra(copy):
    shutil.copy(copy / "train-00000.npy", copy / "train-00009.npy")
    return "train-00009.npy: shard file not listed in the manifest"


def damage_swap(copy):
    first, second = copy / "train-00000.npy", copy / "train-00001.npy"
    data = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(data)
    return "train-00000.npy: checksum does not match"


def damage_count(copy):
    document = json.loads((copy / "manifest.json").read_text())
    document["splits"]["train"]["num_samples"] += 1
    (copy / "manifest.json").write_text(json.dumps(document))
    return "manifest.json: split train says"


@pytest.mark.parametrize("damage", [damage_flip, damage_truncate, damage_delete, damage_extra,
                                    damage_swap, damage_count])
def test_verify_catches_damage(copy, damage):
    expected = damage(copy)
    result = run("verify", copy, "-q")
    assert result.exit_code == 1
    assert expected in result.output, result.output
    assert result.output.rstrip().splitlines()[-1].endswith(("problem found", "problems found"))
    assert "Traceback" not in result.output


def test_verify_deep_finds_nan_that_checksums_cannot(copy):
    path = copy / "train-00000.npy"
    images = np.load(path)
    images[0, 0, 0, 0] = np.nan
    np.save(path, images)
    document = json.loads((copy / "manifest.json").read_text())
    from imgshard.storage.files import file_sha256

    document["splits"]["train"]["shards"][0]["sha256"] = file_sha256(str(path))
    (copy / "manifest.json").write_text(json.dumps(document))
    assert "dataset_id" in run("verify", copy, "-q").output  # the edit shows...
    document["dataset_id"] = read_manifest(copy).dataset_id  # ...unless the id is redone too
    (copy / "manifest.json").write_text(json.dumps(document))
    assert run("verify", copy, "-q").exit_code == 0
    result = run("verify", copy, "-q", "--deep")
    assert result.exit_code == 1 and "train-00000.npy: NaN or inf near row 0" in result.output


def test_preview_draws_one_labelled_row_per_class(built, tmp_path):
    output = tmp_path / "grid.png"
    result = run("preview", built, "-o", output, "--per-class", "2", "--seed", "1")
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open(output).convert("RGB"))
    assert sheet.shape == (3 * (8 + 2), 120 + 2 * (10 + 2), 3)
    for row, name in enumerate(sorted(CLASS_COLOURS)):
        pixel = sheet[row * 10 + 4, 120 + 5]
        assert np.abs(pixel.astype(int) - CLASS_COLOURS[name]).max() <= 1, name


def test_preview_of_unlabelled_grayscale_uint8(tmp_path):
    from conftest import write_image

    write_image(str(tmp_path / "src" / "a.png"), size=(6, 6), colour=(200, 200, 200))
    build(str(tmp_path / "src"), str(tmp_path / "out"),
          BuildConfig(size=(6, 6), no_labels=True, color="grayscale", dtype="uint8"))
    result = run("preview", tmp_path / "out", "-o", tmp_path / "g.png", "--per-class", "3")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "g.png").size == (120 + 3 * 8, 8)


def test_commands_report_missing_directories_in_one_line(tmp_path):
    for args in (["inspect", tmp_path / "none"], ["verify", tmp_path / "none"],
                 ["preview", tmp_path / "none", "-o", tmp_path / "x.png"]):
        result = run(*args)
        assert result.exit_code == 1 and result.output.startswith("Error: ")
        assert len(result.output.strip().splitlines()) == 1
