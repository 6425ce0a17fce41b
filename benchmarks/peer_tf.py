"""TensorFlow's side of ``bench_peers.py``: its ``.cache()`` file and TFRecords, one process a run.

Usage: python peer_tf.py build-cache SRC OUT | build-tfrecord SRC OUT
       python peer_tf.py epochs-cache SRC OUT | epochs-tfrecord SRC OUT
                         [--dtype float16] [--epochs 3]

- ``cache``: ``keras.utils.image_dataset_from_directory(SRC, image_size=(224, 224),
  batch_size=32)`` mapped to pixel / 255 as float16, then ``.cache(OUT/cache)``. Its build is
  the first pass (which writes the cache file); its epochs are later passes, each served
  ``unbatch() -> shuffle(1000) -> batch(32)`` (a per-sample shuffle, like imgshard's, not the
  cheaper reordering of whole batches), cast to float32 for ``--dtype float32``.
- ``tfrecord``: the same decode in a parallel ``tf.data`` map, each image written as one
  ``tf.train.Example`` (float16 bytes and the label) into 4 files; its epochs read them with
  parallel reads, shuffle the records (1000), batch, and parse each batch at once.

Both decode with TensorFlow (``decode_image`` and a bilinear resize without antialiasing): less
work than Pillow's antialiased resize, and not the same pixels (28.8-37 dB from them).
Prints one JSON line: images, ``seconds`` of the work after the imports (per epoch for
``epochs-*``), ``peak_rss``.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

import tensorflow as tf

from peer_common import (BATCH, SHUFFLE_BUFFER, SIZE, labelled_files, option, report,
                         timed_epochs)

TFRECORD_FILES = 4
AUTOTUNE = tf.data.AUTOTUNE


def to_float16(x, y):
    return tf.cast(x / 255.0, tf.float16), y


def to_float32(x, y):
    return tf.cast(x, tf.float32), y


def cached(src: str, out: str) -> tf.data.Dataset:
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        src, image_size=(SIZE, SIZE), batch_size=BATCH, shuffle=False, verbose=False)
    return dataset.map(to_float16, num_parallel_calls=AUTOTUNE).cache(os.path.join(out, "cache"))


def served(dataset: tf.data.Dataset, dtype: str, seed: int) -> tf.data.Dataset:
    """Per-sample shuffled batches of ``dataset``'s samples, in ``dtype``, prefetched."""
    dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed).batch(BATCH)
    if dtype == "float32":
        dataset = dataset.map(to_float32, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def decoded(src: str) -> tf.data.Dataset:
    """What ``image_dataset_from_directory`` does to each file, in a parallel map."""
    paths, labels = labelled_files(src)

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return to_float16(tf.image.resize(image, (SIZE, SIZE)), label)

    return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        decode, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def write_tfrecords(src: str, out: str) -> int:
    writers = [tf.io.TFRecordWriter(os.path.join(out, f"part-{i}.tfrecord"))
               for i in range(TFRECORD_FILES)]
    count = 0
    for count, (image, label) in enumerate(decoded(src).as_numpy_iterator(), 1):
        example = tf.train.Example(features=tf.train.Features(feature={
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
        writers[count % TFRECORD_FILES].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return count


def tfrecord_epoch(out: str, dtype: str, seed: int) -> tf.data.Dataset:
    files = sorted(os.path.join(out, name) for name in os.listdir(out))
    features = {"image": tf.io.FixedLenFeature([], tf.string),
                "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(records):
        parsed = tf.io.parse_example(records, features)
        images = tf.io.decode_raw(parsed["image"], tf.float16)
        return tf.reshape(images, (-1, SIZE, SIZE, 3)), parsed["label"]

    records = tf.data.TFRecordDataset(files, num_parallel_reads=TFRECORD_FILES)
    dataset = records.shuffle(SHUFFLE_BUFFER, seed=seed).batch(BATCH).map(
        parse, num_parallel_calls=AUTOTUNE)
    if dtype == "float32":
        dataset = dataset.map(to_float32, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def main(argv: list[str]) -> None:
    command, src, out = argv[:3]
    dtype, epochs = option(argv, "--dtype", "float16"), int(option(argv, "--epochs", "3"))
    started = time.perf_counter()
    if command == "build-cache":
        images = sum(int(x.shape[0]) for x, _ in cached(src, out))
        report(images=images, seconds=time.perf_counter() - started)
    elif command == "build-tfrecord":
        images = write_tfrecords(src, out)
        report(images=images, seconds=time.perf_counter() - started)
    elif command == "epochs-cache":
        samples = cached(src, out).unbatch()
        images, seconds = timed_epochs(epochs, lambda seed: served(samples, dtype, seed))
        report(images=images, seconds=seconds)
    else:
        images, seconds = timed_epochs(epochs, lambda seed: tfrecord_epoch(out, dtype, seed))
        report(images=images, seconds=seconds)


if __name__ == "__main__":
    main(sys.argv[1:])
