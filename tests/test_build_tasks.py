"""How a build cuts its work into tasks: whole shards, or pieces of them when shards are few."""

from __future__ import annotations

import hashlib
import importlib
import os

import pytest
from conftest import write_image
from hypothesis import given
from hypothesis import strategies as st

from imgshard import BuildConfig, build, plan
from imgshard.build_plan import make_tasks, piece_starts, pieces_per_shard
from imgshard.storage import Location
from imgshard.worker import run_shard_task


def test_many_shards_make_one_task_per_shard(make_class_folders, tmp_path):
    src = make_class_folders({"red": 10, "blue": 9})
    build_plan = plan(src, BuildConfig(size=(4, 4), shard_size=4))
    assert pieces_per_shard(build_plan, workers=2) == 1
    tasks = make_tasks(build_plan, src, "out", pieces=1)
    assert [(t.split, t.index, t.start, len(t.paths)) for t in tasks] == [
        ("train", 0, 0, 4), ("train", 1, 4, 4), ("train", 2, 8, 4), ("train", 3, 12, 4),
        ("train", 4, 16, 3)]


@pytest.mark.parametrize("workers, sizes", [(1, [26]), (2, [3, 3, 3, 4, 3, 3, 3, 4]),
                                             (3, [2, 2, 2, 2, 2, 3, 2, 2, 2, 2, 2, 3])])
def test_a_single_shard_is_cut_into_pieces_for_every_worker(make_class_folders, workers, sizes):
    src = make_class_folders({"red": 26})
    build_plan = plan(src, BuildConfig(size=(4, 4)))
    tasks = make_tasks(build_plan, src, "out", pieces_per_shard(build_plan, workers))
    assert [len(t.paths) for t in tasks] == sizes
    assert [t.index for t in tasks] == list(range(len(sizes)))
    assert [p for t in tasks for p in t.paths] == [s.path for s in build_plan.scan.splits["train"]]
    assert [t.start for t in tasks] == [sum(sizes[:i]) for i in range(len(sizes))]
    assert [t.whole for t in tasks] == [workers == 1] * len(sizes)


@pytest.mark.parametrize("pieces", [1, 2])
def test_only_a_whole_shard_s_worker_hashes_its_part(make_class_folders, tmp_path, pieces):
    """A whole shard's part is renamed into place with its worker's checksum; a piece is joined."""
    src = make_class_folders({"red": 6})
    build_plan = plan(src, BuildConfig(size=(4, 4)))
    out = Location.of(str(tmp_path))
    task = make_tasks(build_plan, Location.of(src), out, pieces)[0]
    result = run_shard_task(task)
    part = (tmp_path / result.part).read_bytes()
    assert result.num_samples == 6 // pieces
    assert result.sha256 == (hashlib.sha256(part).hexdigest() if pieces == 1 else None)


def test_a_last_piece_that_alone_fills_its_shard_is_still_hashed(tmp_path):
    """Its worker did not hash it (a piece), so it is joined like any piece, not renamed."""
    src = tmp_path / "src"
    for number in range(7):
        (src / "c" / f"{number}-broken.png").parent.mkdir(parents=True, exist_ok=True)
        (src / "c" / f"{number}-broken.png").write_bytes(b"not a png")
    write_image(str(src / "c" / "9-good.png"), colour=(9, 0, 0))
    out = tmp_path / "out"
    config = BuildConfig(size=(4, 4), shuffle=False)
    manifest = build(str(src), str(out), config, workers=2).manifest
    (shard,) = manifest.splits["train"].shards
    assert shard.num_samples == 1 and len(manifest.skipped) == 7
    assert shard.sha256 == hashlib.sha256((out / shard.images).read_bytes()).hexdigest()


