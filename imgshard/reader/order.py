"""Which samples an epoch serves, in which order, cut into which batches, and which of them each
training process reads: pure functions of ``(seed, epoch)``, the split's shard sizes and the
options, so that every process computes the same epoch without talking to the others.

Shuffled epochs (``shuffle=True``), for ``R = num_replicas`` processes of ``batch_size`` each,
``G = R * batch_size`` samples a global step:

1. the shards of the split are put in a random order, and their samples, one shard after the
   other, are cut into ``partitions`` (P) contiguous spans;
2. each span is shuffled inside blocks of ``window`` consecutive shards (the span's part of
   them), and every other span is read backwards, so that a shard two spans share is read by
   both at the same time (at the start or at the end of the epoch), not held all epoch;
3. every global batch takes from every partition its share of ``G``: step ``k`` takes
   ``c[(p + k) % P]`` samples from partition ``p``, where ``c`` spreads ``G`` over the P
   partitions as evenly as whole numbers allow (``c[p] = floor((p+1)G/P) - floor(pG/P)``);
4. process ``r`` reads partitions ``r*P/R`` to ``(r+1)*P/R - 1``: its part of every global batch
   is exactly ``batch_size`` samples (any ``P/R`` consecutive entries of ``c``, taken cyclically,
   sum to ``G/R``).

So the global batches (as sets of samples) depend on the seed, the epoch, ``G``, ``P`` and
``window``, never on ``R``: 4 processes of batch 8 see the batches 2 processes of batch 16 or one
of batch 32 see, and a job saved at global step ``k`` continues on any ``R`` that divides ``P``.
And each process reads one contiguous run of the epoch's shard order, about ``1/R`` of the split
plus the two shards it shares with its neighbours, while every batch still mixes ``min(P, G)``
spans of the whole split. The price: one process has up to ``P`` shards (``P * window``) in use
at a time (mapped; its pages handed back as it goes, see ``window.py``), so ``partitions=1,
window=4`` is the leanest single-process order, and it cannot be resumed on more processes.

The ``N mod G`` samples left over after the last full global step form one last, partial step
(or are dropped with ``drop_remainder``), spread over the partitions as evenly as ``c``. With
``R > 1`` each process tops its part of that step up to ``batch_size`` with repeats of its own
samples, as torch's ``DistributedSampler`` pads, so that every process takes the same number of
full batches (fewer than ``G`` repeats); one process serves it partial. The repeats are the
process's last samples before that step, latest first: from shards still in use, and none
twice in one batch while the epoch has a full step to take them from.

Unshuffled epochs are the stored order cut into global batches of ``G``; process ``r`` reads the
``r``-th ``batch_size`` slice of each (and so maps every shard, reading ``1/R`` of its rows).

An epoch may serve a selection of the split's samples (``selected``: a subset of its classes).
All of the above then holds for the selected samples alone, numbered ``0..M-1`` in stored order:
the shards are the same, each as large as its selected samples (a shard with none is left out
of the shard order, and so is never read), and the order's numbers are mapped back to the
split's global indices last.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: The default number of partitions: every power of two up to 64 processes can share an epoch
#: and resume each other's.
DEFAULT_PARTITIONS = 64

#: The most partitions, and training processes, a reader takes: far beyond any job, small enough
#: that an epoch's order (a step per partition) costs at most a second or two.
MAX_PARTITIONS = 1 << 16


def spread(total: int, parts: int) -> np.ndarray:
    """``total`` split into ``parts`` whole numbers that differ by at most one, evenly spread:
    part ``p`` is ``floor((p+1) * total / parts) - floor(p * total / parts)``."""
    return np.diff(np.arange(parts + 1, dtype=np.int64) * total // parts)


@dataclass(frozen=True, eq=False)
class EpochOrder:
    """The order of every epoch of one split, as one of ``num_replicas`` processes reads it.

    ``starts`` holds the global index of each shard's first sample, and the sample count last
    (``starts[i]:starts[i + 1]`` are shard ``i``'s samples, stored order). ``selected``: the
    sorted global indices of the samples an epoch serves (None: all of them).
    """

    starts: np.ndarray
    batch_size: int
    shuffle: bool
    seed: int
    window: int
    drop_remainder: bool
    partitions: int = DEFAULT_PARTITIONS
    num_replicas: int = 1
    rank: int = 0
    selected: np.ndarray | None = None

    @classmethod
    def of(cls, shard_sizes: list[int], **options) -> "EpochOrder":
        """The order over shards of ``shard_sizes`` samples each (see the fields for options)."""
        sizes = np.array(shard_sizes, dtype=np.int64)
        return cls(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), **options)

    @property
    def num_samples(self) -> int:
        """Samples an epoch serves."""
        return int(self.starts[-1]) if self.selected is None else len(self.selected)

    @property
    def stored_samples(self) -> int:
        """Samples the split's shards hold."""
        return int(self.starts[-1])

    @cached_property
    def served_starts(self) -> np.ndarray:
        """``starts`` in the numbering of the served samples: shard ``i`` serves samples
        ``served_starts[i]:served_starts[i + 1]`` of ``0..num_samples-1``."""
        if self.selected is None:
            return self.starts
        return np.searchsorted(self.selected, self.starts).astype(np.int64)

    def stored(self, served: np.ndarray) -> np.ndarray:
        """The global indices of the served samples numbered ``served``."""
        return served if self.selected is None else self.selected[served]

    @property
    def global_batch_size(self) -> int:
        """Samples of one step over all processes."""
        return self.batch_size * self.num_replicas

    @property
    def full_steps(self) -> int:
        return self.num_samples // self.global_batch_size

    @property
    def leftover(self) -> int:
        """Samples after the last full global step."""
        return self.num_samples - self.full_steps * self.global_batch_size

    def __len__(self) -> int:
        """Batches per epoch, the same for every process."""
        return self.full_steps + int(bool(self.leftover) and not self.drop_remainder)

    def order(self, epoch: int) -> np.ndarray:
        """Global sample indices this process serves in ``epoch``, batch after batch."""
        return self.stored(self._served_order(epoch))

    def _served_order(self, epoch: int) -> np.ndarray:
        """:meth:`order` in the numbering of the served samples."""
        served = self._shuffled(epoch) if self.shuffle else self._unshuffled()
        full = self.full_steps * self.batch_size
        if self.drop_remainder:
            return served[:full]
        if self.num_replicas == 1 or not self.leftover:
            return served
        source = served[full - 1::-1] if full else (
            served if len(served) else self.order_of_one_process(epoch))
        return _top_up(served, full + self.batch_size, source)

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

    def last_batches(self, order: np.ndarray) -> dict[int, int]:
        """For each shard an epoch of ``order`` reads, the last batch that reads it."""
        shard_of = self.shard_of(order)
        shards, last_reversed = np.unique(shard_of[::-1], return_index=True)
        last = (len(order) - 1 - last_reversed) // self.batch_size
        return dict(zip(shards.tolist(), last.tolist()))

    def shards_in_use(self, order: np.ndarray) -> int:
        """The most shards in use at once in an epoch of ``order``: a shard is in use from the
        first batch that reads it to the last."""
        if not len(order):
            return 0
        shard_of = self.shard_of(order)
        batch_of = np.arange(len(order)) // self.batch_size
        _, first = np.unique(shard_of, return_index=True)
        _, last_reversed = np.unique(shard_of[::-1], return_index=True)
        last = len(order) - 1 - last_reversed
        opened = np.bincount(batch_of[first], minlength=batch_of[-1] + 2)
        closed = np.bincount(batch_of[last] + 1, minlength=batch_of[-1] + 2)
        return int(np.max(np.cumsum(opened - closed)))

    # -- the two orders ---------------------------------------------------------------------

    def _unshuffled(self) -> np.ndarray:
        """This process's slices of the stored order cut into global batches."""
        size, step = self.batch_size, self.global_batch_size
        full = (np.arange(self.full_steps, dtype=np.int64)[:, None] * step
                + self.rank * size + np.arange(size)).ravel()
        shares = np.concatenate([[0], np.cumsum(spread(self.leftover, self.num_replicas))])
        rest = self.full_steps * step + np.arange(shares[self.rank], shares[self.rank + 1])
        return np.concatenate([full, rest])

    def _shuffled(self, epoch: int) -> np.ndarray:
        """This process's samples of ``epoch``: its partitions' full steps, then its leftover."""
        layout = _EpochLayout.of(self, epoch)
        per_rank = self.partitions // self.num_replicas
        first, stop = self.rank * per_rank, (self.rank + 1) * per_rank
        full = self.full_steps * self.batch_size
        served = np.empty(full + int(layout.leftover_edges[stop] - layout.leftover_edges[first]),
                          dtype=np.int64)
        for partition in range(first, stop):
            samples = layout.shuffled_span(partition)
            taken = int(layout.taken_edges[partition + 1] - layout.taken_edges[partition])
            served[self._slots(partition, first, taken)] = samples[:taken]
            rest = layout.leftover_edges[partition] - layout.leftover_edges[first]
            served[full + rest:full + rest + len(samples) - taken] = samples[taken:]
        return served

    def _slots(self, partition: int, first: int, taken: int) -> np.ndarray:
        """Where, in this process's order, partition ``partition`` puts each of the ``taken``
        samples it gives the full steps (this process's partitions start at ``first``).

        Sample ``j`` of partition ``p`` goes to the step ``k`` whose cumulative take
        ``F(p+k+1) - F(p)`` first exceeds ``j`` (``F(m) = floor(m * G / P)``), and within that
        step after the shares of partitions ``first..p-1`` (``F(p+k) - F(first+k)``).
        """
        step_size, parts = self.global_batch_size, self.partitions
        before = partition * step_size // parts  # F(p)
        j = np.arange(taken, dtype=np.int64)
        step = -(-(j + before + 1) * parts // step_size) - partition - 1
        return step * self.batch_size - (first + step) * step_size // parts + before + j

    def order_of_one_process(self, epoch: int) -> np.ndarray:
        """The whole epoch as one process reads it (same global batches), in the numbering of
        the served samples."""
        single = EpochOrder(self.starts, self.global_batch_size, self.shuffle, self.seed,
                            self.window, self.drop_remainder, self.partitions,
                            selected=self.selected)
        return single._shuffled(epoch) if self.shuffle else single._unshuffled()


@dataclass(frozen=True, eq=False)
class _EpochLayout:
    """One shuffled epoch's shard order and partition spans (all processes compute the same)."""

    order: EpochOrder
    epoch: int
    shard_order: np.ndarray  # the shards that serve samples, in the epoch's order
    run_starts: np.ndarray  # where each shard of shard_order starts in the run of all samples
    taken_edges: np.ndarray  # partition p gives the full steps run[taken_edges[p]:...[p+1]]...
    leftover_edges: np.ndarray  # ...and the last, partial step this many more
    span_edges: np.ndarray  # partition p's span of the run: span_edges[p]:span_edges[p + 1]

    @classmethod
    def of(cls, order: EpochOrder, epoch: int) -> "_EpochLayout":
        sizes = np.diff(order.served_starts)
        shard_order = np.random.default_rng([order.seed, epoch]).permutation(len(sizes))
        shard_order = shard_order[sizes[shard_order] > 0]
        run_starts = np.concatenate([[0], np.cumsum(sizes[shard_order])]).astype(np.int64)
        parts, step = order.partitions, order.global_batch_size
        boundaries = np.arange(parts + 1, dtype=np.int64)
        taken = (boundaries + order.full_steps) * step // parts - boundaries * step // parts
        taken_edges = np.concatenate([[0], np.cumsum(taken[:-1])])
        leftover_edges = boundaries * order.leftover // parts
        return cls(order, epoch, shard_order, run_starts, taken_edges, leftover_edges,
                   taken_edges + leftover_edges)

    def shuffled_span(self, partition: int) -> np.ndarray:
        """Partition ``partition``'s samples (served numbering), shuffled inside each block of
        ``window`` shards, seeded by the partition alone (not by who reads it)."""
        positions = np.arange(self.span_edges[partition], self.span_edges[partition + 1])
        in_order = np.searchsorted(self.run_starts, positions, side="right") - 1
        shards = self.shard_order[in_order]
        samples = self.order.served_starts[shards] + positions - self.run_starts[in_order]
        rng = np.random.default_rng([self.order.seed, self.epoch, partition])
        blocks = in_order // self.order.window
        if partition % 2:  # read backwards, so that a shard two partitions share is read by
            blocks = -blocks  # both at the start of the epoch, or both at its end
        return samples[np.lexsort((rng.random(len(samples)), blocks))]


def _top_up(served: np.ndarray, length: int, source: np.ndarray) -> np.ndarray:
    """``served`` made ``length`` long with repeats of ``source`` (cycled)."""
    missing = length - len(served)
    return np.concatenate([served, np.resize(source, missing)]) if missing > 0 else served
