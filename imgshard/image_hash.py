"""The hashes of one stored image that duplicates are found by.

* :func:`pixel_digest`: 128 bits of the sha256 of the image's values as the shard stores them
  (after decoding, orientation, colour, resizing and the cast to the stored dtype), so two
  samples with the same digest hold identical stored pixels; 128 bits make an accidental
  collision negligible (about 10^-20 for ten million images). ``--dedupe exact`` hashes every
  file so.
* :func:`pixel_fingerprint`: the same of every 8th row only, which is what a build's workers
  compute (a full digest would cost them 6 % of a build): identical images share it, and the
  samples that share one are compared by the digest of their whole stored rows, read back from
  the shards, before they are called exact duplicates (``leakage.py``).
* :func:`dhash`: a 64-bit difference hash of the decoded 8-bit pixels (a deep image's values
  rounded to 8 bits), robust to small changes (re-encoding, slight
  brightness changes, another resize filter): the sum over the channels is averaged over an
  8x9 grid of blocks, and each bit says whether a block is brighter than its left neighbour.
  Integer arithmetic throughout, so the bits are the same on every machine.

* :func:`thumbnail`: the image's means over a 16x16 grid of blocks, per channel, in 8-bit
  units (768 bytes for RGB), computed from the stored row of a sample whose difference hash is
  close to another's, when the two are compared (``duplicates.py``): a difference hash only
  sees which blocks are brighter than their neighbours, so flat shapes of other colours, or
  other shapes with the same edges, can share one; the thumbnails tell them apart.

The worker computes the fingerprint and the difference hash from the pixels it decodes (about
0.05 ms an image at 224x224, against 2-3 ms to decode and resize one) and they travel to the
build process as 24 bytes a sample, in ``samples.csv``.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

DIGEST_BYTES = 16
#: The grid a difference hash compares: 8 rows of 9 blocks give 8 x 8 = 64 bits.
GRID_ROWS, GRID_COLUMNS = 8, 9
#: Rows of an image a fingerprint hashes: the first, then every 8th.
FINGERPRINT_STEP = 8
#: The side of the grid a thumbnail averages over.
THUMBNAIL_SIDE = 16
#: Bytes per sample of :func:`image_hashes`: the fingerprint, then the difference hash
#: (big-endian).
HASHES_BYTES = DIGEST_BYTES + 8


def pixel_digest(pixels: np.ndarray) -> bytes:
    """The first 128 bits of the sha256 of the image's stored values (its shape and dtype are
    the build's, the same for every image). sha256, not blake2b: CPUs with SHA extensions hash
    2x faster."""
    return hashlib.sha256(np.ascontiguousarray(pixels).data).digest()[:DIGEST_BYTES]


def dhash(pixels: np.ndarray) -> int:
    """The 64-bit difference hash of an (H, W, C) uint8 image (see the module docstring).

    Block (r, c) spans rows ``floor(r*H/8)`` to ``floor((r+1)*H/8)`` and columns
    ``floor(c*W/9)`` to ``floor((c+1)*W/9)``; bit ``8*r + c``, counted from the most
    significant, is set when block (r, c+1) has the larger mean. An image smaller than the grid
    is first enlarged 8 x 9 times by repeating its pixels (its blocks then average exactly the
    areas of the original that they cover).
    """
    height, width, channels = pixels.shape
    if height < GRID_ROWS or width < GRID_COLUMNS:
        pixels = np.repeat(np.repeat(pixels, GRID_ROWS, axis=0), GRID_COLUMNS, axis=1)
        height, width = height * GRID_ROWS, width * GRID_COLUMNS
    column_edges, widths = _column_blocks(width)
    rows = _row_block_sums(np.ascontiguousarray(pixels).reshape(height, -1))
    # a block's columns and channels are one run of the flattened rows: summed in one step
    sums = np.add.reduceat(rows, column_edges * channels, axis=1, dtype=np.int64)
    # mean right > mean left, without dividing: the blocks of a row share their height
    brighter = sums[:, 1:] * widths[:-1] > sums[:, :-1] * widths[1:]
    return int.from_bytes(np.packbits(brighter.ravel()).tobytes(), "big")


@functools.lru_cache(maxsize=16)
def _column_blocks(width: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each of the 9 column blocks of an image ``width`` wide starts, and its width."""
    edges = np.arange(GRID_COLUMNS) * width // GRID_COLUMNS
    return edges, np.diff(np.append(edges, width))


