"""URL handling on ``memory://``, fsspec's in-process store: quick, with no server.

A memory store lives in this process only, so these builds run with one worker (in-process);
real object stores with worker processes are tested against moto's S3 in ``test_s3.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import fsspec
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import comparable, local_files, stop_at_call, write_image
from hypothesis import given
from hypothesis import strategies as st

from imgshard.build import build
from imgshard.cli import cli
from imgshard.config import BuildConfig
from imgshard.errors import ImgshardError
from imgshard.reader import ReaderError, ShardReader
from imgshard.storage import (
    FsspecLocation,
    LocalLocation,
    Location,
    StorageError,
    describe_error,
    parse_storage_options,
)

CONFIG = BuildConfig(size=(8, 8), shard_size=4)


@pytest.fixture
def memory_url():
    """A fresh ``memory://`` prefix, removed afterwards."""
    prefix = f"memory://imgshard-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    memory = fsspec.filesystem("memory")
    if memory.exists(prefix.split("://")[1]):
        memory.rm(prefix.split("://")[1], recursive=True)


@pytest.fixture
def src(make_class_folders, tmp_path):
    """Eleven images in three classes, one of them broken (a recorded skip)."""
    root = make_class_folders({"blue": 4, "green": 4, "red": 3}, flat=False)
    (tmp_path / "src" / "red" / "broken.png").write_bytes(b"not a png")
    return root


def remote_files(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    return {path.rsplit("/", 1)[-1]: fs.cat_file(path) for path in sorted(fs.ls(root, detail=False))}


# -- Location and options ------------------------------------------------------------------

def test_local_paths_and_file_urls_stay_local(tmp_path):
    assert isinstance(Location.of(str(tmp_path)), LocalLocation)
    assert Location.of(f"file://{tmp_path}").url == str(tmp_path)
    assert isinstance(Location.of("s3://bucket/prefix/"), FsspecLocation)
    assert Location.of("s3://bucket/prefix/").url == "s3://bucket/prefix"
    assert Location.of("s3://b/p").path("train-00000.npy") == "s3://b/p/train-00000.npy"


def test_storage_options_parse_json_values_and_dotted_keys():
    options = parse_storage_options(["anon=true", "endpoint_url=http://127.0.0.1:9000",
                                     "client_kwargs.region_name=eu-west-1", "max_concurrency=4"])
    assert options == {"anon": True, "endpoint_url": "http://127.0.0.1:9000",
                       "client_kwargs": {"region_name": "eu-west-1"}, "max_concurrency": 4}


@pytest.mark.parametrize("pair", ["no-equals-sign-hunter2", "=hunter2"])
def test_a_malformed_storage_option_is_refused_without_echoing_it(pair, tmp_path):
    with pytest.raises(StorageError) as caught:
        parse_storage_options([pair])
    assert "hunter2" not in str(caught.value)
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path), "--storage-option", pair])
    assert result.exit_code == 1 and "hunter2" not in result.output
    assert result.output.strip().splitlines() == [f"Error: {caught.value}"]


@given(secret=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                      min_size=4, max_size=40))
def test_no_storage_option_value_survives_into_an_error_message(secret):
    error = RuntimeError(f"denied for key {secret} at endpoint")
    assert secret not in describe_error(error, {"secret": secret, "nested": {"token": secret}})


def test_options_never_show_in_a_location_repr_or_str():
    location = Location.of("s3://user:pw@bucket/x", {"secret": "hunter2-secret"})
    assert "hunter2" not in repr(location) and "hunter2" not in str(location)
    assert ":pw@" not in str(location)


def test_a_protocol_without_its_back_end_names_the_extra(monkeypatch):
    registry = sys.modules["fsspec.registry"]
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if s3fs were not installed
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    with pytest.raises(StorageError, match=r"s3fs: pip install 'imgshard\[s3\]'"):
        Location.of("s3://bucket/x", {"anon": True, "note": uuid.uuid4().hex}).fs  # noqa: B018


