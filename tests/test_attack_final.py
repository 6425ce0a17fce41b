"""A hostile user against the merged safety work as a whole: the seams between the build, its
stops, the output directory and the reader. Each test failed on the code it was written against."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
from click.testing import CliRunner
from conftest import stop_at_call

from imgshard import BuildConfig, ShardReader, build
from imgshard.errors import ImgshardError
from imgshard.executors.local import run_local
from imgshard.processes import process_pool
from imgshard.reader import shard_reader as reader

CONFIG = BuildConfig(size=(4, 4), shard_size=2)


class RecordingPool(ProcessPoolExecutor):
    """A pool that keeps every future it hands out."""

    def __init__(self, workers: int) -> None:
        template = process_pool(workers)
        template.shutdown()
        super().__init__(workers, mp_context=template._mp_context)
        self.futures = []

    def submit(self, *args, **kwargs):
        future = super().submit(*args, **kwargs)
        self.futures.append(future)
        return future


def slow_task(number: int) -> int:
    time.sleep(0.3)
    return number


def test_a_stopped_pool_leaves_no_future_cancelled_for_its_thread_to_trip_over(monkeypatch):
    """SIGTERM at the wrong moment printed Python 3.11's pool-thread traceback
    (``InvalidStateError: CANCELLED``) under the one-line 'Interrupted' message: the pool's
    thread fails every queued future when its workers are killed, and one had been cancelled.
    That race is rare; what makes it possible is a cancelled future, so none may be."""
    thread_errors = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    pool = RecordingPool(2)
    results = run_local(slow_task, range(12), workers=2, pool=pool)
    next(results)
    results.close()  # the build stopped taking results: Ctrl-C, SIGTERM or a failed task
    assert pool.futures and not [f for f in pool.futures if f.cancelled()]
    for thread in threading.enumerate():  # the pool's thread fails the futures of its dead workers
        if thread is not threading.main_thread() and "Thread" in thread.name:
            thread.join(10)
    assert all(f.done() for f in pool.futures)
    assert thread_errors == []


def epoch(shard_reader) -> list[tuple[bytes, int]]:
    return [(image.tobytes(), int(label)) for images, labels in shard_reader
            for image, label in zip(images, labels)]


@pytest.fixture
def two_builds(make_class_folders, tmp_path):
    """OUT built with seed 0, and what a reader of that build serves in one unshuffled epoch."""
    src = make_class_folders({"red": 5, "blue": 5, "green": 4}, flat=False)
    out, reference = str(tmp_path / "out"), str(tmp_path / "reference")
    build(src, out, CONFIG, workers=1)
    shutil.copytree(out, reference)
    with ShardReader(reference, batch_size=2, shuffle=False) as old:
        served = epoch(old)
    rebuild = lambda: build(src, out, dataclasses.replace(CONFIG, seed=1), workers=1,  # noqa: E731
                            overwrite=True)
    return out, served, rebuild


def finish_epoch(shard_reader, first: list) -> list:
    """The rest of the epoch after ``first``: the old build's samples, or one line naming a
    replaced file."""
    try:
        return first + epoch(shard_reader)
    except ImgshardError as error:
        assert "\n" not in str(error) and "replaced" in str(error), str(error)
        return None


def test_a_reader_never_mixes_two_builds_when_out_is_overwritten_under_it(two_builds):
    """A reader maps shards lazily: an overwrite (another seed) that finished mid-epoch had it
    serve the rest of the epoch from the new build's files, the same sizes under the same
    names: some images twice, others never, and no error."""
    out, served, rebuild = two_builds
    shard_reader = ShardReader(out, batch_size=2, shuffle=False, window=1)
    batches = iter(shard_reader)
    images, labels = next(batches)
    first = [(image.tobytes(), int(label)) for image, label in zip(images, labels)]
    rebuild()
    rest = finish_epoch(shard_reader, first)
    assert rest is None or rest == served


def test_a_reader_opened_while_out_is_overwritten_never_mixes_two_builds(two_builds,
                                                                          monkeypatch):
    """The manifest read, then the whole directory overwritten before the shard files are
    looked at: their sizes are the same, so the check of sizes alone saw nothing."""
    out, served, rebuild = two_builds
    check_sizes = reader.check_sizes

    def overwritten_first(*args):
        rebuild()
        return check_sizes(*args)

    monkeypatch.setattr(reader, "check_sizes", overwritten_first)
    try:
        shard_reader = ShardReader(out, batch_size=2, shuffle=False)
    except ImgshardError as error:
        assert "\n" not in str(error) and "changed" in str(error), str(error)
        return
    assert finish_epoch(shard_reader, []) in (None, served)


SIGTERM_IN_A_FORK_HOOK = """
import os, signal, sys
from imgshard.cli import cli

sent = []

def signal_while_forking():
    # SIGTERM arriving while the build forks a worker, as `timeout` or Kubernetes may send it:
    # its handler runs in the middle of Python's after-fork hooks (logging registers one)
    if not sent:
        sent.append(os.kill(os.getpid(), signal.SIGTERM))
        for _ in range(1000):
            pass

