"""``--executor dask`` on real Dask clusters on loopback: a LocalCluster of two worker
processes, and a scheduler and workers started as separate processes with the ``dask`` command.

Shards must be byte-identical to a local build, and a build survives losing a worker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from distributed import Client

from imgshard.build import build
from imgshard.cli import cli
from imgshard.config import BuildConfig

CONFIG = BuildConfig(size=(24, 24), shard_size=3)
DASK = os.path.join(os.path.dirname(sys.executable), "dask")


def files_of(directory) -> dict[str, bytes]:
    """Every file of a shard directory, the manifest without its creation time."""
    files = {name: open(os.path.join(directory, name), "rb").read()
             for name in sorted(os.listdir(directory))}
    manifest = json.loads(files["manifest.json"])
    manifest.pop("created")
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


@pytest.fixture
def src(make_class_folders, tmp_path):
    root = make_class_folders({"cat": 12, "dog": 11, "owl": 10}, size=(160, 120), flat=False)
    (tmp_path / "src" / "dog" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture
def reference(src, tmp_path):
    """The same build on the local process pool."""
    build(src, str(tmp_path / "local"), CONFIG, workers=2)
    return files_of(tmp_path / "local")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """``dask scheduler`` and ``dask worker`` (two worker processes under a nanny) on 127.0.0.1."""
    address = f"tcp://127.0.0.1:{free_port()}"
    logs = open(tmp_path / "dask.log", "wb")
    port = address.rsplit(":", 1)[1]
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", port,
                                  "--no-dashboard"], stdout=logs, stderr=logs,
                                 start_new_session=True)
    workers = subprocess.Popen([DASK, "worker", address, "--nworkers", "2", "--nthreads", "1",
                                "--host", "127.0.0.1", "--no-dashboard"],
                               stdout=logs, stderr=logs, start_new_session=True)
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in (workers, scheduler):  # each with its children (the worker processes)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        logs.close()


def test_a_local_dask_cluster_writes_the_same_bytes(src, reference, tmp_path):
    result = build(src, str(tmp_path / "dask"), CONFIG, workers=2, executor="dask",
                   scheduler="local")
    assert files_of(tmp_path / "dask") == reference
    assert [s.path for s in result.manifest.skipped] == ["dog/empty.png"]


def test_the_dask_command_cluster_writes_the_same_bytes(src, reference, tmp_path, dask_cluster):
    result = CliRunner().invoke(cli, ["build", src, str(tmp_path / "dask"), "--size", "24",
                                      "--shard-size", "3", "--workers", "2", "--executor", "dask",
                                      "--scheduler", dask_cluster])
    assert result.exit_code == 0, result.output
    assert "Built" in result.output
    assert files_of(tmp_path / "dask") == reference


def test_a_build_survives_a_worker_killed_mid_build(src, reference, tmp_path, dask_cluster):
    with Client(dask_cluster) as client:
        pids = sorted(client.run(os.getpid).values())
    killed = []

    def kill_a_worker_once(count: int) -> None:
        if not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    build(src, str(tmp_path / "dask"), CONFIG, workers=2, executor="dask",
          scheduler=dask_cluster, progress=kill_a_worker_once)
    assert killed
    assert files_of(tmp_path / "dask") == reference
    with Client(dask_cluster) as client:  # the nanny started a new worker in its place
        client.wait_for_workers(2, timeout=60)
        assert pids[0] not in client.run(os.getpid).values()


def test_an_interrupted_dask_build_leaves_no_part_behind(src, tmp_path, dask_cluster):
    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(src, str(tmp_path / "out"), CONFIG, workers=2, executor="dask",
              scheduler=dask_cluster, progress=interrupt)
    time.sleep(1)  # a task still running on a worker would write its part by now
    left = os.listdir(tmp_path / "out")
    assert not [name for name in left if name.startswith((".part-", ".tmp-"))]
    assert "manifest.json" not in left


def test_an_unreachable_scheduler_is_one_line(src, tmp_path, monkeypatch):
    monkeypatch.setattr("imgshard.executors.dask.CONNECT_TIMEOUT", 2)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["build", src, str(tmp_path / "out"), "--executor", "dask",
                                      "--scheduler", f"tcp://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:" in result.output
    assert "Traceback" not in result.output and time.monotonic() - started < 30
    assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_scheduler_needs_the_dask_executor(src, tmp_path):
    result = CliRunner().invoke(cli, ["build", src, str(tmp_path / "out"),
                                      "--scheduler", "tcp://127.0.0.1:8786"])
    assert result.exit_code == 1 and "--scheduler needs --executor dask" in result.output


def test_without_dask_installed_the_extra_is_named(src, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    result = CliRunner().invoke(cli, ["build", src, str(tmp_path / "out"), "--executor", "dask"])
    assert result.exit_code == 1
    assert "pip install 'imgshard[dask]'" in result.output
