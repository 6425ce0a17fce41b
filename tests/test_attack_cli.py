"""Hostile tests of what the commands print back (attack-cli): option values shown as a user
would type them, inspect of hostile manifests, append's counts, and refusals that name the
option given."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from conftest import build_numbered, one_error_line, run, stop_at_call, write_image

from imgshard import append
from imgshard.manifest import read_manifest, write_manifest
from imgshard.merge import merge, reshard


@pytest.fixture
def dataset(tmp_path):
    """A float16 dataset of two classes with a val split of 1/4, built from SRC."""
    src = tmp_path / "src"
    for name in "ab":
        for number in range(4):
            write_image(str(src / name / f"{number}.png"), size=(7, 6),
                        seed=ord(name) * 10 + number)
    out = tmp_path / "out"
    built = run("build", src, out, "--size", "5", "--val-split", "0.25", "-q", "--workers", "1")
    assert built.exit_code == 0, built.output
    return src, out


def options_line(out) -> str:
    result = run("inspect", out)
    assert result.exit_code == 0, result.output
    return next(line for line in result.output.splitlines() if line.startswith("options: "))


def test_inspect_shows_a_val_split_as_it_is_typed(dataset):
    """``val_split=1/4`` cannot be typed back (``--val-split 1/4`` is not a valid float)."""
    _, out = dataset
    assert "val_split=0.25" in options_line(out).split(", ")
    assert run("build", "src", "elsewhere", "--val-split", "1/4").exit_code == 2  # click refuses


@pytest.mark.parametrize("option, value", [("--val-split", "0.5"), ("--rescale", "0.5"),
                                           ("--val-split", "0.2")])
def test_a_refused_append_shows_the_value_as_it_was_typed(dataset, option, value):
    """``--val-split 0.5`` was refused as ``--val-split 1/2 differs from the dataset's 1/4``."""
    src, out = dataset
    one_error_line(run("append", src, out, option, value), f"{option} {value} differs")


def test_a_refused_option_from_a_toml_file_is_the_one_it_gives(dataset, tmp_path):
    src, out = dataset
    config = tmp_path / "options.toml"
    config.write_text("val_split = 0.5\nshuffle = false\n")
    result = run("append", src, out, "--config", config)
    one_error_line(result)
    assert "--val-split 0.5 differs from the dataset's 0.25" in result.output \
        or "--no-shuffle differs from the dataset's --shuffle" in result.output, result.output


@pytest.mark.parametrize("key, value", [("val_split", 5e-324), ("offset", 1e-310),
                                        ("offset", -5e-324)])
def test_inspect_of_a_manifest_with_a_subnormal_number(dataset, key, value):
    """1/value overflows to inf and round(inf) raised OverflowError: a traceback, not a line."""
    _, out = dataset
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"][key] = value
    path.write_text(json.dumps(manifest))
    result = run("inspect", out)
    assert result.exit_code == 0, result.output
    assert f"{key}={value!r}" in options_line(out).split(", ")


def test_append_counts_equal_what_the_manifest_gained(dataset):
    """Broken files in an old class, a new class and a new class of broken files alone, with a
    val split: the summary's counts are the manifest's growth."""
    src, out = dataset
    for number in range(4, 8):
        write_image(str(src / "a" / f"{number}.png"), size=(7, 6), seed=100 + number)
    write_image(str(src / "c" / "0.png"), size=(7, 6), seed=900)
    (src / "a" / "bad.jpg").write_bytes(b"not a jpeg")
    os.makedirs(src / "z")
    (src / "z" / "bad.png").write_bytes(b"not a png")
    before = read_manifest(out)
    result = run("append", src, "file://" + str(out), "--workers", "1")
    after = read_manifest(out)
    gained = {name: split.num_samples - before.splits[name].num_samples
              for name, split in after.splits.items()}
    skips = len(after.skipped) - len(before.skipped)
    assert skips == 2 and sum(gained.values()) == 5
    counts = ", ".join(f"{name} {count}" for name, count in gained.items())
    assert f"Appended to file://{out}: {counts} images, {skips} new files skipped" \
        in result.output, result.output


