"""--resume: an interrupted build (kill -9, failure) finishes byte-identical to an uninterrupted one."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import disk_full_at, write_image

from imgshard.cli import cli

OPTIONS = ["--size", "64", "--dtype", "float32", "--shard-size", "8", "--workers", "2",
           "--val-split", "0.2"]


def files(out) -> dict[str, bytes]:
    return {name: open(os.path.join(out, name), "rb").read()
            for name in sorted(os.listdir(out)) if name.endswith((".npy", ".csv"))}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    src = tmp_path_factory.mktemp("resume") / "src"
    for number in range(400):
        write_image(str(src / f"c{number % 3}" / f"{number:03d}.jpg"), size=(80, 64), seed=number)
    for number in (5, 77, 200):  # skipped files shift shard boundaries: the re-cut path resumes too
        (src / f"c{number % 3}" / f"{number:03d}-broken.jpg").write_bytes(b"\xff\xd8 broken")
    reference = src.parent / "reference"
    assert CliRunner().invoke(cli, ["build", str(src), str(reference), *OPTIONS, "-q"]).exit_code == 0
    return str(src), str(reference)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def test_kill_9_then_resume_is_byte_identical(source, tmp_path):
    src, reference = source
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "imgshard", "build", src, str(out), *OPTIONS,
                                "-q"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and sum(n.endswith(".labels.npy") for n in os.listdir(out)) >= 4:
            break
        time.sleep(0.002)
    assert process.poll() is None, "the build finished before it could be killed"
    workers = children_of(process.pid)
    assert workers
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert "manifest.json" not in os.listdir(out)
    deadline = time.monotonic() + 10  # the orphaned workers notice and exit, not hang
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
    result = run("build", src, out, *OPTIONS, "--resume", "-q")
    assert result.exit_code == 0, result.output
    assert files(out) == files(reference)
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))
    assert run("build", src, out, *OPTIONS, "--resume").output.endswith(
        "is already complete: nothing to resume\n")


def test_resume_after_a_failed_task_keeps_finished_shards(source, tmp_path, monkeypatch):
    build_module = importlib.import_module("imgshard.build")

    src, reference = source
    out = tmp_path / "out"
    real_task = build_module.run_shard_task
    monkeypatch.setattr(build_module, "run_shard_task", disk_full_at(20))
    result = run("build", src, out, *OPTIONS[:-4], "--workers", "1", "--val-split", "0.2")
    assert result.exit_code == 1 and "No space left on device" in result.output
    kept = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n.startswith("train-0000")}
    assert kept
    monkeypatch.setattr(build_module, "run_shard_task", real_task)
    result = run("build", src, out, *OPTIONS[:-4], "--workers", "1", "--val-split", "0.2",
                 "--resume", "-q")
    assert result.exit_code == 0, result.output
    assert files(out) == files(reference)
    assert all(os.stat(out / n).st_mtime_ns == t for n, t in kept.items())


def test_resume_refuses_other_options_and_nothing_to_resume(source, tmp_path):
    src, reference = source
    result = run("build", src, reference, *OPTIONS, "--size", "32", "--resume")
    assert result.exit_code == 1
    assert "holds a finished build with other options" in result.output
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / ".imgshard-progress.jsonl").write_text(
        '{"config": {"size": [9, 9]}, "files": "x", "workers": 2}\n')
    result = run("build", src, tmp_path / "half", *OPTIONS, "--resume")
    assert result.exit_code == 1 and "refusing to resume with different options" in result.output
    result = run("build", src, tmp_path / "nothing", *OPTIONS, "--resume")
    assert result.exit_code == 1 and "nothing to resume" in result.output
    result = run("build", src, tmp_path / "x", *OPTIONS, "--resume", "--overwrite")
    assert result.exit_code == 1 and "exclude each other" in result.output


#: 2 shards on 2 workers: each shard is cut into pieces (see pieces_per_shard), 4 tasks each.
FEW_SHARDS = ["--size", "16", "--shard-size", "32", "--workers", "2"]


def fail_on_the_last_piece(task):
    """Fail the last task once the first shard is finished (and checkpointed), so that a resume
    has a shard to keep (module-level, so that the build's worker processes can run it)."""
    import imgshard.worker

    if task.index == 7:
        deadline = time.monotonic() + 60
        while not os.path.exists(task.out.path("train-00000.npy")) and time.monotonic() < deadline:
            time.sleep(0.01)
        raise OSError(28, "No space left on device")
    return imgshard.worker.run_shard_task(task)


@pytest.fixture
def interrupted_pieces(tmp_path, monkeypatch):
    """A FEW_SHARDS build that failed in its last piece; its source and OUT."""
    src = tmp_path / "src"
    for number in range(60):
        write_image(str(src / f"c{number % 2}" / f"{number:02d}.png"), size=(24, 20), seed=number)
    out = tmp_path / "out"
    build_module = importlib.import_module("imgshard.build")
    monkeypatch.setattr(build_module, "run_shard_task", fail_on_the_last_piece)
    result = run("build", src, out, *FEW_SHARDS, "-q")
    assert result.exit_code == 1 and "No space left on device" in result.output
    monkeypatch.undo()
    return src, out


def test_a_build_cut_into_pieces_resumes_with_another_worker_count(interrupted_pieces, tmp_path):
    src, out = interrupted_pieces
    kept = os.stat(out / "train-00000.npy").st_mtime_ns
    result = run("build", src, out, *FEW_SHARDS[:-2], "--workers", "1", "--resume", "-q")
    assert result.exit_code == 0, result.output
    reference = tmp_path / "reference"
    assert run("build", src, reference, *FEW_SHARDS, "-q").exit_code == 0
    assert files(out) == files(reference)
    assert os.stat(out / "train-00000.npy").st_mtime_ns == kept


def test_resume_refuses_a_build_an_older_imgshard_started(interrupted_pieces):
    """Its progress log does not say how its shards were cut into tasks, which checkpoints count."""
    src, out = interrupted_pieces
    log = out / ".imgshard-progress.jsonl"
    plan, *checkpoints = log.read_text().splitlines(keepends=True)
    older_plan = {**json.loads(plan), "workers": 2}
    del older_plan["pieces"]
    log.write_text(json.dumps(older_plan) + "\n" + "".join(checkpoints))
    result = run("build", src, out, *FEW_SHARDS, "--resume")
    assert result.exit_code == 1
    assert "an older imgshard started this build" in result.output
    assert result.output.count("\n") == 1


def crash_in_worker(task):
    """Kill the worker process on train shard 3: once when building into "once", else always.

    The marker lives in OUT, not in the environment: a forkserver started earlier would not
    see a variable set by this test.
    """
    import imgshard.worker

    marker = task.out.path(".crashed")
    if task.split == "train" and task.index == 3 and not os.path.exists(marker):
        if os.path.basename(task.out.url) == "once":
            open(marker, "w").close()
        os._exit(1)
    return imgshard.worker.run_shard_task(task)


def test_a_dying_worker_is_retried_once_then_fails_resumably(source, tmp_path, monkeypatch):
    build_module = importlib.import_module("imgshard.build")
    src, reference = source
    monkeypatch.setattr(build_module, "run_shard_task", crash_in_worker)
    result = run("build", src, tmp_path / "once", *OPTIONS, "-q")
    assert result.exit_code == 0, result.output
    assert files(tmp_path / "once") == files(reference)
    result = run("build", src, tmp_path / "always", *OPTIONS, "-q")
    assert result.exit_code == 1
    assert "a worker process died twice while building shard 3 of split train" in result.output
    monkeypatch.setattr(build_module, "run_shard_task", importlib.import_module(
        "imgshard.worker").run_shard_task)
    result = run("build", src, tmp_path / "always", *OPTIONS, "--resume", "-q")
    assert result.exit_code == 0, result.output
    assert files(tmp_path / "always") == files(reference)


def test_a_source_file_that_vanishes_mid_build_is_a_skip(tmp_path):
    from imgshard import BuildConfig, build, plan

    for number in range(3):
        write_image(str(tmp_path / "src" / "c" / f"{number}.png"), colour=(1, 2, 3))
    config = BuildConfig(size=(4, 4))
    scanned = plan(str(tmp_path / "src"), config)
    os.remove(tmp_path / "src" / "c" / "1.png")
    manifest = build(str(tmp_path / "src"), str(tmp_path / "out"), config,
                     build_plan=scanned).manifest
    assert [(s.path, s.reason) for s in manifest.skipped] == [
        ("c/1.png", "cannot read: No such file or directory")]


def test_an_unwritable_out_is_one_line(tmp_path, monkeypatch):
    write_image(str(tmp_path / "src" / "c" / "0.png"), colour=(1, 2, 3))

    def refuse(*args, **kwargs):  # what a read-only folder does to a non-root user
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "makedirs", refuse)
    result = run("build", tmp_path / "src", tmp_path / "out")
    assert result.output == f"Error: cannot write to output {tmp_path / 'out'}: Permission denied\n"
    assert result.exit_code == 1



