"""The build's cast of 8-bit pixels (and a reader's fallback lookup) copies the table's bits,
whichever way it runs: OpenCV's LUT where OpenCV is loaded, else the pair table."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imgshard.config import BuildConfig, stored_values
from imgshard.formats.npy import cast_table, store_pixels
from imgshard.lookup import look_up

try:
    import cv2
except ImportError:  # the pair table alone is tested then
    cv2 = None

WAYS = [None] + ([cv2] if cv2 is not None else [])


@pytest.mark.parametrize("opencv", WAYS, ids=lambda way: "opencv" if way else "pairs")
@given(pixels=arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 9),
                                         st.sampled_from([1, 3, 4]))),
       dtype=st.sampled_from(["float16", "float32", "float64"]),
       scale=st.sampled_from([(1 / 255, 0.0), (2 / 255, -1.0), (-1 / 255, 1.0), (1e-6, 0.0),
                              (300.0, 0.0)]))
def test_the_lookup_copies_the_tables_bits(opencv, pixels, dtype, scale):
    """Any shape (a single pixel and odd counts too), float16 subnormals and infinities."""
    table = stored_values(*scale, dtype)
    out = np.full(pixels.shape, -7, dtype)
    look_up(table, pixels, out, opencv)
    bits = f"u{out.itemsize}"
    assert np.array_equal(out.view(bits), table[pixels].view(bits))


def test_every_pixel_value_at_every_place_of_a_long_row():
    """OpenCV's vector loop and its scalar tail, and both halves of a pair."""
    table = cast_table(BuildConfig())
    pixels = ((np.arange(256)[:, np.newaxis] + np.arange(301)) % 256).astype(np.uint8)
    for opencv in WAYS:
        out = np.empty(pixels.shape, np.float16)
        look_up(table, pixels, out, opencv)
        assert np.array_equal(out.view(np.uint16), table[pixels].view(np.uint16))


@pytest.mark.skipif(cv2 is None, reason="needs OpenCV")
def test_a_build_casts_by_opencv_once_it_is_loaded(monkeypatch):
    """The fast decoder has loaded OpenCV: its LUT is 6x numpy's take on a 224x224x3 row."""
    calls = []
    monkeypatch.setattr(cv2, "LUT", lambda *args, **kwargs: calls.append(args) or cv2_lut(
        *args, **kwargs))
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = np.empty(pixels.shape, np.float16)
    store_pixels(pixels, cast_table(BuildConfig()), out)
    assert calls and np.array_equal(out, cast_table(BuildConfig())[pixels])
    monkeypatch.delitem(sys.modules, "cv2")
    store_pixels(pixels, cast_table(BuildConfig()), out)
    assert len(calls) == 1  # never imported for the cast alone


cv2_lut = cv2.LUT if cv2 is not None else None


@pytest.mark.parametrize("opencv", WAYS, ids=lambda way: "opencv" if way else "pairs")
@pytest.mark.parametrize("out_dtype", ["float32", ">f2", "<f2"])
@pytest.mark.parametrize("contiguous", [True, False])
def test_an_output_of_another_dtype_or_layout_gets_the_tables_values(opencv, out_dtype,
                                                                     contiguous):
    """``out[...] = table[pixels]`` (a cast, the other byte order, a strided view written
    through): the fast ways copy bits, so they take only outputs that are the
    table's own dtype, contiguous (review: a float32 output raised, a byte-swapped one got
    wrong values, a strided one kept its old values)."""
    table = cast_table(BuildConfig())
    pixels = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    base = np.full((6, 10, 3) if not contiguous else (6, 5, 3), -1, out_dtype)
    out = base if contiguous else base[:, ::2]
    look_up(table, pixels, out, opencv)
    assert np.array_equal(out, table[pixels].astype(out_dtype))
