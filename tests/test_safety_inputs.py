"""Build inputs are hostile until checked: sources that change under a resume, config values of
the wrong type, labels files that point outside SRC, sizes and scales a machine or a dtype cannot
hold, trees deeper than the stack, special files, closed pipes and secrets in error messages."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid

import pytest

import imgshard.executors.local as executor_module
import imgshard.resources as resources
from imgshard import BuildConfig, build, plan
from imgshard.config import ConfigError, load_toml
from imgshard.labels_file import LabelsFileError, read_labels_csv
from imgshard.layout import SOURCES_NAME
from imgshard.resume import ResumeError
from imgshard.scan import scan
from imgshard.storage import Location, describe_error

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

from conftest import disk_full_at, one_error_line, run, stop_at_call, write_image

build_module = importlib.import_module("imgshard.build")  # imgshard.build is the function
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))






# -- 3. --resume refuses sources that changed ---------------------------------------------------

CONFIG = BuildConfig(size=(8, 8), shard_size=2, shuffle=False)


@pytest.fixture
def interrupted(tmp_path):
    """SRC with a broken file, and OUT holding a build interrupted after its first shard."""
    src = tmp_path / "src"
    for number in range(6):
        write_image(str(src / "c" / f"{number:03d}.png"), colour=(number, 2, 3))
    (src / "c" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(str(src), str(out), CONFIG, workers=1, progress=stop_at_call(2))
    assert os.path.exists(out / SOURCES_NAME)
    return src, out


def resume(src, out, config=CONFIG):
    return build(str(src), str(out), config, workers=1, resume=True)


def keep_size_touch(path) -> None:
    """Rewrite ``path`` with other bytes of the same size, then bump its mtime by 1 ns only."""
    info = os.stat(path)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 1
    open(path, "wb").write(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1))


@pytest.mark.parametrize("change, named", [
    (lambda src: write_image(str(src / "c" / "000.png"), colour=(200, 2, 3)),
     "c/000.png changed"),
    (lambda src: keep_size_touch(src / "c" / "004.png"), "c/004.png changed"),
    (lambda src: write_image(str(src / "c" / "broken.png"), colour=(9, 9, 9)),  # repaired
     "c/broken.png changed"),
    (lambda src: os.remove(src / "c" / "005.png"), "c/005.png was removed"),
    (lambda src: write_image(str(src / "c" / "0035.png"), colour=(9, 9, 9)),
     "c/0035.png was added"),
    (lambda src: (src / "c" / "notes.txt").write_text("x"), "c/notes.txt was added"),
])
def test_resume_refuses_any_changed_added_or_removed_source_file(interrupted, change, named):
    src, out = interrupted
    change(src)
    with pytest.raises(ResumeError) as caught:
        resume(src, out)
    message = str(caught.value)
    assert message.startswith("refusing to resume: ") and named in message
    assert "\n" not in message


def test_an_unchanged_source_resumes_and_the_sources_record_goes_with_the_log(interrupted):
    src, out = interrupted
    resume(src, out)
    assert not os.path.exists(out / SOURCES_NAME)
    assert not os.path.exists(out / ".imgshard-progress.jsonl")


def test_resume_refuses_a_labels_file_whose_content_changed(tmp_path):
    src = tmp_path / "src"
    for number in range(6):
        write_image(str(src / f"{number}.png"), colour=(number, 2, 3))
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{n}.png,{'ab'[n % 2]}\n" for n in range(6)))
    config = BuildConfig(size=(8, 8), shard_size=2, labels=str(labels))
    with pytest.raises(KeyboardInterrupt):
        build(str(src), str(tmp_path / "out"), config, workers=1, progress=stop_at_call(2))
    labels.write_text("".join(f"{n}.png,{'ba'[n % 2]}\n" for n in range(6)))
    with pytest.raises(ResumeError, match="labels file .* changed"):
        resume(src, tmp_path / "out", config)


def test_a_resume_of_a_build_without_its_sources_record_is_refused(interrupted):
    src, out = interrupted
    os.remove(out / SOURCES_NAME)
    with pytest.raises(ResumeError, match="no record of its source files"):
        resume(src, out)


# -- 5. config values are type-checked ----------------------------------------------------------

@pytest.mark.parametrize("line, key", [
    ('no_labels = "false"', "no_labels"),
    ("size = true", "size"),
    ("size = [true, 4]", "size"),
    ("size = 1.5", "size"),
    ("shard_size = 1.5", "shard_size"),
    ("shard_size = true", "shard_size"),
    ('rescale = "x"', "rescale"),
    ("offset = false", "offset"),
    ("seed = true", "seed"),
    ("seed = 1.0", "seed"),
    ("classes = 5", "classes"),
    ("classes = [1, 2]", "classes"),
    ('workers = "2"', "workers"),
    ("workers = true", "workers"),
    ("shuffle = 1", "shuffle"),
    ('follow_links = "yes"', "follow_links"),
    ("max_pixels = 2.5", "max_pixels"),
    ('val_split = "0.2"', "val_split"),
    ("color = 3", "color"),
    ("dtype = [1]", "dtype"),
    ("labels = 5", "labels"),
])
def test_a_config_value_of_the_wrong_type_is_one_line_naming_the_key(tmp_path, line, key):
    write_image(str(tmp_path / "src" / "c" / "a.png"))
    (tmp_path / "c.toml").write_text(line + "\n")
    result = run("build", tmp_path / "src", tmp_path / "out", "--config", tmp_path / "c.toml",
                 "--dry-run")
    one_error_line(result, key)
    assert not os.path.exists(tmp_path / "out")


def test_from_dict_checks_types_too_and_accepts_ints_for_floats():
    with pytest.raises(ConfigError, match="no_labels"):
        BuildConfig.from_dict({"no_labels": "false"})
    with pytest.raises(ConfigError, match="shuffle"):
        BuildConfig(shuffle="no")
    assert BuildConfig.from_dict({"rescale": 1, "offset": 0, "val_split": 0.5}).rescale == 1


# -- 5. labels CSV ------------------------------------------------------------------------------

def test_a_labels_file_with_a_byte_order_mark_is_read(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes("path,label\nc/a.png,x\n./d/b.png,y\n".encode("utf-8-sig"))
    assert read_labels_csv(str(labels)) == {"c/a.png": ("x",), "d/b.png": ("y",)}
    labels.write_bytes("c/a.png,x\n".encode("utf-8-sig"))
    assert read_labels_csv(str(labels)) == {"c/a.png": ("x",)}


def test_a_hidden_path_in_a_labels_file_keeps_its_dot(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(".hidden/x.png,a\n..dots.png,b\n")
    assert read_labels_csv(str(labels)) == {".hidden/x.png": ("a",), "..dots.png": ("b",)}


@pytest.mark.parametrize("path", ["../x.png", "/etc/x.png", "a/../../x.png", "c/../x.png",
                                  "C:/x.png", "c:x.png", "\\\\server\\share\\x.png",
                                  "..\\x.png", "\\x.png", "./../x.png"])
def test_a_labels_path_that_leaves_src_is_an_error_naming_the_row(tmp_path, path):
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\nok.png,a\n{path},b\n")
    with pytest.raises(LabelsFileError, match="row 3") as caught:
        read_labels_csv(str(labels))
    assert "\n" not in str(caught.value)


# -- 5. scale, memory, workers ------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    dict(dtype="float16", rescale=1000.0),
    dict(dtype="float16", rescale=1 / 255, offset=65519.0),
    dict(dtype="float32", rescale=1e37),
    dict(dtype="float16", rescale=-300.0),
])
def test_a_rescale_or_offset_that_overflows_the_dtype_is_refused(options):
    with pytest.raises(ConfigError, match="overflow"):
        BuildConfig(**options)


def test_a_scale_that_fits_is_accepted():
    BuildConfig(dtype="float16", rescale=200.0)
    BuildConfig(dtype="float32", rescale=1e30)


def test_a_size_too_big_for_memory_is_refused_before_any_work(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(executor_module, "started_pool", lambda n: started.append(n))
    write_image(str(tmp_path / "src" / "c" / "a.png"))
    result = run("build", tmp_path / "src", tmp_path / "out", "--size", "100000x100000",
                 "--workers", "2")
    one_error_line(result, "100000x100000", "GB")
    assert started == [] and not os.path.exists(tmp_path / "out")
    result = run("build", tmp_path / "src", tmp_path / "out", "--size", "100000x100000",
                 "--dry-run")
    assert result.exit_code == 1
    assert "60,000,000,000 bytes" in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ")


def test_workers_beyond_the_cores_and_the_tasks_are_clamped(tmp_path, monkeypatch):
    started, pools = [], []
    monkeypatch.setattr(executor_module, "started_pool", lambda n: started.append(n))
    real_pool = executor_module.process_pool
    monkeypatch.setattr(executor_module, "process_pool",
                        lambda n: pools.append(n) or real_pool(min(n, 2)))
    for number in range(3):
        write_image(str(tmp_path / "src" / "c" / f"{number}.png"))
    result = run("build", tmp_path / "src", tmp_path / "out", "--workers", "300", "-q",
                 "--size", "8", "--shard-size", "1")
    assert result.exit_code == 0, result.output
    cores = resources.default_workers()
    assert started and all(n <= cores for n in started)
    assert all(n <= 3 for n in pools)
    build(str(tmp_path / "src"), str(tmp_path / "lib"), BuildConfig(size=(8, 8), shard_size=1),
          workers=300)
    assert all(n <= cores for n in started) and all(n <= 3 for n in pools)


# -- 5. deep trees and special files ------------------------------------------------------------

def make_deep_tree(root, depth: int, name: str) -> None:
    """``root/name/name/...`` ``depth`` levels deep, an image on top and a file at the bottom
    (made with relative paths, so deeper than the OS allows for one path)."""
    write_image(str(root / "c" / "top.png"))
    here = os.getcwd()
    os.chdir(root / "c")
    try:
        for _ in range(depth):
            os.mkdir(name)
            os.chdir(name)
        open("bottom.png", "wb").close()
    finally:
        os.chdir(here)


def remove_deep_tree(folder: str) -> None:
    """Remove a tree too deep for ``shutil.rmtree``'s recursion, level by level."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        depth = 0
        while True:
            names = os.listdir(".")
            folders = [n for n in names if os.path.isdir(n)]
            for n in names:
                if n not in folders:
                    os.remove(n)
            if not folders:
                break
            os.chdir(folders[0])
            depth += 1
        for _ in range(depth):
            child = os.path.basename(os.getcwd())
            os.chdir("..")
            os.rmdir(child)
    finally:
        os.chdir(here)