def test_an_unknown_protocol_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["inspect", "nosuchproto://bucket/x"])
    assert result.exit_code == 1
    assert "nosuchproto" in result.output and "Traceback" not in result.output


# -- building to and from a store ----------------------------------------------------------

def test_build_to_a_url_writes_the_same_bytes_as_a_local_build(src, tmp_path, memory_url):
    build(src, str(tmp_path / "local"), CONFIG, workers=1)
    result = build(src, f"{memory_url}/shards", CONFIG, workers=1)
    assert comparable(remote_files(f"{memory_url}/shards")) == comparable(local_files(tmp_path / "local"))
    assert [s.path for s in result.manifest.skipped] == ["red/broken.png"]


def test_build_from_a_url_writes_the_same_bytes_as_from_a_folder(src, tmp_path, memory_url):
    fs = fsspec.filesystem("memory")
    fs.put(src, memory_url.split("://")[1] + "/src", recursive=True)
    fs.pipe(memory_url.split("://")[1] + "/src/.hidden/x.png", b"x")
    build(src, str(tmp_path / "local"), CONFIG, workers=1)
    result = build(f"{memory_url}/src", str(tmp_path / "remote"), CONFIG, workers=2)
    assert comparable(local_files(tmp_path / "remote"), ignore=("skipped",)) == \
        comparable(local_files(tmp_path / "local"), ignore=("skipped",))
    assert {s.path: s.reason for s in result.manifest.skipped} == {
        "red/broken.png": "cannot decode: not a recognised image format",
        ".hidden/": "hidden folder"}


def test_presplit_layout_is_recognised_in_a_store(tmp_path, memory_url):
    for split in ("train", "val"):
        for name, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
            write_image(str(tmp_path / "src" / split / name / "0.png"), colour=colour)
    fsspec.filesystem("memory").put(str(tmp_path / "src"), memory_url.split("://")[1] + "/src",
                                    recursive=True)
    manifest = build(f"{memory_url}/src", str(tmp_path / "out"), CONFIG, workers=1).manifest
    assert manifest.class_names == ["cat", "dog"]
    assert {name: split.num_samples for name, split in manifest.splits.items()} == {"train": 2, "val": 2}


def test_an_interrupted_build_on_a_store_resumes_to_the_same_bytes(src, tmp_path, memory_url):
    config = BuildConfig(size=(8, 8), shard_size=2)
    build(src, f"{memory_url}/whole", config, workers=1)
    with pytest.raises(KeyboardInterrupt):
        build(src, f"{memory_url}/cut", config, workers=1, progress=stop_at_call(4))
    left = remote_files(f"{memory_url}/cut")
    assert "manifest.json" not in left
    assert sum(name.startswith(".imgshard-progress-") for name in left) >= 2  # plan, checkpoints
    assert "train-00000.npy" in left  # finished shards stay
    assert not any(name.startswith((".part-", ".tmp-")) for name in left)
    counted = []
    build(src, f"{memory_url}/cut", config, workers=1, resume=True, progress=counted.append)
    assert sum(counted) == 12  # the progress bar ends full: the images done before count too
    assert comparable(remote_files(f"{memory_url}/cut")) == comparable(remote_files(f"{memory_url}/whole"))


@pytest.mark.parametrize("where", ["local", "memory"])
def test_resuming_twice_after_a_damaged_shard_is_byte_identical(make_class_folders, tmp_path,
                                                               memory_url, where):
    """The first resume rebuilds from the damaged shard on; the checkpoints it did not replay
    must not be replayed by the second resume beside the ones it wrote."""
    src = make_class_folders({"blue": 4, "green": 4, "red": 4}, root=str(tmp_path / "clean"),
                             flat=False)  # nothing skipped: a checkpoint after every shard
    config = BuildConfig(size=(8, 8), shard_size=2)
    out = str(tmp_path / "out") if where == "local" else f"{memory_url}/out"
    build(src, str(tmp_path / "whole"), config, workers=1)
    with pytest.raises(KeyboardInterrupt):
        build(src, out, config, workers=1, progress=stop_at_call(5))
    fs, root = fsspec.core.url_to_fs(out)
    damaged = bytearray(fs.cat_file(f"{root}/train-00001.npy"))
    damaged[-1] ^= 0x01
    fs.pipe_file(f"{root}/train-00001.npy", bytes(damaged))
    with pytest.raises(KeyboardInterrupt):
        build(src, out, config, workers=1, resume=True, progress=stop_at_call(4))
    build(src, out, config, workers=1, resume=True)
    finished = local_files(out) if where == "local" else remote_files(out)
    assert comparable(finished) == comparable(local_files(tmp_path / "whole"))


