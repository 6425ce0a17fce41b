"""Groups of duplicate samples, found from their hashes (``image_hash.py``) without comparing
every pair.

* **exact**: samples whose stored pixels are identical (equal 128-bit digests);
* **near**: the connected components of "near pairs" (a chain a~b~c is one group even when a
  and c lie further apart), unless the component is one exact group and nothing else (then it
  is reported once, as exact). A pair is near when its difference hashes lie within
  :data:`NEAR_DISTANCE` bits of each other *and* its thumbnails (16x16 block means of the
  stored pixels, per channel) differ by at most :data:`NEAR_PIXELS` 8-bit levels on average.
  The hash finds the candidates; the thumbnails confirm them, because a difference hash only
  records which blocks are brighter than their left neighbours: flat shapes of any colour
  with edges in the same blocks (a yellow disc and a blue square) share most of their bits.

The candidate search is a multi-index hash: the 64 bits are cut into ``d + 1`` blocks, and
two hashes within ``d`` bits agree on at least one whole block (pigeonhole), so only hashes
sharing a block's value are compared. Exact copies are represented by one of them. Expected
cost: n log n to sort, plus the pairs that share a block; with random hashes and d = 4 (13-bit
blocks) that is about n^2 / 2^13 / 2 * 5 pair tests, done by numpy in vectorised steps. Each
candidate pair not in one component already then costs a test of its thumbnails' channel
sums (a few numbers) and, when they are close enough, one thumbnail comparison (about a
microsecond); the thumbnails are read from the shards for the samples in candidate pairs only.
The pairs of k distinct images sharing one difference hash are all candidates: k^2 / 2 (flat
images of 20,000 colours, all hashing to 0: 2*10^8 pairs, 6-8 s), made a few thousand at a
time.

A group whose paths lie in more than one split is *leakage*: the same image (or nearly) in
train and val makes a validation score lie.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .image_hash import THUMBNAIL_SIDE
from .samples import SPLIT_ORDER

#: Near duplicates: difference hashes at most this many bits apart (of 64). Re-encoding,
#: resizing or a slight brightness change move a few bits; unrelated photos differ in ~32.
NEAR_DISTANCE = 4
#: ... and thumbnails at most this many 8-bit levels apart on average. Measured on photos
#: resized to 64 and 224 pixels: re-encoding at JPEG quality 40, halving, blurring, 10 % less
#: saturation moved them by at most 7; 6 % more brightness by at most 10.5; a 2 % crop by at
#: most 10, but once by 21 (a crop moves every block). Different shapes or colours whose
#: hashes were close: 20.5 and more.
NEAR_PIXELS = 12
KINDS = ("exact", "near")
#: Candidate pairs made at a time (four int64 arrays of them).
PAIRS_AT_ONCE = 1 << 13
#: Candidate pairs whose thumbnails are compared at a time: bounds what a comparison holds to
#: well under a megabyte (768 bytes a thumbnail, copied for each side of a pair).
COMPARED_AT_ONCE = 1 << 8
#: The thumbnails (flat uint8 rows) of the samples at the given indices.
Thumbnails = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DuplicateGroup:
    """Samples that hold the same image (``exact``) or nearly (``near``), paths sorted."""

    kind: str
    paths: tuple[str, ...]
    splits: tuple[str, ...]

    @property
    def leaks(self) -> bool:
        """The group lies in more than one split."""
        return len(self.splits) > 1

    def to_json(self) -> dict:
        return {"kind": self.kind, "paths": list(self.paths), "splits": list(self.splits)}


def find_groups(paths: list[str], splits: list[str], digests: np.ndarray, dhashes: np.ndarray,
                thumbnails: Thumbnails, distance: int = NEAR_DISTANCE) -> list[DuplicateGroup]:
    """The exact and near groups of the samples (``digests``: (n, 16) uint8; ``dhashes``: (n,)
    uint64; ``thumbnails``: see :data:`Thumbnails`), sorted by first path, exact before near;
    a pure function of the samples."""
    exact = _runs_of_equal(np.ascontiguousarray(digests).view(np.dtype((np.void, 16))).ravel())
    _, first = np.unique(exact, return_index=True)  # one sample stands for its exact copies
    near = near_components(dhashes[first], distance,
                           lambda samples: thumbnails(first[samples]))[exact]
    groups = [_group("exact", members, paths, splits) for members in _members(exact)]
    for members in _members(near):
        if len(set(exact[members].tolist())) > 1:  # else it is one exact group, said already
            groups.append(_group("near", members, paths, splits))
    return sorted(groups, key=lambda g: (g.paths[0], KINDS.index(g.kind), g.paths))


def near_components(hashes: np.ndarray, distance: int, thumbnails: Thumbnails) -> np.ndarray:
    """A component number for each hash: the components of the near pairs (hashes within
    ``distance`` bits, thumbnails within :data:`NEAR_PIXELS`; module docstring)."""
    unique, inverse = np.unique(hashes.astype(np.uint64), return_inverse=True)
    values = _ValueMembers(inverse.ravel(), len(unique))
    shared = np.flatnonzero(values.counts > 1)  # a value held twice: its holders are candidates
    close = [(shared, shared)] + list(_close_pairs(unique, distance))
    involved = values.members_of(_distinct(np.concatenate([np.concatenate(p) for p in close])))
    parent = np.arange(len(hashes))
    if not len(involved):
        return parent
    table = _ThumbnailTable(involved, thumbnails(involved), len(hashes))
    for left_values, right_values in close:
        for left, right in values.pairs(left_values, right_values):
            apart = parent[left] != parent[right]  # a pair in one component already: no test
            left, right = left[apart], right[apart]
            alike = table.alike(left, right)
            if alike.any():
                parent = _join(parent, left[alike], right[alike])
    return parent


class _ValueMembers:
    """The samples holding each distinct hash value (``inverse``: each sample's value)."""

    def __init__(self, inverse: np.ndarray, values: int):
        self.order = np.argsort(inverse, kind="stable")
        self.counts = np.bincount(inverse, minlength=values)
        self.starts = np.cumsum(self.counts) - self.counts

    def members_of(self, values: np.ndarray) -> np.ndarray:
        """The samples holding any of ``values``."""
        return self.order[_ranges(self.starts[values], self.counts[values])]

    def pairs(self, left: np.ndarray, right: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
        """The sample pairs of each value pair (left[i], right[i]): every holder of one with
        every holder of the other, or, for a value paired with itself, each pair of its
        holders once; at most PAIRS_AT_ONCE at a time, even from one crowded value (k
        holders make k^2 products: 20,000 flat images of other colours, one hash)."""
        products = self.counts[left] * self.counts[right]
        ends = np.cumsum(products)
        total = int(ends[-1]) if len(ends) else 0
        for start in range(0, total, PAIRS_AT_ONCE):
            product = np.arange(start, min(start + PAIRS_AT_ONCE, total))
            pair = np.searchsorted(ends, product, side="right")
            yield self._pairs_of(left[pair], right[pair], product - (ends[pair] - products[pair]))

    def _pairs_of(self, left: np.ndarray, right: np.ndarray,
                  product: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sample pairs numbered ``product`` (holder i of ``left`` times holder j of
        ``right``: i * count + j) of each value pair; a value's pairs with itself once."""
        right_count = self.counts[right]
        i, j = product // right_count, product % right_count
        keep = (left != right) | (i < j)
        left_samples = self.order[self.starts[left] + i]
        right_samples = self.order[self.starts[right] + j]
        return left_samples[keep], right_samples[keep]


class _ThumbnailTable:
    """The thumbnails of the samples in candidate pairs, and the test of a pair."""

    def __init__(self, samples: np.ndarray, thumbnails: np.ndarray, count: int):
        self.rows = np.asarray(thumbnails, dtype=np.uint8).reshape(len(samples), -1)
        self.row_of = np.zeros(count, np.int64)
        self.row_of[samples] = np.arange(len(samples))
        self.sums = _channel_sums(self.rows)

    def alike(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Whether each pair's thumbnails differ by at most NEAR_PIXELS on average (in
        integers: the sum of the differences at most NEAR_PIXELS times their number).

        The differences of the channel sums add up to at most that sum, so a pair whose
        sums alone exceed the bound is not compared value by value: flat images of k colours
        (one hash) cost k^2 / 2 tests of three numbers, not of 768 bytes."""
        limit = NEAR_PIXELS * self.rows.shape[1]
        a_rows, b_rows = self.row_of[left], self.row_of[right]
        result = np.abs(self.sums[a_rows] - self.sums[b_rows]).sum(axis=1) <= limit
        compared = np.flatnonzero(result)
        for start in range(0, len(compared), COMPARED_AT_ONCE):
            at = compared[start:start + COMPARED_AT_ONCE]
            a, b = self.rows[a_rows[at]], self.rows[b_rows[at]]
            difference = np.maximum(a, b)
            difference -= np.minimum(a, b)  # |a - b| in uint8, without a wider copy
            result[at] = difference.sum(axis=1, dtype=np.int64) <= limit
        return result


def _channel_sums(rows: np.ndarray) -> np.ndarray:
    """Each thumbnail's sum per channel (its values at positions i, i + C, i + 2C...: C is
    the channel count of a THUMBNAIL_SIDE-square thumbnail, else 1): any split of the values
    bounds the sum of differences from below, a channel's tells colours apart."""
    width = rows.shape[1]
    channels = width // THUMBNAIL_SIDE ** 2 if width % THUMBNAIL_SIDE ** 2 == 0 else 1
    return rows.reshape(len(rows), -1, max(channels, 1)).sum(axis=1, dtype=np.int64)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated ranges ``starts[i] .. starts[i] + lengths[i] - 1``."""
    total = int(lengths.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


def _close_pairs(unique: np.ndarray, distance: int):
    """Index pairs (i < j arrays) of distinct sorted hashes within ``distance`` bits, block
    by block: candidates share a block's value, so they sit together when sorted by it."""
    blocks = distance + 1
    edges = [64 * b // blocks for b in range(blocks + 1)]
    for start, end in zip(edges, edges[1:]):
        width = end - start
        if width == 0:
            continue
        keys = (unique >> np.uint64(64 - end)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        run_end = _run_ends(sorted_keys)
        active = np.arange(len(order))
        step = 1
        while True:
            active = active[active + step < run_end[active]]
            if not len(active):
                break
            left, right = order[active], order[active + step]
            close = np.bitwise_count(unique[left] ^ unique[right]) <= distance
            if close.any():
                yield left[close], right[close]
            step += 1


def _run_ends(sorted_keys: np.ndarray) -> np.ndarray:
    """For each position of a sorted array, where its run of equal values ends."""
    if not len(sorted_keys):
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.diff(sorted_keys)) + 1
    ends = np.append(starts, len(sorted_keys))
    lengths = np.diff(np.concatenate(([0], ends)))
    return np.repeat(ends, lengths)


def _join(parent: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Union the pairs into ``parent`` (every node points at its component's least member),
    by propagating minima and jumping pointers until nothing changes."""
    while True:
        a, b = parent[left], parent[right]
        low = np.minimum(a, b)
        np.minimum.at(parent, a, low)
        np.minimum.at(parent, b, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        if np.array_equal(parent[left], parent[right]):
            return parent


def _runs_of_equal(values: np.ndarray) -> np.ndarray:
    """A number for each value, shared by equal values."""
    if not len(values):
        return np.zeros(0, np.int64)
    _, inverse = np.unique(values, return_inverse=True)
    return inverse.ravel()


def _distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values: np.unique's, which imports numpy.ma when it returns nothing
    else (13 ms of every build's start-up)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _members(labels: np.ndarray) -> list[np.ndarray]:
    """The indices of each label held by two or more."""
    if not len(labels):
        return []
    order = np.argsort(labels, kind="stable")
    # the runs' ends directly (np.unique of them would import numpy.ma: see _distinct)
    ends = np.append(np.flatnonzero(np.diff(labels[order])) + 1, len(labels))
    starts = np.concatenate(([0], ends[:-1]))
    return [order[s:e] for s, e in zip(starts, ends) if e - s > 1]


def _group(kind: str, members: np.ndarray, paths: list[str], splits: list[str]) -> DuplicateGroup:
    found = {splits[i] for i in members.tolist()}
    ordered = sorted(found, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 3, s))
    return DuplicateGroup(kind, tuple(sorted(paths[i] for i in members.tolist())), tuple(ordered))