def test_resuming_a_finished_build_from_python_says_it_is_complete(source, tmp_path):
    """What the CLI says on --resume of a finished build, the library says too."""
    import shutil

    from imgshard import BuildConfig, build, read_manifest
    from imgshard.config import ConfigError

    src, reference = source
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = files(out)
    config = BuildConfig.from_dict(read_manifest(str(out)).config)
    result = build(src, str(out), config, resume=True, workers=1)
    assert result.already_complete and result.bytes_written == 0
    assert result.manifest == read_manifest(str(out)) and files(out) == before
    with pytest.raises(ConfigError, match="holds a finished build with other options"):
        build(src, str(out), BuildConfig.from_dict({**config.to_dict(), "seed": 5}), resume=True)


def test_a_finished_build_is_complete_without_locking_its_directory(source, tmp_path,
                                                                     monkeypatch):
    """As before the reshape: --resume of a finished build reads its manifest and stops; it
    never writes into OUT (a finished dataset may sit on a read-only disk)."""
    import shutil

    from imgshard import BuildConfig, read_manifest
    from imgshard.outdir import OutputError

    build_module = importlib.import_module("imgshard.build")

    def read_only(out):
        raise OutputError(f"cannot write into {out}: read-only file system")

    src, reference = source
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    monkeypatch.setattr(build_module, "locked", read_only)
    config = BuildConfig.from_dict(read_manifest(str(out)).config)
    assert build_module.build(src, str(out), config, resume=True, workers=1).already_complete


def test_workers_and_scheduler_belong_to_an_executor_given_as_a_name(source, tmp_path):
    """An executor object was made with its own workers and scheduler: giving them again to
    build() would be ignored, so it is refused."""
    from imgshard import BuildConfig, build
    from imgshard.build import BuildError
    from imgshard.executors import executor_named

    src, _ = source
    with executor_named("local", workers=1, scheduler=None, reaches=()) as runner:
        with pytest.raises(BuildError, match="workers"):
            build(src, str(tmp_path / "out"), BuildConfig(), workers=2, executor=runner)
