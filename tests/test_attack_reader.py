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
