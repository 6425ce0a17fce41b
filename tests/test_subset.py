"""Reading a subset of the classes: ``ShardReader(..., classes=[...], relabel=...)`` serves
exactly the samples of those classes once an epoch, labelled as asked, split between processes
and resumed as the whole split is, and never maps a shard that holds none of them."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter

import numpy as np
import pytest
from conftest import on_memory
from hypothesis import given, settings
from hypothesis import strategies as st

from imgshard import BuildConfig, ReaderError, ShardReader, build
from imgshard.errors import ShardError
from imgshard.manifest import read_manifest
from imgshard.reader.checks import shard_bytes
from imgshard.reader.order import EpochOrder

MIXED_COUNT, MIXED_CLASSES = 99, 4  # image n is of class c{n % 4}; its label is n % 4


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """99 numbered images of 4 classes, shuffled over 13 shards of 8 (the last holds 3)."""
    from conftest import build_numbered

    return build_numbered(tmp_path_factory.mktemp("subset"), MIXED_COUNT, MIXED_CLASSES,
                          shard_size=8)


@pytest.fixture(scope="module")
def by_class(tmp_path_factory):
    """60 numbered images of 3 classes stored unshuffled, class after class: shards 0-4 hold
    c0, 5-9 c1, 10-14 c2 (4 each)."""
    from conftest import write_numbered_images

    root = tmp_path_factory.mktemp("by-class")
    write_numbered_images(root / "src", 60, classes=3)
    out = str(root / "out")
    build(str(root / "src"), out, BuildConfig(size=(2, 2), shard_size=4, dtype="uint8",
                                              shuffle=False), workers=1)
    return out


def of_classes(*classes: int, count: int = MIXED_COUNT, total: int = MIXED_CLASSES) -> set[int]:
    """The numbers of the images of ``classes``."""
    return {n for n in range(count) if n % total in classes}


def batches(reader, steps=None):
    """``[(image numbers, labels)]`` of the next ``steps`` batches (None: the epoch's rest)."""
    from conftest import image_number

    taken = []
    for x, y in reader:
        taken.append(([image_number(image) for image in x], np.asarray(y)))
        if steps is not None and len(taken) == steps:
            break
    return taken


def numbers(taken) -> list[int]:
    return [n for ids, _ in taken for n in ids]


# -- what an epoch serves ---------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_every_sample_of_the_classes_once_an_epoch_relabelled_in_the_given_order(
        mixed, shuffle, batch_size):
    reader = ShardReader(mixed, classes=["c2", "c0"], batch_size=batch_size, shuffle=shuffle,
                         window=2)
    assert reader.class_names == ["c2", "c0"] and reader.num_samples == 50
    assert len(reader) == -(-50 // batch_size)
    for _ in range(2):
        taken = batches(reader)
        assert len(taken) == len(reader)
        assert [len(ids) for ids, _ in taken[:-1]] == [batch_size] * (len(taken) - 1)
        assert Counter(numbers(taken)) == Counter(of_classes(0, 2))
        for ids, labels in taken:  # c2 is 0, c0 is 1
            assert labels.dtype == np.int32
            assert labels.tolist() == [{2: 0, 0: 1}[n % 4] for n in ids]


@pytest.mark.parametrize("shuffle", [True, False])
def test_drop_remainder_drops_fewer_than_a_batch_of_the_subset(mixed, shuffle):
    reader = ShardReader(mixed, classes=["c1", "c3"], batch_size=8, shuffle=shuffle,
                         drop_remainder=True)
    taken = batches(reader)
    served = numbers(taken)
    assert len(reader) == len(taken) == 49 // 8 and all(len(ids) == 8 for ids, _ in taken)
    assert len(set(served)) == len(served) == 48 and set(served) <= of_classes(1, 3)


def test_relabel_false_keeps_the_dataset_labels_and_width(mixed):
    kept = ShardReader(mixed, classes=["c3", "c1"], relabel=False, batch_size=10,
                       label_mode="categorical")
    assert kept.class_names == ["c0", "c1", "c2", "c3"]
    taken = batches(kept)
    assert Counter(numbers(taken)) == Counter(of_classes(1, 3))
    for ids, one_hot in taken:
        assert one_hot.shape == (len(ids), 4) and one_hot.dtype == np.float32
        assert one_hot.argmax(axis=1).tolist() == [n % 4 for n in ids]
    relabelled = ShardReader(mixed, classes=["c3", "c1"], batch_size=10,
                             label_mode="categorical")
    for ids, one_hot in batches(relabelled):
        assert one_hot.shape == (len(ids), 2)
        assert one_hot.argmax(axis=1).tolist() == [{3: 0, 1: 1}[n % 4] for n in ids]


def test_without_classes_the_reader_is_as_before(mixed):
    reader = ShardReader(mixed, batch_size=16)
    assert reader.class_names == read_manifest(mixed).class_names == ["c0", "c1", "c2", "c3"]
    assert Counter(numbers(batches(reader))) == Counter(range(MIXED_COUNT))
    state = reader.state_dict()
    assert state["classes"] is None and state["relabel"] is None


def test_binary_labels_of_two_classes_of_many(mixed):
    reader = ShardReader(mixed, classes=["c3", "c1"], label_mode="binary", batch_size=16)
    for ids, labels in batches(reader):
        assert labels.shape == (len(ids), 1) and labels.dtype == np.float32
        assert labels[:, 0].tolist() == [{3: 0.0, 1: 1.0}[n % 4] for n in ids]


def test_images_only_of_the_classes(mixed):
    from conftest import image_number

    reader = ShardReader(mixed, classes=["c0"], label_mode=None, batch_size=32)
    served = [image_number(image) for x in reader for image in x]
    assert Counter(served) == Counter(of_classes(0))


# -- refused in one line -----------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (dict(classes=["c1", "cat"]), "class 'cat' of classes is not in the dataset (its classes: "
                                  "c0, c1, c2, c3)"),
    (dict(classes=["c1", "c2", "c1"]), "class 'c1' is named twice in classes"),
    (dict(classes=[]), "classes must name at least one class"),
    (dict(classes=["c1", 2]), "classes must be class names (str), got 2"),
    (dict(classes="c1"), "classes must be a list of class names, got 'c1'"),
    (dict(classes={"c1"}), "classes must be a list of class names"),
    (dict(classes=["c1"], relabel="no"), "relabel must be True or False, got 'no'"),
    (dict(classes=["c0", "c1", "c2"], label_mode="binary"),
     "label_mode='binary' needs 2 classes, classes names 3"),
    (dict(classes=["c1"], label_mode="binary"), "label_mode='binary' needs 2 classes"),
    (dict(classes=["c1", "c3"], label_mode="binary", relabel=False),
     "label_mode='binary' with relabel=False serves the classes' own labels [1, 3], not 0 and "
     "1: pass relabel=True"),
], ids=["unknown", "twice", "empty", "not-a-string", "a-string", "a-set", "relabel",
        "binary-of-3", "binary-of-1", "binary-kept"])
