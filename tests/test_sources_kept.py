"""A finished build keeps the record of its source files (``sources.jsonl.gz``): every file the
scan saw with its size and modification time, what ``imgshard append`` compares to tell a file
that changed since the build."""

from __future__ import annotations

import gzip
import json
import os

from conftest import local_files, run, write_image
from imgshard import BuildConfig, build
from imgshard.manifest import read_manifest


def make_source(root) -> str:
    src = os.path.join(root, "src")
    for name in ("a", "b"):
        for number in range(3):
            write_image(os.path.join(src, name, f"{number}.png"), size=(6, 5), seed=number)
    os.makedirs(os.path.join(src, "a"), exist_ok=True)
    with open(os.path.join(src, "a", "notes.txt"), "w") as stream:
        stream.write("not an image")
    return src


def kept_lines(out) -> list[list]:
    with gzip.open(os.path.join(out, "sources.jsonl.gz"), "rt") as stream:
        return [json.loads(line) for line in stream]


def test_the_record_lists_every_file_seen_with_its_size_and_time(tmp_path):
    src = make_source(tmp_path)
    out = str(tmp_path / "out")
    manifest = build(src, out, BuildConfig(size=(4, 4), shard_size=2), workers=1).manifest
    assert manifest.extra["sources"] == "sources.jsonl.gz"
    lines = kept_lines(out)
    seen = sorted(os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/")
                  for d, _, files in os.walk(src) for f in files)
    assert sorted(path for path, _, _ in lines) == seen  # samples and skips alike
    for path, size, stamp in lines:
        status = os.stat(os.path.join(src, path))
        assert (size, stamp) == (status.st_size, status.st_mtime_ns)
    assert not os.path.exists(os.path.join(out, ".imgshard-sources.jsonl.gz"))  # the build's own
    assert run("verify", out).exit_code == 0


def test_the_record_is_the_same_bytes_for_any_build_of_the_same_source(tmp_path):
    """Its gzip header named the temporary file, which holds the build id: no two alike."""
    src = make_source(tmp_path)
    first, second = str(tmp_path / "one"), str(tmp_path / "two")
    build(src, first, BuildConfig(size=(4, 4), shard_size=2), workers=1)
    build(src, second, BuildConfig(size=(4, 4), shard_size=2), workers=2)
    assert local_files(first)["sources.jsonl.gz"] == local_files(second)["sources.jsonl.gz"]


def test_overwrite_removes_the_record_with_the_build(tmp_path):
    src = make_source(tmp_path)
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(size=(4, 4), shard_size=2), workers=1)
    os.remove(os.path.join(src, "b", "2.png"))
    build(src, out, BuildConfig(size=(4, 4), shard_size=2), workers=1, overwrite=True)
    assert "b/2.png" not in {path for path, _, _ in kept_lines(out)}
    assert read_manifest(out).extra["sources"] == "sources.jsonl.gz"


def test_a_manifest_cannot_claim_a_users_file_as_its_record(tmp_path):
    from conftest import edit_manifest, one_error_line

    src = make_source(tmp_path)
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(size=(4, 4), shard_size=2), workers=1)
    with open(os.path.join(out, "mine.txt"), "w") as stream:
        stream.write("mine")
    edit_manifest(out, lambda document: document.update(sources="mine.txt"))
    one_error_line(run("build", src, out, "--size", "4", "--shard-size", "2", "--overwrite",
                       "--workers", "1"), "mine.txt")
    assert open(os.path.join(out, "mine.txt")).read() == "mine"
