"""A hostile trial of the build's inputs: config and labels files that are special files,
TOML shapes the type checks did not foresee, scales that silently blank every image, and
progress logs edited by hand. Each must end in one line (or a refusal), never a traceback, a
hang, a huge allocation or a resume that writes shards without end."""

from __future__ import annotations

import gzip
import json
import os
import re
import threading

import pytest
from conftest import one_error_line, run, stop_at_call, write_image

from imgshard import BuildConfig, ImgshardError, build
from imgshard.config import ConfigError
from imgshard.layout import PROGRESS_NAME, SOURCES_NAME
from imgshard.resume import ResumeError

CONFIG = BuildConfig(size=(8, 8), shard_size=2, shuffle=False)






def finishes_within(seconds: float, function):
    """Run ``function`` in a thread; fail (instead of hanging the suite) if it blocks."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def src(tmp_path):
    for number in range(2):
        write_image(str(tmp_path / "src" / "c" / f"{number}.png"), colour=(number, 2, 3))
    return tmp_path / "src"


# -- config and labels files that are not regular files ----------------------------------------

@pytest.mark.parametrize("option", ["--labels", "--config"])
def test_a_fifo_as_labels_or_config_file_is_one_line_not_a_hang(src, tmp_path, option):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = finishes_within(10, lambda: run("build", src, tmp_path / "out", "--dry-run",
                                             option, fifo))
    one_error_line(result, str(fifo), "not a regular file")


@pytest.mark.parametrize("option", ["--labels", "--config"])
def test_an_endless_device_as_labels_or_config_file_is_one_line(src, tmp_path, option):
    result = finishes_within(10, lambda: run("build", src, tmp_path / "out", "--dry-run",
                                             option, "/dev/zero"))
    one_error_line(result, "/dev/zero", "not a regular file")


@pytest.mark.parametrize("body", ["build = 5", "build = []", 'build = "x"'])
def test_a_build_key_that_is_not_a_table_is_one_line(src, tmp_path, body):
    config = tmp_path / "c.toml"
    config.write_text(body + "\n")
    one_error_line(run("build", src, tmp_path / "out", "--dry-run", "--config", config),
                   "build")


@pytest.mark.parametrize("classes", [",", " , "])
def test_classes_that_name_no_class_are_one_line_not_no_images_found(src, tmp_path, classes):
    one_error_line(run("build", src, tmp_path / "out", "--dry-run", "--classes", classes),
                   "--classes names no class")


@pytest.mark.parametrize("label", [b"caf\xe9", b"c\x00", b"a\x1b[31m"])
def test_a_label_that_is_not_printable_utf8_is_an_error_naming_the_row(tmp_path, label):
    from imgshard.labels_file import LabelsFileError, parse_labels_csv

    with pytest.raises(LabelsFileError, match="row 2: the label .* is not printable"):
        parse_labels_csv(b"a.png,dog\n\xff.png," + label + b"\n", "labels.csv")


# -- a scale that stores every pixel as the same value -----------------------------------------

@pytest.mark.parametrize("options", [dict(rescale=1e-45), dict(rescale=1e-12, offset=0.0),
                                     dict(rescale=0.0), dict(rescale=1e-9, offset=1000.0,
                                                             dtype="float32")])
def test_a_scale_that_stores_every_pixel_value_alike_is_refused(options):
    with pytest.raises(ConfigError, match="same stored value"):
        BuildConfig(**options)


def test_a_tiny_scale_that_still_tells_pixels_apart_is_accepted():
    BuildConfig(rescale=1e-6, dtype="float32")
    BuildConfig(rescale=1 / 255, offset=-0.5)


# -- a progress log edited by hand ---------------------------------------------------------------

@pytest.fixture
def interrupted(tmp_path):
    """SRC of six images, OUT holding a build interrupted after its first shard's checkpoint."""
    src = tmp_path / "src"
    for number in range(6):
        write_image(str(src / "c" / f"{number:03d}.png"), colour=(number, 2, 3))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(str(src), str(out), CONFIG, workers=1, progress=stop_at_call(2))
    return src, out


def edit_log(out, line: int, edit) -> None:
    path = out / PROGRESS_NAME
    lines = path.read_text().split("\n")
    lines[line] = edit(lines[line])
    path.write_text("\n".join(lines))


def edit_json(change):
    def edit(line: str) -> str:
        record = json.loads(line)
        change(record)
        return json.dumps(record)
    return edit