def test_bad_classes_are_one_line(mixed, options, message):
    with pytest.raises(ReaderError) as raised:
        ShardReader(mixed, **options)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_unknown_class_of_many_names_the_first_few(tmp_path):
    from conftest import build_numbered

    out = build_numbered(tmp_path, 9, classes=9, shard_size=4)
    with pytest.raises(ReaderError, match=r"'dog' .* \(its classes: c0, c1, c2, c3, c4, \.\.\. "
                                          r"\(9 in all\)\)$"):
        ShardReader(out, classes=["dog"])


def test_a_binary_subset_kept_as_stored_is_fine_when_its_labels_are_0_and_1(mixed):
    reader = ShardReader(mixed, classes=["c1", "c0"], label_mode="binary", relabel=False)
    for ids, labels in batches(reader):
        assert labels[:, 0].tolist() == [float(n % 4) for n in ids]


def test_classes_of_a_dataset_without_labels_are_refused(tmp_path):
    from conftest import write_image

    write_image(str(tmp_path / "src" / "a.png"), colour=(1, 2, 3))
    build(str(tmp_path / "src"), str(tmp_path / "out"), BuildConfig(size=(4, 4), no_labels=True))
    with pytest.raises(ReaderError, match=r"^classes needs labels, and these shards have none"):
        ShardReader(str(tmp_path / "out"), classes=["a"], label_mode=None)


def changed_labels(path: str) -> bytes:
    """The bytes of the label file ``path`` with every label another (``(label + 1) % 3``)."""
    data, labels = open(path, "rb").read(), np.load(path)
    return data[:len(data) - labels.nbytes] + ((labels + 1) % 3).astype("<i4").tobytes()


