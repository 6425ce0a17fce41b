"""TensorFlow's view of a :class:`~imgshard.reader.ShardReader` (or of a mix of readers), and
every TensorFlow setting imgshard makes.

Importing this module imports no TensorFlow: ``to_tf_dataset()`` does, when called.
``pip install 'imgshard[tf]'`` installs TensorFlow.
"""

from __future__ import annotations

import os

from ..errors import ImgshardError
from ..libc import keep_heap_top

#: Environment variables TensorFlow reads once, when it makes its first tensor, so they are set
#: on ``import imgshard`` (see ``imgshard/reader/__init__.py``), before a model exists; a value
#: the user already set wins.
#:
#: ``TF_CPU_ALLOCATOR_USE_BFC``: fed from Python (a PyDataset or a generator: any such input,
#: not only a reader's), Keras on TensorFlow runs each ``model.fit`` step 1.6-1.9x slower with
#: TensorFlow's default CPU allocator, which hands a step's memory back to the OS and faults it
#: in again on the next step (7x the page faults of in-memory arrays; see
#: ``benchmarks/fit_step.py``). Its BFC allocator keeps that memory for reuse.
IMPORT_TIME_ENVIRONMENT = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}

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


def set_import_time_environment() -> None:
    """Set :data:`IMPORT_TIME_ENVIRONMENT`, keeping any value already set."""
    for name, value in IMPORT_TIME_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def keep_heap_for(backend: str) -> bool:
    """Set :data:`TENSORFLOW_HEAP_PAD` when ``backend`` is TensorFlow; whether it was set."""
    user_pad = "MALLOC_TOP_PAD_" in os.environ or "top_pad" in os.environ.get("GLIBC_TUNABLES", "")
    if backend != "tensorflow" or user_pad:
        return False
    return keep_heap_top(TENSORFLOW_HEAP_PAD)


def to_tf_dataset(batches, *, image_shape: tuple[int, ...], dtype,
                  label_mode: str | tuple[str, ...] | None, num_classes: int,
                  num_targets: int = 0):
    """A ``tf.data.Dataset`` whose every pass is one epoch of ``batches`` (a reader or a mix:
    anything iterated epoch by epoch) of images of ``image_shape`` and ``dtype`` and labels as
    ``label_mode`` encodes ``num_classes`` classes (and ``num_targets`` targets; a tuple of
    modes gives a tuple of labels), with TensorFlow's auto-sharding off (see
    :func:`without_auto_shard`)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise ImgshardError(
            "to_tf_dataset() needs TensorFlow: pip install 'imgshard[tf]'") from None
    keep_heap_for("tensorflow")
    images = tf.TensorSpec((None, *image_shape), tf.as_dtype(dtype))
    if label_mode is None:
        signature = images
    elif isinstance(label_mode, str):
        signature = (images, _label_spec(tf, label_mode, num_classes, num_targets))
    else:
        signature = (images, tuple(_label_spec(tf, mode, num_classes, num_targets)
                                   for mode in label_mode))
    dataset = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature)
    return dataset.with_options(without_auto_shard(tf))


def _label_spec(tf, mode: str, num_classes: int, num_targets: int):
    """The ``tf.TensorSpec`` of one label encoding."""
    if mode == "int":
        return tf.TensorSpec((None,), tf.int32)
    if mode == "binary":
        return tf.TensorSpec((None, 1), tf.float32)
    if mode == "targets":
        return tf.TensorSpec((None, num_targets), tf.float32)
    return tf.TensorSpec((None, num_classes), tf.float32)  # categorical, multi_hot


def without_auto_shard(tf):
    """``tf.data`` options that turn TensorFlow's auto-sharding off.

    The reader has already given this process its part of every epoch. Under a multi-worker
    strategy (``MultiWorkerMirroredStrategy``'s ``experimental_distribute_dataset``, which
    Keras' ``fit`` calls), TensorFlow's default policy would split that part again: a
    generator's dataset has no files to split, so each worker keeps one in every (number of
    workers) of its batches and silently drops the rest (half of them with two workers, in
    ``tests/test_distributed_frameworks.py``).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options