def resume_in_time(src, out):
    """Resume, failing the test (not filling the disk) if the resume runs away."""
    return finishes_within(60, lambda: build(str(src), str(out), CONFIG, workers=1, resume=True))


PLAN_EDITS = {
    "a list": lambda line: "[1, 2]",
    "a number": lambda line: "5",
    "a string": lambda line: '"plan"',
    "deeply nested": lambda line: "[" * 100_000 + "]" * 100_000,
    "config a number": edit_json(lambda p: p.update(config=5)),
    "config a list": edit_json(lambda p: p.update(config=[])),
    "no config": edit_json(lambda p: p.pop("config")),
    "no files": edit_json(lambda p: p.pop("files")),
    "pieces a string": edit_json(lambda p: p.update(pieces="2")),
    "pieces a float": edit_json(lambda p: p.update(pieces=1.5)),
    "pieces null": edit_json(lambda p: p.update(pieces=None)),
    "pieces true": edit_json(lambda p: p.update(pieces=True)),
    "pieces 0": edit_json(lambda p: p.update(pieces=0)),
    "pieces -1": edit_json(lambda p: p.update(pieces=-1)),
    "pieces 2": edit_json(lambda p: p.update(pieces=2)),
    "pieces huge": edit_json(lambda p: p.update(pieces=10**9)),
    "labels_sha256 a list": edit_json(lambda p: p.update(labels_sha256=[])),
}


CHECKPOINT_EDITS = {
    "a list": lambda line: "[]",
    "shards a number": edit_json(lambda c: c.update(shards=5)),
    "no tasks_done": edit_json(lambda c: c.pop("tasks_done")),
    "tasks_done 2": edit_json(lambda c: c.update(tasks_done=2)),
    "tasks_done huge": edit_json(lambda c: c.update(tasks_done=10**9)),
    "inputs_seen 5": edit_json(lambda c: c.update(inputs_seen=5)),
    "counts a list": edit_json(lambda c: c.update(counts=[])),
}


LOG_EDITS = {**{f"plan: {name}": (0, change) for name, change in PLAN_EDITS.items()},
             **{f"checkpoint: {name}": (1, change) for name, change in CHECKPOINT_EDITS.items()}}


@pytest.mark.parametrize("line, edit", LOG_EDITS.values(), ids=LOG_EDITS)
def test_a_hand_edited_progress_log_is_a_one_line_refusal(interrupted, line, edit):
    """Line 0 is the plan, line 1 the first checkpoint."""
    src, out = interrupted
    edit_log(out, line, edit)
    with pytest.raises(ResumeError) as caught:
        resume_in_time(src, out)
    assert "\n" not in str(caught.value)
    assert not any(name.startswith("train-00003") for name in os.listdir(out))


def test_a_deeply_nested_sources_record_is_a_refusal(interrupted):
    src, out = interrupted
    (out / SOURCES_NAME).write_bytes(gzip.compress(b"[" * 100_000 + b"]" * 100_000 + b"\n"))
    with pytest.raises(ResumeError, match="record of its source files is damaged"):
        resume_in_time(src, out)


def test_a_sources_record_replaced_by_a_fifo_is_a_refusal_not_a_hang(interrupted):
    src, out = interrupted
    os.remove(out / SOURCES_NAME)
    os.mkfifo(out / SOURCES_NAME)
    # refused by the check that OUT holds only regular files, before the record is read
    with pytest.raises(ImgshardError, match=re.escape(SOURCES_NAME) + ".*not a file"):
        resume_in_time(src, out)


# -- secrets spelled otherwise in an error message -----------------------------------------------

@pytest.mark.parametrize("shown", [
    "https://acct.blob.core.windows.net/c?sig=ab%2Fcd%2Bef%3D%3D&sv=2020",  # percent-encoded
    "https://acct.blob.core.windows.net/c?sig=ab%2Fcd%2Bef%3D%3D".replace("%2F", "/"),
    "options {'credential': 'pq/cdxy\\\\w'}",  # a repr doubles the backslash
])
def test_a_secret_is_masked_however_the_message_spells_it(shown):
    from imgshard.storage import describe_error

    options = {"sas_token": "ab/cd+ef==", "credential": "pq/cdxy\\w",
               "endpoint_url": "https://acct.blob.core.windows.net"}
    message = describe_error(OSError(shown), options)
    assert "cd" not in message, message
    assert ("acct.blob.core.windows.net" in message) == ("acct" in shown), message