def test_overwrite_on_a_store_refuses_foreign_objects(src, memory_url):
    fsspec.filesystem("memory").pipe(memory_url.split("://")[1] + "/out/notes.txt", b"mine")
    with pytest.raises(ImgshardError, match="notes.txt"):
        build(src, f"{memory_url}/out", CONFIG, workers=1, overwrite=True)


# -- reading from a store --------------------------------------------------------------------

def test_reader_streams_a_url_through_a_verified_cache_exactly_once(src, tmp_path, memory_url):
    build(src, f"{memory_url}/shards", CONFIG, workers=1)
    build(src, str(tmp_path / "local"), CONFIG, workers=1)
    cache = tmp_path / "cache"
    remote = ShardReader(f"{memory_url}/shards", batch_size=3, window=1, partitions=1,
                         cache_dir=str(cache), cache_bytes=10_000)
    local = ShardReader(str(tmp_path / "local"), batch_size=3, window=1, partitions=1)
    for epoch in range(2):
        got = [(x.tobytes(), y.tolist()) for x, y in remote]
        want = [(x.tobytes(), y.tolist()) for x, y in local]
        assert got == want, f"epoch {epoch}"
    names = sorted(os.listdir(cache))
    assert all(len(name) == 64 + 4 and name.endswith(".npy") for name in names)
    assert remote.cache.downloaded >= 6  # three shards, images and labels


def test_the_cache_stays_within_its_limit(src, tmp_path, memory_url):
    build(src, f"{memory_url}/shards", BuildConfig(size=(8, 8), shard_size=2), workers=1)
    shard_bytes = 2 * 8 * 8 * 3 * 2 + 128 + 2 * 4 + 128  # images and labels
    limit = 2 * shard_bytes
    reader = ShardReader(f"{memory_url}/shards", batch_size=2, window=1, shuffle=False,
                         cache_dir=str(tmp_path / "cache"), cache_bytes=limit, prefetch=0)
    kept = reader.cache.keep  # files in use or about to be: this window's and the next one's
    assert kept == 4
    for _ in reader:  # over the limit only by the files in use or about to be
        sizes = landed_sizes(tmp_path / "cache")
        assert sum(sizes) <= limit or len(sizes) <= kept
    distinct = {digest for shard in reader.shards for digest in (shard.sha256, shard.labels_sha256)}
    assert reader.cache.downloaded == len(distinct)  # each file downloaded once (same bytes: once)
    sizes = landed_sizes(tmp_path / "cache")
    assert (sum(sizes) <= limit or len(sizes) <= kept) and len(sizes) < len(distinct)


def landed_sizes(cache) -> list[int]:
    """Sizes of the verified files in a cache (downloads in flight are hidden temporaries)."""
    sizes = []
    for entry in os.scandir(cache):
        try:
            if not entry.name.startswith("."):
                sizes.append(entry.stat().st_size)
        except FileNotFoundError:  # evicted while listing
            pass
    return sizes


