"""Attacks on the reshaped package (issue 14): every scenario here was run on the code before
the reshape too; each test is a bug found on one side or both, fixed."""

from __future__ import annotations

import importlib
import os

import fsspec
import pytest
from click.testing import CliRunner
from conftest import comparable, local_files
from test_s3 import bucket, s3_endpoint  # noqa: F401 - moto's S3 server, as there

import imgshard
from imgshard.cli import cli
from imgshard.errors import ImgshardError, MissingShardError
from imgshard.verify import verify_directory

build_module = importlib.import_module("imgshard.build")

CONFIG = imgshard.BuildConfig(size=(8, 8), shard_size=4)
OPTIONS = ["--size", "8", "--shard-size", "4", "--workers", "1", "-q"]


@pytest.fixture
def src(make_class_folders):
    return make_class_folders({"cat": 5, "dog": 5, "owl": 5}, flat=False)


@pytest.fixture
def reference(src, tmp_path):
    out = str(tmp_path / "reference")
    imgshard.build(src, out, CONFIG, workers=1)
    return local_files(out)


@pytest.mark.parametrize("executor", [None, 123])
def test_an_executor_that_is_neither_a_name_nor_an_executor_is_one_line(src, tmp_path, executor):
    """Before the reshape: 'unknown executor None (choose local or dask)'; after it, a
    TypeError about the context manager protocol."""
    with pytest.raises(ImgshardError, match=r"^unknown executor .* \(choose local or dask\)$"):
        imgshard.build(src, str(tmp_path / "out"), CONFIG, workers=1, executor=executor)
    assert not os.path.exists(tmp_path / "out")


def test_a_config_file_that_is_not_text_is_one_line(src, tmp_path):
    """A binary --config escaped as a UnicodeDecodeError traceback (before the reshape too)."""
    config = tmp_path / "config.toml"
    config.write_bytes(b"size = 8\n\xff\xfe\x00binary")
    result = CliRunner().invoke(cli, ["build", src, str(tmp_path / "out"), *OPTIONS,
                                      "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.splitlines() == [f"Error: config {config} is not valid TOML: it is "
                                          "not UTF-8 text"]


def interrupt_once(monkeypatch, name: str) -> None:
    """Make ``imgshard.build.<name>`` raise KeyboardInterrupt on its first call only."""
    real = getattr(build_module, name)

    def interrupted(*args, **kwargs):
        monkeypatch.setattr(build_module, name, real)
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, name, interrupted)


def test_ctrl_c_between_samples_csv_and_the_manifest_still_resumes(src, tmp_path, reference,
                                                                     monkeypatch):
    """The last step publishes samples.csv, then writes the manifest. A local build stopped
    between the two could not be resumed ('cannot write or read .samples.csv.partial'), before
    the reshape too; a URL's could. Now both finish, byte-identical."""
    out = str(tmp_path / "out")
    interrupt_once(monkeypatch, "write_manifest")
    with pytest.raises(KeyboardInterrupt):
        imgshard.build(src, out, CONFIG, workers=1)
    assert "samples.csv" in os.listdir(out) and "manifest.json" not in os.listdir(out)
    result = CliRunner().invoke(cli, ["build", src, out, *OPTIONS, "--resume"])
    assert result.exit_code == 0, result.output
    assert comparable(local_files(out)) == comparable(reference)


