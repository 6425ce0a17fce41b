"""A hostile user's datasets and habits against the reader's conversions (OpenCV's and numpy's)
and the fast decoder: each test here failed before the fix it came with."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from conftest import write_image
from imgshard import BuildConfig, ShardReader, build
from imgshard.config import stored_values


@pytest.mark.parametrize("stored", ["uint8", "float16"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_one_value_images_are_served_as_floats(tmp_path, converter, stored, shuffle):
    """A 1x1 grayscale image is a row of one value, which OpenCV takes for a scalar (and
    returned four values for it): served as the float16 cast, or the uint8 table."""
    for number in range(5):
        write_image(str(tmp_path / "src" / "a" / f"{number}.png"), size=(3, 3), seed=number)
    out = str(tmp_path / "out")
    build(str(tmp_path / "src"), out, BuildConfig(size=(1, 1), color="grayscale", shard_size=2,
                                                  dtype=stored), workers=1)
    with ShardReader(out, batch_size=2, shuffle=shuffle, label_mode=None, dtype=stored) as same, \
            ShardReader(out, batch_size=2, shuffle=shuffle, label_mode=None,
                        dtype="float32") as floats:
        for kept, served in zip(same, floats):
            expected = kept.astype(np.float32) / np.float32(255) if stored == "uint8" \
                else kept.astype(np.float32)
            assert served.shape == kept.shape == (len(kept), 1, 1, 1)
            assert np.array_equal(served.view(np.uint32), expected.view(np.uint32))


def test_threads_asking_first_share_one_helper_thread(monkeypatch):
    """Keras' worker threads ask for their first large batch together: each must get the one
    helper of the process, not an executor of its own whose thread then idles until exit."""
    from imgshard.reader import batches

    made = []
    started = threading.Barrier(4)

    class Slow(batches.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            made.append(self)
            time.sleep(0.2)  # widens the window between asking and keeping: no timing asserted
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(batches, "ThreadPoolExecutor", Slow)
    process = -os.getpid()  # an id no real process has: a helper of its own
    got = []

    def ask():
        started.wait()
        got.append(batches.helper_thread(process))

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    assert len({id(executor) for executor in got}) == 1
    for executor in made:
        executor.shutdown()


class OpenCV4:
    """OpenCV as 4.x is (measured with opencv-python-headless 4.10, which the ``fast`` extra
    accepts): float16 only in conversions, its sum and arithmetic refuse a float16 array or
    result with ``cv2.error``; everything else the installed OpenCV's."""

    def __init__(self, cv2):
        self.cv2 = cv2

    def __getattr__(self, name):
        return getattr(self.cv2, name)

    def _refuse_float16(self, name, *args, **kwargs):
        if kwargs.get("dtype") == self.cv2.CV_16F or any(
                getattr(arg, "dtype", None) == np.float16 for arg in args):
            raise self.cv2.error("(-215:Assertion failed) func in function 'arithm_op'")
        return getattr(self.cv2, name)(*args, **kwargs)

    def sumElems(self, *args, **kwargs):  # noqa: N802 - OpenCV's name
        return self._refuse_float16("sumElems", *args, **kwargs)

    def multiply(self, *args, **kwargs):
        return self._refuse_float16("multiply", *args, **kwargs)

    def addWeighted(self, *args, **kwargs):  # noqa: N802 - OpenCV's name
        return self._refuse_float16("addWeighted", *args, **kwargs)

    def divide(self, *args, **kwargs):
        return self._refuse_float16("divide", *args, **kwargs)


@pytest.fixture
def opencv4(monkeypatch):
    """The reader's OpenCV is :class:`OpenCV4`."""
    cv2 = pytest.importorskip("cv2")
    from imgshard.reader import pixel_values, widen

    fake = OpenCV4(cv2)
    monkeypatch.setattr(widen, "opencv", lambda: fake)
    monkeypatch.setattr(pixel_values, "opencv", lambda: fake)
    widen.float16_arithmetic.cache_clear()
    yield fake
    widen.float16_arithmetic.cache_clear()


@pytest.mark.parametrize("stored,served", [("float16", "float32"), ("uint8", "float16"),
                                           ("uint8", "float32")])
def test_opencv_4_serves_floats_too(tmp_path, opencv4, stored, served):
    """OpenCV 4 (``opencv-python-headless>=4.8`` is what the fast extra asks for, and many
    installs have it anyway) failed every float16 dataset read as float32 and every uint8 one
    read as float16 with cv2.error: numpy's cast, and LUT, serve them instead."""
    for number in range(6):
        write_image(str(tmp_path / "src" / "a" / f"{number}.png"), size=(9, 7), seed=number)
    out = str(tmp_path / "out")
    build(str(tmp_path / "src"), out, BuildConfig(size=(5, 3), shard_size=4, dtype=stored,
                                                  rescale=1 / 127.5, offset=-1), workers=1)
    with ShardReader(out, batch_size=4, shuffle=True, label_mode=None, dtype=stored) as same, \
            ShardReader(out, batch_size=4, shuffle=True, label_mode=None, dtype=served) as floats:
        for kept, got in zip(same, floats):
            expected = kept.astype(served) if stored != "uint8" \
                else stored_values(1 / 127.5, -1, served)[kept]
            bits = f"u{np.dtype(served).itemsize}"
            assert np.array_equal(got.view(bits), expected.view(bits))
