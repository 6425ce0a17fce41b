"""Keras' view of a :class:`~imgshard.reader.ShardReader`, or of anything that serves batches
by random access as it does (:class:`RandomAccessBatches`: a mix of readers): a
``keras.utils.PyDataset``.

Imported only by ``to_keras()``, so the rest of imgshard works without Keras.
``pip install 'imgshard[keras]'`` installs Keras 3 with the JAX backend; ``imgshard[tf]`` adds
TensorFlow, for Keras' TensorFlow backend (whose settings are in :mod:`imgshard.reader.tf`).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Protocol

from ..errors import ImgshardError
from .tf import keep_heap_for

# Keras defaults to TensorFlow; the `keras` extra installs JAX instead, so use it unless told.
if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
    os.environ["KERAS_BACKEND"] = "jax"

try:
    import keras
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImgshardError(
        "to_keras() needs Keras 3: pip install 'imgshard[keras]'") from None


class RandomAccessBatches(Protocol):
    """What a :class:`ShardPyDataset` reads: ``len()`` batches an epoch, each one by
    ``get_batch(epoch, index)``, the epoch to start from and how to move it on, and the
    process count (see :func:`check_not_split_again`)."""

    epoch: int
    num_replicas: int

    def __len__(self) -> int: ...

    def get_batch(self, epoch: int, index: int) -> Any: ...

    def set_epoch(self, epoch: int) -> None: ...


def to_keras(reader: RandomAccessBatches, *, workers: int, use_multiprocessing: bool,
             max_queue_size: int):
    """A :class:`ShardPyDataset` over ``reader``, with the heap setting of Keras' backend."""
    check_not_split_again(reader, keras.backend.backend())
    keep_heap_for_keras()  # a process-wide glibc setting, for TensorFlow only (see there)
    return ShardPyDataset(reader, workers=workers, use_multiprocessing=use_multiprocessing,
                          max_queue_size=max_queue_size)


def check_not_split_again(reader: RandomAccessBatches, backend: str) -> None:
    """Refuse a ``PyDataset`` that TensorFlow would split a second time.

    On the TensorFlow backend, Keras turns a ``PyDataset`` into a ``tf.data`` pipeline with
    auto-sharding on, and a multi-worker strategy then keeps one in every (number of workers)
    of each process's batches: half of every process's part is silently dropped with two.
    ``to_tf_dataset()`` turns that off; JAX and torch do not split again.
    """
    if backend == "tensorflow" and reader.num_replicas > 1:
        raise ImgshardError(
            f"to_keras() on Keras' TensorFlow backend with num_replicas={reader.num_replicas}: "
            "TensorFlow would split each process's part again and drop most of it; use "
            "strategy.distribute_datasets_from_function(lambda _: reader.to_tf_dataset()) in "
            "a training loop, or Keras on JAX")


def keep_heap_for_keras() -> bool:
    """:func:`keep_heap_for` the backend Keras runs on."""
    return keep_heap_for(keras.backend.backend())


class ShardPyDataset(keras.utils.PyDataset):
    """Batch ``i`` of the current epoch on demand; the next epoch reshuffles (``on_epoch_end``).

    Random access by batch index is what lets Keras run ``workers`` threads (or processes with
    ``use_multiprocessing=True``) over it; the order stays the reader's pure function of
    (seed, epoch), so results do not depend on the worker mode.
    """

    def __init__(self, reader: RandomAccessBatches, *, workers: int = 2,
                 use_multiprocessing: bool = False, max_queue_size: int = 10) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        self.reader = reader
        self.epoch = reader.epoch

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int):
        return self.reader.get_batch(self.epoch, index)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.reader.set_epoch(self.epoch)