def _row_block_sums(rows: np.ndarray) -> np.ndarray:
    """The sums of the 8 blocks of rows (edges ``floor(r*H/8)``) of a (H, W*C) uint8 array.

    Rows first, over contiguous memory (summing the channels first is 5x slower); equal blocks
    of at most 257 rows fit uint16 and sum 6x faster than ``reduceat``, which takes the rest.
    """
    height = rows.shape[0]
    if height % GRID_ROWS == 0 and height // GRID_ROWS <= 257:
        return rows.reshape(GRID_ROWS, height // GRID_ROWS, -1).sum(axis=1, dtype=np.uint16)
    return np.add.reduceat(rows, np.arange(GRID_ROWS) * height // GRID_ROWS, axis=0,
                           dtype=np.int64)


def thumbnail(stored: np.ndarray, rescale: float, offset: float) -> np.ndarray:
    """The block means of a stored (H, W, C) row over a :data:`THUMBNAIL_SIDE` grid (edges
    ``floor(i*H/side)``, as :func:`dhash`'s), as the 8-bit values they store
    (``(mean - offset) / rescale``), rounded and clipped to 0..255: a flat uint8 array of
    ``side * side * C`` values. A side shorter than the grid is enlarged first by repeating
    its pixels 16 times."""
    for axis in (0, 1):  # only a side shorter than the grid (the means are the same)
        if stored.shape[axis] < THUMBNAIL_SIDE:
            stored = np.repeat(stored, THUMBNAIL_SIDE, axis=axis)
    height, width = stored.shape[:2]
    row_edges = np.arange(THUMBNAIL_SIDE) * height // THUMBNAIL_SIDE
    column_edges = np.arange(THUMBNAIL_SIDE) * width // THUMBNAIL_SIDE
    if height % THUMBNAIL_SIDE == 0:  # equal blocks of rows (224 = 16 x 14): 2x faster
        rows = stored.reshape(THUMBNAIL_SIDE, -1, *stored.shape[1:]).sum(axis=1, dtype=np.float64)
    else:
        rows = np.add.reduceat(stored, row_edges, axis=0, dtype=np.float64)
    sums = np.add.reduceat(rows, column_edges, axis=1)
    areas = (np.diff(np.append(row_edges, height))[:, None, None]
             * np.diff(np.append(column_edges, width))[None, :, None])
    values = (sums / areas - offset) / rescale
    # NaN or inf no build stores (an edited shard): 0, or 255 for +inf, not an undefined cast
    values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8).ravel()


def pixel_fingerprint(pixels: np.ndarray) -> bytes:
    """The first 128 bits of the sha256 of every :data:`FINGERPRINT_STEP`-th row of the image:
    equal in any two images with identical pixels, at an eighth of :func:`pixel_digest`'s cost
    (which is most of the search's in a build). Samples that share one are compared in full
    before they are called exact duplicates (``leakage.confirm_exact``)."""
    return hashlib.sha256(np.ascontiguousarray(pixels[::FINGERPRINT_STEP]).data
                          ).digest()[:DIGEST_BYTES]


def image_hashes(pixels: np.ndarray, stored: np.ndarray) -> bytes:
    """The fingerprint of one image as stored (``stored``: its row of the shard) and the
    difference hash of its pixels, as :data:`HASHES_BYTES` bytes."""
    return pixel_fingerprint(stored) + dhash(as_uint8(pixels)).to_bytes(8, "big")


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    """Pixels as 8-bit values for the difference hash: a deep image's float values (0..255)
    rounded, an 8-bit image's as they are."""
    if pixels.dtype == np.uint8:
        return pixels
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def hash_cells(record: bytes) -> tuple[str, str]:
    """One sample's :func:`image_hashes` as the two hexadecimal cells of ``samples.csv``."""
    return record[:DIGEST_BYTES].hex(), record[DIGEST_BYTES:].hex()