def corrupt_labels(path: str, *, keep_time: bool = False) -> None:
    """Change every label of the label file ``path`` in place (its time kept if asked)."""
    status, changed = os.stat(path), changed_labels(path)
    with open(path, "r+b") as stream:
        stream.write(changed)
    if keep_time:
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def test_a_corrupt_label_file_is_named_in_one_line(mixed, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(mixed, copy)
    name = read_manifest(copy).splits["train"].shards[3].labels
    corrupt_labels(os.path.join(copy, name))
    with pytest.raises(ShardError, match=rf"^{re.escape(os.path.join(copy, name))}: checksum "
                                         "does not match the manifest"):
        ShardReader(copy, classes=["c1"])


def test_a_label_file_changed_under_the_reader_is_refused_not_served(by_class, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(by_class, copy)
    reader = ShardReader(copy, classes=["c1"], batch_size=4, shuffle=False)
    name = read_manifest(copy).splits["train"].shards[5].labels  # c1's first shard: now c2
    corrupt_labels(os.path.join(copy, name), keep_time=True)
    with pytest.raises(ShardError, match="a label file changed since the reader read it"):
        batches(reader)


# -- several processes, resumption, state ---------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_ranks_split_the_subset_disjoint_and_complete_with_the_same_length(
        mixed, shuffle, drop_remainder):
    global_batch, expected = 12, of_classes(1, 2, 3)  # 74 samples: 6 full steps and 2 over
    alone = None
    for replicas in (1, 2, 4):
        readers = [ShardReader(mixed, classes=["c3", "c1", "c2"], batch_size=global_batch //
                               replicas, num_replicas=replicas, rank=rank, partitions=4,
                               shuffle=shuffle, drop_remainder=drop_remainder, seed=5)
                   for rank in range(replicas)]
        assert {len(r) for r in readers} == {6 if drop_remainder else 7}
        parts = [batches(r) for r in readers]
        steps = [set().union(*(part[k][0] for part in parts)) for k in range(len(readers[0]))]
        served = Counter(sum((numbers(part) for part in parts), []))
        if drop_remainder:
            assert max(served.values()) == 1 and len(served) == 72 and set(served) <= expected
        else:
            assert set(served) == expected and sum(served.values()) - 74 < global_batch
        if replicas == 1:
            alone = steps
        elif shuffle:  # the same global batches whatever the process count
            assert steps[:6] == alone[:6]


def test_a_state_saved_on_two_ranks_resumes_on_four_neither_repeating_nor_skipping(mixed):
    options = dict(classes=["c0", "c3"], partitions=4, seed=3, drop_remainder=True)
    first = [ShardReader(mixed, batch_size=4, num_replicas=2, rank=r, **options)
             for r in range(2)]
    before = sum((numbers(batches(r, steps=3)) for r in first), [])
    state = first[0].state_dict()
    assert state["classes"] == ["c0", "c3"] and state["relabel"] is True
    assert state["num_samples"] == 49 and state["batches"] == 3
    second = [ShardReader(mixed, batch_size=2, num_replicas=4, rank=r, **options)
              for r in range(4)]
    for reader in second:
        reader.load_state_dict(state)
    after = sum((numbers(batches(r)) for r in second), [])
    alone = numbers(batches(ShardReader(mixed, batch_size=8, **options)))
    assert sorted(before + after) == sorted(alone) and len(alone) == 48


@pytest.mark.parametrize("options, message", [
    (dict(classes=["c3", "c0"]), "state was saved with classes ['c0', 'c3'], this reader has "
                                 "['c3', 'c0'] (another subset of classes)"),
    (dict(classes=["c0", "c3"], relabel=False), "relabel True, this reader has False (other labels)"),
    (dict(), "classes ['c0', 'c3'], this reader has None"),
], ids=["other-order", "relabel", "all-classes"])
def test_a_state_of_another_subset_is_refused_in_one_line(mixed, options, message):
    state = ShardReader(mixed, classes=["c0", "c3"]).state_dict()
    reader = ShardReader(mixed, **options)
    with pytest.raises(ReaderError) as raised:
        reader.load_state_dict(state)
    assert message in str(raised.value) and "\n" not in str(raised.value)


# -- what is mapped and fetched ----------------------------------------------------------------


@pytest.mark.parametrize("options", [dict(shuffle=False), dict(partitions=1, window=2),
                                     dict(partitions=8)])
def test_shards_without_a_sample_of_the_classes_are_never_mapped(by_class, options):
    manifest = read_manifest(by_class)
    shards = manifest.splits["train"].shards
    reader = ShardReader(by_class, classes=["c1"], batch_size=3, **options)
    for epoch in range(2):
        assert Counter(numbers(batches(reader))) == Counter(of_classes(1, count=60, total=3))
        assert reader.bytes_mapped == (epoch + 1) * sum(shard_bytes(manifest, shards[i])
                                                        for i in range(5, 10))


def test_a_subset_of_a_url_directory_reads_what_a_local_one_does(mixed, tmp_path):
    import fsspec

    with on_memory(mixed) as url:
        options = dict(classes=["c2", "c1"], batch_size=5, seed=4)
        remote = ShardReader(url, cache_dir=str(tmp_path / "cache"), **options)
        local = ShardReader(mixed, **options)
        assert [(ids, y.tolist()) for ids, y in batches(remote)] == \
            [(ids, y.tolist()) for ids, y in batches(local)]
        remote.close()
        name = read_manifest(mixed).splits["train"].shards[2].labels
        fsspec.filesystem("memory").pipe(f"{url}/{name}",
                                         changed_labels(os.path.join(mixed, name)))
        with pytest.raises(ShardError, match=rf"^{url}/{re.escape(name)}: checksum "
                                             "does not match"):
            ShardReader(url, cache_dir=str(tmp_path / "cache2"), **options)


# -- framework views -------------------------------------------------------------------------


def test_to_keras_serves_the_subset(mixed):
    pytest.importorskip("keras", reason="the keras extra is not installed")
    from conftest import image_number

    dataset = ShardReader(mixed, classes=["c2"], batch_size=10).to_keras(workers=1)
    assert len(dataset) == 3
    served = [(image_number(image), int(label)) for index in range(len(dataset))
              for image, label in zip(*dataset[index])]
    assert sorted(served) == [(n, 0) for n in sorted(of_classes(2))]


def test_to_tf_dataset_has_one_column_a_class_of_the_subset(mixed):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
    reader = ShardReader(mixed, classes=["c0", "c1", "c2"], batch_size=16,
                         label_mode="categorical")
    data = reader.to_tf_dataset()
    assert data.element_spec[1] == tf.TensorSpec((None, 3), tf.float32)
    assert sum(int(y.shape[0]) for _, y in data) == 75
    kept = ShardReader(mixed, classes=["c0"], relabel=False, label_mode="categorical")
    assert kept.to_tf_dataset().element_spec[1].shape.as_list() == [None, 4]


# -- the order of a selection ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 10), min_size=1, max_size=12), data=st.data(),
       batch_size=st.integers(1, 5), num_replicas=st.sampled_from([1, 2, 4]),
       shuffle=st.booleans(), drop_remainder=st.booleans(), window=st.integers(1, 3),
       seed=st.integers(0, 2**31), epoch=st.integers(0, 3))
