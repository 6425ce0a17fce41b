"""Keras and TensorFlow views of a :class:`~imgshard.reader.ShardReader`.

Imported only by ``ShardReader.to_keras()`` / ``to_tf_dataset()``, so the rest of imgshard
works without Keras. ``pip install 'imgshard[keras]'`` installs Keras 3 with the JAX backend;
``imgshard[tf]`` adds TensorFlow, for ``to_tf_dataset()`` and Keras' TensorFlow backend.
"""

from __future__ import annotations

import importlib.util
import os

from ..errors import ImgshardError
from ..libc import keep_heap_top

# Keras defaults to TensorFlow; the `keras` extra installs JAX instead, so use it unless told.
if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
    os.environ["KERAS_BACKEND"] = "jax"

try:
    import keras
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImgshardError(
        "ShardReader.to_keras() needs Keras 3: pip install 'imgshard[keras]'") from None

#: Freed memory glibc keeps at the top of each heap while Keras on TensorFlow trains from a
#: reader. TensorFlow's kernels (Eigen's matrix packing buffers) take scratch memory from the C
#: heap on its compute threads; fed from Python, the batches freed beside it let glibc trim that
#: heap after every step, and the next step faults it all in again. In
#: ``benchmarks/fit_step.py`` the CNN's step took 76-79 instead of 85-90 ms (0.23M instead of
#: 1.35M page faults), for 150-300 MB more resident memory on 2 cores (up to the pad per malloc
#: arena: glibc makes up to 8 per core; ``MALLOC_ARENA_MAX`` caps them). Setting the pad also
#: freezes glibc's sliding mmap threshold where it stands. A pad the user gave glibc at start-up
#: wins.
TENSORFLOW_HEAP_PAD = 64 * 2**20


def keep_heap_for(backend: str) -> bool:
    """Set :data:`TENSORFLOW_HEAP_PAD` when ``backend`` is TensorFlow; whether it was set."""
    user_pad = "MALLOC_TOP_PAD_" in os.environ or "top_pad" in os.environ.get("GLIBC_TUNABLES", "")
    if backend != "tensorflow" or user_pad:
        return False
    return keep_heap_top(TENSORFLOW_HEAP_PAD)


def keep_heap_for_keras() -> bool:
    """:func:`keep_heap_for` the backend Keras runs on."""
    return keep_heap_for(keras.backend.backend())


class ShardPyDataset(keras.utils.PyDataset):
    """Batch ``i`` of the current epoch on demand; the next epoch reshuffles (``on_epoch_end``).

    Random access by batch index is what lets Keras run ``workers`` threads (or processes with
    ``use_multiprocessing=True``) over it; the order stays the reader's pure function of
    (seed, epoch), so results do not depend on the worker mode.
    """

    def __init__(self, reader, *, workers: int = 2, use_multiprocessing: bool = False,
                 max_queue_size: int = 10) -> None:
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


def to_tf_dataset(reader):
    """A ``tf.data.Dataset`` whose every pass is one epoch of ``reader``."""
    try:
        import tensorflow as tf
    except ImportError:
        raise ImgshardError(
            "to_tf_dataset() needs TensorFlow: pip install 'imgshard[tf]'") from None
    keep_heap_for("tensorflow")
    images = tf.TensorSpec((None, *reader.manifest.image_shape), tf.as_dtype(reader.dtype))
    if reader.label_mode is None:
        signature = images
    elif reader.label_mode == "int":
        signature = (images, tf.TensorSpec((None,), tf.int32))
    elif reader.label_mode == "binary":
        signature = (images, tf.TensorSpec((None, 1), tf.float32))
    else:
        classes = len(reader.manifest.class_names)
        signature = (images, tf.TensorSpec((None, classes), tf.float32))
    return tf.data.Dataset.from_generator(lambda: iter(reader), output_signature=signature)