def test_a_tree_deeper_than_the_recursion_and_path_limits_scans_with_skips(tmp_path):
    make_deep_tree(tmp_path / "src", 1500, "ddd")
    try:
        result = scan(str(tmp_path / "src"), BuildConfig())
    finally:
        remove_deep_tree(str(tmp_path / "src" / "c"))
    assert [s.path for s in result.splits["train"]] == ["c/top.png"]
    too_long = [s for s in result.skipped if "File name too long" in s.reason]
    assert len(too_long) == 1 and too_long[0].path.startswith("c/ddd/ddd/")


def test_the_iterative_walk_keeps_order_and_reasons(tmp_path):
    from imgshard.storage.tree import walk

    for rel in ["a/x.png", "a-b.png", "a/b/c.png", "a/.h/x.png", "a/.y.png", "b/z.png", "ab/q.png"]:
        write_image(str(tmp_path / rel))
    os.symlink(tmp_path / "b", tmp_path / "a" / "link")
    os.mkfifo(tmp_path / "a" / "fifo.png")
    assert [(e.path, e.reason) for e in walk(str(tmp_path), follow_links=False)] == [
        ("a/.h/", "hidden folder"), ("a/.y.png", "hidden file"), ("a/b/c.png", None),
        ("a/fifo.png", "not a regular file"),
        ("a/link", "symbolic link (not followed; use --follow-links)"), ("a/x.png", None),
        ("a-b.png", None), ("ab/q.png", None), ("b/z.png", None)]


