"""The command line: options, config files, dry runs, summaries and one-line errors."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import write_image

from imgshard import read_manifest
from imgshard.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.toml")))


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def src(make_class_folders):
    return make_class_folders({"blue": 6, "red": 4})


def test_build_prints_a_summary_and_exits_0(src, tmp_path):
    result = run("build", src, tmp_path / "out", "--size", "8x6", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert f"Built {tmp_path / 'out'}: train 10 images" in result.output
    assert "images/s" in result.output and "written" in result.output
    assert read_manifest(str(tmp_path / "out")).image_shape == (8, 6, 3)


def test_quiet_prints_nothing(src, tmp_path):
    result = run("build", src, tmp_path / "out", "--quiet", "--size", "4")
    assert result.exit_code == 0 and result.output == ""


def test_every_option_reaches_the_manifest(src, tmp_path):
    result = run("build", src, tmp_path / "out", "--size", "12x10", "--color", "grayscale",
                 "--resize", "pad", "--interpolation", "lanczos", "--dtype", "float32",
                 "--rescale", "0.5", "--offset", "-1", "--shard-size", "3", "--val-split", "0.25",
                 "--seed", "7", "--no-shuffle", "--max-pixels", "5000", "--classes", "red,blue",
                 "--bit-depth", "16", "-q")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest.config == {
        "size": [12, 10], "color": "grayscale", "resize": "pad", "interpolation": "lanczos",
        "dtype": "float32", "rescale": 0.5, "offset": -1.0, "shard_size": 3, "val_split": 0.25,
        "seed": 7, "shuffle": False, "labels": None, "no_labels": False,
        "classes": ["red", "blue"], "follow_links": False, "max_pixels": 5000, "bit_depth": 16,
    }
    assert manifest.class_names == ["red", "blue"]
    assert {name: s.num_samples for name, s in manifest.splits.items()} == {"train": 7, "val": 3}


def test_config_file_sets_options_and_flags_override_it(src, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('size = "16x16"\ncolor = "grayscale"\nshard-size = 2\nworkers = 1\n')
    result = run("build", src, tmp_path / "out", "--config", config, "--size", "8", "-q")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest.image_shape == (8, 8, 1) and manifest.config["shard_size"] == 2


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=os.path.basename)
def test_every_shipped_config_builds(src, tmp_path, config):
    result = run("build", src, tmp_path / "out", "--config", config, "-q")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(str(tmp_path / "out"))
    assert sum(s.num_samples for s in manifest.splits.values()) == 10
    assert manifest.config["size"] == list(manifest.image_shape[:2])


def test_shipped_configs_include_the_promised_three():
    names = {os.path.basename(path) for path in SHIPPED_CONFIGS}
    assert {"default.toml", "imagenet-224-rgb.toml", "small-64-grayscale.toml"} <= names


def test_dry_run_shows_counts_skips_shape_and_disk_use_but_writes_nothing(src, tmp_path):
    (tmp_path / "src" / "red" / "notes.txt").write_text("x")
    out = tmp_path / "out"
    result = run("build", src, out, "--dry-run", "--val-split", "0.5", "--shard-size", "2")
    assert result.exit_code == 0, result.output
    assert not out.exists()
    lines = [line.strip() for line in result.output.splitlines()]
    assert "Would build 10 images:" in lines
    assert "train: 5 images in 3 shards of up to 2" in lines
    assert "val: 5 images in 3 shards of up to 2" in lines
    assert "blue          3" in lines and "red           2" in lines
    assert "1  not an image extension  (e.g. red/notes.txt)" in lines
    assert "Each image: 224x224x3 float16, 301,056 bytes" in lines
    assert ("On disk: about 3.0 MB as float16 (this build); as float32: about 6.0 MB, as uint8: "
            "about 1.5 MB") in lines


@pytest.mark.parametrize("args, message", [
    (["missing-src"], "source missing-src does not exist"),
    (["--size", "0"], "size must be at least 1x1"),
    (["--size", "axb"], "size must look like 224 or 224x160"),
    (["--val-split", "1.5"], "val split must lie strictly between 0 and 1"),
    (["--val-split", "0"], "val split must lie strictly between 0 and 1"),
    (["--shard-size", "0"], "shard size must be a whole number >= 1"),
    (["--workers", "0"], "workers must be a whole number >= 1"),
    (["--labels", "nothing.csv"], "cannot read labels file nothing.csv"),
    (["--labels", "x.csv", "--no-labels"], "--labels and --no-labels exclude each other"),
    (["--config", "nothing.toml"], "cannot read config nothing.toml"),
])
def test_bad_input_is_one_line_and_exit_1(src, tmp_path, args, message):
    if args == ["missing-src"]:
        result = run("build", "missing-src", tmp_path / "out")
    else:
        result = run("build", src, tmp_path / "out", *args)
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n" or result.output.startswith(f"Error: {message}")
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_unknown_config_key_and_unknown_csv_class_are_errors(src, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("colour = 'rgb'\n")
    result = run("build", src, tmp_path / "out", "--config", config)
    assert result.exit_code == 1 and result.output == "Error: unknown option 'colour'\n"
    labels = tmp_path / "l.csv"
    labels.write_text("red/000.png,wolf\n")
    result = run("build", src, tmp_path / "out", "--labels", labels, "--classes", "red,blue")
    assert result.exit_code == 1
    assert "unknown class 'wolf'" in result.output


def test_no_images_and_non_empty_out_are_errors(tmp_path, src):
    (tmp_path / "empty").mkdir()
    result = run("build", tmp_path / "empty", tmp_path / "out")
    assert result.exit_code == 1 and result.output.startswith("Error: no images found in")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = run("build", src, tmp_path / "full")
    assert result.exit_code == 1
    assert result.output == (f"Error: output {tmp_path / 'full'} is not empty "
                             "(use --overwrite to replace an earlier build)\n")


def test_labels_csv_from_a_config_file_is_relative_to_that_file(tmp_path):
    write_image(str(tmp_path / "src" / "a.png"), colour=(1, 2, 3))
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "labels.csv").write_text("a.png,cat\n")
    (tmp_path / "conf" / "build.toml").write_text('labels = "labels.csv"\nsize = 4\n')
    result = run("build", tmp_path / "src", tmp_path / "out", "--config",
                 tmp_path / "conf" / "build.toml", "-q")
    assert result.exit_code == 0, result.output
    assert read_manifest(str(tmp_path / "out")).class_names == ["cat"]


def test_every_command_has_help():
    for args in (["-h"], ["--help"]):
        assert run(*args).exit_code == 0
    for name in cli.commands:
        result = run(name, "-h")
        assert result.exit_code == 0 and "Usage:" in result.output, name


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "imgshard", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("imgshard, version ")


def test_one_of_a_thing_is_said_in_the_singular(tmp_path):
    """``1 image in 1 shard``, ``1 file``: not ``1 images``, ``1 shards``, ``1 files``."""
    write_image(str(tmp_path / "src" / "a" / "x.png"), size=(9, 7), seed=0)
    (tmp_path / "src" / "a" / "notes.txt").write_text("x")
    dry = run("build", tmp_path / "src", tmp_path / "out", "--dry-run", "--size", "4")
    lines = [line.strip() for line in dry.output.splitlines()]
    assert "Would build 1 image:" in lines and "Would skip 1 file:" in lines, dry.output
    assert "train: 1 image in 1 shard of up to 256" in lines, dry.output
    assert "Not opened: 1 image file (a dry run decodes nothing)" in lines, dry.output
    built = run("build", tmp_path / "src", tmp_path / "out", "--size", "4")
    assert "Skipped 1 file:" in built.output, built.output
    inspected = run("inspect", tmp_path / "out")
    assert "skipped: 1 file" in inspected.output.splitlines(), inspected.output
    appended = run("append", tmp_path / "src", tmp_path / "out", "--dry-run")
    assert "Would append 0 images:" not in appended.output, appended.output


def test_inspect_lists_the_classes_in_label_order(tmp_path):
    """``--classes zebra,apple`` makes zebra label 0: its row comes first, as the model's
    outputs do (the manifest's counts are written sorted by name)."""
    for name in ("zebra", "apple"):
        write_image(str(tmp_path / "src" / name / "x.png"), size=(9, 7), seed=len(name))
    out = tmp_path / "out"
    assert run("build", tmp_path / "src", out, "--size", "4", "--classes", "zebra,apple",
               "-q").exit_code == 0
    rows = [line.split()[0] for line in run("inspect", out).output.splitlines()
            if line.startswith("  ") and line.split()[0] in ("zebra", "apple")]
    assert rows == ["zebra", "apple"]
