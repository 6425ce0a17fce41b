"""What this machine can give a build or a reader: worker processes and memory.

Checked before any work starts, so that an output size or a manifest whose buffers cannot fit
is one line naming the memory it would need, not a worker dying on its first allocation or a
machine swapping to a halt.
"""

from __future__ import annotations

import os

import numpy as np

from .config import BuildConfig
from .errors import ImgshardError


class ResourceError(ImgshardError):
    """This machine cannot give what the work needs (one line, with the amount)."""


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def local_workers(requested: int | None) -> int:
    """How many local worker processes a build runs: as asked, but no more than the cores
    (more would only compete for them); :func:`build` then takes no more than its tasks."""
    return min(requested or default_workers(), default_workers())


def worker_memory(config: BuildConfig) -> int:
    """Bytes a worker holds for one image at a time, whatever the shard size (a shard is
    streamed to disk row by row): the stored row, the resized image as Pillow holds it (4
    bytes a pixel) and as numpy's copy of it, and the canvas it is padded onto. A full-depth
    build's deep images take more at the output size: per channel a float32 plane (and its
    canvas), their float32 stack, the float64 pixel values and the float64 stored values."""
    height, width, channels = config.image_shape
    pixels = height * width
    copies = 2 if config.resize == "pad" else 1
    row = channels * np.dtype(config.dtype).itemsize
    eight_bit = pixels * (row + 4 + channels * copies)
    if not config.full_depth:
        return eight_bit
    return max(eight_bit, pixels * (row + channels * (4 * copies + 4 + 8 + 8)))


def available_memory() -> int | None:
    """Memory this machine can give a build now (Linux ``MemAvailable``, else physical)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: BuildConfig, workers: int) -> None:
    """Refuse an output size whose per-image buffers cannot fit in memory, before any work
    (else each worker dies allocating its first row, or the machine swaps to a halt)."""
    needed, available = worker_memory(config) * workers, available_memory()
    if available is not None and needed > available:
        height, width, _ = config.image_shape
        raise ResourceError(f"size {height}x{width} needs about {needed / 1e9:,.1f} GB of memory "
                         f"for {workers} worker{'s' if workers > 1 else ''}, but this machine "
                         f"has {available / 1e9:,.1f} GB available (use a smaller --size or "
                         "fewer --workers)")
