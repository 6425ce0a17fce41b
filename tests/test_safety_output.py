"""The output directory is never lost, never mixed: what --overwrite deletes, OUT apart from SRC,
one build at a time, every way a build stops, and ``preview -o`` kept out of a shard directory."""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import fsspec
import pytest
from conftest import local_files, run, stop_at_call, write_image

from imgshard import BuildConfig, build
from imgshard.layout import is_own_file
from imgshard.outdir import OutputError, prepare_out
from imgshard.storage import LocalLocation, Location

CONFIG = BuildConfig(size=(4, 4), shard_size=2)




@pytest.fixture
def memory_url():
    """A fresh ``memory://`` prefix, removed afterwards."""
    prefix = f"memory://imgshard-safety-{uuid.uuid4().hex[:8]}"
    yield prefix
    memory = fsspec.filesystem("memory")
    if memory.exists(prefix.split("://")[1]):
        memory.rm(prefix.split("://")[1], recursive=True)


@pytest.fixture
def src(make_class_folders):
    return make_class_folders({"red": 3, "blue": 2})




# -- 1. --overwrite deletes only what an imgshard build wrote ---------------------------------

@pytest.mark.parametrize("name, content", [
    ("manifest.json", b'{"format": "not imgshard", "splits": {}}'),
    ("manifest.json", b"{not json"),
    ("samples.csv", b"path,label\n"),
    ("my-holiday-00001.npy", b"\x93NUMPY"),
    ("x.labels.npy", b"\x93NUMPY"),
    (".tmp-notes", b"mine"),
    (".part-notes", b"mine"),
    (".imgshard-progress.jsonl", b"garbage\n"),
])
def test_overwrite_refuses_a_folder_that_never_held_a_build(src, tmp_path, name, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(content)
    with pytest.raises(OutputError, match=f"holds '{name}'"):
        build(src, str(out), CONFIG, workers=1, overwrite=True)
    assert local_files(out) == {name: content}


@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink"])
def test_overwrite_refuses_what_no_build_writes_before_reading_it(src, tmp_path, kind):
    """Not even a name the manifest lists: a FIFO named like the log would hang a reader."""
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    name = {"folder": "train-00000.npy", "fifo": ".imgshard-progress.jsonl",
            "symlink": "samples.csv"}[kind]
    os.remove(out / name) if kind != "fifo" else None
    {"folder": os.mkdir, "fifo": os.mkfifo,
     "symlink": lambda path: os.symlink(tmp_path / "elsewhere", path)}[kind](out / name)
    with pytest.raises(OutputError, match=f"holds '{name}'"):
        build(src, str(out), CONFIG, workers=1, overwrite=True)
    assert "manifest.json" in os.listdir(out)


def test_a_refused_resume_leaves_no_folder_behind(src, tmp_path):
    result = run("build", src, tmp_path / "nothing", "--resume")
    assert result.exit_code == 1 and "nothing to resume" in result.output
    assert not (tmp_path / "nothing").exists()


def test_overwrite_refuses_a_shard_name_the_earlier_build_never_wrote(src, tmp_path):
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)  # 5 images, 3 shards: train-00000..00002
    (out / "train-00007.npy").write_bytes(b"mine")
    (out / "val-00000.npy").write_bytes(b"mine too")
    before = local_files(out)
    with pytest.raises(OutputError, match="holds 'train-00007.npy', which imgshard did not write"):
        build(src, str(out), CONFIG, workers=1, overwrite=True)
    assert local_files(out) == before


def test_overwrite_replaces_exactly_the_earlier_build(src, tmp_path):
    out, reference = tmp_path / "out", tmp_path / "reference"
    build(src, str(out), BuildConfig(size=(6, 6), shard_size=1), workers=1)  # more shards
    build(src, str(out), CONFIG, workers=1, overwrite=True)
    build(src, str(reference), CONFIG, workers=1)
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))


