"""Groups of duplicate samples, found from their hashes (``image_hash.py``) without comparing
every pair.

* **exact**: samples whose stored pixels are identical (equal 128-bit digests);
* **near**: the connected components of "difference hashes within :data:`NEAR_DISTANCE` bits
  of each other" (a chain a~b~c is one group even when a and c lie further apart), unless the
  component is one exact group and nothing else (then it is reported once, as exact).

The near search is a multi-index hash: the 64 bits are cut into ``d + 1`` blocks, and two
hashes within ``d`` bits agree on at least one whole block (pigeonhole), so only hashes sharing
a block's value are compared. Equal hashes are merged first (a thousand copies of a blank image
cost one comparison, not half a million). Expected cost: n log n to sort, plus the pairs that
share a block; with random hashes and d = 4 (13-bit blocks) that is about n^2 / 2^13 / 2 * 5
pair tests, done by numpy in vectorised steps, and exactly the true near pairs otherwise.

A group whose paths lie in more than one split is *leakage*: the same image (or nearly) in
train and val makes a validation score lie.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .samples import SPLIT_ORDER

#: Near duplicates: difference hashes at most this many bits apart (of 64). Re-encoding,
#: resizing or a slight brightness change move a few bits; unrelated photos differ in ~32.
NEAR_DISTANCE = 4
KINDS = ("exact", "near")


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


def find_groups(paths: list[str], splits: list[str], digests: np.ndarray,
                dhashes: np.ndarray, distance: int = NEAR_DISTANCE) -> list[DuplicateGroup]:
    """The exact and near groups of the samples (``digests``: (n, 16) uint8; ``dhashes``: (n,)
    uint64), sorted by first path, exact before near; a pure function of the samples."""
    exact = _runs_of_equal(np.ascontiguousarray(digests).view(np.dtype((np.void, 16))).ravel())
    near = near_components(dhashes, distance)
    groups = [_group("exact", members, paths, splits) for members in _members(exact)]
    for members in _members(near):
        if len(set(exact[members].tolist())) > 1:  # else it is one exact group, said already
            groups.append(_group("near", members, paths, splits))
    return sorted(groups, key=lambda g: (g.paths[0], KINDS.index(g.kind), g.paths))


def near_components(hashes: np.ndarray, distance: int) -> np.ndarray:
    """A component number for each hash: hashes within ``distance`` bits (and chains of
    such) share one. Multi-index search over the distinct hashes (module docstring)."""
    unique, inverse = np.unique(hashes.astype(np.uint64), return_inverse=True)
    parent = np.arange(len(unique))
    for left, right in _close_pairs(unique, distance):
        parent = _join(parent, left, right)
    return parent[inverse.ravel()]


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


def _members(labels: np.ndarray) -> list[np.ndarray]:
    """The indices of each label held by two or more."""
    if not len(labels):
        return []
    order = np.argsort(labels, kind="stable")
    ends = _run_ends(labels[order])
    starts = np.concatenate(([0], np.unique(ends)[:-1]))
    return [order[s:e] for s, e in zip(starts, np.unique(ends)) if e - s > 1]


def _group(kind: str, members: np.ndarray, paths: list[str], splits: list[str]) -> DuplicateGroup:
    found = {splits[i] for i in members.tolist()}
    ordered = sorted(found, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 3, s))
    return DuplicateGroup(kind, tuple(sorted(paths[i] for i in members.tolist())), tuple(ordered))
