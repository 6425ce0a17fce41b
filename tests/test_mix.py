"""imgshard.mix: batches of several readers in given proportions, labels of the union of their
class names, random access by (epoch, index), a state that resumes exactly."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from conftest import image_number, write_image
from hypothesis import given
from hypothesis import strategies as st

from imgshard import BuildConfig, ReaderError, ShardReader, build, mix
from imgshard.reader.mixing import largest_remainder_shares

#: Two datasets with different class folders; an image's number says its class, so a served
#: label can be checked against the union: number n is in class names[n % len(names)].
BIG = {"names": ("cat", "dog"), "first": 0, "count": 20}
SMALL = {"names": ("ant", "dog", "eel"), "first": 100, "count": 7}
UNION = ["ant", "cat", "dog", "eel"]


def build_named(root, names, first: int, count: int, *, size=(2, 2)) -> str:
    """ROOT/out of ``count`` flat images numbered from ``first`` (the number in the first pixel,
    see :func:`conftest.image_number`), image ``n`` in class folder ``names[n % len(names)]``."""
    for number in range(first, first + count):
        write_image(os.path.join(root, "src", names[number % len(names)], f"{number:03d}.png"),
                    size=size, colour=(number % 256, number // 256, 0))
    out = os.path.join(root, "out")
    build(os.path.join(root, "src"), out, BuildConfig(size=size, shard_size=4, dtype="uint8"),
          workers=1)
    return out


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> str:
    return build_named(tmp_path_factory.mktemp("big"), **BIG)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> str:
    return build_named(tmp_path_factory.mktemp("small"), **SMALL)


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> str:
    """Like ``small`` but of 3x3 images."""
    return build_named(tmp_path_factory.mktemp("wide"), **SMALL, size=(3, 3))


def readers(big, small, **options):
    """A reader of ``big`` (10 batches of 2) and one of ``small`` (4 batches: the last of 1)."""
    options = {"batch_size": 2, "prefetch": 0, "num_replicas": 1, "rank": 0, **options}
    return [ShardReader(big, **options), ShardReader(small, **options)]


def class_of(number: int) -> str:
    dataset = BIG if number < SMALL["first"] else SMALL
    return dataset["names"][number % len(dataset["names"])]


def numbers(images) -> list[int]:
    return [image_number(image) for image in images]


def epoch_batches(mixed, epoch: int) -> list:
    mixed.set_epoch(epoch)
    return list(mixed)


# -- proportions and order ---------------------------------------------------------------------

@given(st.lists(st.integers(0, 1000), min_size=1, max_size=8).filter(any),
       st.integers(1, 10_000))
def test_shares_are_the_largest_remainders_of_the_weights(weights, total):
    shares = largest_remainder_shares([float(w) for w in weights], total)
    quotas = [Fraction(total * weight, sum(weights)) for weight in weights]
    assert sum(shares) == total
    assert all(share - math.floor(quota) in (0, 1) for share, quota in zip(shares, quotas))
    remainders = [quota - math.floor(quota) for quota in quotas]
    rounded_up = [r for r, share, quota in zip(remainders, shares, quotas) if share > quota]
    rounded_down = [r for r, share, quota in zip(remainders, shares, quotas) if share <= quota]
    assert min(rounded_up, default=1) >= max(rounded_down, default=0)
    assert all(share == 0 for weight, share in zip(weights, shares) if weight == 0)


def test_each_epoch_takes_each_source_its_exact_share(big, small):
    mixed = mix(readers(big, small), weights=[3, 1], seed=0)
    assert len(mixed) == 14  # 10 + 4 batches
    # quotas 10.5 and 3.5: the tie goes to the first
    for epoch in range(4):
        counts = Counter(mixed.source_batch(epoch, i).source for i in range(len(mixed)))
        assert counts == {0: 11, 1: 3}
    assert len(mix(readers(big, small), weights=[1, 1], num_batches=7)) == 7


def test_a_source_of_weight_zero_supplies_nothing_and_counts_nothing(big, small):
    mixed = mix(readers(big, small), weights=[0, 2.5])
    assert len(mixed) == 4
    assert {mixed.source_batch(0, i).source for i in range(4)} == {1}


def test_the_order_is_the_seeds_and_changes_every_epoch(big, small):
    def sources(seed, epoch):
        mixed = mix(readers(big, small), weights=[1, 1], seed=seed)
        return [mixed.source_batch(epoch, i).source for i in range(len(mixed))]

    assert sources(0, 0) == sources(0, 0) and sources(0, 1) == sources(0, 1)
    assert sources(0, 0) != sources(1, 0)
    assert sources(0, 0) != sources(0, 1)


# -- what each batch is ------------------------------------------------------------------------

def test_every_batch_is_its_sources_batch_with_labels_of_the_union(big, small):
    mixed = mix(readers(big, small), weights=[1, 2], seed=3)
    assert mixed.class_names == UNION
    served = epoch_batches(mixed, 1)
    assert len(served) == len(mixed) and mixed.epoch == 2
    for index, (images, labels) in enumerate(served):
        origin = mixed.source_batch(1, index)
        own_images, own_labels = mixed.readers[origin.source].get_batch(origin.epoch,
                                                                        origin.index)
        assert np.array_equal(images, own_images) and labels.dtype == np.int32
        names = BIG["names"] if origin.source == 0 else SMALL["names"]
        assert [UNION[label] for label in labels] == [names[label] for label in own_labels]
        assert [UNION[label] for label in labels] == [class_of(n) for n in numbers(images)]


def test_categorical_labels_are_one_hot_of_the_union(big, small):
    mixed = mix(readers(big, small, label_mode="categorical"), weights=[1, 1])
    for images, labels in epoch_batches(mixed, 0):
        assert labels.shape == (len(images), len(UNION)) and labels.dtype == np.float32
        assert np.all(labels.sum(axis=1) == 1)
        assert [UNION[i] for i in labels.argmax(axis=1)] == [class_of(n) for n in numbers(images)]


def test_without_labels_images_only(big, small):
    mixed = mix(readers(big, small, label_mode=None), weights=[1, 1])
    served = epoch_batches(mixed, 0)
    assert all(isinstance(batch, np.ndarray) for batch in served)
    assert sum(len(batch) for batch in served) == 27


def test_binary_labels_need_the_same_two_classes(tmp_path, big):
    pair = build_named(tmp_path / "pair", ("dog", "cat"), 200, 6)
    options = {"batch_size": 2, "prefetch": 0, "label_mode": "binary"}
    mixed = mix([ShardReader(big, **options), ShardReader(pair, **options)], weights=[1, 1])
    for images, labels in epoch_batches(mixed, 0):
        assert labels.shape == (len(images), 1)
        assert [["cat", "dog"][int(v)] for v in labels[:, 0]] == [
            class_of(n) if n < 200 else ("dog", "cat")[n % 2] for n in numbers(images)]
    other = build_named(tmp_path / "other", ("cat", "eel"), 300, 6)
    with pytest.raises(ReaderError, match="binary.*reader 1.*'cat', 'eel'"):
        mix([ShardReader(big, **options), ShardReader(other, **options)], weights=[1, 1])


def test_a_small_source_cycles_through_its_own_epochs_a_large_one_reads_on(big, small):
    """Source 1 (4 batches an epoch) gives 7 batches a mixed epoch, source 0 (10) gives 7."""
    mixed = mix(readers(big, small), weights=[1, 1], num_batches=14)
    taken: dict[int, list] = {0: [], 1: []}
    for epoch in range(4):
        for index, (images, _) in enumerate(epoch_batches(mixed, epoch)):
            origin = mixed.source_batch(epoch, index)
            taken[origin.source].append(((origin.epoch, origin.index), numbers(images)))
    for source, size, length in ((0, 20, 10), (1, 7, 4)):
        positions = [position for position, _ in taken[source]]
        assert positions == [divmod(k, length) for k in range(28)]
        for own_epoch in range(28 // length):
            seen = [n for (e, _), batch in taken[source] if e == own_epoch for n in batch]
            assert len(seen) == size and len(set(seen)) == size  # every image exactly once


def test_get_batch_is_random_access(big, small):
    mixed = mix(readers(big, small), weights=[2, 1], seed=5)
    in_order = epoch_batches(mixed, 2)
    for index in reversed(range(len(mixed))):
        images, labels = mixed.get_batch(2, index)
        assert np.array_equal(images, in_order[index][0])
        assert np.array_equal(labels, in_order[index][1])
    for index in (-1, len(mixed), 1.0, True):
        with pytest.raises(IndexError):
            mixed.get_batch(0, index)


# -- state -------------------------------------------------------------------------------------

@pytest.mark.parametrize("taken", [0, 5, 13])
def test_a_state_resumes_the_same_remaining_batches(big, small, taken):
    first = mix(readers(big, small, prefetch=2), weights=[3, 1], seed=7)
    first.set_epoch(3)
    served, state = [], json.loads(json.dumps(first.state_dict()))
    for batch in first:
        served.append(batch)
        if len(served) == taken:
            state = json.loads(json.dumps(first.state_dict()))
    assert state["epoch"] == 3 and state["batches"] == taken
    second = mix(readers(big, small, prefetch=2), weights=[3, 1], seed=7)
    second.load_state_dict(state)
    rest = list(second)
    assert len(rest) == len(served) - taken and second.epoch == 4
    for (images, labels), (own_images, own_labels) in zip(rest, served[taken:]):
        assert np.array_equal(images, own_images) and np.array_equal(labels, own_labels)


@pytest.mark.parametrize("change, message", [
    ({"seed": 8}, "seed 8, this mix has 7"),
    ({"weights": [1, 1]}, r"weights \[1, 1\], this mix has \[3.0, 1.0\]"),
    ({"num_batches": 9}, "num_batches 9, this mix has 14"),
    ({"sources": [{}]}, "1 sources, this mix has 2"),
    ({"epoch": -1}, "state epoch"),
    ({"batches": 15}, "state batches"),
])
def test_a_state_of_another_mix_is_refused_in_one_line(big, small, change, message):
    mixed = mix(readers(big, small), weights=[3, 1], seed=7)
    with pytest.raises(ReaderError, match=message):
        mixed.load_state_dict({**mixed.state_dict(), **change})


def test_a_state_of_other_sources_is_refused_naming_the_source(big, small):
    mixed = mix(readers(big, small), weights=[3, 1])
    other = mix(readers(big, big), weights=[3, 1], num_batches=14).state_dict()
    with pytest.raises(ReaderError, match="source 1: state was saved with dataset_id"):
        mixed.load_state_dict(other)
    sizes = mix(readers(big, small, batch_size=3), weights=[3, 1], num_batches=14).state_dict()
    with pytest.raises(ReaderError, match="source 0: .*global_batch_size 3"):
        mixed.load_state_dict(sizes)
    mine = mixed.state_dict()
    lacking = {**mine, "sources": [mine["sources"][0], {}]}
    with pytest.raises(ReaderError, match="source 1: state lacks classes, dataset_id, global_batch_size"):
        mixed.load_state_dict(lacking)
    for state in (None, {"epoch": 0}, {**mine, "sources": "x"}, {**mine, "sources": [1, 2]}):
        with pytest.raises(ReaderError):
            mixed.load_state_dict(state)


# -- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("weights, message", [
    ([1], "one number per reader"),
    ([1, 2, 3], "one number per reader"),
    ([1, -1], "finite numbers >= 0"),
    ([1, float("nan")], "finite numbers >= 0"),
    ([1, float("inf")], "finite numbers >= 0"),
    ([1, 10**400], "finite numbers >= 0"),
    ([1, "2"], "finite numbers >= 0"),
    ([True, 1], "finite numbers >= 0"),
    ([0, 0.0], "all 0"),
    (3, "one number per reader"),
])
def test_bad_weights_are_refused_in_one_line(big, small, weights, message):
    with pytest.raises(ReaderError, match=message):
        mix(readers(big, small), weights=weights)


def test_readers_that_serve_other_batches_are_refused_naming_the_difference(big, small, wide):
    with pytest.raises(ReaderError, match=r"reader 1 serves image shape \(3, 3, 3\), reader 0 "
                                          r"\(2, 2, 3\)"):
        mix(readers(big, wide), weights=[1, 1])
    cases = [({"dtype": "float32"}, "dtype float32, reader 0 uint8"),
             ({"label_mode": "categorical"}, "label_mode 'categorical', reader 0 'int'"),
             ({"batch_size": 3}, "batch_size 3, reader 0 2"),
             ({"num_replicas": 2, "rank": 1, "partitions": 2}, "num_replicas 2, reader 0 1")]
    for options, message in cases:
        first = ShardReader(big, batch_size=2, prefetch=0, num_replicas=1, rank=0)
        second = ShardReader(small, **{"batch_size": 2, "prefetch": 0, "num_replicas": 1,
                                       "rank": 0, **options})
        with pytest.raises(ReaderError, match=message):
            mix([first, second], weights=[1, 1])


def test_bad_readers_and_counts_are_refused_in_one_line(big, small):
    first, second = readers(big, small)
    for given_readers, message in (([], "a list of ShardReader"), (first, "a list of ShardReader"),
                                   ([first, "x"], "reader 1 is not a ShardReader"),
                                   ([first, first], "reader 1 is reader 0")):
        with pytest.raises(ReaderError, match=message):
            mix(given_readers)
    for count in (0, -1, 1.5, True, 1 << 40):
        with pytest.raises(ReaderError, match="num_batches"):
            mix([first, second], num_batches=count)
    with pytest.raises(ReaderError, match="seed"):
        mix([first, second], seed=-1)


def test_replicas_mix_their_own_parts_in_the_same_steps(big, small):
    parts = [mix(readers(big, small, num_replicas=2, rank=rank, partitions=2), weights=[1, 1],
                 num_batches=10) for rank in (0, 1)]
    assert len(parts[0]) == len(parts[1])
    for index in range(len(parts[0])):
        assert parts[0].source_batch(0, index) == parts[1].source_batch(0, index)
    seen = {n for part in parts for images, _ in epoch_batches(part, 0) for n in numbers(images)}
    assert seen == set(range(20)) | set(range(100, 107))


# -- frameworks --------------------------------------------------------------------------------

def test_a_tiny_model_fits_on_a_mix_through_keras(big, small):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason="the keras extra is not installed")
    mixed = mix(readers(big, small, dtype="float32"), weights=[1, 1], num_batches=6)
    dataset = mixed.to_keras(workers=1)
    assert len(dataset) == 6
    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(len(UNION), activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(dataset, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and mixed.epoch == dataset.epoch >= 2


def test_to_tf_dataset_serves_one_mixed_epoch_per_pass(big, small):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
    mixed = mix(readers(big, small, label_mode="categorical"), weights=[1, 1], num_batches=5)
    data = mixed.to_tf_dataset()
    x_spec, y_spec = data.element_spec
    assert x_spec.shape.as_list() == [None, 2, 2, 3] and y_spec.shape.as_list() == [None, 4]
    assert y_spec.dtype == tf.float32
    assert [len(x) for x, _ in data] == [len(x) for x, _ in epoch_batches(mixed, 0)]


def test_readers_of_a_subset_of_classes_mix_the_classes_they_serve(big, small):
    """A reader with classes= serves its subset's labels (renumbered): the union is of those."""
    options = {"batch_size": 2, "prefetch": 0, "num_replicas": 1, "rank": 0}
    subset = ShardReader(small, classes=["eel", "ant"], **options)
    mixed = mix([ShardReader(big, **options), subset], weights=[1, 1])
    assert mixed.class_names == ["ant", "cat", "dog", "eel"]
    for images, labels in epoch_batches(mixed, 0):
        assert [mixed.class_names[label] for label in labels] == [class_of(n)
                                                                 for n in numbers(images)]
