"""Duplicates: the per-image hashes (against numpy references computed here) and the grouping
of a large set of hashes (against a brute-force reference)."""

from __future__ import annotations

import hashlib
import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgshard.duplicates import NEAR_DISTANCE, NEAR_PIXELS, find_groups, near_components
from imgshard.image_hash import THUMBNAIL_SIDE, dhash, pixel_digest, pixel_fingerprint, thumbnail


def reference_dhash(pixels: np.ndarray) -> int:
    """The difference hash by its definition, with float64 block means and explicit loops:
    the channel sum averaged over an 8x9 grid of blocks (edges floor(i*H/8), floor(j*W/9));
    bit 8*r+c (from the most significant) is set when block (r, c+1) is brighter than (r, c)."""
    gray = pixels.astype(np.float64).sum(axis=2)
    height, width = gray.shape
    rows = [height * i // 8 for i in range(9)]
    cols = [width * j // 9 for j in range(10)]
    means = np.array([[gray[rows[r]:rows[r + 1], cols[c]:cols[c + 1]].mean() for c in range(9)]
                      for r in range(8)])
    bits = [means[r, c + 1] > means[r, c] for r in range(8) for c in range(8)]
    return sum(1 << (63 - i) for i, bit in enumerate(bits) if bit)


@pytest.mark.parametrize("shape", [(72, 72, 3), (30, 40, 3), (17, 23, 1), (224, 160, 4)])
def test_dhash_is_the_block_mean_difference_hash(shape):
    rng = np.random.default_rng(shape[0])
    for _ in range(5):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        assert dhash(pixels) == reference_dhash(pixels)


def test_dhash_of_an_image_smaller_than_the_grid_is_that_of_its_enlargement():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 8, axis=0), 9, axis=1)  # 24x36: every block whole
    assert dhash(small) == reference_dhash(big)


def test_dhash_is_robust_to_a_small_change_and_the_digest_is_not():
    rng = np.random.default_rng(2)
    pixels = (rng.integers(0, 256, (8, 9, 1), dtype=np.uint8).repeat(20, 0).repeat(20, 1))
    changed = pixels.copy()
    changed[1, 0, 0] ^= 1  # row 1: not in the fingerprint
    assert dhash(pixels) == dhash(changed)
    assert pixel_digest(pixels) != pixel_digest(changed)
    assert pixel_digest(pixels) == hashlib.sha256(pixels.tobytes()).digest()[:16]
    rows = np.concatenate([pixels[row:row + 1] for row in range(0, len(pixels), 8)])
    assert pixel_fingerprint(pixels) == hashlib.sha256(rows.tobytes()).digest()[:16]
    assert pixel_fingerprint(pixels) == pixel_fingerprint(changed)


def brute_components(hashes: list[int], distance: int) -> list[frozenset[int]]:
    """Connected components of 'Hamming distance <= distance', by comparing every pair."""
    return linked_components(len(hashes), lambda i, j: hamming(hashes[i], hashes[j]) <= distance)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def linked_components(count: int, linked) -> list[frozenset[int]]:
    """The connected components of the pairs (i, j) of ``range(count)`` that are ``linked``."""
    parent = list(range(count))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i
    for i, j in itertools.combinations(range(count), 2):
        if linked(i, j):
            parent[root(i)] = root(j)
    groups: dict[int, set[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), set()).add(i)
    return sorted((frozenset(g) for g in groups.values()), key=min)


def as_components(labels: np.ndarray) -> list[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for i, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(i)
    return sorted((frozenset(g) for g in groups.values()), key=min)


def clustered_hashes(seed: int, count: int, centres: int, flips: int) -> list[int]:
    """``count`` hashes near ``centres`` random 64-bit hashes (0..``flips`` bits flipped)."""
    rng = np.random.default_rng(seed)
    bases = [int(x) for x in rng.integers(0, 2**63, centres, dtype=np.int64)] + [0, 2**64 - 1]
    out = []
    for _ in range(count):
        value = bases[int(rng.integers(len(bases)))]
        for bit in rng.choice(64, int(rng.integers(0, flips + 1)), replace=False):
            value ^= 1 << int(bit)
        out.append(value)
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(0, 400),
       centres=st.integers(1, 60), flips=st.integers(0, 8), distance=st.integers(0, 8))
