"""Several training processes sharing one epoch: each reads a disjoint part of every global
batch, all take the same number of steps, the global batches do not depend on how many processes
there are, a state saved on one count resumes on another, and each process reads about its share
of the bytes (see :mod:`imgshard.reader.order` and :mod:`imgshard.reader.replicas`)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from collections import Counter

import numpy as np
import pytest
from conftest import on_memory
from hypothesis import given, settings
from hypothesis import strategies as st

from imgshard import BuildConfig, ReaderError, ShardReader, build
from imgshard.reader.order import EpochOrder

POWERS_OF_TWO = [1, 2, 4, 8]


def rank_orders(sizes, batch_size, num_replicas, epoch=0, **options):
    """Every rank's order of ``epoch``."""
    return [EpochOrder.of(sizes, batch_size=batch_size, num_replicas=num_replicas, rank=rank,
                          **options).order(epoch) for rank in range(num_replicas)]


def global_batches(orders, batch_size):
    """The samples of each global step, as sets (union over the ranks' parts)."""
    steps = len(orders[0]) // batch_size + bool(len(orders[0]) % batch_size)
    return [frozenset(np.concatenate([o[k * batch_size:(k + 1) * batch_size] for o in orders])
                      .tolist()) for k in range(steps)]


order_options = st.fixed_dictionaries({
    "sizes": st.lists(st.integers(1, 12), min_size=1, max_size=16),
    "batch_size": st.integers(1, 6),
    "num_replicas": st.sampled_from(POWERS_OF_TWO),
    "per_replica": st.sampled_from([1, 2, 4]),
    "window": st.integers(1, 3),
    "shuffle": st.booleans(),
    "drop_remainder": st.booleans(),
    "seed": st.integers(0, 2**31),
    "epoch": st.integers(0, 5),
})


@settings(max_examples=300, deadline=None)
@given(order_options)
def test_ranks_are_disjoint_and_complete_with_the_same_number_of_steps(o):
    R, b = o["num_replicas"], o["batch_size"]
    orders = rank_orders(o["sizes"], b, R, o["epoch"], shuffle=o["shuffle"], seed=o["seed"],
                         window=o["window"], drop_remainder=o["drop_remainder"],
                         partitions=R * o["per_replica"])
    total, step = sum(o["sizes"]), R * b
    lengths = {len(EpochOrder.of(o["sizes"], batch_size=b, shuffle=o["shuffle"], seed=0,
                                 window=1, drop_remainder=o["drop_remainder"], num_replicas=R,
                                 rank=rank, partitions=R)) for rank in range(R)}
    assert len(lengths) == 1  # len(reader) is the same on every rank
    steps = lengths.pop()
    served = np.concatenate(orders)
    counts = Counter(served.tolist())
    if o["drop_remainder"]:
        assert all(len(order) == steps * b for order in orders)
        assert max(counts.values(), default=1) == 1  # each sample at most once
        assert 0 <= total - len(served) < step  # fewer than R * batch_size left out
    else:
        assert set(counts) == set(range(total))  # each sample at least once
        assert len(served) - total < step  # fewer than R * batch_size repeats
        if R > 1:  # every rank takes the same number of full batches
            assert all(len(order) == steps * b for order in orders)
            if total >= step:  # topped up from earlier steps: no sample twice in a batch
                assert all(len(set(order[-b:].tolist())) == b for order in orders)
        else:
            assert len(served) == total


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=16),
       global_batch=st.sampled_from([8, 16, 24]), window=st.integers(1, 3),
       shuffle=st.booleans(), drop_remainder=st.booleans(), seed=st.integers(0, 2**31),
       epoch=st.integers(0, 3))
