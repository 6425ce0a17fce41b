"""Batches of several readers in given proportions: :func:`mix`.

Each batch of a mix is one whole batch of one of its readers (its sources). A mixed epoch of
``num_batches`` batches takes from source ``i`` exactly ``n_i`` of them, its largest-remainder
share of ``num_batches`` by the normalised weights, the same every epoch; where in the epoch
each source's batches stand is a seeded permutation of ``(seed, epoch)``, the same on every
training process. Source ``i``'s ``k``-th batch overall (``k = epoch * n_i +`` its rank within
the epoch) is batch ``k % len(reader)`` of the reader's own epoch ``k // len(reader)``: a small
dataset is read through its exactly-once epochs again and again (oversampled), a large one is
read on where the last mixed epoch left it. So every mixed batch is a pure function of
``(epoch, index)``: random access for Keras, and a state of two numbers.

Labels are indices into the sorted union of the readers' class names (as ``imgshard merge``
names them): each reader's labels are looked up in a table from its classes to the union's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..merge_plan import class_union
from ..values import is_whole_argument, same_value
from .checks import ReaderError, whole
from .mix_sources import LabelTable, check_readers, check_weights
from .shard_reader import ShardReader
from .tf import to_tf_dataset
from .window import served

#: Added to the mix's seed, so that its draws are not those of a reader with the same seed
#: (a reader seeds with (seed, epoch) and (seed, epoch, partition), partitions < 65536).
MIX_STREAM = 0x6D6978

#: The most batches a mixed epoch takes: its order is a few arrays of that length (about 16
#: bytes a batch while it is made), at most 16.8 million batches of any size.
MAX_BATCHES = 1 << 24


@dataclass(frozen=True)
class SourceBatch:
    """Which batch of which reader a mixed batch is: batch ``index`` of ``source``'s ``epoch``."""

    source: int
    epoch: int
    index: int


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """One mixed epoch: the source of each batch, and its rank among that source's batches."""

    sources: np.ndarray
    ranks: np.ndarray


def mix(readers: Sequence[ShardReader], weights: Sequence[float] | None = None, *,
        seed: int = 0, num_batches: int | None = None) -> ReaderMix:
    """Batches drawn from ``readers`` in the proportions ``weights`` (equal if None), in an
    order seeded by ``seed``; see :class:`ReaderMix`.

    Raises:
        ReaderError: a reader, weight or count that cannot be mixed (one line saying which).
    """
    return ReaderMix(readers, weights, seed=seed, num_batches=num_batches)


