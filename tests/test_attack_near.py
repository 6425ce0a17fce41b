"""Attacks on the near-duplicate confirmation: many images sharing one difference hash, and
hostile inputs of the thumbnail comparison."""

from __future__ import annotations

import numpy as np

from imgshard.duplicates import PAIRS_AT_ONCE, _ValueMembers


def test_the_pairs_of_one_crowded_hash_value_come_a_bounded_number_at_a_time():
    """k distinct images sharing one difference hash (flat images of k colours all hash to 0)
    make k^2 / 2 candidate pairs: they must come in slices of at most PAIRS_AT_ONCE, or 20,000
    such images hold 2*10^8 pairs (gigabytes) at once."""
    count = 300  # 44,850 pairs
    members = _ValueMembers(np.zeros(count, np.int64), 1)
    slices = list(members.pairs(np.array([0]), np.array([0])))
    assert max(len(left) for left, _ in slices) <= PAIRS_AT_ONCE
    found = {(a, b) for left, right in slices for a, b in zip(left.tolist(), right.tolist())}
    assert {(min(p), max(p)) for p in found} == {(a, b) for a in range(count)
                                                 for b in range(a + 1, count)}
    assert sum(len(left) for left, _ in slices) == count * (count - 1) // 2
