"""Data-parallel training on two real processes on loopback, each reading its own part of every
epoch through imgshard: Keras ``DataParallel`` on JAX, and TensorFlow's
``MultiWorkerMirroredStrategy``. Each process is ``distributed_worker.py``, started fresh (a
framework reads its settings on import) with the environment a launcher would give it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from distributed_worker import BATCH_SIZE, EPOCHS, digests
from test_keras import shard_dir  # noqa: F401  (the single-process Keras test's data set)

from imgshard import ShardReader

TESTS = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(TESTS, "distributed_worker.py")

#: Variables that would tell a child process about another job's cluster, or its backend.
FOREIGN = ("KERAS_BACKEND", "TF_CONFIG", "WORLD_SIZE", "RANK", "KERAS_DISTRIBUTION_JOB_ADDRESSES",
           "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")
TIMEOUT = 300  # seconds for both processes; a hung collective must fail the test, not CI


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_environment(**settings: str) -> dict[str, str]:
    """This environment without another job's cluster, with imgshard importable, and
    ``settings``."""
    environment = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    environment["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    environment.update(TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu", **settings)
    return environment


def run_ranks(job: str, environments: list[dict[str, str]], directory: str, tmp_path,
              coordinator: str = "-") -> list[dict]:
    """Run ``job`` in one process per environment (rank = position), all at once; each one's
    result. A process that fails, or a job that outlasts :data:`TIMEOUT`, fails the test, and
    every process still running is killed (its peers would wait for it until then)."""
    processes = []
    for rank, environment in enumerate(environments):
        with open(tmp_path / f"{job}-{rank}.log", "w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, WORKER, job, str(rank), coordinator, directory,
                 str(tmp_path / f"{job}-{rank}.json")],
                env=environment, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = exit_codes(processes, time.monotonic() + TIMEOUT)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    logs = [(tmp_path / f"{job}-{rank}.log").read_text()[-3000:] for rank in range(len(processes))]
    assert codes == [0] * len(processes), (f"{job} ended {codes} (None: still running, killed; "
                                           f"the time limit is {TIMEOUT} s)\n"
                                           + "\n----\n".join(logs))
    return [json.loads((tmp_path / f"{job}-{rank}.json").read_text())
            for rank in range(len(processes))]


def exit_codes(processes: list[subprocess.Popen], deadline: float) -> list[int | None]:
    """Each process's exit code once all have ended, one has failed, or ``deadline`` (a
    ``time.monotonic()``) has passed; None for one still running."""
    while True:
        codes = [process.poll() for process in processes]
        if None not in codes or set(codes) - {None, 0} or time.monotonic() > deadline:
            return codes
        time.sleep(0.2)


def split_digests(directory: str, dtype: str | None = None) -> list[str]:
    """Every train sample's digest, as one process alone reads them."""
    reader = ShardReader(directory, "train", batch_size=32, shuffle=False, dtype=dtype,
                         num_replicas=1, rank=0)
    everything = [digest for images, _ in reader for digest in digests(images)]
    assert len(set(everything)) == len(everything) == reader.num_samples  # identities are unique
    return everything


def test_to_tf_dataset_turns_tensorflow_auto_sharding_off(shard_dir):  # noqa: F811
    """imgshard has already split the epoch between processes: TensorFlow must not split each
    process's part again (its default, AUTO, keeps every n-th batch of it)."""
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (the tf extra)")
    dataset = ShardReader(shard_dir, batch_size=8).to_tf_dataset()
    assert (dataset.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.OFF)


def test_multi_worker_strategy_serves_each_process_its_whole_part_once(shard_dir,  # noqa: F811
                                                                       tmp_path):
    """Two workers of ``MultiWorkerMirroredStrategy`` on a loopback ``TF_CONFIG``: each finds
    its rank there, and ``distribute_datasets_from_function`` hands each exactly the batches
    its reader yields, step by step, each of ``batch_size`` (with auto-sharding on, each would
    lose half of them), which together are the split."""
    pytest.importorskip("tensorflow", reason="TensorFlow is not installed (the tf extra)")
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    environments = [child_environment(KERAS_BACKEND="tensorflow", TF_CONFIG=json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}))
        for rank in range(2)]
    results = run_ranks("tf_distribute", environments, shard_dir, tmp_path)
    assert [result["replicas"] for result in results] == [[2, 0], [2, 1]]
    for result in results:
        assert [sorted(step) for step in result["steps"]] == \
            [sorted(batch) for batch in result["from_reader"]]
        assert {len(step) for step in result["steps"]} == {BATCH_SIZE}
    parts = [{d for batch in result["from_reader"] for d in batch} for result in results]
    assert not parts[0] & parts[1] and parts[0] | parts[1] == set(split_digests(shard_dir))


def test_keras_data_parallel_on_jax_trains_on_disjoint_parts_of_each_epoch(
        shard_dir, tmp_path):  # noqa: F811
    """``jax.distributed`` on 127.0.0.1 with Keras ``DataParallel``: each process's reader
    finds its rank in JAX and ``model.fit`` takes its ``to_keras()``. In every epoch the two
    processes are served disjoint parts that together are the split (the last global batch
    topped up with fewer than a global batch of repeats), and the model learns as it does in
    one process."""
    pytest.importorskip("jax", reason="JAX is not installed (the keras extra)")
    coordinator = f"127.0.0.1:{free_port()}"
    environments = [child_environment(KERAS_BACKEND="jax") for _ in range(2)]
    results = run_ranks("jax_fit", environments, shard_dir, tmp_path, coordinator)
    assert [result["replicas"] for result in results] == [[2, 0], [2, 1]]
    everything = set(split_digests(shard_dir, "float32"))
    batches = results[0]["batches"]
    assert results[1]["batches"] == batches == -(-len(everything) // (2 * BATCH_SIZE))
    for epoch in range(EPOCHS):
        parts = [served_in(result, epoch, batches) for result in results]
        assert [len(part) for part in parts] == [batches * BATCH_SIZE] * 2
        assert not set(parts[0]) & set(parts[1]) and set(parts[0]) | set(parts[1]) == everything
    assert all(result["val_accuracy"] >= 0.9 for result in results), results


def served_in(result: dict, epoch: int, batches: int) -> list[str]:
    """The digests of every batch one process was served in ``epoch`` (each of its batches
    must have been asked for)."""
    keys = [f"{epoch}/{index}" for index in range(batches)]
    assert set(keys) <= result["served"].keys(), (epoch, sorted(result["served"]))
    return [digest for key in keys for digest in result["served"][key]]
