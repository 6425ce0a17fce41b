"""A hostile user's datasets and habits against the reader's conversions (OpenCV's and numpy's)
and the fast decoder: each test here failed before the fix it came with."""

from __future__ import annotations

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
