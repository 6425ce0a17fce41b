"""A hostile tester's findings against the untrusted-directory checks (issue 13, item 4).

Each test is one class of attack that got past the first round of checks: control characters
that split a one-line error or reach the terminal, JSON keys given twice, ``.npy`` headers that
make numpy read gigabytes, a ``samples.csv`` whose header or rows cost time or memory without
bound, a reader state or option that ends in a traceback, and counts whose epoch order cannot
fit in memory.
"""

from __future__ import annotations

import json
import os
import struct
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import edit_manifest as edit
from conftest import run

from imgshard import ShardReader
from imgshard.cli import cli
from imgshard.errors import ImgshardError, ShardError
from imgshard.formats.npy import npy_header, open_shard
from imgshard.manifest import ManifestError, read_manifest
from imgshard.storage import Location
from imgshard.storage.files import file_sha256


def first_shard(document) -> dict:
    return document["splits"]["train"]["shards"][0]


def one_line_everywhere(copy, tmp_path, expected: str) -> None:
    """inspect, verify, preview and the reader each refuse in exactly one line."""
    for command in (["inspect", copy], ["verify", copy, "-q"],
                    ["preview", copy, "-o", tmp_path / "p.png"]):
        result = run(*command)
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("Error: "), \
            result.output
        assert expected in result.output, result.output
    with pytest.raises(ImgshardError) as refused:
        ShardReader(str(copy))
    assert "\n" not in str(refused.value) and expected in str(refused.value)


# -- control characters: one line stays one line, the terminal gets no escapes ------------------

CONTROL_TAMPERINGS = [
    ("newline-in-shard-name", lambda d: first_shard(d).update(images="a\nError: fake.npy"),
     "splits.train.shards[0].images is not a plain file name: 'a\\nError: fake.npy'"),
    ("escape-in-labels-name", lambda d: first_shard(d).update(labels="x\x1b[2J.npy"),
     "splits.train.shards[0].labels is not a plain file name: 'x\\x1b[2J.npy'"),
    ("newline-in-split-name", lambda d: d["splits"].update({"x\ny": 5}),
     "splits: 'x\\ny' is not a plain split name"),
    ("newline-in-a-valid-split", lambda d: d["splits"].update({"x\ny": d["splits"].pop("val")}),
     "splits: 'x\\ny' is not a plain split name"),
    ("surrogate-in-shard-name", lambda d: first_shard(d).update(images="a\ud800.npy"),
     "splits.train.shards[0].images is not a plain file name: 'a\\ud800.npy'"),
    ("right-to-left-override-in-name", lambda d: first_shard(d).update(images="x\u202eypn.npy"),
     "splits.train.shards[0].images is not a plain file name: 'x\\u202eypn.npy'"),
    ("long-name", lambda d: first_shard(d).update(images="x" * 256),
     "splits.train.shards[0].images is not a plain file name: 'xxxxx"),
    ("newline-in-class-count", lambda d: d["splits"]["train"]["class_counts"].update({"r\nd": -1}),
     "splits.train.class_counts.'r\\nd' must be a whole number"),
]


@pytest.mark.parametrize("change, expected", [t[1:] for t in CONTROL_TAMPERINGS],
                         ids=[t[0] for t in CONTROL_TAMPERINGS])
def test_control_characters_never_split_the_one_line(copy, tmp_path, change, expected):
    edit(copy, change)
    one_line_everywhere(copy, tmp_path, expected)


def test_inspect_prints_no_terminal_escape_from_the_manifest(copy):
    """A manifest's text (source, class names, skip reasons) reaches the terminal escaped: an
    OSC or CSI sequence could retitle the window, rewrite the screen or set the clipboard."""
    def change(document):
        document["source"] = "\x1b]0;pwned\x07/data"
        document["skipped"] = [{"path": "a\x1b[2Jb.png", "reason": "bad\rEvil"}]
    edit(copy, change)
    result = run("inspect", copy)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\r" not in result.output and "\x07" not in result.output
    assert "source: \\x1b]0;pwned\\x07/data" in result.output


# -- JSON keys given twice ----------------------------------------------------------------------

