"""How many bits per channel a build's sources hold, read from their headers: whether a
``--dtype uint8`` build of them loses anything (what ``imgshard build --dry-run`` says).

``PIL.Image.open`` reads a file's header and decodes nothing. The mode says the depth of most
files (``I;16``: 16 bits; ``I``, ``F``: 32); but Pillow opens a 16-bit-per-channel RGB(A) PNG or
TIFF as 8-bit ``RGB``/``RGBA`` (it reduces the pixels as it decodes them), and only the raw
mode of its first tile (``RGB;16B``) tells. A raw mode's number is bits per channel when an
endianness letter follows it, else bits per pixel (``BGR;16`` is a 5-6-5 BMP).

A dry run reads the headers of up to :data:`LOCAL_SAMPLE` files of a local source
(:data:`REMOTE_SAMPLE` of a URL's, each object read whole in one request, as the build reads
it), spread evenly over the samples in build order: "all 8-bit" is certain for a source that small, and a sample's word for a larger one. A
file whose header cannot be read is not counted (the build will skip it, or decode it).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np

from .depth import raw_mode
from .storage import Location
from .storage.location import is_url
from .wording import counted

#: Headers read at most, of a local source and of a URL's (evenly spread over the samples).
LOCAL_SAMPLE, REMOTE_SAMPLE = 2000, 200

#: Bits per channel in a raw mode: ``RGB;16B`` (16 per channel), ``I;16``, ``F;32F``.
RAW_BITS = re.compile(r"[A-Za-z]+;(\d+)([A-Z]*)")


@dataclass(frozen=True)
class SourceDepth:
    """What the headers read said: ``read`` files of the ``tried`` (of ``total`` samples) whose
    header was read, and ``deeper``: the path and bits per channel of each one of more than 8."""

    read: int
    total: int
    deeper: list[tuple[str, int]]
    tried: int = -1  # -1: every one of the ``total`` samples

    def __post_init__(self) -> None:
        if self.tried < 0:
            object.__setattr__(self, "tried", self.total)

    def describe(self) -> str:
        """One line for the dry run: whether uint8 keeps every value of these sources."""
        # a header that cannot be read is not counted, and not a sample either
        files = counted(self.read, "image file") + (
            f" with a readable header of {self.tried:,}" if self.read < self.tried else "") + (
            f" sampled of {self.total:,}" if self.tried < self.total else "")
        if not self.read:
            return "Bit depth: not known (no file's header could be read)"
        if not self.deeper:
            every = "all " if self.read > 1 else ""
            return (f"Bit depth: {every}{files} {'is' if self.read == 1 else 'are'} 8 bits per "
                    f"channel (read from {'its header' if self.read == 1 else 'their headers'}): "
                    "uint8 loses nothing (read as float32 it serves a float32 build's values)")
        path, bits = self.deeper[0]
        return (f"Bit depth: {len(self.deeper):,} of {files} "
                f"{'has' if len(self.deeper) == 1 else 'have'} more than 8 bits per channel "
                f"(e.g. {path}, {bits} bits): uint8 rounds them to 8 bits")


def source_depth(location: Location, paths: list[str]) -> SourceDepth:
    """Read the headers of an even sample of ``paths`` (files of ``location``)."""
    limit = REMOTE_SAMPLE if is_url(str(location)) else LOCAL_SAMPLE
    chosen = paths if len(paths) <= limit else [
        paths[int(i)] for i in np.unique(np.linspace(0, len(paths) - 1, limit).round())]
    read, deeper = 0, []
    for path in chosen:
        bits = header_bits(location, path)
        if bits is not None:
            read += 1
            if bits > 8:
                deeper.append((path, bits))
    return SourceDepth(read, len(paths), deeper, len(chosen))


def header_bits(location: Location, path: str) -> int | None:
    """Bits per channel of the image ``path``, from its header (None: no header Pillow reads)."""
    from PIL import Image

    try:
        with location.open_source(path) as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a decompression-bomb warning is the build's to give
            with Image.open(stream) as image:
                return bits_per_channel(image.mode, raw_mode(image))
    except Exception:  # noqa: BLE001 - any file the build would skip or fail on: not counted
        return None


def bits_per_channel(mode: str, raw: str) -> int:
    """Bits per channel of an image of Pillow ``mode`` whose bytes have the raw mode ``raw``."""
    from PIL import Image

    match = RAW_BITS.fullmatch(raw)
    if match is not None:
        bits, endianness = int(match.group(1)), match.group(2)
        try:
            bands = Image.getmodebands(mode)
        except (KeyError, ValueError):
            bands = 1
        return bits if endianness or bands == 1 else bits // bands
    if mode.startswith("I;16"):
        return 16
    return 32 if mode in ("I", "F") else 8
