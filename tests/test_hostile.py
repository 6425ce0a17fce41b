"""Hostile input: every odd or broken file becomes correct pixels or a skip with its reason.

The corpus is generated here; ``EXPECTED`` is the outcome written down for each file.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from imgshard import BuildConfig, build, read_manifest

SAMPLE = "sample"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(rows, 9)) + png_chunk(b"IEND", b""))


def bomb() -> bytes:
    """A ~20 KB 1-bit PNG that decodes to 400 megapixels."""
    side = 20_000
    row = b"\x00" + b"\x00" * (side // 8)
    return png(side, side, 1, 0, row * side)


def rgb16(values: np.ndarray) -> bytes:
    height, width, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))
    return png(width, height, 16, 2, rows)


def save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width=32, height=24) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    pixels = np.stack([np.tile(x, (height, 1)), np.tile(y[:, None], (1, width)),
                       np.full((height, width), 128, np.uint8)], axis=2)
    return Image.fromarray(pixels)


def ycck_jpeg() -> bytes:
    """A JPEG whose Adobe marker says YCCK (transform 2): Pillow must decode it, not crash."""
    data = bytearray(save(gradient().convert("CMYK"), "JPEG", quality=95))
    adobe = data.find(b"Adobe")
    data[adobe + 11] = 2
    return bytes(data)


def corpus() -> dict[bytes, tuple[bytes, str]]:
    """File name (bytes, relative to SRC) -> (content, expected outcome)."""
    jpeg = save(gradient(), "JPEG", quality=95)
    png_bytes = save(gradient(), "PNG")
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 50, 50] + [0] * 762)
    frames = [Image.new("RGB", (8, 8), c) for c in ((250, 0, 0), (0, 0, 250))]
    pages = [Image.new("RGB", (8, 8), c) for c in ((0, 250, 0), (0, 0, 250))]
    exif = Image.new("RGB", (8, 4), (10, 20, 30)).getexif()
    exif[0x0112] = 6
    files = {
        b"a/truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        b"a/truncated.png": (png_bytes[: len(png_bytes) // 2], "truncated"),
        b"a/zero.png": (b"", "empty file"),
        b"a/text.jpg": (b"just some text, really", "cannot decode: not a recognised image format"),
        b"a/random.png": (os.urandom(300), "cannot decode: not a recognised image format"),
        b"a/bomb.png": (bomb(), "too many pixels"),
        b"a/cmyk.jpg": (save(gradient().convert("CMYK"), "JPEG", quality=95), SAMPLE),
        b"a/ycck.jpg": (ycck_jpeg(), SAMPLE),
        b"a/gray16.png": (save(Image.fromarray(np.full((4, 4), 65535, np.uint16)), "PNG"), SAMPLE),
        b"a/rgb16.png": (rgb16(np.full((4, 4, 3), 65535, np.uint16)), SAMPLE),
        b"a/palette-alpha.png": (save(palette, "PNG", transparency=0), SAMPLE),
        b"a/one-bit.png": (save(Image.new("1", (8, 8), 1), "PNG"), SAMPLE),
        b"a/anim.gif": (save(frames[0], "GIF", save_all=True, append_images=frames[1:]), SAMPLE),
        b"a/anim.webp": (save(frames[0], "WEBP", save_all=True, append_images=frames[1:],
                              lossless=True), SAMPLE),
        b"a/pages.tif": (save(pages[0], "TIFF", save_all=True, append_images=pages[1:]), SAMPLE),
        b"a/exif6.jpg": (save(Image.new("RGB", (8, 4), (10, 20, 30)), "JPEG", exif=exif), SAMPLE),
        b"a/tall.png": (save(Image.new("RGB", (1, 4000), (9, 9, 9)), "PNG"), SAMPLE),
        b"a/wide.png": (save(Image.new("RGB", (4000, 1), (9, 9, 9)), "PNG"), SAMPLE),
        b"a/one.png": (save(Image.new("RGB", (1, 1), (77, 88, 99)), "PNG"), SAMPLE),
        b"a/\xff\xfe-latin1.png": (png_bytes, SAMPLE),
        "a/caf\u00e9 \u65e5\u672c.png".encode(): (png_bytes, SAMPLE),
        b"a/it's \"quoted\" name.png": (png_bytes, SAMPLE),
        b"broken-only/x.jpg": (b"\xff\xd8\xff garbage", "cannot decode: not a recognised image format"),
    }
    return files


EXPECTED_PIXELS = {  # first pixel of selected samples, as stored uint8 values
    "a/gray16.png": [255, 255, 255],
    "a/rgb16.png": [255, 255, 255],
    "a/palette-alpha.png": [200, 50, 50],
    "a/one-bit.png": [255, 255, 255],
    "a/anim.gif": [250, 0, 0],
    "a/pages.tif": [0, 250, 0],
    "a/one.png": [77, 88, 99],
    "a/tall.png": [9, 9, 9],
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    src = os.path.join(os.fsencode(root), b"src")
    for name, (content, _) in corpus().items():
        path = os.path.join(src, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(content)
    os.makedirs(os.path.join(src, b"empty-class"))
    os.symlink(os.path.join(src, b"a"), os.path.join(src, b"a", b"loop"))
    unreadable = os.path.join(src, b"a", b"locked.png")
    with open(unreadable, "wb") as stream:
        stream.write(corpus()[b"a/one.png"][0])
    os.chmod(unreadable, 0)
    out = str(root / "out")
    with concurrent.futures.ThreadPoolExecutor(1) as watchdog:  # a hang fails, not blocks CI
        building = watchdog.submit(build, os.fsdecode(src), out,
                                   BuildConfig(size=(8, 8), dtype="uint8", follow_links=True),
                                   workers=2)
        manifest = building.result(timeout=120).manifest
    return os.fsdecode(src), out, manifest


def samples(out) -> dict[str, np.ndarray]:
    rows = {}
    with open(os.path.join(out, "samples.csv"), newline="", encoding="utf-8",
              errors="surrogateescape") as stream:
        for row in csv.DictReader(stream):
            rows[row["path"]] = np.load(os.path.join(out, row["shard"]))[int(row["index"])]
    return rows


def test_every_hostile_file_has_its_written_down_outcome(hostile):
    src, out, manifest = hostile
    built = samples(out)
    skipped = {skip.path: skip.reason for skip in manifest.skipped}
    for name, (_, expected) in corpus().items():
        path = os.fsdecode(name)
        if expected == SAMPLE:
            assert path in built, (path, skipped.get(path))
        else:
            assert skipped.get(path, "").startswith(expected), (path, skipped.get(path))
    assert skipped["a/loop/"] == "symbolic link loop"
    locked = "a/locked.png"
    if os.geteuid() == 0:  # root reads a chmod 000 file: it is an ordinary sample then
        assert locked in built
    else:
        assert skipped[locked] == "cannot read: permission denied"
    assert manifest.class_names == ["a", "broken-only", "empty-class"]
    assert manifest.splits["train"].class_counts["broken-only"] == 0


def test_hostile_pixels_are_right(hostile):
    _, out, _ = hostile
    built = samples(out)
    for path, first in EXPECTED_PIXELS.items():
        assert built[path][0, 0].tolist() == first, path
    turned = built["a/exif6.jpg"]
    assert turned.shape == (8, 8, 3)
    assert np.abs(turned.astype(int) - [10, 20, 30]).max() <= 3
    cmyk = built["a/cmyk.jpg"].astype(int)
    reference = np.asarray(Image.open(io.BytesIO(corpus()[b"a/cmyk.jpg"][0])).convert("RGB")
                           .resize((8, 8), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(cmyk - reference).max() <= 1


def test_every_file_is_accounted_for_and_names_round_trip(hostile):
    src, out, manifest = hostile
    files = set()
    for directory, folders, names in os.walk(os.fsencode(src)):
        folders[:] = [f for f in folders if not os.path.islink(os.path.join(directory, f))]
        files |= {os.fsdecode(os.path.relpath(os.path.join(directory, n), os.fsencode(src)))
                  for n in names}
    built = set(samples(out))
    skipped = {s.path for s in read_manifest(out).skipped}
    assert files <= built | skipped
    assert not built & skipped
    assert "a/\udcff\udcfe-latin1.png" in built
    assert "a/caf\u00e9 \u65e5\u672c.png" in built