def test_an_order_serves_the_selection_alone_like_a_split_of_its_size(
        sizes, data, batch_size, num_replicas, shuffle, drop_remainder, window, seed, epoch):
    """Ranks are disjoint and complete over the selected samples, of the same length (that of
    an epoch of as many samples), and read no shard without a selected sample."""
    total = sum(sizes)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=total, max_size=total)))
    selected = np.flatnonzero(mask).astype(np.int64)
    options = dict(batch_size=batch_size, num_replicas=num_replicas, shuffle=shuffle,
                   drop_remainder=drop_remainder, window=window, seed=seed,
                   partitions=2 * num_replicas)
    ranks = [EpochOrder.of(sizes, selected=selected, rank=rank, **options)
             for rank in range(num_replicas)]
    as_large = EpochOrder.of([len(selected)], **options)
    assert {len(r) for r in ranks} == {len(as_large)}
    orders = [r.order(epoch) for r in ranks]
    served = Counter(np.concatenate(orders).tolist())
    step = batch_size * num_replicas
    assert set(served) <= set(selected.tolist())
    if drop_remainder:
        assert max(served.values(), default=1) == 1
        assert 0 <= len(selected) - len(served) < step
    else:
        assert set(served) == set(selected.tolist())
        assert sum(served.values()) - len(selected) < step
    shard_of = ranks[0].shard_of
    assert set(shard_of(np.concatenate(orders)).tolist()) <= set(shard_of(selected).tolist())


def test_every_sample_selected_is_the_order_of_the_whole_split():
    sizes, options = [5, 3, 8, 2], dict(batch_size=3, seed=9, window=2, partitions=4,
                                        shuffle=True, drop_remainder=False)
    whole = EpochOrder.of(sizes, **options)
    everything = EpochOrder.of(sizes, selected=np.arange(18, dtype=np.int64), **options)
    for epoch in range(3):
        np.testing.assert_array_equal(whole.order(epoch), everything.order(epoch))



def test_a_subset_the_split_holds_no_sample_of_is_one_line(tmp_path):
    """A class of one file has no val sample: reading val of it alone served an empty epoch
    (len 0) without a word, which Keras then trains on as nothing."""
    from conftest import write_image

    for number in range(6):
        write_image(str(tmp_path / "src" / "a" / f"{number}.png"), size=(5, 5), seed=number)
    write_image(str(tmp_path / "src" / "b" / "0.png"), size=(5, 5), seed=99)
    out = str(tmp_path / "out")
    build(str(tmp_path / "src"), out, BuildConfig(size=(4, 4), shard_size=2, val_split=0.3),
          workers=1)
    with pytest.raises(ReaderError, match=r"no sample of the classes \['b'\]") as raised:
        ShardReader(out, "val", classes=["b"])
    assert "\n" not in str(raised.value)
    assert len(ShardReader(out, "train", classes=["b"], batch_size=1)) == 1