def test_a_hostile_manifest_never_makes_overwrite_delete_outside(src, tmp_path):
    """Could not fail on the old code (it never read the manifest): it guards the new reader."""
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    victim = tmp_path / "victim.npy"
    victim.write_bytes(b"precious")
    document = json.loads((out / "manifest.json").read_text())
    document["splits"]["train"]["shards"][0]["images"] = "../victim.npy"
    document["splits"]["train"]["shards"][1]["labels"] = str(victim)
    document["samples"] = "/etc/passwd"
    (out / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(OutputError, match="which imgshard did not write"):
        build(src, str(out), CONFIG, workers=1, overwrite=True)  # train-00000.npy is not listed
    assert victim.read_bytes() == b"precious"


def test_an_interrupted_build_is_overwritten_but_not_a_file_beside_it(src, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(src, str(out), CONFIG, workers=1, progress=stop_at_call(2))
    assert "manifest.json" not in os.listdir(out) and "train-00000.npy" in os.listdir(out)
    (out / "train-00009.npy").write_bytes(b"mine")
    with pytest.raises(OutputError, match="'train-00009.npy'"):
        build(src, str(out), CONFIG, workers=1, overwrite=True)
    os.remove(out / "train-00009.npy")
    build(src, str(out), CONFIG, workers=1, overwrite=True)
    build(src, str(tmp_path / "reference"), CONFIG, workers=1)
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "reference"))