def test_ctrl_c_between_samples_csv_and_the_manifest_resumes_on_a_url(src, monkeypatch):
    """The same stop on a URL, which resumed before and after the reshape: still does."""
    out = "memory://attack-reshape/samples-then-manifest"
    interrupt_once(monkeypatch, "write_manifest")
    with pytest.raises(KeyboardInterrupt):
        imgshard.build(src, out, CONFIG, workers=1)
    result = CliRunner().invoke(cli, ["build", src, out, *OPTIONS, "--resume"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["verify", out, "-q", "--workers", "1"])
    assert result.exit_code == 0, result.output


def stopped_build(src: str, out: str, *, at_call: int = 3) -> None:
    calls = []

    def progress(count: int) -> None:
        calls.append(count)
        if len(calls) == at_call:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        imgshard.build(src, out, CONFIG, workers=1, progress=progress)


def test_a_staged_samples_file_shorter_than_its_checkpoint_is_refused(src, tmp_path):
    """A truncated .samples.csv.partial was padded with NUL bytes up to the checkpoint's
    length, and the resume 'finished' a build whose samples.csv verify rejects (before the
    reshape too). Nothing may be claimed finished that is not: the resume refuses."""
    out = str(tmp_path / "out")
    stopped_build(src, out)
    partial = os.path.join(out, ".samples.csv.partial")
    data = open(partial, "rb").read()
    open(partial, "wb").write(data[:len(data) // 2])
    result = CliRunner().invoke(cli, ["build", src, out, *OPTIONS, "--resume"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "Error: refusing to resume: the staged .samples.csv.partial is shorter than its "
        "progress log says (truncated?) (use --overwrite to start again)"]
    assert "manifest.json" not in os.listdir(out)


def test_a_missing_staged_samples_file_is_refused_in_one_line(src, tmp_path):
    """Before and after the reshape: 'cannot write or read .../.samples.csv.partial: No such
    file or directory', which names no way out."""
    out = str(tmp_path / "out")
    stopped_build(src, out)
    os.remove(os.path.join(out, ".samples.csv.partial"))
    result = CliRunner().invoke(cli, ["build", src, out, *OPTIONS, "--resume"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "Error: refusing to resume: the staged .samples.csv.partial is missing "
        "(use --overwrite to start again)"]


@pytest.mark.parametrize("cache_dir", ["file", "under-a-file"])
def test_a_cache_dir_that_cannot_be_a_folder_is_one_line(src, tmp_path, cache_dir):
    """A reader of a URL whose cache_dir is a file (or below one) raised FileExistsError or
    NotADirectoryError (before the reshape too): a traceback where every other bad reader
    option is one line."""
    out = "memory://attack-reshape/cache-dir-" + cache_dir
    imgshard.build(src, out, CONFIG, workers=1)
    (tmp_path / "file").write_text("not a folder")
    path = str(tmp_path / "file") if cache_dir == "file" else str(tmp_path / "file" / "cache")
    with pytest.raises(ImgshardError, match=r"^cannot use cache_dir .*: (File exists|Not a directory)$"):
        imgshard.ShardReader(out, batch_size=2, cache_dir=path)


def built_on(store: str, src: str, tmp_path, tag: str) -> str:
    """A small build on a local folder or on memory://, named for the test."""
    out = str(tmp_path / tag) if store == "local" else f"memory://attack-reshape/{tag}"
    imgshard.build(src, out, CONFIG, workers=1)
    return out


def write_file(out: str, name: str, data: bytes | None) -> None:
    """Give the file ``name`` of ``out`` (a local folder or memory://) ``data``; None removes it."""
    fs, path = fsspec.core.url_to_fs(f"{out}/{name}")
    if data is None:
        fs.rm(path)
    else:
        fs.pipe_file(path, data)


def read_file(out: str, name: str) -> bytes:
    fs, path = fsspec.core.url_to_fs(f"{out}/{name}")
    return fs.cat_file(path)


@pytest.mark.parametrize("store", ["local", "memory"])
def test_a_reader_whose_wrong_size_file_vanishes_before_its_header_is_read(src, tmp_path, store,
                                                                          monkeypatch):
    """A file of the wrong size is explained from its header, opened after the size was
    looked at. Removed in between, it escaped as a bare FileNotFoundError (before the reshape:
    'shard file is missing' locally, the size's one line on a URL)."""
    out = built_on(store, src, tmp_path, f"vanishes-{store}")
    write_file(out, "train-00000.npy", read_file(out, "train-00000.npy")[:30])
    kind = type(imgshard.Location.of(out))
    real = kind.file_stats

    def then_removed(self, names):
        stats = list(real(self, names))
        write_file(out, "train-00000.npy", None)
        return iter(stats)

    monkeypatch.setattr(kind, "file_stats", then_removed)
    with pytest.raises(MissingShardError, match=r"train-00000\.npy: shard file is missing$"):
        imgshard.ShardReader(out, batch_size=2, cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("store", ["local", "memory"])
@pytest.mark.parametrize("change", ["truncated", "created"])
def test_verify_checks_a_header_against_the_file_as_it_is_not_as_listed(src, tmp_path, store,
                                                                        change, monkeypatch):
    """verify took each image file's size from one listing made before the files are opened.
    A file truncated after it was listed passed its header check (before the reshape: 'not a
    readable .npy file (truncated?)'); one put back after the listing was called missing."""
    out = built_on(store, src, tmp_path, f"listed-{change}-{store}")
    data = read_file(out, "train-00000.npy")
    if change == "created":
        write_file(out, "train-00000.npy", None)
    kind = type(imgshard.Location.of(out))
    real = kind.open_listed

    def changed_then_opened(self, name):
        if name == "train-00000.npy":
            write_file(out, name, data[:-5] if change == "truncated" else data)
        return real(self, name)

    monkeypatch.setattr(kind, "open_listed", changed_then_opened)
    problems = [str(problem) for problem in verify_directory(out)]
    if change == "truncated":
        assert "train-00000.npy: not a readable .npy file (truncated?): 1659 bytes, the header " \
               "promises 1664" in problems
    else:
        assert problems == []


@pytest.mark.parametrize("name", ["train-00000.npy", "train-00000.labels.npy"])
def test_verify_on_s3_calls_a_prefix_named_like_a_shard_missing(
        src, s3_endpoint, bucket, name):  # noqa: F811 - test_s3's fixtures
    """An S3 key prefix named like a shard file, with no object of that name, opens as an
    empty file in s3fs. verify called the image file 'not a readable .npy file (truncated?)'
    and either file's checksum wrong (before the reshape: a FileNotFoundError traceback);
    the reader, and verify on memory://, say it is missing, as it is."""
    url, client = bucket
    # the endpoint named, so that no file system bound to this module's server is reused
    # by test_s3's (its own server, its own default options)
    out = imgshard.Location.of(f"{url}/prefix", {"endpoint_url": s3_endpoint})
    imgshard.build(src, out, CONFIG, workers=1)
    client.delete_object(Bucket=url[len("s3://"):], Key=f"prefix/{name}")
    client.put_object(Bucket=url[len("s3://"):], Key=f"prefix/{name}/inner", Body=b"x")
    problems = [str(problem) for problem in verify_directory(out)]
    assert f"{name}: shard file is missing" in problems
    assert [problem for problem in problems if problem.startswith(name)] == \
        [f"{name}: shard file is missing"]
