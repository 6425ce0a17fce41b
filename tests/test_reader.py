"""ShardReader: exactly-once epochs, reproducible shuffles, batch edges, label modes, memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from imgshard import BuildConfig, ReaderError, ShardReader, build
from imgshard.layout import MANIFEST_NAME


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """23 distinct images over 6 shards of 4 (last holds 3), 3 classes."""
    from conftest import write_image

    root = tmp_path_factory.mktemp("reader")
    for number in range(23):
        write_image(str(root / "src" / f"c{number % 3}" / f"{number:02d}.png"), size=(8, 6),
                    colour=(number * 10, 255 - number * 10, number))
    out = str(root / "out")
    build(str(root / "src"), out, BuildConfig(size=(6, 8), shard_size=4), workers=1)
    return out


@pytest.fixture(scope="module")
def gradients(tmp_path_factory):
    """23 images over 6 shards of 4 whose every row is a horizontal gradient (brighter to the
    right, each image its own), so an image differs from its mirror: a flip shows."""
    from PIL import Image

    root = tmp_path_factory.mktemp("gradients")
    for number in range(23):
        ramp = np.arange(8, dtype=np.uint8) * 30 + number  # left to right, strictly rising
        pixels = np.stack([np.tile(ramp, (6, 1)), np.full((6, 8), number * 10, np.uint8),
                           np.tile(255 - ramp, (6, 1))], axis=-1)
        path = root / "src" / f"c{number % 3}" / f"{number:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    out = str(root / "out")
    build(str(root / "src"), out, BuildConfig(size=(6, 8), shard_size=4), workers=1)
    return out


def assert_flipped_or_not(plain: np.ndarray, served: np.ndarray) -> np.ndarray:
    """Each served image is its plain image or, exactly, its mirror (left-right); returns which
    were mirrored."""
    assert all(not np.array_equal(image, image[:, ::-1]) for image in plain)  # a flip shows
    mirrored = np.array([not np.array_equal(s, p) for s, p in zip(served, plain)])
    np.testing.assert_array_equal(served[~mirrored], plain[~mirrored])
    np.testing.assert_array_equal(served[mirrored], plain[mirrored][:, :, ::-1])
    return mirrored


def epoch(reader):
    xs, ys = [], []
    for x, y in reader:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    return xs, ys


def digests(xs):
    return Counter(hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest()
                   for x in xs for row in x)


def stored(out):
    images = [np.load(os.path.join(out, f"train-0000{i}.npy")) for i in range(6)]
    labels = [np.load(os.path.join(out, f"train-0000{i}.labels.npy")) for i in range(6)]
    return np.concatenate(images), np.concatenate(labels)


@pytest.mark.parametrize("batch_size", [1, 5, 23, 64])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_sample_exactly_once_per_epoch(shards, batch_size, shuffle):
    reader = ShardReader(shards, batch_size=batch_size, shuffle=shuffle, window=2)
    images, labels = stored(shards)
    for _ in range(2):
        xs, ys = epoch(reader)
        assert len(xs) == len(reader) == -(-23 // batch_size)
        assert [len(x) for x in xs[:-1]] == [batch_size] * (len(xs) - 1)
        assert digests(xs) == digests([images])
        assert Counter(np.concatenate(ys).tolist()) == Counter(labels.tolist())
        pairs = {hashlib.sha256(x.tobytes()).hexdigest(): int(y)
                 for xb, yb in zip(xs, ys) for x, y in zip(xb, yb)}
        assert pairs == {hashlib.sha256(x.tobytes()).hexdigest(): int(y)
                         for x, y in zip(images, labels)}


def order_of(reader):
    return [hashlib.sha256(row.tobytes()).hexdigest() for x in epoch(reader)[0] for row in x]


def test_new_order_every_epoch_and_same_order_for_same_seed_and_epoch(shards):
    reader = ShardReader(shards, batch_size=4, seed=3)
    first, second = order_of(reader), order_of(reader)
    assert first != second
    again = ShardReader(shards, batch_size=4, seed=3)
    assert order_of(again) == first
    again.set_epoch(1)
    assert order_of(again) == second
    assert order_of(ShardReader(shards, batch_size=4, seed=4)) != first


def test_unshuffled_order_is_the_stored_order(shards):
    images, _ = stored(shards)
    xs, _ = epoch(ShardReader(shards, batch_size=7, shuffle=False))
    np.testing.assert_array_equal(np.concatenate(xs), images)


def test_drop_remainder(shards):
    reader = ShardReader(shards, batch_size=5, drop_remainder=True)
    xs, _ = epoch(reader)
    assert len(reader) == 4 and [len(x) for x in xs] == [5, 5, 5, 5]


def test_label_modes_and_dtype(shards):
    _, labels = stored(shards)
    x, y = next(iter(ShardReader(shards, batch_size=23, shuffle=False, label_mode="categorical",
                                 dtype="float32")))
    assert x.dtype == np.float32 and y.dtype == np.float32 and y.shape == (23, 3)
    np.testing.assert_array_equal(y.argmax(1), labels)
    x, y = next(iter(ShardReader(shards, batch_size=23, shuffle=False)))
    assert x.dtype == np.float16 and y.dtype == np.int32 and x.shape == (23, 6, 8, 3)
    only_x = next(iter(ShardReader(shards, batch_size=4, label_mode=None)))
    assert isinstance(only_x, np.ndarray) and only_x.shape == (4, 6, 8, 3)
    with pytest.raises(ReaderError, match="needs 2 classes"):
        ShardReader(shards, label_mode="binary")


def test_augment_and_flip(gradients):
    plain = ShardReader(gradients, batch_size=23, shuffle=False, prefetch=0)
    x, _ = next(iter(plain))
    x = np.array(x)
    doubled, _ = next(iter(ShardReader(gradients, batch_size=23, shuffle=False,
                                       augment=lambda b: b * 2)))
    np.testing.assert_array_equal(doubled, x * 2)
    flipped, _ = next(iter(ShardReader(gradients, batch_size=23, shuffle=False,
                                       flip_horizontal=True)))
    mirrored = assert_flipped_or_not(x, flipped)
    assert 0 < mirrored.sum() < len(x)  # about half of them, seeded


def test_shuffle_quality(tmp_path):
    """Positions in consecutive epochs are uncorrelated; a batch mixes shards."""
    from conftest import image_number, write_numbered_images

    write_numbered_images(tmp_path / "src", 400, classes=2)
    out = str(tmp_path / "out")
    build(str(tmp_path / "src"), out, BuildConfig(size=(2, 2), shard_size=20, dtype="uint8"),
          workers=1)
    reader = ShardReader(out, batch_size=16, window=4)
    ids = [[image_number(r) for x in epoch(reader)[0] for r in x]
           for _ in range(2)]
    position = [{sample: i for i, sample in enumerate(e)} for e in ids]
    a = np.array([position[0][s] for s in range(400)])
    b = np.array([position[1][s] for s in range(400)])
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.2
    samples_csv = open(os.path.join(out, "samples.csv")).read().splitlines()[1:]
    shard_of = {}
    images = {}
    for line in samples_csv:
        _, _, shard, index = line.split(",")[:4]
        if shard not in images:
            images[shard] = np.load(os.path.join(out, shard))
        r = images[shard][int(index)]
        shard_of[image_number(r)] = shard
    batches = [ids[0][i:i + 16] for i in range(0, 400, 16)]
    assert all(len({shard_of[s] for s in batch}) > 1 for batch in batches)


def test_state_dict_resumes_mid_epoch_without_repeats_or_gaps(shards):
    reader = ShardReader(shards, batch_size=3, seed=9)
    full = order_of(ShardReader(shards, batch_size=3, seed=9))
    taken = []
    for count, (x, _) in enumerate(reader):
        taken += [hashlib.sha256(r.tobytes()).hexdigest() for r in x]
        if count == 2:
            state = reader.state_dict()
            break
    resumed = ShardReader(shards, batch_size=3, seed=9)
    resumed.load_state_dict(state)
    rest = [hashlib.sha256(r.tobytes()).hexdigest() for x, _ in resumed for r in x]
    assert taken + rest == full
    assert resumed.state_dict()["epoch"] == 1


def test_errors_name_what_is_wrong(shards, tmp_path):
    with pytest.raises(ReaderError, match=r"split 'tset' is not in .* \(it has: train\)"):
        ShardReader(shards, split="tset")
    with pytest.raises(Exception, match="is not a directory"):
        ShardReader(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="manifest.json is missing"):
        ShardReader(str(tmp_path / "empty"))
    (tmp_path / "empty" / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(Exception, match="is not valid JSON"):
        ShardReader(str(tmp_path / "empty"))


def test_a_shard_of_the_wrong_size_is_named(shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    np.save(copy / "train-00002.npy", np.zeros((3, 6, 8, 3), np.float16))
    with pytest.raises(Exception, match=r"train-00002.npy: shape \(3, 6, 8, 3\) but the manifest"):
        epoch(ShardReader(str(copy), batch_size=4, shuffle=False))


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("options, resident", [
    (dict(partitions=1, window=2), None),  # the lean order: a few shards in use at once
    (dict(), 50 * 1000**2),  # 64 partitions: all 16 shards in use, more than may stay resident
], ids=["one-partition", "pages-handed-back"])
def test_memory_stays_bounded_by_the_window_not_the_dataset(tmp_path, monkeypatch, options,
                                                            resident):
    """~200 MB of shards read in full: resident memory grows by far less than that."""
    from numpy.lib import format as npy_format

    from imgshard.manifest import Manifest, ShardInfo, SplitInfo, write_manifest
    from imgshard.reader import window
    from imgshard.storage.files import file_sha256

    if resident is not None:
        monkeypatch.setattr(window, "RESIDENT_BYTES", resident)

    def write_array(path, array):
        """A row at a time, as a build streams a shard: one 12 MB write (``np.save``) leaves
        the file in 2 MB page-cache folios, which Linux 6.18 maps whole when one row of them
        is read (24-112 MB resident at the epoch's peak, written so; 6-8 MB written by rows)."""
        with open(path, "wb") as stream:
            npy_format.write_array_header_1_0(stream, npy_format.header_data_from_array_1_0(array))
            for row in array:
                stream.write(row.tobytes())
        return file_sha256(path)

    shape, per_shard, count = (64, 64, 3), 512, 16  # 12.6 MB per shard, 201 MB float16
    infos = []
    for index in range(count):
        images = np.full((per_shard, *shape), index, dtype=np.float16)
        name = f"train-{index:05d}.npy"
        digest = write_array(str(tmp_path / name), images)
        labels_digest = write_array(str(tmp_path / f"train-{index:05d}.labels.npy"),
                                    np.zeros(per_shard, np.int32))
        infos.append(ShardInfo(name, per_shard, digest, f"train-{index:05d}.labels.npy",
                               labels_digest))
    del images
    write_manifest(str(tmp_path), Manifest("0", "now", "src", shape, "float16", ["a"], {},
                                           {"train": SplitInfo(per_shard * count, {"a": 0}, infos)}))
    reader = ShardReader(str(tmp_path), batch_size=64, prefetch=2, **options)
    before, peak, seen = rss_bytes(), 0, 0
    for x, _ in reader:
        seen += len(x)
        peak = max(peak, rss_bytes() - before)
    dataset = per_shard * count * np.prod(shape) * 2
    assert seen == per_shard * count
    assert peak < dataset / 3, (peak, dataset)


def test_binary_label_mode_for_two_classes(make_class_folders, tmp_path):
    src = make_class_folders({"blue": 3, "red": 2})
    out = str(tmp_path / "out")
    build(src, out, BuildConfig(size=(4, 4)), workers=1)
    x, y = next(iter(ShardReader(out, batch_size=5, shuffle=False, label_mode="binary")))
    assert y.dtype == np.float32 and y.shape == (5, 1)
    assert sorted(y[:, 0].tolist()) == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_unlabelled_shards_read_with_label_mode_none_only(tmp_path):
    from conftest import write_image

    write_image(str(tmp_path / "src" / "a.png"), colour=(1, 2, 3))
    out = str(tmp_path / "out")
    build(str(tmp_path / "src"), out, BuildConfig(size=(4, 4), no_labels=True))
    with pytest.raises(ReaderError, match="no labels .* use label_mode=None"):
        ShardReader(out)
    assert next(iter(ShardReader(out, label_mode=None))).shape == (1, 4, 4, 3)


@pytest.mark.parametrize("preset, expected", [(None, "true"), ("false", "false")])
def test_import_asks_tensorflow_for_the_allocator_that_keeps_step_memory(preset, expected):
    """Set on import, before any model exists (see reader.py); a value the user set is kept."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPU_ALLOCATOR_USE_BFC"}
    if preset is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = preset
    code = "import os, imgshard; print(os.environ['TF_CPU_ALLOCATOR_USE_BFC'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == expected


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_batches_start_on_the_alignment_tensorflow_takes_without_a_copy(shards, dtype):
    """Gathered batches and casts are allocated aligned, and a batch that is a view of a shard's
    map is kept only when it happens to be aligned (rows are 288 bytes here: row 1 is not);
    the pixels are the same whichever way a batch was made."""
    from imgshard.reader import BATCH_ALIGNMENT

    first = np.load(os.path.join(shards, "train-00000.npy"), mmap_mode="r")
    assert (first.offset + first[0].nbytes) % BATCH_ALIGNMENT != 0  # row 1 is not aligned
    whole = np.concatenate([x for x, _ in ShardReader(shards, batch_size=23, shuffle=False)])
    for batch_size, shuffle in [(5, True), (4, False), (1, False)]:
        reader = ShardReader(shards, batch_size=batch_size, shuffle=shuffle, dtype=dtype)
        seen = []
        for x, _ in reader:
            assert x.ctypes.data % BATCH_ALIGNMENT == 0
            assert x.dtype == dtype
            seen.append(x)
        if not shuffle:
            np.testing.assert_array_equal(np.concatenate(seen), whole.astype(dtype))


def test_flipping_a_batch_that_is_a_view_of_a_map_copies_it_aligned(gradients):
    """A batch that is a view of a read-only map is copied (aligned) to be flipped, and the
    flipped images are the exact mirrors of the stored ones."""
    from imgshard.reader import BATCH_ALIGNMENT

    plain = [x for x, _ in ShardReader(gradients, batch_size=4, shuffle=False)]
    flipped = [x for x, _ in ShardReader(gradients, batch_size=4, shuffle=False,
                                         flip_horizontal=True)]
    mirrored = []
    for before, after in zip(plain, flipped):
        assert after.ctypes.data % BATCH_ALIGNMENT == 0 and after.flags.writeable
        mirrored += assert_flipped_or_not(before, after).tolist()
    assert 0 < sum(mirrored) < 23
    assert not plain[0].flags.writeable  # the unflipped batch was the map itself