def test_a_corrupt_remote_shard_fails_its_checksum_on_landing(src, tmp_path, memory_url):
    build(src, f"{memory_url}/shards", CONFIG, workers=1)
    fs = fsspec.filesystem("memory")
    path = memory_url.split("://")[1] + "/shards/train-00001.npy"
    data = bytearray(fs.cat_file(path))
    data[-1] ^= 0xFF
    fs.pipe(path, bytes(data))
    reader = ShardReader(f"{memory_url}/shards", batch_size=4, shuffle=False,
                         cache_dir=str(tmp_path / "cache"), prefetch=0)
    with pytest.raises(ImgshardError, match="train-00001.npy: checksum does not match"):
        list(reader)
    reader.cache.close()  # let the downloads ahead finish
    assert not any(name.startswith(".") for name in os.listdir(tmp_path / "cache"))


def test_a_cache_too_small_for_the_shards_in_use_is_refused(src, tmp_path, memory_url):
    build(src, f"{memory_url}/shards", CONFIG, workers=1)
    with pytest.raises(ReaderError, match="cannot hold the 3 shards in use at once and as many "
                                          "downloaded ahead .* lower window or partitions"):
        ShardReader(f"{memory_url}/shards", window=2, cache_dir=str(tmp_path), cache_bytes=100)


def test_inspect_verify_and_preview_take_urls(src, tmp_path, memory_url):
    url = f"{memory_url}/shards"
    build(src, url, CONFIG, workers=1)
    runner = CliRunner()
    inspected = runner.invoke(cli, ["inspect", url, "--json"])
    assert inspected.exit_code == 0, inspected.output
    summary = json.loads(inspected.output)
    assert summary["splits"]["train"]["num_samples"] == 11
    assert summary["splits"]["train"]["bytes"] > 11 * 8 * 8 * 3 * 2
    verified = runner.invoke(cli, ["verify", url, "--deep", "--quiet"])
    assert verified.exit_code == 0 and verified.output.startswith("OK"), verified.output
    previewed = runner.invoke(cli, ["preview", url, "-o", str(tmp_path / "sheet.png")])
    assert previewed.exit_code == 0, previewed.output
    assert (tmp_path / "sheet.png").stat().st_size > 0
    fs = fsspec.filesystem("memory")
    fs.pipe(url.split("://")[1] + "/train-00009.npy", np.zeros(1).tobytes())
    fs.rm(url.split("://")[1] + "/train-00000.labels.npy")
    broken = runner.invoke(cli, ["verify", url, "--quiet"])
    assert broken.exit_code == 1
    assert "train-00009.npy: shard file not listed" in broken.output
    assert "train-00000.labels.npy: shard file is missing" in broken.output


def test_verify_of_a_url_holds_at_most_one_shard_file_on_disk(src, memory_url, monkeypatch):
    """A URL is verified as it is: its checksums are streamed, and a file whose header or values
    are read is on local disk alone, never a mirror of the whole dataset."""
    from imgshard.verify import verify_directory

    url = f"{memory_url}/shards"
    build(src, url, CONFIG, workers=1)
    kind = type(Location.of(url))
    real, downloaded, most = kind.download, [], [0]

    def counted(self, name, local_path):
        real(self, name, local_path)
        downloaded.append(local_path)
        most[0] = max(most[0], sum(os.path.exists(path) for path in downloaded))

    monkeypatch.setattr(kind, "download", counted)
    assert verify_directory(url, deep=True, workers=2) == []
    assert 0 < most[0] == 1


def test_verify_of_a_url_downloads_no_image_file(src, memory_url, monkeypatch):
    """Without --deep, an image file's header is read from the store and its checksum
    streamed: the file is never downloaded (only the small label files are)."""
    from imgshard.verify import verify_directory

    url = f"{memory_url}/shards"
    build(src, url, CONFIG, workers=1)
    kind = type(Location.of(url))
    real, downloaded = kind.download, []

    def recorded(self, name, local_path):
        downloaded.append(name)
        real(self, name, local_path)

    monkeypatch.setattr(kind, "download", recorded)
    assert verify_directory(url, workers=2) == []
    assert downloaded and all(name.endswith(".labels.npy") for name in downloaded), downloaded


