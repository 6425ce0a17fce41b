"""Full bit depth: 16-bit and float images keep their precision in float shards.

Every expected value is computed here with numpy (and Pillow's ``F`` mode for resampling) from
the values written into the file: ``(p16 / 257) * rescale + offset``, ``(f * 255) * rescale +
offset``. The files are written byte by byte (PNG, TIFF), so no decoder writes its own test.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from importlib.metadata import version

import numpy as np
import pytest
from conftest import comparable, edit_manifest, local_files, one_error_line, run
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from test_transform import exif_upright

from imgshard import BuildConfig, build, read_manifest
from imgshard.config import ConfigError
from imgshard.depth import NO_COLOUR_DECODER
from imgshard.merge import merge
from imgshard.merge_plan import MergeError
from imgshard.transform import SkipImage, load_pixels

FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST,
           "area": Image.Resampling.BOX}
PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def png16(values: np.ndarray, orientation: int | None = None) -> bytes:
    """A 16-bit PNG of ``values`` (H, W, C: gray, gray+alpha, RGB, RGBA), with an eXIf chunk
    when ``orientation`` is given."""
    height, width, channels = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    chunks = [(b"IHDR", header)]
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        chunks.append((b"eXIf", exif.tobytes()[6:]))  # without the JPEG's "Exif\0\0"
    chunks += [(b"IDAT", zlib.compress(rows)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks)


def tiff(values: np.ndarray, orientation: int | None = None) -> bytes:
    """An uncompressed little-endian baseline TIFF of ``values`` (H, W, C): uint16 or float32,
    gray (C = 1), RGB or RGBA."""
    height, width, channels = values.shape
    floating = values.dtype.kind == "f"
    data = values.astype("<f4" if floating else "<u2").tobytes()
    bits, sample_format = values.dtype.itemsize * 8, 3 if floating else 1
    entries = {256: (4, [width]), 257: (4, [height]), 258: (3, [bits] * channels),
               259: (3, [1]), 262: (3, [2 if channels >= 3 else 1]), 273: (4, [0]),
               277: (3, [channels]), 278: (4, [height]), 279: (4, [len(data)]), 284: (3, [1]),
               339: (3, [sample_format] * channels)}
    if orientation is not None:
        entries[274] = (3, [orientation])
    if channels == 4:
        entries[338] = (3, [2])  # unassociated alpha
    ifd_size = 2 + 12 * len(entries) + 4
    extra, extra_start = b"", 8 + ifd_size
    data_start = extra_start + sum(2 * len(v) for t, v in entries.values() if 2 * len(v) > 4)
    entries[273] = (4, [data_start])
    fields = b""
    for tag in sorted(entries):
        kind, items = entries[tag]
        packed = struct.pack(f"<{len(items)}{'H' if kind == 3 else 'I'}", *items)
        if len(packed) > 4:
            fields += struct.pack("<HHII", tag, kind, len(items), extra_start + len(extra))
            extra += packed
        else:
            fields += struct.pack("<HHI", tag, kind, len(items)) + packed.ljust(4, b"\0")
    ifd = struct.pack("<H", len(entries)) + fields + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd + extra + data


def write(path, content: bytes) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(content)
    return str(path)


def stored(pixels: np.ndarray, config: BuildConfig) -> np.ndarray:
    """What the worker writes for ``load_pixels``' result (see worker.run_shard_task)."""
    from imgshard.depth import store_values
    from imgshard.formats.npy import cast_table, store_pixels

    out = np.empty(config.image_shape, dtype=config.dtype)
    if pixels.dtype == np.uint8:
        store_pixels(pixels, cast_table(config), out)
    else:
        store_values(pixels, config.rescale, config.offset, out)
    return out


def expected(p16: np.ndarray, config: BuildConfig) -> np.ndarray:
    """The issue's formula: ``(p16 / 257) * rescale + offset``, in float64, cast once."""
    return ((p16.astype(np.float64) / 257) * config.rescale + config.offset).astype(config.dtype)


