"""Fixtures shared by the test modules: tiny image folders that the tests draw themselves."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from unittest import mock

import numpy as np
import pytest
from PIL import Image

#: A distinct, flat colour per class, far apart in every channel, so labels can be read off pixels.
CLASS_COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 60), "red": (230, 30, 30)}


def write_image(path: str, *, size: tuple[int, int] = (40, 30), colour=None, mode: str = "RGB",
                seed: int = 0, **save_options) -> np.ndarray:
    """Save an image of ``size`` (W, H) at ``path`` and return the pixels it holds.

    With ``colour`` the image is flat; otherwise smooth random noise (seeded), which survives
    JPEG well enough to compare against Pillow references.
    """
    width, height = size
    if colour is not None:
        image = Image.new(mode, size, colour)
    else:
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (max(1, height // 4), max(1, width // 4), 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR).convert(mode)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    image.save(path, **save_options)
    return np.asarray(image)


def write_numbered_images(folder, count: int, classes: int) -> None:
    """``count`` 2x2 PNGs in ``classes`` class folders, image ``n`` in class ``n % classes``,
    its number written in its first pixel (read back by :func:`image_number`)."""
    for number in range(count):
        write_image(os.path.join(folder, f"c{number % classes}", f"{number:03d}.png"),
                    size=(2, 2), colour=(number % 256, number // 256, 0))


def build_numbered(root, count: int, classes: int, shard_size: int) -> str:
    """ROOT/out built (uint8, 2x2) from :func:`write_numbered_images` in ROOT/src."""
    from imgshard import BuildConfig, build

    write_numbered_images(os.path.join(root, "src"), count, classes)
    out = os.path.join(root, "out")
    build(os.path.join(root, "src"), out,
          BuildConfig(size=(2, 2), shard_size=shard_size, dtype="uint8"), workers=1)
    return out


@pytest.fixture(params=["opencv", "numpy"])
def converter(request):
    """Convert float pixels with OpenCV (the ``fast`` extra, where installed) or numpy alone."""
    from imgshard.reader import widen

    if request.param == "opencv":
        pytest.importorskip("cv2")
        widen.opencv.cache_clear()
        widen.float16_arithmetic.cache_clear()
        yield request.param
    else:
        with mock.patch.dict(sys.modules, {"cv2": None}):  # None: not installed
            widen.opencv.cache_clear()
            widen.float16_arithmetic.cache_clear()
            yield request.param
    widen.opencv.cache_clear()
    widen.float16_arithmetic.cache_clear()


@pytest.fixture
def clean_environment(monkeypatch):
    """No launcher's variables and no JAX: a reader finds one process, unless a test sets one."""
    for name in ("TF_CONFIG", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    return monkeypatch


def image_number(image: np.ndarray) -> int:
    """The number :func:`write_numbered_images` wrote into ``image`` (as stored, uint8)."""
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


@pytest.fixture
def make_class_folders(tmp_path) -> Callable[..., str]:
    """Build SRC/<class>/<n>.<ext> with ``counts`` images per class; return SRC."""

    def make(counts: dict[str, int] | None = None, *, root: str | None = None, ext: str = "png",
             size: tuple[int, int] = (40, 30), flat: bool = True) -> str:
        src = root or str(tmp_path / "src")
        counts = counts or {name: 4 for name in CLASS_COLOURS}
        for class_index, (name, count) in enumerate(sorted(counts.items())):
            colour = CLASS_COLOURS.get(name, (10 * class_index, 100, 200))
            for number in range(count):
                write_image(os.path.join(src, name, f"{number:03d}.{ext}"), size=size,
                            colour=colour if flat else None, seed=class_index * 1000 + number)
        return src

    return make


def local_files(directory) -> dict[str, bytes]:
    """Every file of a directory, by name."""
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in sorted(os.listdir(directory))}


def comparable(files: dict[str, bytes], *, ignore: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file but the manifest's creation time and source, and the record of the source
    files' sizes and modification times (another copy of SRC, or a store, has other times),
    which differ by design."""
    manifest = json.loads(files["manifest.json"])
    for key in ("created", "source", *ignore):
        manifest.pop(key)
    kept = {name: data for name, data in files.items() if name != "sources.jsonl.gz"}
    return {**kept, "manifest.json": json.dumps(manifest, sort_keys=True).encode()}


def stop_at_call(number: int):
    """A progress callback that interrupts the build at its ``number``-th call."""
    calls = []

    def progress(count: int) -> None:
        calls.append(count)
        if len(calls) == number:
            raise KeyboardInterrupt

    return progress


def run(*args):
    """The ``imgshard`` command line, in this process."""
    from click.testing import CliRunner

    from imgshard.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result, *expected: str) -> None:
    """The command failed with exit code 1 and one ``Error: ...`` line holding ``expected``."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), \
        result.output
    for text in expected:
        assert text in lines[0], lines[0]


def edit_manifest(directory, change) -> None:
    """Apply ``change`` to the parsed ``manifest.json`` of ``directory`` and write it back."""
    path = os.path.join(directory, "manifest.json")
    with open(path) as stream:
        document = json.load(stream)
    change(document)
    with open(path, "w") as stream:
        json.dump(document, stream)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> str:
    """A small finished build (three classes, train and val, several shards), never changed:
    tests that tamper with it take a ``copy``."""
    return build_small(tmp_path_factory.mktemp("built"))


def build_small(root, *, broken: bool = False) -> str:
    """Build ROOT/out from three flat-colour classes of 3, 5 and 7 images (8x10, 4 per shard,
    30 % val); with ``broken`` one more file in red that is no image. Returns ROOT/out."""
    from imgshard import BuildConfig, build

    for index, (name, colour) in enumerate(sorted(CLASS_COLOURS.items())):
        for number in range(3 + 2 * index):
            write_image(str(root / "src" / name / f"{number}.png"), size=(10, 8), colour=colour)
    if broken:
        (root / "src" / "red" / "broken.png").write_bytes(b"nope")
    out = str(root / "out")
    build(str(root / "src"), out, BuildConfig(size=(8, 10), shard_size=4, val_split=0.3),
          workers=1)
    return out


@pytest.fixture
def copy(built, tmp_path):
    """A copy of :func:`built` to tamper with."""
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(built, target)
    return target


def disk_full_at(task_index: int, split: str = "train"):
    """A ``run_shard_task`` that fails task ``task_index`` of ``split`` as a full disk would,
    and runs every other task for real (the real one is looked up when this is made)."""
    import importlib

    real_task = importlib.import_module("imgshard.build").run_shard_task

    def failing(task):
        if task.split == split and task.index == task_index:
            raise OSError(28, "No space left on device")
        return real_task(task)

    return failing


@contextlib.contextmanager
def on_memory(directory) -> Iterator[str]:
    """A copy of ``directory``'s files on fsspec's memory:// store, removed after the block;
    yields its URL."""
    import fsspec

    memory = fsspec.filesystem("memory")
    prefix = f"imgshard-test-{uuid.uuid4().hex[:8]}"
    try:
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as stream:
                memory.pipe(f"{prefix}/{name}", stream.read())
        yield f"memory://{prefix}"
    finally:
        memory.rm(prefix, recursive=True)
