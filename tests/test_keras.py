"""Keras end to end: CLI build with a val split, then a tiny CNN trained from to_keras()."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="the keras extra is not installed")

from imgshard import ShardReader  # noqa: E402
from imgshard.cli import cli  # noqa: E402

SHAPES = ("circle", "square", "stripes")


def draw(shape: str, number: int, path: str) -> None:
    """Three classes a CNN tells apart at once: a red disc, a green square, blue stripes."""
    rng = np.random.default_rng(number)
    pixels = rng.integers(0, 40, (24, 24, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:24, :24]
    cy, cx = rng.integers(8, 16, 2)
    if shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
    elif shape == "square":
        mask = (abs(yy - cy) < 6) & (abs(xx - cx) < 6)
    else:
        mask = (xx // 3) % 2 == 0
    pixels[mask] = {"circle": (230, 30, 30), "square": (30, 230, 30), "stripes": (30, 30, 230)}[shape]
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras")
    for shape in SHAPES:
        for number in range(40):
            os.makedirs(root / "src" / shape, exist_ok=True)
            draw(shape, number, str(root / "src" / shape / f"{number:02d}.png"))
    result = CliRunner().invoke(cli, ["build", str(root / "src"), str(root / "out"), "--size", "24",
                                      "--val-split", "0.25", "--shard-size", "16", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return str(root / "out")


def tiny_cnn():
    model = keras.Sequential([
        keras.Input((24, 24, 3)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


TENSORFLOW_FIT = """
import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import keras
from imgshard import ShardReader
from imgshard.reader import tf as tf_adapter
pads = []
keep_heap_top = tf_adapter.keep_heap_top
def recorded_keep_heap_top(pad):
    pads.append([pad, keep_heap_top(pad)])
    return pads[-1][1]
tf_adapter.keep_heap_top = recorded_keep_heap_top
sys.path.insert(0, sys.argv[2])
from test_keras import tiny_cnn
keras.utils.set_random_seed(0)
train = ShardReader(sys.argv[1], split="train", batch_size=16, dtype="float32").to_keras()
val = ShardReader(sys.argv[1], split="val", batch_size=32, shuffle=False,
                  dtype="float32").to_tf_dataset()
history = tiny_cnn().fit(train, validation_data=val, epochs=15, verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "pads": pads,
                  "allocator": os.environ["TF_CPU_ALLOCATOR_USE_BFC"],
                  "val_accuracy": max(history.history["val_accuracy"])}))
