"""A shard directory is untrusted input: every tampering gives one line, never a traceback,
a hang, a read outside the directory or a huge allocation (issue 13, item 4).

Each tampering edits a copy of one small built dataset and returns what must be said about it;
every one is run through ``inspect``, ``verify`` and ``preview`` on the command line and through
``ShardReader`` (constructed, then one epoch read).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal

import numpy as np
import pytest
from conftest import edit_manifest as edit
from conftest import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgshard import ShardReader
from imgshard.errors import ImgshardError
from imgshard.manifest import ManifestError, read_manifest
from imgshard.storage.files import file_sha256

#: Seconds any one check may take: a FIFO opened for reading blocks forever without a writer.
WATCHDOG_SECONDS = 20


@pytest.fixture(autouse=True)
def watchdog():
    """Fail (instead of hanging the suite) when a check blocks, e.g. in ``open()`` of a FIFO."""
    def expire(signum, frame):
        raise TimeoutError(f"blocked for more than {WATCHDOG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(WATCHDOG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def first_shard(document) -> dict:
    return document["splits"]["train"]["shards"][0]


def setter(*keys):
    """A tampering that sets the value at ``keys`` (a path into the manifest) to its argument."""
    def tamper(value):
        def change(document):
            target = document
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = value
        return change
    return tamper


images = setter("splits", "train", "shards", 0, "images")
labels = setter("splits", "train", "shards", 0, "labels")
sha256 = setter("splits", "train", "shards", 0, "sha256")
shard_count = setter("splits", "train", "shards", 0, "num_samples")
split_count = setter("splits", "train", "num_samples")
top = {key: setter(key) for key in ("image_shape", "dtype", "class_names", "samples", "splits",
                                    "skipped", "format_version", "config", "source")}
config = {key: setter("config", key) for key in ("size", "no_labels", "shuffle", "rescale")}

#: (id, change to the parsed manifest, what the one line must say); all four interfaces refuse.
FIELD_TAMPERINGS = [
    ("images-parent", images("../x.npy"),
     "splits.train.shards[0].images is not a plain file name: '../x.npy'"),
    ("images-absolute", images("/etc/passwd"),
     "splits.train.shards[0].images is not a plain file name: '/etc/passwd'"),
    ("images-subdir", images("sub/x.npy"),
     "splits.train.shards[0].images is not a plain file name: 'sub/x.npy'"),
    ("images-dotdot", images(".."), "splits.train.shards[0].images is not a plain file name: '..'"),
    ("images-empty", images(""), "splits.train.shards[0].images is not a plain file name: ''"),
    ("images-backslash", images("..\\x.npy"),
     "splits.train.shards[0].images is not a plain file name: '..\\\\x.npy'"),
    ("images-nul", images("x\0.npy"),
     "splits.train.shards[0].images is not a plain file name: 'x\\x00.npy'"),
    ("images-number", images(7), "splits.train.shards[0].images is not a plain file name: 7"),
    ("labels-traversal", labels("../../etc/passwd"),
     "splits.train.shards[0].labels is not a plain file name: '../../etc/passwd'"),
    ("samples-traversal", top["samples"]("../samples.csv"),
     "samples is not a plain file name: '../samples.csv'"),
    ("samples-dot", top["samples"]("."), "samples is not a plain file name: '.'"),
    ("repeated-shard", lambda d: d["splits"]["train"]["shards"].append(first_shard(d)),
     "splits.train.shards[3].images names train-00000.npy, already listed"),
    ("shape-zero", top["image_shape"]([0, 8, 3]),
     "image_shape must be 3 whole numbers >= 1 (height, width, channels 1, 3 or 4), got [0, 8, 3]"),
    ("shape-two", top["image_shape"]([8, 8]),
     "image_shape must be 3 whole numbers >= 1 (height, width, channels 1, 3 or 4), got [8, 8]"),
    ("shape-bool", top["image_shape"]([True, 8, 3]),
     "image_shape must be 3 whole numbers >= 1 (height, width, channels 1, 3 or 4), got [true, 8, 3]"),
    ("shape-text", top["image_shape"]("8x8"),
     "image_shape must be 3 whole numbers >= 1 (height, width, channels 1, 3 or 4), got '8x8'"),
    ("shape-huge", top["image_shape"]([10**9, 10**9, 3]),
     "image_shape [1000000000, 1000000000, 3] makes images of 6000000000000000000 bytes, "
     "more than the 2147483648 imgshard reads"),
    ("shape-vs-config", top["image_shape"]([8, 8, 3]),
     "image_shape [8, 8, 3] disagrees with config (size [8, 10], color 'rgb')"),
    ("dtype-object", top["dtype"]("object"),
     "dtype must be one of float16, float32, uint8, got 'object'"),
    ("dtype-unicode", top["dtype"]("<U10"),
     "dtype must be one of float16, float32, uint8, got '<U10'"),
    ("dtype-float64", top["dtype"]("float64"),
     "dtype must be one of float16, float32, uint8, got 'float64'"),
    ("classes-text", top["class_names"]("abc"),
     "class_names must be null or a list of strings, got 'abc'"),
    ("classes-numbers", top["class_names"]([1, 2]),
     "class_names must be null or a list of strings, got [1, 2]"),
    ("classes-twice", top["class_names"](["blue", "green", "blue"]),
     "class_names names 'blue' twice"),
    ("split-count-negative", split_count(-1),
     "splits.train.num_samples must be a whole number from 0 to 1099511627776, got -1"),
    ("split-count-fraction", split_count(1.5),
     "splits.train.num_samples must be a whole number from 0 to 1099511627776, got 1.5"),
    ("split-count-text", split_count("3"),
     "splits.train.num_samples must be a whole number from 0 to 1099511627776, got '3'"),
    ("split-count-huge", split_count(10**30),
     "splits.train.num_samples must be a whole number from 0 to 1099511627776, got "
     "1000000000000000000000000000000"),
    ("split-count-bool", split_count(True),
     "splits.train.num_samples must be a whole number from 0 to 1099511627776, got true"),
    ("shard-count-negative", shard_count(-1),
     "splits.train.shards[0].num_samples must be a whole number from 0 to 1099511627776, got -1"),
    ("shard-count-huge", shard_count(10**30),
     "splits.train.shards[0].num_samples must be a whole number from 0 to 1099511627776, got "
     "1000000000000000000000000000000"),
    ("sha256-number", sha256(5),
     "splits.train.shards[0].sha256 must be 64 hexadecimal digits, got 5"),
    ("sha256-traversal", sha256("../../x"),
     "splits.train.shards[0].sha256 must be 64 hexadecimal digits, got '../../x'"),
    ("class-counts-negative", setter("splits", "train", "class_counts", "red")(-3),
     "splits.train.class_counts.red must be a whole number from 0 to 1099511627776, got -3"),
    ("splits-list", top["splits"]([]), "splits must be an object of split name to split, got []"),
    ("shards-not-list", setter("splits", "train", "shards")({}),
     "splits.train.shards must be a list, got {}"),
    ("shard-not-object", setter("splits", "train", "shards", 0)("x.npy"),
     "splits.train.shards[0] must be an object, got 'x.npy'"),
    ("shard-lacks-images", lambda d: first_shard(d).pop("images"),
     "splits.train.shards[0] lacks the key 'images'"),
    ("skipped-bad", top["skipped"]([{"path": 3}]),
     "skipped[0] must be an object with a text path and reason, got {\"path\": 3}"),
    ("version-bool", top["format_version"](True),
     "manifest format_version True is not supported"),
    ("source-number", top["source"](5), "source must be a string, got 5"),
    ("config-size-bool", config["size"](True),
     "config.size must be two whole numbers (height, width), got true"),
    ("config-no-labels-text", config["no_labels"]("false"),
     "config.no_labels must be true or false, got 'false'"),
    ("config-shuffle-number", config["shuffle"](1), "config.shuffle must be true or false, got 1"),
    ("config-rescale-text", config["rescale"]("0.5"), "config.rescale must be a number, got '0.5'"),
    ("config-unknown", setter("config", "sizes")([8, 8]),
     "config: unknown option 'sizes'"),
    ("config-range", config["size"]([0, 10]), "config: size must be at least 1x1"),
    ("config-not-object", top["config"]([]), "config must be an object, got []"),
]


def write_text(text: str):
    def tamper(copy):
        (copy / "manifest.json").write_text(text)
    return tamper


def keep_first(count: int):
    def tamper(copy):
        path = copy / "manifest.json"
        path.write_bytes(path.read_bytes()[:count])
    return tamper


#: (id, change to the manifest file, what the one line must say); all four interfaces refuse.
TEXT_TAMPERINGS = [
    ("deep-nesting", write_text("[" * 100_000), "manifest.json is nested too deeply to read"),
    ("deep-object", write_text('{"a":' * 100_000), "manifest.json is nested too deeply to read"),
    ("huge-integer", write_text('{"format": "imgshard", "x": 1' + "0" * 100_000 + "}"),
     "manifest.json is not valid JSON: a number of more than 4300 digits"),
    ("huge-float", write_text('{"format": "imgshard", "x": 1e999999}'),
     "manifest.json is not valid JSON: 1e999999 is not a finite number"),
    ("nan", write_text('{"format": "imgshard", "x": NaN}'),
     "manifest.json is not valid JSON: NaN is not a JSON number"),
    ("infinity", write_text('{"format": "imgshard", "x": -Infinity}'),
     "manifest.json is not valid JSON: -Infinity is not a JSON number"),
    ("truncated", keep_first(200), "manifest.json is not valid JSON"),
    ("empty", write_text(""), "manifest.json is not valid JSON"),
    ("binary", lambda copy: (copy / "manifest.json").write_bytes(b"\xff\xfe\x00{"),
     "manifest.json is not valid JSON"),
    ("list", write_text("[1, 2]"), "not an imgshard manifest"),
    ("fifo", lambda copy: (os.remove(copy / "manifest.json"), os.mkfifo(copy / "manifest.json")),
     "manifest.json is not a regular file (a FIFO)"),
    ("directory",
     lambda copy: (os.remove(copy / "manifest.json"), os.mkdir(copy / "manifest.json")),
     "manifest.json is not a regular file (a directory)"),
]


def reader_epoch(directory, **options) -> int:
    """Construct a reader and read one epoch; the number of samples served."""
    with ShardReader(str(directory), batch_size=4, prefetch=0, **options) as reader:
        return sum(len(x) for x, _ in reader)


def assert_refused_in_one_line(result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert expected in lines[0], result.output


def check_everywhere(copy, tmp_path, expected: str) -> None:
    for command in (["inspect", copy], ["inspect", copy, "--json"], ["verify", copy, "-q"],
                    ["preview", copy, "-o", tmp_path / "p.png"]):
        assert_refused_in_one_line(run(*command), expected)
    with pytest.raises(ManifestError) as refused:
        reader_epoch(copy)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("change, expected", [t[1:] for t in FIELD_TAMPERINGS],
                         ids=[t[0] for t in FIELD_TAMPERINGS])
def test_a_tampered_field_is_refused_in_one_line_naming_it(copy, tmp_path, change, expected):
    edit(copy, change)
    check_everywhere(copy, tmp_path, f"manifest.json: {expected}")


@pytest.mark.parametrize("tamper, expected", [t[1:] for t in TEXT_TAMPERINGS],
                         ids=[t[0] for t in TEXT_TAMPERINGS])
def test_pathological_json_is_refused_in_one_line(copy, tmp_path, tamper, expected):
    tamper(copy)
    check_everywhere(copy, tmp_path, expected)


def test_a_manifest_larger_than_the_limit_is_refused_unread(copy, monkeypatch):
    import imgshard.manifest

    monkeypatch.setattr(imgshard.manifest, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(ManifestError, match=r"manifest.json is larger than 100 bytes"):
        read_manifest(copy)


# -- files of the directory that are not what the manifest says ---------------------------------

def fifo_shard(copy):
    os.remove(copy / "train-00000.npy")
    os.mkfifo(copy / "train-00000.npy")
    return "train-00000.npy: not a regular file (a FIFO)"


def symlink_shard(copy):
    outside = copy.parent / "outside.npy"
    shutil.copy(copy / "train-00000.npy", outside)
    os.remove(copy / "train-00000.npy")
    os.symlink(outside, copy / "train-00000.npy")
    return "train-00000.npy: a symbolic link (imgshard follows no links in a shard directory)"


def directory_shard(copy):
    os.remove(copy / "train-00000.npy")
    os.mkdir(copy / "train-00000.npy")
    return "train-00000.npy: not a regular file (a directory)"


def relabel(value):
    """Write ``value`` as the first label of the first train shard and update its checksum."""
    def tamper(copy):
        path = copy / "train-00000.labels.npy"
        values = np.load(path)
        values[0] = value
        np.save(path, values)
        edit(copy, lambda d: first_shard(d).update(labels_sha256=file_sha256(str(path))))
        return f"train-00000.labels.npy: label {value} outside [0, 3)"
    return tamper


def overstated_count(copy):
    edit(copy, lambda d: (first_shard(d).update(num_samples=10**12),
                          d["splits"]["train"].update(num_samples=10**12 + 7)))
    return "train-00000.npy: shape (4, 8, 10, 3) but the manifest says (1000000000000, 8, 10, 3)"


def object_dtype_file(copy):
    """A shard saved with dtype object (np.load would need pickle) and its checksum updated."""
    path = copy / "train-00000.npy"
    with open(path, "wb") as stream:
        np.lib.format.write_array(stream, np.array([None] * 4, dtype=object), allow_pickle=True)
    edit(copy, lambda d: first_shard(d).update(sha256=file_sha256(str(path))))
    return "train-00000.npy:"


#: (id, tampering returning the message that verify lists and that preview (except for label
#: files, which it does not read) and the reader give in one line; inspect succeeds)
FILE_TAMPERINGS = [
    ("fifo", fifo_shard),
    ("symlink-outside", symlink_shard),
    ("directory", directory_shard),
    ("label-99", relabel(99)),
    ("label-negative", relabel(-1)),
    ("overstated-count", overstated_count),
    ("object-dtype", object_dtype_file),
]
PREVIEW_IGNORES = {"label-99", "label-negative"}  # preview draws from samples.csv, not label files


@pytest.mark.parametrize("tamper", [t[1] for t in FILE_TAMPERINGS],
                         ids=[t[0] for t in FILE_TAMPERINGS])
def test_a_tampered_file_is_refused_naming_it(copy, tmp_path, tamper, request):
    expected = tamper(copy)
    assert run("inspect", copy).exit_code == 0  # inspect never opens a shard
    result = run("verify", copy, "-q")
    assert result.exit_code == 1 and expected in result.output, result.output
    assert result.output.rstrip().endswith(("problem found", "problems found"))
    result = run("verify", copy, "-q", "--deep")
    assert result.exit_code == 1 and expected in result.output, result.output
    result = run("preview", copy, "-o", tmp_path / "p.png")
    if request.node.callspec.id in PREVIEW_IGNORES:
        assert result.exit_code == 0, result.output
    else:
        assert_refused_in_one_line(result, expected)
    with pytest.raises(ImgshardError) as refused:
        reader_epoch(copy)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_the_reader_checks_labels_even_without_a_checksum_update(copy):
    path = copy / "train-00001.labels.npy"
    values = np.load(path)
    values[-1] = 3
    np.save(path, values)
    with pytest.raises(ImgshardError, match=r"train-00001.labels.npy: label 3 outside \[0, 3\)"):
        reader_epoch(copy, shuffle=False)


def test_categorical_labels_do_not_allocate_a_square_of_the_class_count(copy):
    """One-hot labels of 20,000 classes: np.eye(20000) would be 1.6 GB; a batch needs 320 KB."""
    import tracemalloc

    edit(copy, setter("class_names")([f"c{i}" for i in range(20_000)]))
    with ShardReader(str(copy), batch_size=4, label_mode="categorical", shuffle=False,
                     prefetch=0) as reader:
        tracemalloc.start()
        try:
            x, y = next(iter(reader))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert y.dtype == np.float32 and y.shape == (4, 20_000)
    assert (y.sum(axis=1) == 1).all()
    assert peak < 10 * 4 * 20_000 * 4, peak


# -- verify=True: checksums on first map -------------------------------------------------------

def flip_a_pixel_byte(copy) -> None:
    path = copy / "train-00001.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))


def test_verify_true_refuses_a_changed_shard_naming_it(copy):
    flip_a_pixel_byte(copy)
    assert reader_epoch(copy) > 0  # off by default: a changed byte is served
    with pytest.raises(ImgshardError, match=r"train-00001.npy: checksum does not match the "
                                            r"manifest"):
        reader_epoch(copy, verify=True)


def test_verify_true_reads_a_clean_directory_hashing_each_file_once(built, monkeypatch):
    import imgshard.formats.npy

    hashed = []
    real = imgshard.formats.npy.descriptor_sha256
    monkeypatch.setattr(imgshard.formats.npy, "descriptor_sha256",
                        lambda fd: hashed.append(fd) or real(fd))
    options = dict(batch_size=2, window=1, prefetch=0, shuffle=False)
    with ShardReader(built, verify=True, **options) as reader:
        plain = [x.copy() for x, _ in ShardReader(built, **options)]
        for _ in range(2):
            assert all((a == b).all() for a, b in zip(plain, [x for x, _ in reader]))
    assert len(hashed) == 2 * len(read_manifest(built).splits["train"].shards)


# -- samples.csv --------------------------------------------------------------------------------

def rewrite_samples(change):
    """A tampering that rewrites the first train row of samples.csv with ``change``."""
    def tamper(copy):
        path = copy / "samples.csv"
        lines = path.read_text().splitlines()
        header = lines[0].split(",")
        index = next(i for i, line in enumerate(lines) if ",train," in f",{line},")
        row = dict(zip(header, lines[index].split(",")))
        change(row)
        lines[index] = ",".join(row.get(key, "") for key in header)
        path.write_text("\n".join(lines) + "\n")
    return tamper


#: (id, tampering of samples.csv, what preview's one line says, what verify lists)
SAMPLES_TAMPERINGS = [
    ("shard-outside", rewrite_samples(lambda r: r.update(shard="../../etc/passwd")),
     "is not a shard of split train", "rows name '../../etc/passwd'"),
    ("index-beyond", rewrite_samples(lambda r: r.update(index="99")),
     "index 99 is outside", "do not cover its"),
    ("index-negative", rewrite_samples(lambda r: r.update(index="-1")),
     "index -1 is outside", "do not cover its"),
    ("index-text", rewrite_samples(lambda r: r.update(index="x")),
     "index 'x' is not a whole number", "index 'x' is not a whole number"),
    ("label-beyond", rewrite_samples(lambda r: r.update(label="99")),
     "label 99 is outside [0, 3)", "disagree with"),
    ("label-text", rewrite_samples(lambda r: r.update(label="cat")),
     "label 'cat' is not a whole number", "label 'cat' is not a whole number"),
    ("no-columns", lambda copy: (copy / "samples.csv").write_text("a,b\n1,2\n"),
     "lacks the columns", "lacks the columns"),
    ("nul-bytes", lambda copy: (copy / "samples.csv").write_bytes(b"split,shard\n\0\0\n"),
     "samples.csv", "samples.csv"),
    ("fifo", lambda copy: (os.remove(copy / "samples.csv"), os.mkfifo(copy / "samples.csv")),
     "samples.csv: not a regular file (a FIFO)", "not a regular file (a FIFO)"),
]


@pytest.mark.parametrize("tamper, in_preview, in_verify", [t[1:] for t in SAMPLES_TAMPERINGS],
                         ids=[t[0] for t in SAMPLES_TAMPERINGS])
def test_a_hostile_samples_csv_gives_one_line(copy, tmp_path, tamper, in_preview, in_verify):
    tamper(copy)
    assert_refused_in_one_line(run("preview", copy, "-o", tmp_path / "p.png"), in_preview)
    result = run("verify", copy, "-q")
    assert result.exit_code == 1 and in_verify in result.output, result.output
    assert "Traceback" not in result.output
    assert reader_epoch(copy) == read_manifest(copy).splits["train"].num_samples


def test_verify_lists_unlisted_files_without_opening_them(copy):
    """An unlisted FIFO named like a shard is reported, never opened (which would block)."""
    os.mkfifo(copy / "train-00099.npy")
    (copy / "x\n-00001.npy").write_bytes(b"")
    result = run("verify", copy, "-q")
    assert result.exit_code == 1
    assert "train-00099.npy: shard file not listed in the manifest" in result.output


def test_verify_of_a_url_still_works_and_refuses_hostile_names(built, tmp_path):
    url = f"file://{built}"
    assert run("verify", url, "-q").exit_code == 0
    memory = "memory://hostile-manifest"
    from imgshard.storage import Location

    location = Location.of(memory)
    for name in os.listdir(built):
        location.write_bytes(name, open(os.path.join(built, name), "rb").read())
    assert run("verify", memory, "-q").exit_code == 0
    document = json.loads(location.read_bytes("manifest.json"))
    first_shard(document)["images"] = "../escape.npy"
    location.write_bytes("manifest.json", json.dumps(document).encode())
    assert_refused_in_one_line(run("verify", memory, "-q"),
                               "splits.train.shards[0].images is not a plain file name")
    assert_refused_in_one_line(run("inspect", memory), "is not a plain file name")


# -- any mutation of a valid manifest: a valid read or a ManifestError -------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "..", "../x.npy", "/etc/passwd", "train-00000.npy", "float16", "8x8",
                       "a" * 64, "0" * 64, "samples.csv", "manifest.json"])
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6),
                                                                       children, max_size=3),
    max_leaves=6)


def paths_of(document, prefix=()):
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from paths_of(value, (*prefix, index))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mutation_reads_validly_or_raises_manifest_error(built, copy, data):
    with open(os.path.join(built, "manifest.json")) as stream:
        document = json.load(stream)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in paths_of(document) if p]
        path = data.draw(st.sampled_from(paths))
        target = document
        for key in path[:-1]:
            target = target[key]
        if data.draw(st.booleans()) and isinstance(target, dict):
            del target[path[-1]]
        else:
            target[path[-1]] = data.draw(JSON_VALUES)
    (copy / "manifest.json").write_text(json.dumps(document))
    try:
        manifest = read_manifest(copy)
    except ManifestError as error:
        assert "\n" not in str(error)
        return
    for split in manifest.splits:
        with contextlib.suppress(ImgshardError):
            with ShardReader(str(copy), split=split, batch_size=3, prefetch=0,
                             label_mode="int" if manifest.class_names else None) as reader:
                for batch in reader:
                    images = batch[0] if isinstance(batch, tuple) else batch
                    assert images.shape[1:] == manifest.image_shape


def test_preview_refuses_a_sheet_too_large_before_reading_a_sample(copy, tmp_path):
    """200,000 class names (each needs a row): 432 million pixels, refused up front."""
    edit(copy, setter("class_names")([f"c{i}" for i in range(200_000)]))
    result = run("preview", copy, "-o", tmp_path / "p.png")
    assert_refused_in_one_line(result, "the contact sheet would have 432,000,000 pixels")