def gradient(bits: int, height: int = 16, width: int = 256) -> np.ndarray:
    """Every value of ``bits`` bits (as many as fit) in a row-major ramp, (H, W, 1) uint16."""
    ramp = np.linspace(0, 2 ** bits - 1, height * width).round().astype(np.uint16)
    return ramp.reshape(height, width, 1)


def f_resized(plane: np.ndarray, size: tuple[int, int], interpolation: str,
              box=None) -> np.ndarray:
    """Pillow's ``F``-mode resize of one float32 plane to ``size`` (W, H)."""
    image = Image.fromarray(plane.astype(np.float32))
    return np.asarray(image.resize(size, FILTERS[interpolation], box=box))


@pytest.mark.parametrize("fmt", ["png", "tif"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("bits", [12, 16])
def test_twelve_and_sixteen_bit_gradients_keep_their_values(tmp_path, fmt, dtype, bits):
    values = gradient(bits)
    write(tmp_path / "src" / f"ramp.{fmt}", png16(values) if fmt == "png" else tiff(values))
    config = BuildConfig(size=(16, 256), color="grayscale", dtype=dtype, no_labels=True)
    build(str(tmp_path / "src"), str(tmp_path / "out"), config, workers=1)
    shard = np.load(tmp_path / "out" / "train-00000.npy")[0]
    np.testing.assert_array_equal(shard, expected(values, config))
    assert len(np.unique(shard)) > 256
    eight_bit = np.unique(np.floor(values / 257 + 0.5))  # what an 8-bit build keeps
    assert len(np.unique(shard)) > len(eight_bit)


@pytest.mark.parametrize("interpolation", list(FILTERS))
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_resizing_keeps_the_precision(tmp_path, interpolation, dtype):
    values = gradient(16, 64, 64)
    path = write(tmp_path / "ramp.png", png16(values))
    config = BuildConfig(size=(24, 40), color="grayscale", dtype=dtype,
                         interpolation=interpolation)
    resized = f_resized(values[:, :, 0], (40, 24), interpolation)
    reference = np.clip(resized.astype(np.float64) / 257, 0, 255)
    out = stored(load_pixels(path, config), config)
    np.testing.assert_array_equal(out[:, :, 0], (reference * config.rescale).astype(dtype))
    assert len(np.unique(out)) > 256


@pytest.mark.parametrize("resize", ["stretch", "crop", "pad"])
def test_crop_and_pad_take_the_same_region_as_the_eight_bit_path(tmp_path, resize):
    rng = np.random.default_rng(5)
    values = rng.integers(0, 65536, (30, 60, 3), dtype=np.uint16)
    path = write(tmp_path / "wide.png", png16(values))
    config = BuildConfig(size=(20, 20), dtype="float32", resize=resize)
    pixels = load_pixels(path, config)
    planes = []
    for channel in range(3):
        plane = values[:, :, channel].astype(np.float32)
        if resize == "stretch":
            planes.append(f_resized(plane, (20, 20), "bilinear"))
        elif resize == "crop":  # the largest centred square of 60x30 is 30x30 at x=15
            planes.append(f_resized(plane[:, 15:45], (20, 20), "bilinear"))
        else:  # 60x30 fits as 20x10, centred 5 rows down, black around it
            canvas = np.zeros((20, 20), np.float32)
            canvas[5:15] = f_resized(plane, (20, 10), "bilinear")
            planes.append(canvas)
    reference = np.clip(np.stack(planes, axis=2).astype(np.float64) / 257, 0, 255)
    np.testing.assert_array_equal(pixels, reference)


def expansions(tmp_path, p8: np.ndarray) -> dict[str, tuple[str, str]]:
    """An 8-bit PNG of ``p8`` (H, W, C) and its 16-bit expansions ``257 * p8`` (PNG, TIFF)."""
    mode = {1: "L", 3: "RGB"}[p8.shape[2]]
    eight = str(tmp_path / "eight.png")
    Image.fromarray(p8[:, :, 0] if mode == "L" else p8, mode).save(eight)
    p16 = p8.astype(np.uint16) * 257
    return {"png": (eight, write(tmp_path / "deep.png", png16(p16))),
            "tif": (eight, write(tmp_path / "deep.tif", tiff(p16)))}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p8=arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6),
                                     st.sampled_from([1, 3]))),
       rescale=st.floats(1e-3, 10), offset=st.floats(-100, 100),
       dtype=st.sampled_from(["float32", "float16"]), color=st.sampled_from(["rgb", "grayscale"]))