def test_an_interrupted_overwrite_can_be_overwritten_again(src, tmp_path, monkeypatch):
    """The manifest goes first; what it listed stays attributable until the last file is gone."""
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    real_remove = LocalLocation.remove
    removed = []

    def crash_after_two(self, name, **kwargs):
        if len(removed) == 2:
            raise KeyboardInterrupt
        removed.append(name)
        return real_remove(self, name, **kwargs)

    monkeypatch.setattr(LocalLocation, "remove", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        build(src, str(out), CONFIG, workers=1, overwrite=True)
    monkeypatch.undo()
    assert "manifest.json" not in os.listdir(out)
    build(src, str(out), CONFIG, workers=1, overwrite=True)
    assert "manifest.json" in os.listdir(out)


@pytest.mark.parametrize("build_id", [None, "../../x", 7])
def test_a_log_without_a_build_id_is_not_resumed(src, tmp_path, build_id):
    """An earlier imgshard did not tag its temporary names: its leftovers cannot be told apart
    (and an edited id must never become part of a path)."""
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(src, str(out), CONFIG, workers=1, progress=stop_at_call(2))
    log = out / ".imgshard-progress.jsonl"
    plan, *checkpoints = log.read_text().splitlines(keepends=True)
    edited = {k: v for k, v in json.loads(plan).items() if k != "build"}
    if build_id is not None:
        edited["build"] = build_id
    log.write_text(json.dumps(edited) + "\n" + "".join(checkpoints))
    result = run("build", src, out, "--size", "4", "--shard-size", "2", "--workers", "1",
                 "--resume")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "an older imgshard started this build" in result.output


def fake_interrupted_build(out, shards: dict[str, int], names: list[str]) -> None:
    """OUT as a build interrupted early left it: its progress log's plan line, and ``names``."""
    out.mkdir()
    plan = {"config": {}, "files": "0", "pieces": 1, "build": "0123456789ab", "shards": shards}
    (out / ".imgshard-progress.jsonl").write_text(json.dumps(plan) + "\n")
    for name in names:
        (out / name).write_bytes(b"x")


def test_shard_names_past_99999_are_written_recorded_and_deleted(tmp_path):
    from imgshard.layout import images_name

    assert images_name("train", 100_000, ".npy") == "train-100000.npy"
    assert is_own_file("train-100000.labels.npy", ".npy")  # verify's "unlisted shard file"
    out = tmp_path / "out"
    names = ["train-99999.npy", "train-100000.npy", "train-100000.labels.npy",
             ".part-0123456789ab-train-100000.npy", ".tmp-0123456789ab-train-100000.npy",
             ".samples.csv.partial", "samples.csv"]
    fake_interrupted_build(out, {"train": 100_001}, names)
    prepare_out(Location.of(str(out)), overwrite=True)
    assert os.listdir(out) == []
    fake_interrupted_build(tmp_path / "again", {"train": 100_001}, ["train-100001.npy"])
    with pytest.raises(OutputError, match="'train-100001.npy'"):
        prepare_out(Location.of(str(tmp_path / "again")), overwrite=True)


def test_temporary_names_of_another_build_are_foreign(tmp_path):
    fake_interrupted_build(tmp_path / "out", {"train": 1}, [".tmp-ffffffffffff-train-00000.npy"])
    with pytest.raises(OutputError, match="'.tmp-ffffffffffff-train-00000.npy'"):
        prepare_out(Location.of(str(tmp_path / "out")), overwrite=True)


def test_overwrite_on_a_store_deletes_only_the_earlier_build(src, memory_url):
    build(src, f"{memory_url}/out", CONFIG, workers=1)
    fs = fsspec.filesystem("memory")
    root = memory_url.split("://")[1] + "/out"
    fs.pipe(f"{root}/train-00005.npy", b"mine")
    with pytest.raises(OutputError, match="'train-00005.npy'"):
        build(src, f"{memory_url}/out", CONFIG, workers=1, overwrite=True)
    assert fs.cat(f"{root}/train-00005.npy") == b"mine"
    assert fs.exists(f"{root}/manifest.json")
    fs.rm(f"{root}/train-00005.npy")
    with pytest.raises(KeyboardInterrupt):
        build(src, f"{memory_url}/out", CONFIG, workers=1, progress=stop_at_call(2),
              overwrite=True)
    build(src, f"{memory_url}/out", CONFIG, workers=1, overwrite=True)  # the interrupted one
    assert sorted(name.rsplit("/", 1)[-1] for name in fs.ls(root, detail=False)) == [
        "manifest.json", "samples.csv", "sources.jsonl.gz", "train-00000.labels.npy",
        "train-00000.npy",
        "train-00001.labels.npy", "train-00001.npy", "train-00002.labels.npy", "train-00002.npy"]


# -- 2. the output never overlaps the input ---------------------------------------------------

@pytest.mark.parametrize("where", ["inside", "same", "same-slash", "parent", "symlink",
                                   "relative"])
def test_out_overlapping_src_is_refused_before_anything_is_written(src, tmp_path, monkeypatch,
                                                                   where):
    monkeypatch.chdir(tmp_path)
    os.symlink(src, tmp_path / "link")
    out = {"inside": os.path.join(src, "shards"), "same": src, "same-slash": src + "/",
           "parent": str(tmp_path), "symlink": str(tmp_path / "link" / "shards"),
           "relative": os.path.join(os.path.relpath(src), "red", "..", "shards")}[where]
    before = sorted(os.walk(tmp_path))
    with pytest.raises(OutputError, match="overlap"):
        build(src, out, CONFIG, workers=1, overwrite=True)
    assert sorted(os.walk(tmp_path)) == before


def test_cli_refuses_out_inside_src_in_one_line_even_for_a_dry_run(src):
    for extra in ([], ["--dry-run"]):
        result = run("build", src, os.path.join(src, "shards"), *extra)
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1
        assert "overlap" in result.output
    assert not os.path.exists(os.path.join(src, "shards"))


@pytest.mark.parametrize("source, target, overlaps", [
    ("memory://b/photos", "memory://b/photos/shards", True),
    ("memory://b/photos/", "memory:///b/photos", True),
    ("s3://b/photos/shards", "s3://b/photos", True),
    ("s3://b/photos", "s3://b/photos-shards", False),
    ("s3://b/photos", "gs://b/photos/shards", False),
    ("s3://b/x/../photos", "s3://b/photos/y", True),
    ("s3://b", "s3://b/shards", True),
    ("s3a://b/photos", "s3://b/photos/shards", True),
])
def test_urls_overlap_component_wise_on_the_same_bucket(source, target, overlaps):
    from imgshard.outdir import check_apart

    if overlaps:
        with pytest.raises(OutputError, match="overlap"):
            check_apart(Location.of(source), Location.of(target))
    else:
        check_apart(Location.of(source), Location.of(target))


# -- 6. every way a build can stop leaves a resumable, clean directory ------------------------

def hold_lock(out, pid: str = "4242"):
    """Lock OUT the way a running build does; returns the open file (closing it unlocks)."""
    os.makedirs(out, exist_ok=True)
    holder = open(os.path.join(out, ".imgshard-lock"), "a+")
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    holder.write(pid)
    holder.flush()
    return holder


@pytest.mark.parametrize("mode", ["overwrite", "resume", "new"])
def test_a_second_build_into_the_same_out_is_refused_at_once(src, tmp_path, mode):
    out = tmp_path / "out"
    if mode == "resume":
        with pytest.raises(KeyboardInterrupt):
            build(src, str(out), CONFIG, workers=1, progress=stop_at_call(2))
    elif mode == "overwrite":
        build(src, str(out), CONFIG, workers=1)
    before = local_files(out) if out.exists() else {}
    holder = hold_lock(out)
    try:
        result = run("build", src, out, "--size", "4", "--shard-size", "2", "--workers", "1",
                     *({"new": [], "overwrite": ["--overwrite"], "resume": ["--resume"]}[mode]))
        assert result.output == (f"Error: {out} is being written by another imgshard process "
                                 "(pid 4242)\n")
        assert result.exit_code == 1
        assert local_files(out) == {**before, ".imgshard-lock": b"4242"}
    finally:
        holder.close()


def test_a_lock_left_by_a_killed_build_does_not_stop_the_next(src, tmp_path):
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    (out / ".imgshard-lock").write_text("999999")  # kill -9 left the file, not the lock
    build(src, str(out), CONFIG, workers=1, overwrite=True)
    assert ".imgshard-lock" not in os.listdir(out)


def test_a_foreign_file_named_like_the_lock_is_not_taken_over(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".imgshard-lock").write_text("my notes")
    with pytest.raises(OutputError, match="'.imgshard-lock', which imgshard did not write"):
        build(src, str(out), CONFIG, workers=1, overwrite=True)
    assert (out / ".imgshard-lock").read_text() == "my notes"


def crash_mid_write(task):
    """Kill the worker once while it writes train shard 1's part (marker beside OUT)."""
    import imgshard.worker

    marker = os.path.join(os.path.dirname(task.out.url), "crashed-once")
    if task.split == "train" and task.index == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        with task.out.atomic_file(task.part, durable=False) as stream:
            stream.write(b"half a part")
            stream.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return imgshard.worker.run_shard_task(task)


def test_a_worker_killed_mid_write_leaves_no_orphan_in_the_finished_out(src, tmp_path,
                                                                        monkeypatch):
    build_module = importlib.import_module("imgshard.build")
    monkeypatch.setattr(build_module, "run_shard_task", crash_mid_write)
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=2)
    assert os.path.exists(tmp_path / "crashed-once")
    monkeypatch.undo()
    build(src, str(tmp_path / "reference"), CONFIG, workers=1)
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "reference"))


