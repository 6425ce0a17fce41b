"""One process of a two-process training job that ``test_distributed_frameworks.py`` starts.

    python distributed_worker.py JOB RANK COORDINATOR SHARD_DIR RESULT_FILE

``JOB`` is ``jax_fit`` (Keras ``DataParallel`` on JAX, ``jax.distributed`` coordinated at
``COORDINATOR``) or ``tf_distribute`` (TensorFlow's ``MultiWorkerMirroredStrategy``; its
cluster is the ``TF_CONFIG`` the parent set, ``COORDINATOR`` is unused). Both find their
``num_replicas`` and ``rank`` in the environment, as a user's job would. The parent sets every
variable a framework reads on import (``KERAS_BACKEND``, ``TF_CONFIG``, ...) before Python
starts. The result, written as JSON to ``RESULT_FILE``, names every sample the process was
served by a digest of its pixels, so the parent can check the ranks' parts against each other.
"""

from __future__ import annotations

import hashlib
import json
import sys

EPOCHS = 15  # as the single-process test in test_keras.py, with the same global batch of 16
BATCH_SIZE = 8  # per process


def digests(images) -> list[str]:
    """A short digest of each image's pixels: the sample's identity across processes."""
    return [hashlib.blake2b(image.tobytes(), digest_size=8).hexdigest() for image in images]


def recording(reader, served: dict[str, list[str]]):
    """``reader.get_batch`` that also files each batch's digests under ``"epoch/index"``: what
    Keras asked for, once per batch even if it asks for one twice."""
    get_batch = reader.get_batch

    def get_and_record(epoch: int, index: int):
        batch = get_batch(epoch, index)
        served[f"{epoch}/{index}"] = digests(batch[0])
        return batch
    return get_and_record


def jax_fit(rank: int, coordinator: str, shard_dir: str) -> dict:
    """Keras on JAX, data parallel over two processes: each is fed its own part of every global
    batch by ``to_keras()``, and Keras joins the parts into one global array per step."""
    import jax

    jax.distributed.initialize(coordinator_address=coordinator, num_processes=2, process_id=rank)
    import keras
    from test_keras import tiny_cnn

    from imgshard import ShardReader

    # The reader already gives each process its part: Keras must not split it again.
    keras.distribution.set_distribution(keras.distribution.DataParallel(auto_shard_dataset=False))
    keras.utils.set_random_seed(0)  # the same initial weights in every process
    train = ShardReader(shard_dir, "train", batch_size=BATCH_SIZE, seed=0, dtype="float32")
    val = ShardReader(shard_dir, "val", batch_size=2 * BATCH_SIZE, shuffle=False, dtype="float32")
    served: dict[str, list[str]] = {}
    train.get_batch = recording(train, served)
    # shuffle=False: the reader shuffles; Keras would also reorder each process's batches.
    history = tiny_cnn().fit(train.to_keras(), validation_data=val.to_keras(), epochs=EPOCHS,
                             shuffle=False, verbose=0)
    return {"replicas": [train.num_replicas, train.rank], "batches": len(train),
            "served": served, "val_accuracy": max(history.history["val_accuracy"])}


def tf_distribute(rank: int, coordinator: str, shard_dir: str) -> dict:
    """One epoch of ``to_tf_dataset()`` through ``MultiWorkerMirroredStrategy``'s
    ``distribute_datasets_from_function`` (each worker's dataset is its own, its batches the
    per-worker batch: ``experimental_distribute_dataset`` would take them for global batches
    and halve them), beside the same epoch read from the reader itself."""
    import tensorflow as tf

    from imgshard import ShardReader

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    reader = ShardReader(shard_dir, "train", batch_size=BATCH_SIZE, seed=0)
    distributed = strategy.distribute_datasets_from_function(lambda _: reader.to_tf_dataset())
    steps = [[digest for local in strategy.experimental_local_results(images)
              for digest in digests(local.numpy())] for images, _ in distributed]
    reader.set_epoch(0)
    return {"replicas": [reader.num_replicas, reader.rank], "steps": steps,
            "from_reader": [digests(images) for images, _ in reader]}


JOBS = {"jax_fit": jax_fit, "tf_distribute": tf_distribute}

if __name__ == "__main__":
    job, rank, coordinator, shard_dir, result_file = sys.argv[1:]
    result = JOBS[job](int(rank), coordinator, shard_dir)
    with open(result_file, "w") as stream:
        json.dump(result, stream)