def test_a_resumed_append_counts_what_the_manifest_gained(dataset):
    src, out = dataset
    for number in range(4, 10):
        write_image(str(src / "b" / f"{number}.png"), size=(7, 6), seed=300 + number)
    (src / "b" / "bad.jpg").write_bytes(b"not a jpeg")
    before = read_manifest(out)
    with pytest.raises(KeyboardInterrupt):
        append(str(src), str(out), workers=1, progress=stop_at_call(1))
    result = run("append", src, out, "--resume", "--workers", "1")
    after = read_manifest(out)
    gained = {name: split.num_samples - before.splits[name].num_samples
              for name, split in after.splits.items()}
    counts = ", ".join(f"{name} {count}" for name, count in gained.items())
    assert f"Appended to {out}: {counts} images, 1 new file skipped" in result.output, \
        result.output


def test_a_refused_option_does_not_print_a_manifests_control_characters(dataset):
    """A manifest's ``classes`` (checked as a list of strings, its dataset_id recomputed) reached
    the terminal raw in ``--classes a,b differs from the dataset's ...``: a window-title escape,
    a bell and a second line."""
    src, out = dataset
    manifest = read_manifest(out)
    hostile = ["a\x1b]0;owned\x07", "b\nsecond line"]
    write_manifest(out, dataclasses.replace(manifest, config={**manifest.config,
                                                              "classes": hostile}))
    result = run("append", src, out, "--classes", "a,b")
    one_error_line(result, "--classes a,b differs from the dataset's a\\x1b]0;owned\\x07,b\\n")
    assert "\x1b" not in result.output and "\x07" not in result.output


@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("command", ["merge", "reshard"])
def test_an_interrupted_merge_is_not_pointed_to_build_resume(tmp_path, where, command):
    """A merge or reshard stopped midway leaves a resume log: inspect said ``its build did not
    finish (run imgshard build ... --resume)``, which neither has; they start again with
    ``--overwrite``, as their Ctrl-C message says."""
    first = build_numbered(tmp_path / "a", 12, 2, 2)
    second = build_numbered(tmp_path / "b", 12, 2, 2)
    out = str(tmp_path / "out") if where == "local" else f"memory://attack-cli/{command}"
    with pytest.raises(KeyboardInterrupt):
        if command == "merge":
            merge([first, second], out, shard_size=2, workers=1, progress=stop_at_call(2))
        else:
            reshard(first, out, shard_size=3, workers=1, progress=stop_at_call(2))
    for args in (["inspect", out], ["verify", out], ["preview", out, "-o", tmp_path / "p.png"]):
        one_error_line(run(*args), "manifest.json is missing: its merge or reshard did not "
                                   "finish (run it again with --overwrite)")


def test_a_merge_over_its_interrupted_output_is_not_told_to_resume(tmp_path):
    """Run again without --overwrite, the merge said ``use --overwrite ... or --resume to
    finish the interrupted one``: merge has no --resume."""
    first = build_numbered(tmp_path / "a", 12, 2, 2)
    out = str(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        merge([first, first], out, shard_size=2, workers=1, progress=stop_at_call(2))
    result = run("merge", first, first, "-o", out, "--shard-size", "2")
    one_error_line(result, "is not empty (use --overwrite")
    assert "--resume" not in result.output
    assert run("merge", first, first, "-o", out, "--resume").exit_code == 2  # no such option


def test_preview_refuses_a_jpeg_taller_than_jpeg_allows(tmp_path):
    """A sheet of 258 classes of 254-pixel rows is 66,048 pixels tall: as PNG it is written,
    as JPEG (at most 65,500 a side) it failed after all its samples were read, with ``cannot
    write or read: broken data stream when writing image file``."""
    src = tmp_path / "src"
    for number in range(258):
        write_image(str(src / f"c{number:03d}" / "0.png"), size=(4, 4), colour=(number, 0, 0))
    out = tmp_path / "out"
    assert run("build", src, out, "--size", "254", "--dtype", "uint8", "--color", "grayscale",
               "-q", "--workers", "1").exit_code == 0
    one_error_line(run("preview", out, "-o", tmp_path / "p.jpg", "--per-class", "1"),
                   "376x66048", "65,500", ".png")
    assert not (tmp_path / "p.jpg").exists()
    assert run("preview", out, "-o", tmp_path / "p.png", "--per-class", "1").exit_code == 0