class ReaderMix:
    """Whole batches of several :class:`ShardReader` objects, ``n_i`` of source ``i`` in every
    mixed epoch (see the module's docstring), labels remapped to :attr:`class_names`.

    The readers must serve the same image shape, dtype, label mode and batch size on the same
    process count and rank (each process mixes its own parts; all take the same steps). A
    reader's own epoch counter and position are not used: the mix says which of its batches
    to serve.

    Args:
        readers: the sources, each given once.
        weights: one finite number >= 0 per reader, not all 0; a source of weight 0 supplies
            nothing.
        seed: seeds the order of the sources' batches in every mixed epoch.
        num_batches: batches of a mixed epoch (default: the sum of the readers' ``len()`` of
            weight > 0).
    """

    def __init__(self, readers: Sequence[ShardReader], weights: Sequence[float] | None, *,
                 seed: int, num_batches: int | None) -> None:
        self.readers = check_readers(readers)
        self.weights = check_weights(weights, len(self.readers))
        self.seed = whole(seed, "seed")
        for number, (reader, weight) in enumerate(zip(self.readers, self.weights)):
            if weight and not len(reader):
                raise ReaderError(f"reader {number} has no batches ({reader.num_samples} "
                                  f"samples of split {reader.split}) but weight {weight}")
        if num_batches is None:
            num_batches = sum(len(r) for r, w in zip(self.readers, self.weights) if w)
        self.num_batches = whole(num_batches, "num_batches", low=1, high=MAX_BATCHES)
        self.counts = largest_remainder_shares(self.weights, self.num_batches)
        first = self.readers[0]
        self.label_mode, self.dtype = first.label_mode, first.dtype
        self.image_shape = tuple(first.manifest.image_shape)
        self.num_replicas, self.rank = first.num_replicas, first.rank
        # the classes each reader serves (a subset's, with classes=), as a manifest names them
        self.class_names = class_union(self.readers)
        self._relabel = [LabelTable.of(r.class_names, self.class_names, self.label_mode)
                         for r in self.readers]
        self.prefetch = max(r.prefetch for r in self.readers)
        self.epoch, self._position = 0, 0
        self._plan_cache: tuple[int, EpochPlan] | None = None

    def __len__(self) -> int:
        """Batches per mixed epoch."""
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration mixed epoch ``epoch`` (from its start)."""
        self.epoch, self._position = whole(epoch, "epoch"), 0

    def source_batch(self, epoch: int, index: int) -> SourceBatch:
        """Which reader's batch is batch ``index`` of mixed epoch ``epoch``."""
        if not is_whole_argument(index) or not 0 <= index < len(self):
            raise IndexError(f"batch {repr(index)[:40]} of {len(self)}")
        epoch, index = whole(epoch, "epoch"), int(index)
        cached = self._plan_cache
        if cached is None or cached[0] != epoch:
            cached = (epoch, plan_epoch(self.counts, self.seed, epoch))
            self._plan_cache = cached  # one assignment: safe for Keras' worker threads
        source = int(cached[1].sources[index])
        taken = epoch * self.counts[source] + int(cached[1].ranks[index])
        own_epoch, own_index = divmod(taken, len(self.readers[source]))
        return SourceBatch(source, own_epoch, own_index)

    def get_batch(self, epoch: int, index: int) -> Any:
        """Batch ``index`` of mixed epoch ``epoch``, by random access (what Keras asks for)."""
        origin = self.source_batch(epoch, index)
        batch = self.readers[origin.source].get_batch(origin.epoch, origin.index)
        return self._relabel[origin.source].apply(batch)

    def __iter__(self) -> Iterator[Any]:
        """One mixed epoch from where the mix stands, prepared ``prefetch`` batches ahead (the
        most any of its readers prepares)."""
        epoch, start = self.epoch, self._position
        yield from served((self.get_batch(epoch, index) for index in range(start, len(self))),
                          self.prefetch, self._took_one)
        self.epoch, self._position = epoch + 1, 0

    def _took_one(self) -> None:
        self._position += 1

    # -- resumption ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the job is (the mixed epoch and the batches taken from it), with what fixes
        the mix's order: its seed, weights and length, and each source's data and order (its
        reader's state without a position, which the mix does not use)."""
        return {"epoch": self.epoch, "batches": self._position, "seed": self.seed,
                "weights": list(self.weights), "num_batches": self.num_batches,
                "sources": [order_state(reader) for reader in self.readers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken.

        Raises:
            ReaderError: ``state`` is not a state of this mix (another seed, weights, length,
                or a source of other data or another order), or its position is out of range;
                the mix is unchanged.
        """
        keys = {"epoch", "batches", "seed", "weights", "num_batches", "sources"}
        if not isinstance(state, dict) or not keys <= state.keys():
            raise ReaderError(f"state must be a dict with {', '.join(sorted(keys))}, as "
                              f"state_dict() returns, got {repr(state)[:80]}")
        mine = self.state_dict()
        for key in ("seed", "weights", "num_batches"):
            if not same_value(state[key], mine[key]):
                raise ReaderError(f"state was saved by a mix with {key} {repr(state[key])[:70]}, "
                                  f"this mix has {mine[key]!r}")
        sources = state["sources"]
        if not isinstance(sources, list) or len(sources) != len(self.readers):
            count = len(sources) if isinstance(sources, list) else repr(sources)[:40]
            raise ReaderError(f"state was saved by a mix of {count} sources, this mix has "
                              f"{len(self.readers)}")
        for number, (reader, saved) in enumerate(zip(self.readers, sources)):
            try:
                reader.check_same_order(saved)
            except ReaderError as error:
                raise ReaderError(f"source {number}: {error}") from None
            missing = sorted(order_state(reader).keys() - saved.keys())
            if missing:
                raise ReaderError(f"source {number}: state lacks {', '.join(missing)}, which "
                                  "state_dict() saves")
        epoch = whole(state["epoch"], "state epoch")
        self.epoch, self._position = epoch, whole(state["batches"], "state batches",
                                                  high=len(self))

    # -- framework adapters ---------------------------------------------------------------

    def to_keras(self, *, workers: int = 2, use_multiprocessing: bool = False,
                 max_queue_size: int = 10):
        """A ``keras.utils.PyDataset`` over this mix, a new mixed epoch every Keras epoch (see
        :meth:`ShardReader.to_keras`)."""
        from .keras import to_keras  # Keras is imported only when asked for

        return to_keras(self, workers=workers, use_multiprocessing=use_multiprocessing,
                        max_queue_size=max_queue_size)

    def to_tf_dataset(self):
        """A ``tf.data.Dataset`` of this mix's batches (one mixed epoch per pass over it)."""
        return to_tf_dataset(self, image_shape=self.image_shape, dtype=self.dtype,
                             label_mode=self.label_mode, num_classes=len(self.class_names or ()))


def order_state(reader: ShardReader) -> dict[str, Any]:
    """A reader's state without its position: its data and the order of its epochs."""
    return {k: v for k, v in reader.state_dict().items() if k not in ("epoch", "batches")}


# -- the plan of an epoch ------------------------------------------------------------------------

def largest_remainder_shares(weights: list[float], total: int) -> list[int]:
    """``total`` split in proportion to ``weights`` into whole numbers: each gets the whole part
    of its quota, and the largest remainders (the first of equal ones) one more each. Exact
    (fractions), so every process computes the same shares; a weight of 0 gets 0."""
    fractions = [Fraction(weight) for weight in weights]
    quotas = [total * fraction / sum(fractions) for fraction in fractions]
    shares = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (shares[i] - quotas[i], i))
    for i in by_remainder[:total - sum(shares)]:
        shares[i] += 1
    return shares


def plan_epoch(counts: list[int], seed: int, epoch: int) -> EpochPlan:
    """``counts[i]`` batches of each source ``i`` in a seeded order of ``(seed, epoch)``, and
    each one's rank among its source's batches of the epoch."""
    in_order = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    sources = np.random.default_rng([seed, epoch, MIX_STREAM]).permutation(in_order)
    by_source = np.argsort(sources, kind="stable")
    first_of = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    ranks = np.empty(len(sources), dtype=np.int32)
    ranks[by_source] = np.arange(len(sources)) - first_of[sources[by_source]]
    return EpochPlan(sources, ranks)