def test_the_global_batches_depend_on_the_global_batch_size_not_on_the_process_count(
        sizes, global_batch, window, shuffle, drop_remainder, seed, epoch):
    """4 processes of batch 8, 2 of 16 and 1 of 32 see the same global batches (as sets); the
    repeats that top up the last step of several processes come from the epoch itself."""
    options = dict(shuffle=shuffle, seed=seed, window=window, drop_remainder=drop_remainder,
                   partitions=8, epoch=epoch)
    alone = global_batches(rank_orders(sizes, global_batch, 1, **options), global_batch)
    for R in (2, 4, 8):
        shared = global_batches(rank_orders(sizes, global_batch // R, R, **options),
                                global_batch // R)
        assert len(shared) == len(alone)
        full = sum(sizes) // global_batch
        assert shared[:full] == alone[:full]
        if len(alone) > full:  # the last, partial step: the same samples, topped up
            assert alone[full] <= shared[full]


def test_four_processes_of_8_and_two_of_16_see_the_same_global_batches():
    """The issue's own example, on a split of 1,000 samples in 40 shards."""
    sizes = [25] * 40
    options = dict(shuffle=True, seed=3, window=2, drop_remainder=False, partitions=64)
    four = global_batches(rank_orders(sizes, 8, 4, epoch=2, **options), 8)
    two = global_batches(rank_orders(sizes, 16, 2, epoch=2, **options), 16)
    assert len(four) == len(two) == 32 and four[:31] == two[:31]  # 31 full steps of 32...
    earlier = frozenset().union(*four[:31])
    assert four[31] - earlier == two[31] - earlier and len(four[31] - earlier) == 8  # ...and 8


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=16),
       before=st.sampled_from(POWERS_OF_TWO), after=st.sampled_from(POWERS_OF_TWO),
       shuffle=st.booleans(), seed=st.integers(0, 2**31), epoch=st.integers(0, 3),
       fraction=st.floats(0, 1))