os.register_at_fork(after_in_parent=signal_while_forking)
cli(["build", sys.argv[1], sys.argv[2], "--size", "4", "--shard-size", "2", "--workers", "2",
     "-q"])
"""


def test_sigterm_while_a_worker_is_forked_still_stops_the_build(make_class_folders, tmp_path):
    """The handler's exception, raised inside a fork hook, was printed as 'Exception ignored'
    and lost: the build went on to the end with exit 0, and ignored every later SIGTERM."""
    src = make_class_folders({"red": 3, "blue": 3})
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", SIGTERM_IN_A_FORK_HOOK, src, str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 143, result.stderr
    assert result.stderr.strip().splitlines() == [
        "Interrupted before the build wrote anything to resume: run the same command again."]
    assert not out.exists() or os.listdir(out) == []



CTRL_C_TO_IDLE_WORKERS = """
import os, signal, time
from imgshard.processes import started_pool, stop_workers

pool = started_pool(2)  # idle, as during the scan
for worker in list(pool._processes):
    os.kill(worker, signal.SIGINT)  # Ctrl-C reaches the whole process group
time.sleep(0.5)
stop_workers(pool)  # what the build does on its own KeyboardInterrupt
print("stopped")
"""


def test_ctrl_c_reaching_idle_workers_prints_no_worker_traceback():
    """Ctrl-C goes to the whole process group: a worker waiting for a task (during the scan,
    or at the end) printed 'Process ForkProcess-2: Traceback ... KeyboardInterrupt' over
    the one-line 'Interrupted' message."""
    result = subprocess.run([sys.executable, "-c", CTRL_C_TO_IDLE_WORKERS], capture_output=True,
                            text=True, timeout=60)
    assert result.stdout == "stopped\n" and result.stderr == "", result.stderr


@pytest.fixture
def labelled(make_class_folders, tmp_path, monkeypatch):
    """SRC with a labels CSV named by a config file in another folder (relative to it)."""
    src = make_class_folders({"red": 3, "blue": 3})
    (tmp_path / "cfg").mkdir()
    rows = [f"{name}/{number:03d}.png,{name}" for name in ("red", "blue") for number in range(3)]
    (tmp_path / "cfg" / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "cfg" / "build.toml").write_text('size = 4\nshard_size = 2\nlabels = "labels.csv"\n')
    monkeypatch.chdir(tmp_path)
    return src


@pytest.mark.parametrize("finished", [False, True])
def test_resume_from_another_folder_takes_the_same_labels_file(labelled, tmp_path, finished):
    """The labels path is recorded as given (relative to where the build ran): resuming from
    another folder, or naming the config by its absolute path, was refused as 'labels
    changed' (or 'a finished build with other options'), though the file is the same."""
    from imgshard.cli import cli

    options = ["--workers", "1", "-q"]
    if finished:
        first = CliRunner().invoke(cli, ["build", "src", "out", "--config", "cfg/build.toml",
                                         *options])
        assert first.exit_code == 0, first.output
    else:
        with pytest.raises(KeyboardInterrupt):
            build("src", "out", BuildConfig(size=(4, 4), shard_size=2, labels="cfg/labels.csv"),
                  workers=1, progress=stop_at_call(2))
    resumed = CliRunner().invoke(cli, ["build", str(tmp_path / "src"), str(tmp_path / "out"),
                                       "--config", str(tmp_path / "cfg" / "build.toml"),
                                       "--resume", *options])
    assert resumed.exit_code == 0, resumed.output
    assert ShardReader("out", shuffle=False).num_samples == 6


@pytest.mark.parametrize("api", ["cli", "library"])
def test_a_labels_file_inside_out_is_refused_before_an_overwrite_deletes_it(labelled, tmp_path,
                                                                             api):
    """The user's labels CSV saved over the earlier build's samples.csv (a name that build
    records) was read, then deleted by --overwrite: the build succeeded and the file was gone."""
    from imgshard.cli import cli

    build("src", "out", CONFIG, workers=1)
    (tmp_path / "out" / "samples.csv").write_bytes((tmp_path / "cfg" / "labels.csv").read_bytes())
    before = (tmp_path / "out" / "samples.csv").read_bytes()
    if api == "cli":
        result = CliRunner().invoke(cli, ["build", "src", "out", "--labels", "out/samples.csv",
                                          "--size", "4", "--shard-size", "2", "--overwrite"])
        message = result.output
        assert result.exit_code == 1
    else:
        with pytest.raises(ImgshardError) as error:
            build("src", "out", dataclasses.replace(CONFIG, labels="out/samples.csv"),
                  workers=1, overwrite=True)
        message = f"Error: {error.value}\n"
    assert message.startswith("Error: ") and message.count("\n") == 1, message
    assert "out/samples.csv" in message and "inside the output" in message, message
    assert (tmp_path / "out" / "samples.csv").read_bytes() == before
