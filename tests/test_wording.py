"""What the commands print says one of a thing in the singular and options as they are typed
(the README trial and the review found ``1 images``, ``1 classes``, ``--shuffle False``)."""

from __future__ import annotations

import pytest
from conftest import one_error_line, run, write_image

from imgshard.wording import counted, option_text, split_counts


@pytest.mark.parametrize("count, text", [(0, "0 classes"), (1, "1 class"), (1000, "1,000 classes")])
def test_counted_takes_an_irregular_plural(count, text):
    assert counted(count, "class", "classes") == text


@pytest.mark.parametrize("counts, text", [({"train": 1}, "train 1 image"),
                                          ({"train": 1, "val": 0}, "train 1, val 0 images"),
                                          ({"train": 1200, "val": 3}, "train 1,200, val 3 images"),
                                          ({}, "no images")])
def test_split_counts(counts, text):
    assert split_counts(counts) == text


@pytest.fixture
def one_image(tmp_path):
    write_image(str(tmp_path / "src" / "a" / "x.png"), size=(9, 7), seed=0)
    out = tmp_path / "out"
    assert run("build", tmp_path / "src", out, "--size", "4", "-q").exit_code == 0
    return tmp_path / "src", out


def test_a_build_and_an_append_of_one_image(one_image, tmp_path):
    src, out = one_image
    built = run("build", src, tmp_path / "again", "--size", "4")
    assert f"Built {tmp_path / 'again'}: train 1 image" in built.output, built.output
    write_image(str(src / "a" / "y.png"), size=(9, 7), seed=1)
    appended = run("append", src, out)
    assert f"Appended to {out}: train 1 image, 0 new files skipped" in appended.output, \
        appended.output


def test_an_append_of_nothing_new_says_so_in_a_dry_run(one_image):
    src, out = one_image
    assert "Would append nothing: no new files" in run("append", src, out, "--dry-run").output


def test_a_refused_flag_is_shown_as_it_is_typed(one_image):
    src, out = one_image
    one_error_line(run("append", src, out, "--no-shuffle"),
                   "--no-shuffle differs from the dataset's --shuffle")


def test_a_merge_of_one_class_in_one_shard(one_image, tmp_path):
    src, out = one_image
    merged = run("merge", out, "-o", tmp_path / "merged")
    assert "1 image in 1 shard of 256, 1 class (" in merged.output, merged.output
    assert "Merged 1 dataset into" in merged.output, merged.output


def test_an_append_counts_what_it_decoded_not_what_it_planned(one_image):
    """A new file that fails to decode is a skip, not an image added (README trial: ``train 2
    images, 0 new files skipped`` for one good PNG and one broken JPEG)."""
    src, out = one_image
    write_image(str(src / "a" / "y.png"), size=(9, 7), seed=1)
    (src / "a" / "junk.jpg").write_bytes(b"not a jpeg")
    appended = run("append", src, out)
    assert f"Appended to {out}: train 1 image, 1 new file skipped" in appended.output, \
        appended.output


def test_an_append_names_the_option_that_differs(one_image):
    """``--dtype uint8`` on a float16 dataset was refused as ``--bit-depth 16 differs from the
    dataset's 16`` (a uint8 config leaves its bit depth out of the record)."""
    src, out = one_image
    one_error_line(run("append", src, out, "--dtype", "uint8"),
                   "--dtype uint8 differs from the dataset's float16")


def test_inspect_shows_the_options_as_they_are_typed(one_image):
    """Not Python's ``size=[4, 4]``, ``rescale=0.00392156862745098``, ``val_split=None``."""
    _, out = one_image
    options = next(line for line in run("inspect", out).output.splitlines()
                   if line.startswith("options: "))
    for typed in ("size=4x4", "rescale=1/255", "val_split=none", "shuffle=true"):
        assert typed in options.split(", ") or f"options: {typed}" in options, options


@pytest.mark.parametrize("value, text", [(1 / 255, "1/255"), (2 / 255, "0.00784313725490196"),
                                         (0.5, "0.5"), (0.2, "0.2"), (1.0, "1.0"), (-1.0, "-1.0"),
                                         (True, "true"), (None, "none")])
def test_option_text_of_a_number(value, text):
    assert option_text("rescale", value) == text


def test_a_folder_without_a_manifest_is_not_told_to_resume(one_image, tmp_path):
    """An image folder given as a dataset is not a build to resume (README trial); an
    interrupted build's output is."""
    src, out = one_image
    result = run("inspect", src)
    one_error_line(result, "is not a shard directory")
    assert "--resume" not in result.output
    (out / "manifest.json").unlink()
    (out / ".imgshard-progress.jsonl").write_text('{"plan": 1}\n')
    one_error_line(run("inspect", out), "its build did not finish (run `imgshard build ... "
                                        "--resume` to complete it)")


@pytest.mark.parametrize("name, kind", [("p.png", "PNG"), ("p.JPG", "JPEG"), ("p.jpeg", "JPEG")])
def test_preview_writes_the_format_its_name_says(one_image, tmp_path, name, kind):
    """``-o p.jpg`` wrote PNG data under a .jpg name (README trial)."""
    from PIL import Image

    _, out = one_image
    assert run("preview", out, "-o", tmp_path / name).exit_code == 0
    with Image.open(tmp_path / name) as image:
        assert image.format == kind


def test_preview_refuses_a_name_of_another_format(one_image, tmp_path):
    _, out = one_image
    one_error_line(run("preview", out, "-o", tmp_path / "p.gif"),
                   "-o: name a .png or .jpg file")
    assert not (tmp_path / "p.gif").exists()


@pytest.mark.parametrize("classes", ["a,zebra", "zebra"])
def test_a_class_named_by_classes_without_a_folder_is_refused(one_image, tmp_path, classes):
    """A typo in --classes made an empty class silently, or (alone) said that the files of the
    real folders are 'not in --classes' (README trial). An empty folder is still a class."""
    src, _ = one_image
    result = run("build", src, tmp_path / "typo", "--size", "4", "--classes", classes)
    one_error_line(result, "--classes names 'zebra', which is no class folder of SRC (its "
                           "folders: a)")
    (src / "zebra").mkdir()
    assert run("build", src, tmp_path / "empty", "--size", "4", "--classes", "a,zebra",
               "-q").exit_code == 0
