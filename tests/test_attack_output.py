"""A hostile user against OUT's safety: other spellings of the same folder, planted files,
and stops at awkward moments. Each test failed on the code it was written against."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys

import pytest
from conftest import local_files, run, stop_at_call

from imgshard import BuildConfig, build
from imgshard.outdir import OutputError, locked
from imgshard.storage import Location

CONFIG = BuildConfig(size=(4, 4), shard_size=2)
OPTIONS = ["--size", "4", "--shard-size", "2", "--workers", "1"]




@pytest.fixture
def src(make_class_folders):
    return make_class_folders({"red": 3, "blue": 2})




# -- the same folder under another spelling ---------------------------------------------------

def test_a_symlink_then_dotdot_in_out_is_one_folder_for_the_build_and_its_workers(
        src, tmp_path, monkeypatch):
    """``lnk/../out`` is ``elsewhere/out`` to the kernel; spelled out lexically it was ``./out``,
    so workers wrote their parts into another folder (into SRC when it is named so)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere" / "sub", tmp_path / "lnk")
    build(src, "lnk/../out", CONFIG, workers=1)
    assert "manifest.json" in os.listdir(tmp_path / "elsewhere" / "out")
    assert not (tmp_path / "out").exists()
    assert Location.of("lnk/../out").absolute().url == os.path.join(str(tmp_path), "lnk/../out")


@pytest.mark.parametrize("scheme", ["local://", "LOCAL://", "FILE://", "File://"])
def test_a_local_file_url_is_the_local_folder(src, scheme):
    """fsspec reads these as local files: they must get the local checks (overlap, lock)."""
    assert Location.of(f"{scheme}{src}") == Location.of(src)
    result = run("build", f"{scheme}{src}", os.path.join(src, "shards"), *OPTIONS)
    assert result.exit_code == 1 and "overlap" in result.output, result.output
    result = run("build", src, f"{scheme}{src}/shards", *OPTIONS)
    assert result.exit_code == 1 and "overlap" in result.output, result.output
    assert sorted(os.listdir(src)) == ["blue", "red"]


def test_preview_through_a_local_url_never_replaces_the_manifest(src, tmp_path):
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    before = local_files(out)
    result = run("preview", f"local://{out}", "-o", out / "manifest.json")
    assert result.exit_code == 1 and "shard directory" in result.output, result.output
    assert local_files(out) == before


# -- planted files ------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["images", "labels", "samples"])
def test_a_manifest_claims_only_the_names_imgshard_gives_its_files(src, tmp_path, field):
    """An edited manifest (format imgshard) that lists a user's file must not get it deleted."""
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    (out / "thesis.docx").write_bytes(b"precious")
    document = json.loads((out / "manifest.json").read_text())
    if field == "samples":
        document["samples"] = "thesis.docx"
        document["splits"]["train"]["shards"].append({"images": "samples.csv"})
    else:
        document["splits"]["train"]["shards"].append({"images": "train-00003.npy",
                                                      "labels": None, field: "thesis.docx"})
    (out / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(OutputError, match="which imgshard did not write"):
        build(src, str(out), CONFIG, workers=1, overwrite=True)
    assert (out / "thesis.docx").read_bytes() == b"precious"
    assert "manifest.json" in os.listdir(out)


@pytest.mark.parametrize("name", ["train-00000.npy", ".imgshard-progress.jsonl",
                                  ".samples.csv.partial"])
def test_resume_refuses_a_fifo_in_out_instead_of_hanging(src, tmp_path, name):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(src, str(out), CONFIG, workers=1, progress=stop_at_call(2))
    os.remove(out / name)
    os.mkfifo(out / name)
    result = subprocess.run([sys.executable, "-m", "imgshard", "build", src, str(out), *OPTIONS,
                             "--resume", "-q"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"holds '{name}'" in result.stderr


def test_a_fifo_named_like_the_lock_is_refused_as_foreign(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / ".imgshard-lock")
    with pytest.raises(OutputError, match="'.imgshard-lock', which imgshard did not write"):
        build(src, str(out), CONFIG, workers=1)


def test_a_build_removes_only_its_own_lock_file(tmp_path):
    """OUT deleted and made again under a running build: when the first build ends it must not
    take the second's lock away, letting a third in."""
    out = Location.of(str(tmp_path / "out"))
    with contextlib.ExitStack() as first:
        first.enter_context(locked(out))
        os.remove(out.path(".imgshard-lock"))
        with locked(out):
            first.close()
            assert os.path.exists(out.path(".imgshard-lock"))
            with pytest.raises(OutputError, match="being written by another imgshard process"):
                with locked(out):
                    pass


# -- stops at awkward moments -----------------------------------------------------------------

@pytest.mark.parametrize("when", ["scan", "prepare"])
def test_an_interrupt_before_the_progress_log_does_not_promise_a_resume(src, tmp_path,
                                                                        monkeypatch, when):
    """Ctrl-C or SIGTERM during the scan or the deletion of an earlier build: nothing to resume."""
    import imgshard.cli

    resume_module = importlib.import_module("imgshard.resume")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    target = (imgshard.cli, "make_plan") if when == "scan" else (resume_module, "prepare_out")
    monkeypatch.setattr(*target, interrupt)
    result = run("build", src, out, *OPTIONS, "--overwrite")
    assert result.exit_code == 130
    assert "Interrupted" in result.output and "--resume" not in result.output, result.output
    monkeypatch.undo()
    assert run("build", src, out, *OPTIONS, "--overwrite", "-q").exit_code == 0


def test_an_interrupted_verify_says_nothing_about_resuming(src, tmp_path, monkeypatch):
    import imgshard.verify

    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imgshard.verify, "read_manifest", interrupt)
    result = run("verify", out)
    assert result.exit_code == 130
    assert "Interrupted" in result.output and "resume" not in result.output, result.output


INTERRUPTED_START = """
import multiprocessing.context, sys
from concurrent.futures import process
from imgshard import processes as executor

# Ctrl-C or SIGTERM arriving between the forks of the first and second worker, or (register)
# after the first fork but before the pool knew of its process
cls, method = {"spawn": (process.ProcessPoolExecutor, "_spawn_process"),
               "register": (multiprocessing.context.ForkProcess, "start")}[sys.argv[1]]
real = getattr(cls, method)

def interrupted(self):
    real(self)
    raise KeyboardInterrupt

setattr(cls, method, interrupted)
try:
    executor.started_pool(2)
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("moment", ["spawn", "register"])
def test_an_interrupt_while_the_workers_start_does_not_hang_the_exit(moment):
    """The pool was lost before anyone could shut it down: at exit, Python waited for a worker
    that waits for a task, for ever."""
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_START, moment],
                            capture_output=True, text=True, timeout=20)
    assert result.stdout == "interrupted\n" and result.returncode == 0, result.stderr


def test_a_stop_between_creating_the_log_and_writing_its_plan_is_overwritten(src, tmp_path,
                                                                           monkeypatch):
    """The log is created empty, then its plan line written: a stop in between (kill -9 too)
    left a folder that --resume found nothing in and --overwrite called foreign."""
    from imgshard.storage.record_log import RecordLog

    def interrupt(self, record):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    monkeypatch.setattr(RecordLog, "append", interrupt)
    result = run("build", src, out, *OPTIONS)
    monkeypatch.undo()
    assert result.exit_code == 130 and "--resume" not in result.output, result.output
    assert (out / ".imgshard-progress.jsonl").read_bytes() == b""
    result = run("build", src, out, *OPTIONS, "--overwrite", "-q")
    assert result.exit_code == 0, result.output
    assert "manifest.json" in os.listdir(out)
