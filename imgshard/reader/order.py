"""Which samples an epoch serves, in which order, cut into which batches: pure functions of
``(seed, epoch)`` and the split's shard sizes, so that any process computes the same order.

Shuffle algorithm (``shuffle=True``):

1. the shards of the split are put in a random order;
2. consecutive runs of ``window`` shards form a window, and the samples of a window are put in
   a random order;
3. the epoch is the windows one after another, cut into batches.

Reads stay within a few files at a time (I/O friendly), yet a batch mixes samples from
``window`` shards, and because ``imgshard build`` already spreads every class over every shard,
batches are well mixed. A larger window shuffles more globally but maps more data;
``window=1`` is the cheapest and still reorders every shard.

Splitting an epoch across training processes belongs here: it is a change of which indices
:meth:`EpochOrder.order` returns and of how :meth:`EpochOrder.batch` cuts them, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class EpochOrder:
    """The order of every epoch of one split.

    ``starts`` holds the global index of each shard's first sample, and the sample count last
    (``starts[i]:starts[i + 1]`` are shard ``i``'s samples, stored order).
    """

    starts: np.ndarray
    batch_size: int
    shuffle: bool
    seed: int
    window: int
    drop_remainder: bool

    @classmethod
    def of(cls, shard_sizes: list[int], **options) -> "EpochOrder":
        """The order over shards of ``shard_sizes`` samples each (see the fields for options)."""
        sizes = np.array(shard_sizes, dtype=np.int64)
        return cls(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), **options)

    @property
    def num_samples(self) -> int:
        return int(self.starts[-1])

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_remainder:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Global sample indices (shard by shard, row by row) in the order of ``epoch``."""
        if not self.shuffle:
            return np.arange(self.num_samples, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch])
        shard_order = rng.permutation(len(self.starts) - 1)
        parts = []
        for first in range(0, len(shard_order), self.window):
            members = shard_order[first:first + self.window]
            indices = np.concatenate([np.arange(self.starts[s], self.starts[s + 1])
                                      for s in members])
            parts.append(rng.permutation(indices))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def batch(self, order: np.ndarray, index: int) -> np.ndarray:
        """The global indices of batch ``index`` of an epoch in ``order``."""
        return order[index * self.batch_size:(index + 1) * self.batch_size]

    def shard_of(self, indices: np.ndarray) -> np.ndarray:
        """The shard that holds each of the global sample ``indices``."""
        return np.searchsorted(self.starts, indices, side="right") - 1

    def visit_order(self, order: np.ndarray) -> list[int]:
        """The shards in the order an epoch of ``order`` first touches them."""
        shard_of = self.shard_of(order)
        _, first = np.unique(shard_of, return_index=True)
        return shard_of[np.sort(first)].tolist()