def test_memory_urls_refuse_the_dask_executor(src, memory_url):
    with pytest.raises(ImgshardError, match="memory:// lives in this process only"):
        build(src, f"{memory_url}/out", CONFIG, executor="dask")


def test_a_cache_file_evicted_as_it_is_opened_is_fetched_again(src, tmp_path, memory_url, monkeypatch):
    """Another reader sharing the cache may delete a file between our finding and mapping it
    (and even fetch it back before we look again): the open is retried, not failed."""
    import imgshard.formats.npy as npy_format

    build(src, f"{memory_url}/shards", CONFIG, workers=1)
    evicted: list[str] = []
    open_shard = npy_format.open_shard

    def evicted_once(path, **expected):
        if path.endswith(".npy") and not evicted:
            evicted.append(path)
            os.remove(path)  # the other reader's eviction, just before our map
        return open_shard(path, **expected)

    monkeypatch.setattr(npy_format, "open_shard", evicted_once)
    with ShardReader(f"{memory_url}/shards", cache_dir=str(tmp_path / "cache")) as reader:
        assert sum(len(x) for x, _ in reader) == 11
        assert reader.cache.downloaded == len(reader.shards) * 2 + 1  # one file fetched twice
    assert evicted


def test_two_readers_may_share_a_small_cache(src, tmp_path, memory_url):
    """Each evicts files the other is about to use; both still read every sample once."""
    config = BuildConfig(size=(8, 8), shard_size=2)
    build(src, f"{memory_url}/shards", config, workers=1)
    build(src, str(tmp_path / "local"), config, workers=1)
    shard_bytes = 2 * 8 * 8 * 3 * 2 + 128 + 2 * 4 + 128
    readers = [ShardReader(f"{memory_url}/shards", batch_size=2, window=1, seed=seed,
                           partitions=1, cache_dir=str(tmp_path / "cache"),
                           cache_bytes=4 * shard_bytes)
               for seed in (0, 1)]
    seen: list[list[bytes]] = [[], []]
    for pair in zip(*readers):  # interleaved, batch by batch
        for which, (x, _) in enumerate(pair):
            seen[which] += [image.tobytes() for image in x]
    stored = sorted(image.tobytes() for x, _ in ShardReader(str(tmp_path / "local")) for image in x)
    assert sorted(seen[0]) == stored and sorted(seen[1]) == stored


def test_a_killed_download_leaves_nothing_for_long(src, tmp_path, memory_url):
    build(src, f"{memory_url}/shards", CONFIG, workers=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = cache / f".{'0' * 64}.{dead.pid}.1"
    orphan.write_bytes(b"half a download")
    with ShardReader(f"{memory_url}/shards", cache_dir=str(cache)) as reader:
        assert sum(len(x) for x, _ in reader) == 11
    assert not orphan.exists()


def test_readers_of_one_memory_object_each_get_their_own_position(memory_url, tmp_path):
    """memory:// hands every open() the same file object, so two readers (the cache's download
    threads) would move each other's position; imgshard reads from copies."""
    location = Location.of(memory_url)
    data = bytes(range(256)) * 64
    location.write_bytes("blob", data)
    first, second = location.open_read("blob"), location.open_read("blob")
    assert first.read(100) == data[:100]
    assert second.read(100) == data[:100]
    assert first.read(100) == data[100:200]
    assert location.sha256("blob") == location.sha256("blob")
    location.download("blob", str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == data


def test_a_storage_back_end_defined_later_is_chosen_for_its_urls(monkeypatch):
    """A new kind of location is one subclass: ``Location.of`` asks the latest kinds first,
    so one for ``hub://`` URLs wins over the fsspec fallback that takes any URL."""
    monkeypatch.setattr(Location, "kinds", list(Location.kinds))

    class HubLocation(FsspecLocation):
        @staticmethod
        def accepts(text: str) -> bool:
            return text.startswith("hub://")

    assert type(Location.of("hub://models/shards")) is HubLocation
    assert type(Location.of("s3://bucket/shards")) is FsspecLocation
    assert type(Location.of("shards")) is LocalLocation