def test_an_eight_bit_image_and_its_sixteen_bit_expansion_give_equal_floats(
        tmp_path, p8, rescale, offset, dtype, color):
    assume(p8.shape[2] == 1 or color == "rgb")  # rgb -> gray weighs in floats, not 8 bits
    try:
        config = BuildConfig(size=p8.shape[:2], dtype=dtype, rescale=rescale, offset=offset,
                             color=color)
    except ConfigError:  # a rescale the dtype cannot hold
        assume(False)
    for eight, deep in expansions(tmp_path, p8).values():
        assert load_pixels(deep, config).dtype == np.float64  # the full-depth path
        np.testing.assert_array_equal(stored(load_pixels(deep, config), config),
                                      stored(load_pixels(eight, config), config))
        nearest = BuildConfig(size=(7, 5), dtype=dtype, rescale=rescale, offset=offset,
                              color=color, interpolation="nearest")
        np.testing.assert_array_equal(stored(load_pixels(deep, nearest), nearest),
                                      stored(load_pixels(eight, nearest), nearest))


def test_float_tiffs_keep_their_values(tmp_path):
    rng = np.random.default_rng(7)
    values = rng.random((6, 9, 1), dtype=np.float32)
    values[0, :3, 0] = [-0.5, 1.5, np.nan]  # clipped to 0..1 as the 8-bit path does; NaN is 0
    path = write(tmp_path / "float.tif", tiff(values))
    assert Image.open(path).mode == "F"
    for config in (BuildConfig(size=(6, 9), color="grayscale", dtype="float32"),
                   BuildConfig(size=(6, 9), color="grayscale", dtype="float16", rescale=2 / 255,
                               offset=-1)):
        kept = np.clip(np.nan_to_num(values.astype(np.float64)), 0, 1)
        reference = ((kept * 255) * config.rescale + config.offset).astype(config.dtype)
        np.testing.assert_array_equal(stored(load_pixels(path, config), config), reference)
    out = stored(load_pixels(path, BuildConfig(size=(6, 9), color="grayscale", dtype="float32")),
                 BuildConfig(size=(6, 9), color="grayscale", dtype="float32"))
    np.testing.assert_allclose(out[1:], values[1:], rtol=1e-6)  # 0..1, as today's float output


def test_colour_conversions_keep_the_depth(tmp_path):
    rng = np.random.default_rng(11)
    rgba = rng.integers(0, 65536, (5, 7, 4), dtype=np.uint16)
    gray = rgba[:, :, :1]
    rgba_path = write(tmp_path / "rgba.png", png16(rgba))
    gray_path = write(tmp_path / "gray.tif", tiff(gray))
    size = dict(size=(5, 7), dtype="float32")
    as_rgb = load_pixels(gray_path, BuildConfig(color="rgb", **size))
    np.testing.assert_array_equal(as_rgb, np.repeat(gray / 257, 3, axis=2))
    as_rgba = load_pixels(gray_path, BuildConfig(color="rgba", **size))
    assert (as_rgba[:, :, 3] == 255).all()  # opaque: stored as exactly 1.0
    kept = load_pixels(rgba_path, BuildConfig(color="rgba", **size))
    np.testing.assert_array_equal(kept, rgba / 257)
    over_black = rgba[:, :, :3].astype(np.float32) * (rgba[:, :, 3:].astype(np.float32)
                                                      / np.float32(65535))
    np.testing.assert_array_equal(load_pixels(rgba_path, BuildConfig(color="rgb", **size)),
                                  over_black.astype(np.float64) / 257)
    red, green, blue = (over_black[:, :, i].astype(np.float64) for i in range(3))
    luma = ((red * 299 + green * 587 + blue * 114) / 1000).astype(np.float32)
    np.testing.assert_array_equal(load_pixels(rgba_path, BuildConfig(color="grayscale", **size)),
                                  luma[:, :, None].astype(np.float64) / 257)
    gray_alpha = write(tmp_path / "la.png", png16(rgba[:, :, 2:]))  # 16-bit gray with alpha
    over_black = rgba[:, :, 2:3].astype(np.float32) * (rgba[:, :, 3:].astype(np.float32)
                                                       / np.float32(65535))
    np.testing.assert_array_equal(load_pixels(gray_alpha, BuildConfig(color="grayscale", **size)),
                                  over_black.astype(np.float64) / 257)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["png", "tif"])