def test_an_epoch_resumed_on_another_process_count_neither_repeats_nor_skips(
        sizes, before, after, shuffle, seed, epoch, fraction):
    """A job of ``before`` processes stops after k global steps; one of ``after`` processes
    with the same global batch continues: together they serve the epoch exactly once."""
    global_batch = 8
    options = dict(shuffle=shuffle, seed=seed, window=2, drop_remainder=True, partitions=8,
                   epoch=epoch)
    first = rank_orders(sizes, global_batch // before, before, **options)
    second = rank_orders(sizes, global_batch // after, after, **options)
    steps = sum(sizes) // global_batch
    k = int(fraction * steps)
    served = np.concatenate([o[:k * global_batch // before] for o in first]
                            + [o[k * global_batch // after:] for o in second])
    alone = rank_orders(sizes, global_batch, 1, **options)[0]
    assert sorted(served.tolist()) == sorted(alone.tolist())


@pytest.mark.parametrize("num_replicas", [2, 4, 8, 16])
def test_each_process_reads_a_contiguous_share_of_the_shards(num_replicas):
    """Shuffled, each process touches about 1/R of the shards (plus the two it shares with its
    neighbours), and never has more than its partitions' shards in use at once."""
    sizes = [50] * 63 + [17]
    for epoch in range(3):
        for rank in range(num_replicas):
            order = EpochOrder.of(sizes, batch_size=4, shuffle=True, seed=1, window=1,
                                  drop_remainder=False, partitions=64,
                                  num_replicas=num_replicas, rank=rank)
            indices = order.order(epoch)
            touched = len(set(order.shard_of(indices).tolist()))
            assert touched <= len(sizes) / num_replicas + 2, (epoch, rank, touched)
            assert order.shards_in_use(indices) <= 64 // num_replicas + 2


def test_the_leanest_single_process_order_has_a_window_of_shards_in_use():
    sizes = [50] * 40
    order = EpochOrder.of(sizes, batch_size=16, shuffle=True, seed=0, window=4,
                          drop_remainder=False, partitions=1)
    # a window of 4, and the next one's first 4 in the batch that straddles them
    assert order.shards_in_use(order.order(0)) <= 8


# -- readers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    """192 distinct images of 4 classes over 24 shards of 8."""
    from conftest import build_numbered

    return build_numbered(tmp_path_factory.mktemp("distributed"), 192, classes=4, shard_size=8)


def sample_ids(images: np.ndarray) -> list[int]:
    from conftest import image_number

    return [image_number(image) for image in images]


def take(reader, steps=None):
    """``(sample ids, labels)`` of the next ``steps`` batches (all of the epoch: None)."""
    ids, labels = [], []
    for count, (x, y) in enumerate(reader):
        ids.append(sample_ids(x))
        labels.append(y.tolist())
        if steps is not None and count + 1 == steps:
            break
    return ids, labels


def test_readers_of_four_ranks_split_every_epoch(classes):
    readers = [ShardReader(classes, batch_size=5, num_replicas=4, rank=r, partitions=8,
                           seed=2) for r in range(4)]
    assert {len(r) for r in readers} == {10}  # 192 / 20 = 9.6 steps: 10, the last topped up
    assert [(r.num_replicas, r.rank, r.global_batch_size) for r in readers] == \
        [(4, rank, 20) for rank in range(4)]
    for _ in range(2):
        served = [sum(take(r)[0], []) for r in readers]
        assert all(len(s) == 50 for s in served)
        counts = Counter(sum(served, []))
        assert set(counts) == set(range(192)) and sum(counts.values()) - 192 == 8


def test_each_ranks_batches_mix_classes_as_a_single_readers_do(classes):
    """The build spreads classes over shards, so a rank's batches, drawn from its own quarter of
    the shards, hold as many classes as a single reader's."""
    def classes_per_batch(reader):
        return [len(set(labels)) for labels in take(reader)[1]]

    alone = classes_per_batch(ShardReader(classes, batch_size=8, partitions=8, seed=5,
                                          drop_remainder=True))
    ranks = [classes_per_batch(ShardReader(classes, batch_size=8, num_replicas=4, rank=r,
                                           partitions=8, seed=5, drop_remainder=True))
             for r in range(4)]
    per_rank = [np.mean(counts) for counts in ranks]
    assert min(per_rank) >= np.mean(alone) - 0.5, (per_rank, np.mean(alone))
    assert min(min(counts) for counts in ranks) >= 2  # no batch of one class


def test_a_state_saved_by_two_ranks_resumes_on_four_and_on_one(classes):
    def served_after(state, num_replicas):
        readers = [ShardReader(classes, batch_size=8 // num_replicas, num_replicas=num_replicas,
                               rank=r, partitions=8, seed=4, drop_remainder=True)
                   for r in range(num_replicas)]
        for reader in readers:
            reader.load_state_dict(json.loads(json.dumps(state)))  # as a checkpoint holds it
        return sum((sum(take(r)[0], []) for r in readers), [])

    first = [ShardReader(classes, batch_size=4, num_replicas=2, rank=r, partitions=8, seed=4,
                         drop_remainder=True) for r in range(2)]
    taken = sum((sum(take(r, steps=7)[0], []) for r in first), [])
    state = first[1].state_dict()
    assert state == {**first[0].state_dict()} and state["batches"] == 7
    assert state["global_batch_size"] == 8
    for num_replicas in (4, 1):
        rest = served_after(state, num_replicas)
        assert sorted(taken + rest) == list(range(192))


def test_a_state_of_another_global_batch_or_order_is_refused(classes):
    state = ShardReader(classes, batch_size=4, num_replicas=2, rank=0, partitions=8).state_dict()
    for options, named in [(dict(batch_size=4, num_replicas=4, rank=0), "global_batch_size"),
                           (dict(batch_size=8, partitions=16), "partitions"),
                           (dict(batch_size=8, window=2), "window"),
                           (dict(batch_size=8, shuffle=False), "shuffle")]:
        reader = ShardReader(classes, **{"partitions": 8, **options})
        with pytest.raises(ReaderError, match=f"state was saved with {named}") as error:
            reader.load_state_dict(state)
        assert "\n" not in str(error.value)
        assert reader.state_dict()["batches"] == 0  # unchanged


@pytest.mark.parametrize("partitions, window, batch_size", [(8, 1, 4), (16, 2, 5), (8, 1, 3)])
def test_each_rank_maps_its_share_of_the_bytes_and_each_shard_once(classes, partitions, window,
                                                                   batch_size):
    """Per epoch, each of 4 ranks maps each shard its part reads exactly once (none unmapped
    while still needed and mapped again), in all at most 1/4 of the split plus the two shards
    it shares with its neighbours, counted as the reader maps them."""
    from imgshard.manifest import read_manifest
    from imgshard.reader.checks import shard_bytes

    manifest = read_manifest(classes)
    sizes = [shard_bytes(manifest, s) for s in manifest.splits["train"].shards]
    for rank in range(4):
        reader = ShardReader(classes, batch_size=batch_size, num_replicas=4, rank=rank,
                             partitions=partitions, window=window)
        for epoch in range(3):  # with batches of 5 or 3 the last step is topped up
            before = reader.bytes_mapped
            take(reader)
            mapped = reader.bytes_mapped - before
            touched = set(reader.order.shard_of(reader.epoch_order(epoch)).tolist())
            assert mapped == sum(sizes[shard] for shard in touched), (rank, epoch)
            assert sum(sizes) / 4 <= mapped <= sum(sizes) / 4 + 2 * max(sizes)


def test_each_rank_downloads_about_its_share_of_a_remote_split(classes, tmp_path):
    import shutil

    with on_memory(classes) as url:
        sizes = [os.path.getsize(os.path.join(classes, name)) for name in os.listdir(classes)
                 if name.endswith(".npy")]
        total = sum(sizes)
        downloaded = []
        for rank in range(4):
            cache = tmp_path / f"cache{rank}"
            reader = ShardReader(url, batch_size=4, num_replicas=4, rank=rank,
                                 partitions=8, cache_dir=str(cache))
            assert len(sum(take(reader)[0], [])) == len(reader) * 4
            downloaded.append(reader.cache.bytes_downloaded)
            reader.close()
            shutil.rmtree(cache)
        largest = 2 * max(sizes)  # a shard's images and labels, at most
        assert all(total / 4 <= d <= total / 4 + 2 * largest for d in downloaded), \
            (downloaded, total)


# -- choosing the process count ------------------------------------------------------------


def fake_jax(count, index, initialized=True):
    jax = types.ModuleType("jax")
    jax.process_count = lambda: count
    jax.process_index = lambda: index
    jax.distributed = types.SimpleNamespace(is_initialized=lambda: initialized)
    return jax


def tf_config(task_type, index, workers=2, chief=0, extra=None):
    cluster = {"worker": [f"localhost:{1000 + i}" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["localhost:999"]
    cluster.update(extra or {})
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("environment, jax, expected", [
    ({}, None, (1, 0)),
    ({"WORLD_SIZE": "4", "RANK": "3"}, None, (4, 3)),
    ({"TF_CONFIG": tf_config("worker", 1, workers=3)}, None, (3, 1)),
    ({"TF_CONFIG": tf_config("worker", 1, workers=3, chief=1)}, None, (4, 2)),
    ({"TF_CONFIG": tf_config("chief", 0, workers=3, chief=1)}, None, (4, 0)),
    ({"TF_CONFIG": tf_config("evaluator", 0, extra={"evaluator": ["h:1"]})}, None, (1, 0)),
    ({"TF_CONFIG": tf_config("worker", 0), "WORLD_SIZE": "8", "RANK": "5"}, None, (2, 0)),
    ({"TF_CONFIG": tf_config("worker", 0)}, (4, 2), (4, 2)),  # JAX first
    ({"WORLD_SIZE": "2", "RANK": "1"}, (1, 0), (2, 1)),  # one JAX process: not distributed
], ids=["nothing", "world-size", "tf-config", "tf-config-chief-worker", "tf-config-chief",
        "tf-config-evaluator", "tf-config-before-world-size", "jax-first", "jax-of-one"])
def test_the_process_count_comes_from_the_environment(classes, clean_environment, environment,
                                                      jax, expected):
    for name, value in environment.items():
        clean_environment.setenv(name, value)
    if jax is not None:
        clean_environment.setitem(sys.modules, "jax", fake_jax(*jax))
    reader = ShardReader(classes, batch_size=4, partitions=24)
    assert (reader.num_replicas, reader.rank) == expected
    explicit = ShardReader(classes, batch_size=4, partitions=24, num_replicas=2, rank=1)
    assert (explicit.num_replicas, explicit.rank) == (2, 1)  # explicit arguments win


def test_jax_is_never_imported_to_find_the_process_count(classes, clean_environment):
    ShardReader(classes, batch_size=4)
    assert "jax" not in sys.modules


def test_an_uninitialized_jax_reads_as_one_process(classes, clean_environment):
    clean_environment.setitem(sys.modules, "jax", fake_jax(4, 1, initialized=False))
    assert ShardReader(classes, batch_size=4).num_replicas == 1


@pytest.mark.parametrize("arguments, environment, message", [
    (dict(num_replicas=2, rank=2), {}, "rank must be a whole number from 0 to num_replicas - 1"),
    (dict(num_replicas=2, rank=-1), {}, "rank must be"),
    (dict(num_replicas=0, rank=0), {}, "num_replicas must be a whole number from 1 to 65536"),
    (dict(num_replicas=-2, rank=0), {}, "num_replicas must be"),
    (dict(num_replicas=2.5, rank=0), {}, "num_replicas must be"),
    (dict(num_replicas=True, rank=0), {}, "num_replicas must be"),
    (dict(num_replicas=2), {}, "give both num_replicas and rank"),
    (dict(rank=0), {}, "give both num_replicas and rank"),
    (dict(num_replicas=3, rank=0), {}, "num_replicas=3 must divide partitions=8.*partitions=24"),
    ({}, {"WORLD_SIZE": "4"}, "sets only one of WORLD_SIZE and RANK"),
    ({}, {"RANK": "1"}, "sets only one of WORLD_SIZE and RANK"),
    ({}, {"WORLD_SIZE": "four", "RANK": "1"}, r"num_replicas .*'four' \(from WORLD_SIZE/RANK\)"),
    ({}, {"WORLD_SIZE": "4", "RANK": "4"}, r"rank .* got 4 \(from WORLD_SIZE/RANK\)"),
    ({}, {"TF_CONFIG": "{not json"}, "TF_CONFIG is not the JSON TensorFlow expects"),
    ({}, {"TF_CONFIG": '{"cluster": {"worker": "h:1"}, "task": {"type": "worker"}}'},
     "TF_CONFIG is not the JSON"),
    ({}, {"TF_CONFIG": tf_config("worker", 2)}, "TF_CONFIG's task is worker 2, but its cluster"),
    ({}, {"TF_CONFIG": tf_config("worker", "x")}, "TF_CONFIG's task is worker 'x'"),
], ids=lambda value: repr(value)[:30])
def test_bad_process_counts_are_one_line(classes, clean_environment, arguments, environment,
                                         message):
    for name, value in environment.items():
        clean_environment.setenv(name, value)
    with pytest.raises(ReaderError, match=message) as error:
        ShardReader(classes, batch_size=4, partitions=8, **arguments)
    assert "\n" not in str(error.value)


def test_an_unshuffled_epoch_takes_any_process_count(classes):
    """Without a shuffle there are no partitions: rank r reads the r-th slice of each stored
    global batch."""
    alone = take(ShardReader(classes, batch_size=21, shuffle=False))[0]
    readers = [ShardReader(classes, batch_size=7, num_replicas=3, rank=r, shuffle=False,
                           partitions=8) for r in range(3)]
    served = [take(r)[0] for r in readers]
    assert all(len(s) == len(alone) == 10 for s in served)  # 192 / 21: 9 full steps and one
    for step in range(9):
        assert [s[step] for s in served] == [alone[step][r * 7:(r + 1) * 7] for r in range(3)]
    for rank in range(3):  # the 3 left over, one each, and repeats of the rank's own samples
        assert len(set(served[rank][9]) & set(alone[9])) == 1
        assert set(served[rank][9]) - set(alone[9]) <= set(sum(served[rank][:9], []))
    assert set(sum(sum(served, []), [])) == set(range(192))


def test_hashes_of_served_images_match_the_single_reader(classes):
    """What a rank serves are the split's images themselves, with their labels."""
    alone = ShardReader(classes, batch_size=8, shuffle=False)
    truth = {}
    for x, y in alone:
        for image, label in zip(x, y):
            truth[hashlib.sha256(image.tobytes()).hexdigest()] = int(label)
    for rank in range(2):
        reader = ShardReader(classes, batch_size=4, num_replicas=2, rank=rank, partitions=8)
        for x, y in reader:
            for image, label in zip(x, y):
                assert truth[hashlib.sha256(image.tobytes()).hexdigest()] == int(label)


def test_a_state_of_another_dataset_or_split_is_refused(classes, tmp_path):
    """The state names its dataset (``dataset_id``, the hash of the classes, config and shard
    checksums) and split: another dataset with as many samples is refused in one line."""
    from conftest import write_image, write_numbered_images

    write_numbered_images(tmp_path / "src", 192, classes=4)
    write_image(str(tmp_path / "src" / "c0" / "000.png"), size=(2, 2), colour=(9, 9, 9))
    other = str(tmp_path / "out")
    build(str(tmp_path / "src"), other, BuildConfig(size=(2, 2), shard_size=8, dtype="uint8"),
          workers=1)
    state = ShardReader(classes, batch_size=4).state_dict()
    reader = ShardReader(other, batch_size=4)
    assert reader.num_samples == 192 and state["dataset_id"] != reader.state_dict()["dataset_id"]
    with pytest.raises(ReaderError, match="state was saved with dataset_id .* \\(other data\\)"):
        reader.load_state_dict(state)
    ShardReader(classes, batch_size=4).load_state_dict(state)  # its own dataset: accepted