"""


def test_tiny_cnn_learns_on_the_tensorflow_backend_with_its_settings(shard_dir):
    """Keras picks its backend once per process, so TensorFlow's fit runs in one of its own:
    batches from to_keras() train, to_tf_dataset() validates, and both settings that
    ``fit_step.py`` measured are made: the allocator's variable, and the heap pad, which glibc
    took."""
    pytest.importorskip("tensorflow", reason="TensorFlow is not installed (the tf extra)")
    env = {key: value for key, value in os.environ.items()
           if key not in ("KERAS_BACKEND", "TF_CPU_ALLOCATOR_USE_BFC", "MALLOC_TOP_PAD_",
                          "GLIBC_TUNABLES")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run([sys.executable, "-c", TENSORFLOW_FIT, shard_dir,
                           os.path.dirname(__file__)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    from imgshard.reader.tf import TENSORFLOW_HEAP_PAD

    assert report["backend"] == "tensorflow" and report["allocator"] == "true"
    assert report["pads"] and all(pad == [TENSORFLOW_HEAP_PAD, True] for pad in report["pads"])
    assert report["val_accuracy"] >= 0.9, report


def test_tiny_cnn_learns_from_shards(shard_dir):
    keras.utils.set_random_seed(0)
    train = ShardReader(shard_dir, split="train", batch_size=16, shuffle=True, seed=0,
                        dtype="float32", flip_horizontal=True).to_keras()
    val = ShardReader(shard_dir, split="val", batch_size=32, shuffle=False,
                      dtype="float32").to_keras()
    history = tiny_cnn().fit(train, validation_data=val, epochs=15, verbose=0)
    assert max(history.history["val_accuracy"]) >= 0.9, history.history


@pytest.mark.parametrize("workers", [1, 2])
def test_keras_dataset_reshuffles_per_epoch_with_threads(shard_dir, workers):
    reader = ShardReader(shard_dir, split="train", batch_size=8, seed=1)
    dataset = reader.to_keras(workers=workers, max_queue_size=4)
    first = np.concatenate([dataset[i][1] for i in range(len(dataset))])
    dataset.on_epoch_end()
    second = np.concatenate([dataset[i][1] for i in range(len(dataset))])
    assert sorted(first.tolist()) == sorted(second.tolist())
    assert first.tolist() != second.tolist()
    model = tiny_cnn()
    model.fit(ShardReader(shard_dir, split="train", batch_size=16, dtype="float32").to_keras(
        workers=workers), epochs=1, verbose=0)


def test_tf_dataset_signature(shard_dir):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
    data = ShardReader(shard_dir, batch_size=8).to_tf_dataset()
    x_spec, y_spec = data.element_spec
    assert x_spec.shape.as_list() == [None, 24, 24, 3] and y_spec.dtype == tf.int32
    assert sum(int(x.shape[0]) for x, _ in data) == 90


@pytest.mark.parametrize("backend, preset, expected", [
    ("tensorflow", {}, True),
    ("jax", {}, False),
    ("tensorflow", {"MALLOC_TOP_PAD_": "0"}, False),
    ("tensorflow", {"GLIBC_TUNABLES": "glibc.malloc.top_pad=0"}, False),
])
def test_heap_pad_is_set_for_tensorflow_only_and_never_over_the_users(monkeypatch, backend,
                                                                     preset, expected):
    from imgshard.reader import tf as tf_adapter

    padded = []
    monkeypatch.setattr(tf_adapter, "keep_heap_top", lambda pad: padded.append(pad) or True)
    for name in ("MALLOC_TOP_PAD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in preset.items():
        monkeypatch.setenv(name, value)
    assert tf_adapter.keep_heap_for(backend) is expected
    assert padded == ([tf_adapter.TENSORFLOW_HEAP_PAD] if expected else [])


def test_to_keras_asks_for_the_heap_pad_of_the_running_backend(shard_dir, monkeypatch):
    from imgshard.reader import keras as keras_adapter

    asked = []
    monkeypatch.setattr(keras_adapter, "keep_heap_for", asked.append)
    ShardReader(shard_dir, batch_size=8).to_keras()
    assert asked == [keras.backend.backend()]


def test_to_tf_dataset_without_tensorflow_names_the_extra(shard_dir, monkeypatch):
    from imgshard import ImgshardError

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow now fails
    with pytest.raises(ImgshardError, match=r"pip install 'imgshard\[tf\]'"):
        ShardReader(shard_dir).to_tf_dataset()


@pytest.mark.parametrize("backend, num_replicas, refused", [
    ("tensorflow", 2, True), ("tensorflow", 1, False), ("jax", 2, False), ("torch", 2, False)])
def test_to_keras_refuses_a_dataset_tensorflow_would_split_again(shard_dir, monkeypatch, backend,
                                                                 num_replicas, refused):
    """On Keras' TensorFlow backend a multi-worker strategy auto-shards a PyDataset again and
    drops most of each process's part; the user is sent to to_tf_dataset() instead."""
    from imgshard import ImgshardError

    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    reader = ShardReader(shard_dir, batch_size=8, num_replicas=num_replicas, rank=0,
                         partitions=2)
    if refused:
        with pytest.raises(ImgshardError, match=r"distribute_datasets_from_function\(lambda _: reader.to_tf_dataset\(\)\)"):
            reader.to_keras()
    else:
        assert len(reader.to_keras()) == len(reader)


def test_a_two_output_model_learns_classes_and_a_target_from_one_reader(tmp_path):
    """label_mode=("int", "targets"): batches (x, (classes, targets)) that model.fit matches to a
    model's two outputs; the target (the shape's size) is learnt too."""
    import csv

    src, rows = tmp_path / "src", []
    for shape in SHAPES:
        for number in range(24):
            os.makedirs(src / shape, exist_ok=True)
            draw(shape, number, str(src / shape / f"{number:02d}.png"))
            rows.append([f"{shape}/{number:02d}.png", SHAPES.index(shape) * 0.5])
    with open(tmp_path / "t.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([["path", "level"], *rows])
    out = str(tmp_path / "out")
    result = CliRunner().invoke(cli, ["build", str(src), out, "--size", "24", "--targets",
                                      str(tmp_path / "t.csv"), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    inputs = keras.Input((24, 24, 3))
    features = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    model = keras.Model(inputs, [keras.layers.Dense(3, activation="softmax")(features),
                                 keras.layers.Dense(1)(features)])
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=["sparse_categorical_crossentropy", "mse"])
    reader = ShardReader(out, batch_size=8, label_mode=("int", "targets"), dtype="float32")
    history = model.fit(reader.to_keras(), epochs=6, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