@pytest.mark.parametrize("channels", [1, 3])
def test_exif_orientation_of_deep_images(tmp_path, orientation, fmt, channels):
    rng = np.random.default_rng(orientation)
    values = rng.integers(0, 65536, (6, 10, channels), dtype=np.uint16)
    if channels == 1:
        values = np.repeat(values, 3, axis=2)[:, :, :1]
    writer = png16 if fmt == "png" else tiff
    path = write(tmp_path / f"turned.{fmt}", writer(values, orientation))
    upright = exif_upright(values, orientation)
    for resize in ("stretch", "crop"):
        config = BuildConfig(size=upright.shape[:2], dtype="float32", interpolation="nearest",
                             resize=resize)
        np.testing.assert_array_equal(load_pixels(path, config),
                                      np.repeat(upright, 3 // channels, axis=2) / 257)


def test_uint8_and_bit_depth_8_builds_round_as_before(tmp_path):
    """Today's 8-bit path: p16 / 257 rounded (gray), Pillow's high byte (16-bit colour)."""
    rng = np.random.default_rng(3)
    gray, colour = (rng.integers(0, 65536, (4, 6, c), dtype=np.uint16) for c in (1, 3))
    write(tmp_path / "src" / "gray.png", png16(gray))
    write(tmp_path / "src" / "colour.tif", tiff(colour))
    rounded = {"gray.png": np.repeat(np.floor(gray / 257 + 0.5), 3, axis=2),
               "colour.tif": colour >> 8}
    for options in (["--dtype", "uint8"], ["--bit-depth", "8"], ["--bit-depth", "8",
                                                                  "--dtype", "float32"]):
        out = tmp_path / f"out{'-'.join(options)}"
        result = run("build", tmp_path / "src", out, "--size", "4x6", "--no-labels",
                     "--no-shuffle", "-q", *options)
        assert result.exit_code == 0, result.output
        manifest = read_manifest(str(out))
        assert "bit_depth" not in manifest.config and "opencv" not in manifest.extra["decoder"]
        config = BuildConfig.from_record(manifest.config)
        shard = np.load(out / "train-00000.npy")
        for row, name in enumerate(sorted(rounded)):  # --no-shuffle: ordered by path
            table = (np.arange(256) * config.rescale + config.offset).astype(config.dtype)
            want = rounded[name].astype(np.uint8)
            np.testing.assert_array_equal(shard[row], want if config.dtype == "uint8"
                                          else table[want])


def test_the_manifest_records_the_depth_and_its_decoder(tmp_path):
    write(tmp_path / "src" / "a.png", png16(gradient(16, 4, 4)))
    out = tmp_path / "out"
    assert run("build", tmp_path / "src", out, "--size", "4", "--no-labels", "-q").exit_code == 0
    manifest = read_manifest(str(out))
    assert manifest.config["bit_depth"] == 16
    assert manifest.extra["decoder"]["opencv"] == version("opencv-python-headless")
    edit_manifest(out, lambda document: document.update(decoder=["opencv"]))
    one_error_line(run("inspect", out), "decoder must be an object")
    edit_manifest(out, lambda document: document.update(decoder=None, config={
        **document["config"], "bit_depth": 12}))
    one_error_line(run("inspect", out), "bit depth must be one of 8, 16, got 12")


def test_bit_depth_comes_from_toml_and_bad_values_are_one_line(tmp_path):
    write(tmp_path / "src" / "a.png", png16(gradient(16, 4, 4)))
    config_file = tmp_path / "eight.toml"
    config_file.write_text("bit_depth = 8\nsize = 4\nno_labels = true\n")
    assert run("build", tmp_path / "src", tmp_path / "out", "--config", config_file,
               "-q").exit_code == 0
    assert "bit_depth" not in read_manifest(str(tmp_path / "out")).config
    config_file.write_text("bit-depth = 12\n")
    one_error_line(run("build", tmp_path / "src", tmp_path / "bad", "--config", config_file),
                   "bit depth must be one of 8, 16, got 12")
    assert run("build", tmp_path / "src", tmp_path / "bad", "--bit-depth", "12").exit_code == 2


def test_sixteen_bit_colour_without_opencv_is_a_recorded_skip(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    path = write(tmp_path / "src" / "colour.png", png16(np.ones((2, 2, 3), np.uint16)))
    write(tmp_path / "src" / "gray.png", png16(np.ones((2, 2, 1), np.uint16)))
    with pytest.raises(SkipImage, match=r"install the 'depth' extra \(pip install"):
        load_pixels(path, BuildConfig(size=(2, 2)))
    manifest = build(str(tmp_path / "src"), str(tmp_path / "out"),
                     BuildConfig(size=(2, 2), no_labels=True), workers=1).manifest
    assert [(skip.path, skip.reason) for skip in manifest.skipped] == [
        ("colour.png", NO_COLOUR_DECODER)]
    assert load_pixels(path, BuildConfig(size=(2, 2), bit_depth=8)).dtype == np.uint8


def test_a_565_bmp_is_eight_bit_colour_not_deep(tmp_path):
    """Pillow's raw mode of a 16-bit BMP (5-6-5 bits a channel) names 16 bits as deep PNGs'
    and TIFFs' do; it is read by Pillow as before, not sent to OpenCV."""
    row = struct.pack("<3H", 0xF800, 0x07E0, 0x001F) + b"\0\0"  # red, green, blue, padding
    pixels = row * 2
    header = struct.pack("<IiiHHIIiiII", 40, 3, 2, 1, 16, 3, len(pixels), 2835, 2835, 0, 0)
    masks = struct.pack("<3I", 0xF800, 0x07E0, 0x001F)
    offset = 14 + 40 + 12
    path = write(tmp_path / "565.bmp", b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0,
                                                           offset) + header + masks + pixels)
    pixels = load_pixels(path, BuildConfig(size=(2, 3), interpolation="nearest"))
    assert pixels.dtype == np.uint8
    assert pixels[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_a_broken_sixteen_bit_colour_file_is_a_quiet_skip(tmp_path, capfd, fmt):
    values = np.random.default_rng(1).integers(0, 65536, (60, 100, 3), dtype=np.uint16)
    data = png16(values) if fmt == "png" else tiff(values)
    path = write(tmp_path / f"cut.{fmt}", data[:len(data) // 2])
    with pytest.raises(SkipImage, match="^(truncated|cannot decode: OpenCV cannot read this "
                                        r"16-bit colour file \(truncated or broken\))$"):
        load_pixels(path, BuildConfig(size=(6, 10)))
    assert capfd.readouterr().err == ""


def mixed_folder(root) -> str:
    """Deep and 8-bit files of every kind, in two classes."""
    rng = np.random.default_rng(0)
    for index in range(6):
        folder = root / "src" / f"c{index % 2}"
        write(folder / f"{index}-rgb.png", png16(rng.integers(0, 65536, (9, 13, 3), np.uint16)))
        write(folder / f"{index}-gray.tif", tiff(rng.integers(0, 65536, (13, 9, 1), np.uint16)))
        write(folder / f"{index}-float.tif", tiff(rng.random((8, 8, 1), dtype=np.float32)))
        write(folder / f"{index}-rgba.tif", tiff(rng.integers(0, 65536, (5, 6, 4), np.uint16)))
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), np.uint8)).save(
            folder / f"{index}-eight.jpg")
    return str(root / "src")


@pytest.mark.parametrize("resize", ["stretch", "pad"])
def test_byte_identical_for_any_worker_count(tmp_path, resize):
    src = mixed_folder(tmp_path)
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        result = run("build", src, out, "--size", "7x5", "--resize", resize, "--shard-size", "5",
                     "--val-split", "0.3", "--workers", workers, "-q")
        assert result.exit_code == 0, result.output
        outputs.append(comparable(local_files(out)))
    assert outputs[0] == outputs[1]
    assert not read_manifest(str(tmp_path / "out1")).skipped
    assert run("verify", tmp_path / "out1", "--deep", "-q").exit_code == 0  # values in range
    preview = run("preview", tmp_path / "out1", "-o", tmp_path / "grid.png", "--per-class", "3")
    assert preview.exit_code == 0 and Image.open(tmp_path / "grid.png").size[0] > 0


def test_an_append_keeps_an_eight_bit_datasets_depth(tmp_path):
    """A dataset recorded without bit_depth (8 bits, as every build before full depth) takes
    new 16-bit files at 8 bits, as its old shards hold them."""
    src = tmp_path / "src"
    write(src / "a" / "old.png", png16(gradient(16, 2, 2)))
    out = tmp_path / "out"
    assert run("build", src, out, "--size", "2", "--bit-depth", "8", "-q").exit_code == 0
    document = json.loads((out / "manifest.json").read_text())
    assert "bit_depth" not in document["config"]
    new = (gradient(16, 2, 2) + 100).astype(np.uint16)
    write(src / "a" / "new.png", png16(new))
    result = run("append", src, out, "-q")
    assert result.exit_code == 0, result.output
    shard = np.load(out / "train-00001.npy")
    table = (np.arange(256) / 255).astype(np.float16)
    np.testing.assert_array_equal(shard[0, :, :, 0], table[np.floor(new[:, :, 0] / 257 + 0.5)
                                                           .astype(np.uint8)])
    one_error_line(run("append", src, out, "--bit-depth", "16"),
                   "--bit-depth 16 differs from the dataset's 8: an append takes every option")


def test_datasets_of_different_bit_depths_do_not_merge(tmp_path):
    write(tmp_path / "src" / "a" / "x.png", png16(gradient(16, 2, 2)))
    for depth in ("8", "16"):
        assert run("build", tmp_path / "src", tmp_path / depth, "--size", "2", "--bit-depth",
                   depth, "-q").exit_code == 0
    with pytest.raises(MergeError, match="bit_depth"):
        merge([str(tmp_path / "16"), str(tmp_path / "8")], str(tmp_path / "merged"))


def test_a_local_dask_cluster_writes_the_same_deep_bytes(tmp_path):
    pytest.importorskip("distributed")
    src = mixed_folder(tmp_path)
    config = BuildConfig(size=(7, 5), shard_size=5, val_split=0.3)
    build(src, str(tmp_path / "local"), config, workers=1)
    build(src, str(tmp_path / "dask"), config, workers=2, executor="dask", scheduler="local")
    assert comparable(local_files(tmp_path / "local")) == comparable(local_files(tmp_path / "dask"))


def test_an_interrupted_build_resumes_only_at_its_own_bit_depth(tmp_path):
    from conftest import stop_at_call

    src = mixed_folder(tmp_path)
    config = BuildConfig(size=(7, 5), shard_size=2)
    with pytest.raises(KeyboardInterrupt):
        build(src, str(tmp_path / "out"), config, workers=1, progress=stop_at_call(5))
    result = run("build", src, tmp_path / "out", "--size", "7x5", "--shard-size", "2",
                 "--bit-depth", "8", "--resume", "-q")
    one_error_line(result, "refusing to resume with different options: bit_depth changed")
    resumed = run("build", src, tmp_path / "out", "--size", "7x5", "--shard-size", "2",
                  "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    build(src, str(tmp_path / "whole"), config, workers=1)
    assert comparable(local_files(tmp_path / "out")) == comparable(local_files(tmp_path / "whole"))