def replace_by_special(path, kind: str):
    os.remove(path)
    if kind == "fifo":
        os.mkfifo(path)
        return None
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    return server


class Watchdog:
    """Raise TimeoutError in the main thread after ``seconds`` (a blocked open() is aborted)."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __enter__(self):
        def fire(signum, frame):
            raise TimeoutError("the build hung")
        self.previous = signal.signal(signal.SIGALRM, fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc_info):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_source_replaced_by_a_special_file_after_the_scan_is_a_skip(kind):
    # a short folder: a unix socket's path must fit in 108 bytes
    folder = os.path.join("/tmp", f"imgshard-special-{uuid.uuid4().hex[:8]}")
    try:
        src, out = os.path.join(folder, "src"), os.path.join(folder, "out")
        for number in range(3):
            write_image(os.path.join(src, "c", f"{number}.png"), colour=(1, 2, 3))
        config = BuildConfig(size=(4, 4))
        scanned = plan(src, config)
        server = replace_by_special(os.path.join(src, "c", "1.png"), kind)
        with Watchdog(20):
            manifest = build(src, out, config, workers=1, build_plan=scanned).manifest
        if server is not None:
            server.close()
        assert [(s.path, s.reason) for s in manifest.skipped] == [
            ("c/1.png", "not a regular file")]
        assert manifest.splits["train"].num_samples == 2
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- 7. a closed pipe, secrets, dry runs --------------------------------------------------------

@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipe")
    for number in range(4):
        write_image(str(base / "src" / f"c{number % 2}" / f"{number}.png"))
    assert run("build", base / "src", base / "out", "--size", "8", "-q").exit_code == 0
    return base


@pytest.mark.parametrize("args", [["inspect", "{out}"], ["inspect", "{out}", "--json"],
                                  ["verify", "{out}", "-q"], ["--help"],
                                  ["build", "{src}", "{base}/dry", "--dry-run"]])
def test_a_closed_pipe_ends_every_command_quietly(small_build, args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head -1` does once it has its line
    args = [a.format(out=small_build / "out", src=small_build / "src", base=small_build)
            for a in args]
    done = subprocess.run([sys.executable, "-m", "imgshard", *args], stdout=write_end,
                          stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT},
                          timeout=120)
    os.close(write_end)
    assert done.stderr == b""
    assert done.returncode != 0 or args == ["--help"]


def test_a_real_pipe_into_head_prints_no_error(small_build):
    command = f"'{sys.executable}' -m imgshard inspect '{small_build / 'out'}' | head -c1"
    done = subprocess.run(command, shell=True, capture_output=True, env={**os.environ, "PYTHONPATH": ROOT},
                          timeout=120)
    assert done.stderr == b"" and len(done.stdout) == 1


def test_secret_like_option_values_of_any_type_are_masked_and_endpoints_kept():
    options = {"endpoint_url": "http://minio.example:9000", "key": "AKIA1234ABCD",
               "secret": 987654321, "client_kwargs": {"aws_session_token": 31415926.5,
                                                      "region_name": "eu-west-1"},
               "password": True, "anon": False}
    error = RuntimeError("PUT http://minio.example:9000/b/x denied: key AKIA1234ABCD "
                         "secret 987654321 token 31415926.5 in eu-west-1 password True")
    message = describe_error(error, options)
    for secret in ("AKIA1234ABCD", "987654321", "31415926.5", "True"):
        assert secret not in message
    assert "http://minio.example:9000" in message and "eu-west-1" in message


def test_a_failing_store_names_its_endpoint_but_not_its_secrets():
    location = Location.of("memory://bucket/x", {"endpoint_url": "http://minio.example:9000",
                                                 "token": 12345678})

    def fail():
        raise RuntimeError("cannot reach http://minio.example:9000 with 12345678")

    with pytest.raises(Exception) as caught:
        location._call(fail)
    assert "http://minio.example:9000" in str(caught.value) and "12345678" not in str(caught.value)


def test_dry_run_says_how_many_files_it_did_not_open_and_how_many_are_empty(tmp_path):
    for number in range(3):
        (tmp_path / "src" / "c").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / "c" / f"empty{number}.png").write_bytes(b"")
    write_image(str(tmp_path / "src" / "c" / "real.png"))
    result = run("build", tmp_path / "src", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    assert ("Not opened: 4 image files (a dry run decodes nothing); 3 of them are empty and "
            "will be skipped") in result.output
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("options", [
    dict(dtype="float16", rescale=0.0),
    dict(dtype="float32", rescale=0.0, offset=0.5),
    dict(dtype="float16", rescale=1 / 255, offset=1000.0),
    dict(dtype="float16", rescale=1e-9),
])
def test_a_scale_that_merges_pixel_values_is_refused(options):
    """Two pixel values stored alike would silently change every image that holds them."""
    with pytest.raises(ConfigError, match="same stored value"):
        BuildConfig(**options)


def test_the_shipped_configs_keep_every_pixel_value_apart():
    for name in sorted(os.listdir(CONFIGS)):
        BuildConfig.from_dict(load_toml(os.path.join(CONFIGS, name)))
    BuildConfig(dtype="float16", rescale=2 / 255, offset=-1.0)
    BuildConfig(dtype="float16", rescale=-1.0, offset=255.0)


@pytest.mark.parametrize("args", [
    ["build", "src", "out", "--color", "purple"],
    ["build", "src", "out", "--no-such-option"],
    ["build", "src"],
    ["verify", "d", "--workers", "0"],
    ["no-such-command"],
])
def test_a_usage_error_is_one_line_too(args):
    """click's own checks (choices, unknown options, missing arguments) printed its usage
    banner and a hint over four lines."""
    result = run(*args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and "--help" in lines[0], lines[0]


def test_a_build_whose_every_image_is_skipped_says_why_and_stays_resumable(tmp_path):
    """Every image over --max-pixels: the error said 'could be decoded', and left a visible
    samples.csv, so that --resume then failed on a missing partial file."""
    for number in range(3):
        write_image(str(tmp_path / "src" / "c" / f"{number}.png"), size=(10, 10))
    args = ["build", tmp_path / "src", tmp_path / "out", "--size", "8", "--max-pixels", "10",
            "-q", "--workers", "1"]
    one_error_line(run(*args), "none of the 3 images became a sample",
                   "3 skipped as too many pixels", "c/0.png")
    assert "samples.csv" not in os.listdir(tmp_path / "out")
    one_error_line(run(*args, "--resume"), "none of the 3 images became a sample")
    result = run("build", tmp_path / "src", tmp_path / "out", "--size", "8", "--overwrite", "-q")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("options, expected", [
    (dict(no_labels=True, classes=("a",)), "--classes and --no-labels exclude each other"),
])
def test_an_option_that_would_be_ignored_is_refused(options, expected):
    """A new user's --dtype uint8 --rescale 0.5 was accepted and silently ignored (it is no
    longer ignored: a reader serves a uint8 dataset as floats through them, see
    test_uint8_values.py)."""
    with pytest.raises(ConfigError, match=expected):
        BuildConfig(**options)


def test_a_folder_of_images_without_class_folders_says_what_to_do(tmp_path):
    """It said 'no images found' of a folder holding ten images (they were skipped as not in
    a class folder), and a folder of linked class folders said the same."""
    for number in range(3):
        write_image(str(tmp_path / "flat" / f"{number}.png"), size=(10, 10))
    one_error_line(run("build", tmp_path / "flat", tmp_path / "out", "-q"),
                   "3 of 3 skipped files are not in a class folder", "0.png",
                   "use --no-labels")
    (tmp_path / "linked").mkdir()
    os.symlink(tmp_path / "flat", tmp_path / "linked" / "cats")
    one_error_line(run("build", tmp_path / "linked", tmp_path / "out2", "-q"),
                   "symbolic link", "use --follow-links")


def test_a_build_whose_every_image_fails_names_the_reason_once(tmp_path):
    write_image(str(tmp_path / "src" / "c" / "0.png"), size=(10, 10))
    result = run("build", tmp_path / "src", tmp_path / "out", "--size", "8", "--max-pixels", "10",
                 "-q", "--workers", "1")
    one_error_line(result, "none of the 1 image became a sample: 1 skipped as too many pixels, "
                   "e.g. c/0.png (10x10 > 10)")
    assert result.output.count("too many pixels") == 1, result.output


def test_building_again_into_an_interrupted_build_points_to_resume(tmp_path, monkeypatch):
    for number in range(4):
        write_image(str(tmp_path / "src" / "c" / f"{number}.png"), size=(10, 10), seed=number)
    build_module = importlib.import_module("imgshard.build")
    monkeypatch.setattr(build_module, "run_shard_task", disk_full_at(1))
    with pytest.raises(OSError):
        build(str(tmp_path / "src"), str(tmp_path / "out"),
              BuildConfig(size=(8, 8), shard_size=1), workers=1)
    monkeypatch.undo()
    one_error_line(run("build", tmp_path / "src", tmp_path / "out", "--size", "8",
                       "--shard-size", "1", "-q"), "--overwrite", "or --resume")
    write_image(str(tmp_path / "other" / "x.png"), size=(4, 4))
    result = run("build", tmp_path / "src", tmp_path / "other", "-q")
    one_error_line(result, "is not empty")
    assert "--resume" not in result.output