def test_near_components_equal_the_brute_force_components(seed, count, centres, flips, distance):
    hashes = clustered_hashes(seed, count, centres, flips)
    labels = near_components(np.array(hashes, dtype=np.uint64), distance, alike_thumbnails())
    assert as_components(labels) == brute_components(hashes, distance)


def test_a_large_set_is_grouped_as_brute_force_would():
    hashes = clustered_hashes(7, 3000, 300, 6)
    labels = near_components(np.array(hashes, dtype=np.uint64), NEAR_DISTANCE,
                             alike_thumbnails())
    assert as_components(labels) == brute_components(hashes, NEAR_DISTANCE)


def test_find_groups_names_exact_and_near_groups_with_their_splits():
    digest = [bytes([n]) * 16 for n in range(6)]
    rows = [  # path, split, digest, dhash
        ("b.png", "val", digest[0], 0b1111),
        ("a.png", "train", digest[0], 0b1111),      # exact copy of b.png, across splits
        ("c.png", "train", digest[1], 0b1110),      # one bit from a/b: near, not exact
        ("d.png", "train", digest[2], 0xF0F0F0F0 << 32),  # alone: 20 bits or more from all
        ("e.png", "val", digest[3], 0xFFFF0000),     # e, f: exact, both in val
        ("f.png", "val", digest[3], 0xFFFF0000),
    ]
    groups = find_groups([r[0] for r in rows], [r[1] for r in rows],
                         np.frombuffer(b"".join(r[2] for r in rows), np.uint8).reshape(-1, 16),
                         np.array([r[3] for r in rows], np.uint64), alike_thumbnails())
    assert [g.to_json() for g in groups] == [
        {"kind": "exact", "paths": ["a.png", "b.png"], "splits": ["train", "val"]},
        {"kind": "near", "paths": ["a.png", "b.png", "c.png"], "splits": ["train", "val"]},
        {"kind": "exact", "paths": ["e.png", "f.png"], "splits": ["val"]},
    ]
    assert [g.leaks for g in groups] == [True, True, False]


def alike_thumbnails():
    """Thumbnails that confirm every candidate pair: all equal."""
    return lambda samples: np.zeros((len(samples), 4), np.uint8)


def brute_near(hashes: list[int], thumbs: np.ndarray, distance: int) -> list[frozenset[int]]:
    """Components of 'hashes within ``distance`` bits and thumbnails within NEAR_PIXELS on
    average', comparing every pair."""
    def near(i, j):
        mean_difference = np.abs(thumbs[i].astype(float) - thumbs[j].astype(float)).mean()
        return hamming(hashes[i], hashes[j]) <= distance and mean_difference <= NEAR_PIXELS
    return linked_components(len(hashes), near)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(0, 120), centres=st.integers(1, 8),
       flips=st.integers(0, 6), looks=st.integers(1, 4), spread=st.integers(0, 30))
def test_near_pairs_are_confirmed_by_their_thumbnails(seed, count, centres, flips, looks, spread):
    """Few hash values and a few 'looks' (thumbnail centres, each value moved by up to
    ``spread``): many candidate pairs that only some thumbnails confirm."""
    hashes = clustered_hashes(seed, count, centres, flips)
    rng = np.random.default_rng(seed)
    centre_thumbs = rng.integers(0, 256, (looks, 12), dtype=np.int16)
    thumbs = np.clip(centre_thumbs[rng.integers(0, looks, count)]
                     + rng.integers(-spread, spread + 1, (count, 12)), 0, 255).astype(np.uint8)
    labels = near_components(np.array(hashes, dtype=np.uint64), NEAR_DISTANCE,
                             lambda samples: thumbs[samples])
    assert as_components(labels) == brute_near(hashes, thumbs, NEAR_DISTANCE)