def test_pieces_of_shards_join_into_the_same_bytes_for_any_worker_count(tmp_path):
    src = tmp_path / "src"
    for number in range(13):
        write_image(str(src / f"c{number % 2}" / f"{number:02d}.jpg"), size=(20 + number, 16),
                    seed=number)
    (src / "c0" / "03-broken.jpg").write_bytes(b"\xff\xd8 not really")
    config = BuildConfig(size=(8, 6), shard_size=8, val_split=0.3)
    outputs, splits = {}, {}
    for workers in (1, 2, 3):
        out = tmp_path / f"out{workers}"
        manifest = build(str(src), str(out), config, workers=workers).manifest
        outputs[workers] = {name: (out / name).read_bytes() for name in sorted(os.listdir(out))
                            if name != "manifest.json"}
        splits[workers] = manifest.splits
        assert [s.path for s in manifest.skipped] == ["c0/03-broken.jpg"]
        assert not [name for name in os.listdir(out) if name.startswith(".")]
    assert outputs[1] == outputs[2] == outputs[3]
    assert splits[1] == splits[2] == splits[3]  # the same checksums, however the shards were cut
    for split in splits[1].values():
        for shard in split.shards:
            assert shard.sha256 == hashlib.sha256(outputs[1][shard.images]).hexdigest()
    assert sorted(outputs[1]) == ["samples.csv", "sources.jsonl.gz", "train-00000.labels.npy",
                                  "train-00000.npy",
                                  "train-00001.labels.npy", "train-00001.npy",
                                  "val-00000.labels.npy", "val-00000.npy"]


def test_a_failed_build_leaves_no_temporary_or_part_file(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for number in range(9):
        write_image(str(src / "c" / f"{number}.png"), colour=(number, 0, 0))
    (src / "c" / "0-broken.png").write_bytes(b"not a png")
    build_module = importlib.import_module("imgshard.build")  # imgshard.build is the function
    real_task = build_module.run_shard_task

    def failing_task(task):
        if task.index == 2:
            raise RuntimeError("disk on fire")
        return real_task(task)

    monkeypatch.setattr(build_module, "run_shard_task", failing_task)
    out = tmp_path / "out"
    config = BuildConfig(size=(4, 4), shard_size=3, shuffle=False)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build(str(src), str(out), config, workers=1)
    assert sorted(os.listdir(out)) == [".imgshard-progress.jsonl", ".imgshard-sources.jsonl.gz",
                                       ".samples.csv.partial",
                                       "train-00000.labels.npy", "train-00000.npy"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_last_task_whose_files_all_fail_adds_no_empty_shard(tmp_path, workers):
    src = tmp_path / "src"
    for number in range(4):
        write_image(str(src / "c" / f"a{number}.png"), colour=(number, 0, 0))
    for number in range(2):
        (src / "c" / f"z{number}.png").write_bytes(b"not a png")
    config = BuildConfig(size=(4, 4), shard_size=2, shuffle=False)
    manifest = build(str(src), str(tmp_path / "out"), config, workers=workers).manifest
    assert [s.num_samples for s in manifest.splits["train"].shards] == [2, 2]
    assert [s.path for s in manifest.skipped] == ["c/z0.png", "c/z1.png"]


@given(st.integers(0, 10_000), st.integers(1, 600), st.integers(1, 16))
def test_pieces_tile_a_shard_in_near_equal_runs(start, length, pieces):
    starts = piece_starts(start, length, pieces)
    sizes = [end - begin for begin, end in zip(starts, [*starts[1:], start + length])]
    assert starts[0] == start and sum(sizes) == length
    assert len(sizes) == min(pieces, length) and max(sizes) - min(sizes) <= 1


def test_an_unknown_executor_is_one_line(tmp_path):
    from imgshard import ImgshardError

    write_image(str(tmp_path / "src" / "c" / "0.png"))
    with pytest.raises(ImgshardError, match=r"^unknown executor 'ray' \(choose local or dask\)$"):
        build(str(tmp_path / "src"), str(tmp_path / "out"), BuildConfig(size=(4, 4)),
              executor="ray")
    assert not (tmp_path / "out").exists()