def test_sigterm_stops_like_ctrl_c_and_resumes_byte_identical(tmp_path):
    src, out, reference = tmp_path / "src", tmp_path / "out", tmp_path / "reference"
    for number in range(300):
        write_image(str(src / f"c{number % 2}" / f"{number:03d}.jpg"), size=(96, 96), seed=number)
    options = ["--size", "160", "--dtype", "float32", "--shard-size", "8", "--workers", "2"]
    process = subprocess.Popen([sys.executable, "-m", "imgshard", "build", str(src), str(out),
                                *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and any(name.endswith(".labels.npy") for name in os.listdir(out)):
            break
        time.sleep(0.005)
    assert process.poll() is None, "the build finished before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 143, errors
    assert "Interrupted:" in errors and "--resume" in errors and "Traceback" not in errors
    names = os.listdir(out)
    assert "manifest.json" not in names
    assert not [name for name in names if name.startswith((".tmp", ".part"))], names
    assert run("build", src, out, *options, "--resume", "-q").exit_code == 0
    assert run("build", src, reference, *options, "-q").exit_code == 0
    assert local_files(out).keys() == local_files(reference).keys()
    assert {k: v for k, v in local_files(out).items() if k != "manifest.json"} == \
        {k: v for k, v in local_files(reference).items() if k != "manifest.json"}


# -- 7. preview -o never overwrites a file of a shard directory -------------------------------

@pytest.fixture
def shards(src, tmp_path):
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)
    return out


@pytest.mark.parametrize("target", ["manifest.json", "train-00000.npy", "new.png", "link"])
def test_preview_refuses_to_write_into_the_shard_directory(shards, tmp_path, target):
    os.symlink(shards, tmp_path / "alias")
    output = tmp_path / "alias" / target if target == "link" else shards / target
    before = local_files(shards)
    result = run("preview", shards, "-o", output)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "shard directory" in result.output
    assert local_files(shards) == before


def test_preview_refuses_a_hard_link_to_a_shard_file_and_a_directory(shards, tmp_path):
    os.link(shards / "manifest.json", tmp_path / "elsewhere.json")
    before = local_files(shards)
    result = run("preview", shards, "-o", tmp_path / "elsewhere.json")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert local_files(shards) == before
    result = run("preview", shards, "-o", tmp_path)
    assert result.exit_code == 1 and result.output.startswith("Error: "), result.output
    assert result.output.count("\n") == 1
    result = run("preview", shards, "-o", tmp_path / "sheet.png")
    assert result.exit_code == 0 and (tmp_path / "sheet.png").exists()


def test_a_sigterm_swallowed_by_cleanup_code_still_stops_the_build():
    """A SIGTERM that lands in code whose exceptions Python swallows (a ``__del__``, a hook
    after fork) must not be lost, nor leave every later SIGTERM ignored."""
    import signal
    import time

    from imgshard.interrupts import Terminated, sigterm_as_interrupt

    class SignalledWhileFinalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here: its Terminated is swallowed

    started = time.monotonic()
    with pytest.raises(Terminated):
        with sigterm_as_interrupt():
            SignalledWhileFinalized()
            time.sleep(5)
    assert time.monotonic() - started < 4


def test_a_ctrl_c_swallowed_by_cleanup_code_still_stops_the_build():
    """Ctrl-C while the pool starts once landed in logging's after-fork hook, where Python
    swallows exceptions: the build then ran to the end and exited 0."""
    import signal
    import time

    from imgshard.interrupts import sigterm_as_interrupt

    class InterruptedWhileFinalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # Python's handler raises KeyboardInterrupt here: swallowed

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            InterruptedWhileFinalized()
            time.sleep(5)
    assert time.monotonic() - started < 4


def test_workers_leave_ctrl_c_to_the_build():
    """Ctrl-C reaches every process of the terminal's group: an idle worker printed a
    KeyboardInterrupt traceback of its own. The build stops its workers itself."""
    import signal

    from imgshard.processes import started_pool, stop_workers

    pool = started_pool(2)
    try:
        for process in pool._processes.values():
            os.kill(process.pid, signal.SIGINT)
        assert pool.submit(sum, [1, 2]).result(timeout=30) == 3
        assert all(process.is_alive() for process in pool._processes.values())
    finally:
        stop_workers(pool)


def test_a_damaged_progress_log_is_named_as_damaged_not_missing(src, tmp_path):
    """A garbage log made --resume say there was no log, and --overwrite call it foreign: each
    message sent the user to a step that failed."""
    from imgshard.layout import PROGRESS_NAME

    out = tmp_path / "out"
    out.mkdir()
    (out / PROGRESS_NAME).write_text("garbage\n")
    resumed = run("build", src, out, "--size", "8", "--resume", "-q")
    assert resumed.exit_code == 1 and "progress log" in resumed.output
    assert "damaged" in resumed.output and "no progress log" not in resumed.output
    overwritten = run("build", src, out, "--size", "8", "--overwrite", "-q")
    assert overwritten.exit_code == 1 and "damaged" in overwritten.output
    assert "delete it by hand" in overwritten.output
    assert os.listdir(out) == [PROGRESS_NAME]


def test_a_progress_log_that_is_not_utf8_is_damaged_not_a_traceback(src, tmp_path):
    from imgshard.layout import PROGRESS_NAME

    out = tmp_path / "out"
    out.mkdir()
    (out / PROGRESS_NAME).write_bytes(b"\xff\xfe garbage\n")
    resumed = run("build", src, out, "--size", "8", "--resume", "-q")
    assert resumed.exit_code == 1 and resumed.output.startswith("Error: ")
    assert "damaged" in resumed.output and len(resumed.output.strip().splitlines()) == 1


def test_a_started_pool_returns_once_every_worker_has_its_handlers(monkeypatch, tmp_path):
    """started_pool waited for as many answers as workers, which one fast worker could give
    alone while the other was still starting, with Python's Ctrl-C handler: a Ctrl-C then killed
    it (a traceback, and a broken pool: seen under load with forkserver workers)."""
    import multiprocessing
    import signal
    import time

    from imgshard import processes

    first = tmp_path / "first"
    real = processes._start_worker

    def one_slow_start(environment, parent):
        if first.exists():
            time.sleep(1.0)  # the second worker starts late
        first.touch()
        real(environment, parent)

    monkeypatch.setattr(processes, "_start_worker", one_slow_start)
    monkeypatch.setattr(processes, "_context", lambda: multiprocessing.get_context("fork"))
    pool = processes.started_pool(2)
    try:
        for process in pool._processes.values():
            with open(f"/proc/{process.pid}/status") as status:
                ignored = int(next(line for line in status if line.startswith("SigIgn:"))
                              .split()[1], 16)
            assert ignored & (1 << (signal.SIGINT - 1)), process.pid
    finally:
        processes.stop_workers(pool)