def test_images_with_one_difference_hash_but_other_pixels_are_not_near_duplicates():
    digests = np.arange(4 * 16, dtype=np.uint8).reshape(4, 16)  # all different: no exact group
    thumbs = np.array([[10] * 4, [14] * 4, [200] * 4, [14, 14, 14, 50]], np.uint8)
    groups = find_groups(["a", "b", "c", "d"], ["train", "val", "val", "val"], digests,
                         np.zeros(4, np.uint64), lambda samples: thumbs[samples])
    # a~b: 4 levels apart on average; c: 190 from a; d: 13 from a (over NEAR_PIXELS), 9 from b:
    # one group by the chain a~b~d
    assert NEAR_PIXELS == 12
    assert [g.to_json() for g in groups] == [
        {"kind": "near", "paths": ["a", "b", "d"], "splits": ["train", "val"]}]


def reference_thumbnail(stored: np.ndarray, rescale: float, offset: float) -> np.ndarray:
    """Block means over a THUMBNAIL_SIDE grid (edges floor(i*H/side)) of the stored values,
    as 8-bit values ``(mean - offset) / rescale``, rounded, by explicit loops."""
    side = THUMBNAIL_SIDE
    height, width, channels = stored.shape
    rows = [height * i // side for i in range(side + 1)]
    cols = [width * j // side for j in range(side + 1)]
    means = np.zeros((side, side, channels))
    for r in range(side):
        for c in range(side):
            block = stored[rows[r]:rows[r + 1], cols[c]:cols[c + 1]].astype(np.float64)
            means[r, c] = block.mean(axis=(0, 1))
    return np.clip(np.rint((means - offset) / rescale), 0, 255).astype(np.uint8).ravel()


@pytest.mark.parametrize("shape,dtype,rescale,offset", [
    ((64, 64, 3), np.float16, 1 / 255, 0.0), ((50, 37, 1), np.float32, 2 / 255, -1.0),
    ((224, 160, 3), np.uint8, 1.0, 0.0), ((33, 200, 3), np.float32, -0.5, 3.0)])
def test_thumbnail_is_the_block_mean_of_the_pixel_values(shape, dtype, rescale, offset):
    rng = np.random.default_rng(shape[0])
    pixels = rng.integers(0, 256, shape).astype(np.float64)
    stored = (pixels * rescale + offset).astype(dtype)
    assert np.array_equal(thumbnail(stored, rescale, offset),
                          reference_thumbnail(stored, rescale, offset))


def test_the_thumbnail_of_an_image_smaller_than_its_grid_is_that_of_its_enlargement():
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (5, 3, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, THUMBNAIL_SIDE, axis=0), THUMBNAIL_SIDE, axis=1)
    assert np.array_equal(thumbnail(small, 1.0, 0.0), reference_thumbnail(big, 1.0, 0.0))


def test_a_long_thin_image_is_enlarged_along_its_short_side_only():
    """A 4096x8 row was repeated 16 times along both sides (256x its size: 100 MB of float32
    for one thumbnail); its long side needs no enlarging, and the means are the same."""
    rng = np.random.default_rng(4)
    thin = rng.integers(0, 256, (4096, 8, 3)).astype(np.float32)
    import tracemalloc
    tracemalloc.start()
    try:
        found = thumbnail(thin, 1.0, 0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(found, reference_thumbnail(np.repeat(thin, THUMBNAIL_SIDE, axis=1),
                                                     1.0, 0.0))
    assert peak < 20 * thin.nbytes, peak


def test_values_no_build_stores_make_a_defined_thumbnail():
    """NaN or inf in an edited float shard: the cast to uint8 was undefined (and warned)."""
    stored = np.full((16, 16, 3), 0.5, np.float32)
    stored[0, 0, 0], stored[5, 5, 1], stored[9, 9, 2] = np.nan, np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = thumbnail(stored, 1 / 255, 0.0)
    assert found.tolist() == thumbnail(stored, 1 / 255, 0.0).tolist()
    assert found[0] == 0 and found[(5 * 16 + 5) * 3 + 1] == 255 and found[(9 * 16 + 9) * 3 + 2] == 0