def test_a_key_given_twice_is_refused(copy, tmp_path):
    """json.loads keeps the last of two equal keys, other JSON readers the first: a manifest
    must not say two things at once (the checked value may not be the one another tool uses)."""
    path = copy / "manifest.json"
    text = path.read_text()
    assert text.count('"dtype": "float16"') >= 1
    path.write_text(text.replace('"dtype": "float16"', '"dtype": "object", "dtype": "float16"', 1))
    one_line_everywhere(copy, tmp_path, "manifest.json is not valid JSON: the key 'dtype' is "
                                        "given twice")


# -- .npy headers -------------------------------------------------------------------------------

def test_a_header_length_of_4_gb_is_refused_before_numpy_reads_it(tmp_path):
    """A version 2 header may claim 4 GB; numpy reads it whole before its own size check."""
    path = tmp_path / "huge-header.npy"
    with open(path, "wb") as stream:
        stream.write(b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFF_FFF0))
        stream.truncate(0x1_0000_0100)  # sparse: costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(ShardError, match=r"header of 4294967280 bytes"):
            open_shard(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_a_fortran_ordered_shard_is_refused(copy):
    """imgshard writes C order only; a Fortran-ordered shard has its samples spread over the
    whole file (a batch would touch every page) and raw row reads would get wrong pixels."""
    path = copy / "train-00000.npy"
    array = np.load(path)
    with open(path, "wb") as stream:
        np.lib.format.write_array(stream, np.asfortranarray(array))
    edit(copy, lambda d: first_shard(d).update(sha256=file_sha256(str(path))))
    with pytest.raises(ShardError, match=r"train-00000.npy: .*Fortran order"):
        ShardReader(str(copy), shuffle=False, prefetch=0).get_batch(0, 0)
    result = run("verify", copy, "-q")
    assert result.exit_code == 1 and "Fortran order" in result.output


def test_preview_refuses_a_channel_count_it_cannot_draw(copy, tmp_path):
    """Without a ``color`` in the config, image_shape once allowed 2 channels: a KeyError in
    preview. imgshard writes 1, 3 or 4 channels only."""
    for name in os.listdir(copy):
        if name.endswith(".npy") and not name.endswith(".labels.npy"):
            np.save(copy / name, np.load(copy / name)[..., :2].copy())

    def change(document):
        document["image_shape"][2] = 2
        del document["config"]["color"]
        for split in document["splits"].values():
            for shard in split["shards"]:
                shard["sha256"] = file_sha256(str(copy / shard["images"]))
    edit(copy, change)
    one_line_everywhere(copy, tmp_path, "image_shape")


# -- samples.csv --------------------------------------------------------------------------------

def test_a_samples_header_of_a_million_columns_costs_no_time_per_row(copy, tmp_path):
    """csv.DictReader builds a dict of every header column for every row: with 10**5 extra
    columns 2,000 rows took minutes."""
    path = copy / "samples.csv"
    lines = path.read_bytes().splitlines()
    extra = b",".join(b"c%d" % i for i in range(100_000))
    rows = lines[1:] * 200
    path.write_bytes(b"\n".join([lines[0] + b"," + extra, *rows]) + b"\n")
    import time

    start = time.monotonic()
    result = run("verify", copy, "-q")
    assert time.monotonic() - start < 10
    assert result.exit_code == 1 and "samples.csv" in result.output


@pytest.mark.parametrize("record", [b"," * (50 << 20), b'"a\n",' * (10 << 20)],
                         ids=["one-gigantic-line", "quoted-newlines"])
def test_a_gigantic_samples_row_is_refused_in_bounded_memory(copy, tmp_path, record):
    with open(copy / "samples.csv", "ab") as stream:
        stream.write(record + b"\n")
    tracemalloc.start()
    try:
        result = run("preview", copy, "-o", tmp_path / "p.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "samples.csv: line 17: a row of more than 1048576 bytes" in result.output
    assert peak < 64 << 20, peak


def test_cr_only_newlines_in_samples_csv_still_read(copy, tmp_path):
    path = copy / "samples.csv"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    assert run("verify", copy, "-q").exit_code == 0
    assert run("preview", copy, "-o", tmp_path / "p.png").exit_code == 0


# -- reader options and state: a ReaderError, never a traceback ---------------------------------

HOSTILE_STATES = [{"epoch": -1, "batches": 0}, {"epoch": 0, "batches": -3},
                  {"epoch": 0, "batches": 10**30}, {"epoch": "x", "batches": 0},
                  {"epoch": 1.7, "batches": 2}, {"epoch": True, "batches": 0}, {}, None, [1],
                  {"epoch": 0, "batches": 0, "seed": "a"}]


@pytest.mark.parametrize("state", HOSTILE_STATES, ids=[repr(s) for s in HOSTILE_STATES])
def test_a_hostile_state_is_refused_in_one_line(built, state):
    reader = ShardReader(built, batch_size=2, prefetch=0)
    before = reader.state_dict()
    with pytest.raises(ImgshardError) as refused:
        reader.load_state_dict(state)
    assert "\n" not in str(refused.value)
    assert reader.state_dict() == before and before["epoch"] == before["batches"] == 0


def test_a_state_at_the_end_of_an_epoch_is_accepted(built):
    reader = ShardReader(built, batch_size=2, prefetch=0, shuffle=False)
    reader.load_state_dict({"epoch": 3, "batches": len(reader), "seed": 0})
    assert list(reader) == [] and reader.state_dict()["epoch"] == 4


HOSTILE_OPTIONS = [dict(seed=-1), dict(seed="a"), dict(seed=1.5), dict(window="a"),
                   dict(window=1.5), dict(prefetch="2"), dict(batch_size=True), dict(split=[]),
                   dict(dtype="object"), dict(dtype="U3"), dict(dtype="nonsense"),
                   dict(verify="no")]


@pytest.mark.parametrize("options", HOSTILE_OPTIONS, ids=[repr(o) for o in HOSTILE_OPTIONS])
def test_a_hostile_option_is_refused_in_one_line(built, options):
    with pytest.raises(ImgshardError) as refused:
        with ShardReader(built, **{"prefetch": 0, **options}) as reader:
            next(iter(reader))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("call", ["set_epoch", "get_batch"])
@pytest.mark.parametrize("epoch", [-1, "x", 2.5])
def test_a_hostile_epoch_is_refused_in_one_line(built, call, epoch):
    reader = ShardReader(built, prefetch=0)
    with pytest.raises(ImgshardError):
        reader.set_epoch(epoch) if call == "set_epoch" else reader.get_batch(epoch, 0)


def test_get_batch_with_an_index_that_is_not_a_number_is_an_index_error(built):
    with pytest.raises(IndexError):
        ShardReader(built, prefetch=0).get_batch(0, "a")


# -- counts that cannot fit in memory ------------------------------------------------------------

def sparse_split(copy, count: int) -> None:
    """One train shard of ``count`` 1x1x1 uint8 images, its files sparse (they cost no disk)."""
    for name in os.listdir(copy):
        if name.endswith(".npy"):
            os.remove(copy / name)
    for name, shape, dtype in (("train-00000.npy", (count, 1, 1, 1), "uint8"),
                               ("train-00000.labels.npy", (count,), "int32")):
        header = npy_header(shape, np.dtype(dtype))
        with open(copy / name, "wb") as stream:
            stream.write(header)
            stream.truncate(len(header) + count * np.dtype(dtype).itemsize)

    def change(document):
        document.update(image_shape=[1, 1, 1], dtype="uint8")
        document["config"].update(size=[1, 1], color="grayscale", dtype="uint8")
        document["splits"] = {"train": {"num_samples": count, "class_counts": None, "shards": [
            {"images": "train-00000.npy", "labels": "train-00000.labels.npy",
             "num_samples": count, "sha256": "0" * 64, "labels_sha256": "0" * 64}]}}
    edit(copy, change)


def test_a_split_whose_epoch_order_cannot_fit_in_memory_is_refused_up_front(copy):
    """2**37 samples backed by sparse files: the epoch order alone would take 1 TiB (once a
    MemoryError traceback on the first batch, or the OOM killer for a smaller claim)."""
    sparse_split(copy, 1 << 37)
    with pytest.raises(ImgshardError, match=r"split train of 137,438,953,472 samples needs "
                                            r"about [0-9,.]+ GB of memory"):
        ShardReader(str(copy), prefetch=0)


def test_batches_that_cannot_fit_in_memory_are_refused_up_front(copy, monkeypatch):
    import imgshard.reader.checks

    monkeypatch.setattr(imgshard.reader.checks, "available_memory", lambda: 100_000)
    with pytest.raises(ImgshardError, match=r"needs about 0.0 GB of memory"):
        ShardReader(str(copy), batch_size=1000, prefetch=2)
    monkeypatch.setattr(imgshard.reader.checks, "available_memory", lambda: 10**9)
    assert len(ShardReader(str(copy), batch_size=1000, prefetch=2)) == 1


def test_verify_counts_labels_without_a_python_object_per_label(copy):
    """verify once turned every label into a Python int (about 36 bytes each) to count them."""
    count = 1 << 22
    sparse_split(copy, count)
    import imgshard.verify

    tracemalloc.start()
    try:
        problems = list(imgshard.verify._check_files(Location.of(copy), read_manifest(copy)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problems == []
    assert peak < 4 * count, peak


# -- the manifest's own size ---------------------------------------------------------------------

def test_a_small_manifest_is_read_without_allocating_the_size_limit(copy):
    """``stream.read(limit + 1)`` allocated the whole 1 GiB limit for every manifest read."""
    tracemalloc.start()
    try:
        read_manifest(copy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


def test_a_manifest_of_1_gib_and_1_byte_is_refused_without_reading_it(copy, tmp_path):
    path = copy / "manifest.json"
    with open(path, "r+b") as stream:
        stream.truncate((1 << 30) + 1)  # sparse: the JSON text, then zeros
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError, match=r"larger than 1073741824 bytes"):
            read_manifest(copy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    result = run("inspect", copy)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output


@pytest.mark.parametrize("option", [["--seed", "-1"], ["--seed", "1.5"]])
def test_preview_refuses_a_hostile_seed_in_one_line(built, tmp_path, option):
    result = CliRunner().invoke(cli, ["preview", built, "-o", str(tmp_path / "p.png"), *option])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, ValueError), result.exception
    assert "Error: " in result.output


# -- files changed after the checks ------------------------------------------------------------

def test_a_label_rewritten_in_place_after_the_check_is_never_served(copy):
    """The labels were checked when mapped, then served from the shared map: a label written
    into the file afterwards reached the batch (and one-hot encoding raised an IndexError)."""
    reader = ShardReader(str(copy), batch_size=2, shuffle=False, window=1, prefetch=0)
    first = reader.get_batch(0, 0)[1]
    path = copy / "train-00000.labels.npy"
    offset = os.path.getsize(path) - 2 * 4  # the last two labels of the shard
    with open(path, "r+b") as stream:
        stream.seek(offset)
        stream.write(np.array([99, -5], dtype="<i4").tobytes())
    second = reader.get_batch(0, 1)[1]
    assert first.max() < 3 and 0 <= second.min() and second.max() < 3, second


@pytest.mark.parametrize("replacement", ["fifo", "symlink"])
def test_a_shard_swapped_after_construction_is_refused_not_followed(copy, replacement):
    reader = ShardReader(str(copy), batch_size=2, shuffle=False, window=1, prefetch=0)
    path = copy / "train-00001.npy"
    os.rename(path, copy.parent / "moved.npy")
    if replacement == "fifo":
        os.mkfifo(path)
    else:
        os.symlink(copy.parent / "moved.npy", path)
    with pytest.raises(ShardError, match="train-00001.npy: (not a regular file|a symbolic link)"):
        for index in range(len(reader)):
            reader.get_batch(0, index)


def test_samples_csv_rows_beyond_the_manifest_are_not_held_in_memory(copy, tmp_path):
    """verify kept every row of samples.csv in a list: a file of a million extra rows (a
    sparse-free 40 MB) cost hundreds of MB; now it stops at the first row too many."""
    path = copy / "samples.csv"
    with open(path, "ab") as stream:
        stream.write(b"blue/0.png,train,train-00000.npy,0,0\n" * 200_000)
    tracemalloc.start()
    try:
        result = run("verify", copy, "-q")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 1
    assert "samples.csv: line 17: more rows than the 15 samples the manifest lists" \
        in result.output, result.output
    assert peak < 8 << 20, peak
    result = run("preview", copy, "-o", tmp_path / "p.png")
    assert result.exit_code == 1 and "more rows than the 15 samples" in result.output


# -- a manifest whose parse would not fit in memory ---------------------------------------------

PARSE_COSTLY = {  # JSON shapes whose parse costs the most memory per byte, and a real one
    "empty lists": "[" + ",".join(["[]"] * 50_000) + "]",
    "nested lists": "[" + ",".join(["[[]]"] * 50_000) + "]",
    "small objects": "[" + ",".join(['{"a":{}}'] * 50_000) + "]",
    "unique strings": json.dumps([f"s{i}" for i in range(50_000)]),
    "non-ASCII strings": "[" + ",".join(['"\\u4e00"'] * 50_000) + "]",
    "floats": "[" + ",".join(["0.5"] * 50_000) + "]",
    "skips": json.dumps([{"path": f"c/{i:06d}.jpg", "reason": "empty file"}
                         for i in range(20_000)]),
}


@pytest.mark.parametrize("shape", sorted(PARSE_COSTLY))
def test_the_parse_memory_estimate_bounds_what_parsing_takes(shape):
    from imgshard.manifest import parse_json, parse_memory

    text = PARSE_COSTLY[shape].encode()
    tracemalloc.start()
    parse_json(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= parse_memory(text), shape
    if shape == "skips":  # what a real manifest is mostly made of: not refused for nothing
        assert parse_memory(text) <= 12 * len(text)


def test_a_manifest_whose_parse_cannot_fit_in_memory_is_refused(copy, monkeypatch):
    """A 90 MB manifest of ``[],[],...`` took 2 GB to parse: refused before, in one line."""
    import imgshard.manifest

    document = json.loads((copy / "manifest.json").read_text())
    document["padding"] = [[]] * 20_000
    (copy / "manifest.json").write_text(json.dumps(document))
    monkeypatch.setattr(imgshard.manifest, "available_memory", lambda: 1_000_000)
    with pytest.raises(ManifestError, match=r"manifest.json would take about .* of memory to "
                                            r"parse, more than the .* available"):
        read_manifest(copy)
    monkeypatch.setattr(imgshard.manifest, "available_memory", lambda: 10**9)
    assert read_manifest(copy).splits


@pytest.mark.parametrize("options, expected", [
    (dict(shuffle="no"), "shuffle must be True or False"),
    (dict(drop_remainder="no"), "drop_remainder must be True or False"),
    (dict(flip_horizontal="no"), "flip_horizontal must be True or False"),
    (dict(augment=5), "augment must be a callable"),
    (dict(dtype="int8"), "dtype int8 cannot hold the stored float16 values"),
    (dict(dtype="uint8"), "dtype uint8 cannot hold the stored float16 values"),
    (dict(dtype="float64", label_mode=None), None),
])
def test_a_reader_option_that_would_change_the_data_is_refused(built, options, expected):
    """Found by a new user: 'no' read as yes, and float16 pixels in [0, 1] served as int8
    zeros and ones without a word."""
    if expected is None:  # a wider dtype is fine
        assert ShardReader(built, **options).dtype == np.float64
        return
    with pytest.raises(ImgshardError, match=expected):
        ShardReader(built, **options)


def test_a_split_count_that_its_shards_do_not_hold_is_refused_by_the_reader(copy):
    edit(copy, lambda document: document["splits"]["train"].update(num_samples=7))
    with pytest.raises(ImgshardError, match=r"splits.train.num_samples says 7, its shards hold"):
        ShardReader(copy)


def test_preview_names_a_linked_samples_file_as_a_preview_error(copy, tmp_path):
    from imgshard.preview import PreviewError, write_preview

    os.replace(copy / "samples.csv", tmp_path / "elsewhere.csv")
    os.symlink(tmp_path / "elsewhere.csv", copy / "samples.csv")
    with pytest.raises(PreviewError, match="samples.csv: a symbolic link"):
        write_preview(str(copy), str(tmp_path / "p.png"))
