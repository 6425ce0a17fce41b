"""glibc's heap and page controls, reached through ctypes; where the C library lacks them they
do nothing.

The heap is tuned in two opposite ways. A build worker hands freed memory back to the OS after
each shard, so that its resident memory stays flat over a long build; a reader feeding
TensorFlow keeps freed memory instead, so that TensorFlow's kernels do not fault it in again on
every training step.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys
from collections.abc import Callable

#: ``mallopt``'s parameter number for M_TOP_PAD (glibc's ``malloc.h``).
M_TOP_PAD = -2

#: ``madvise``'s advice to drop pages from this process (Linux's ``mman.h``).
MADV_DONTNEED = 4

PAGE_SIZE = mmap.PAGESIZE


@functools.cache
def libc_function(name: str) -> Callable[..., int] | None:
    """The C library's function ``name``, or None where it has none (not glibc)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None


def release_freed_memory() -> None:
    """Give the memory the heap holds free back to the OS (glibc's ``malloc_trim``).

    Images of varying sizes leave glibc's heap fragmented, so without this a worker's resident
    memory creeps up by megabytes over a long build; trimming after each task keeps it flat.
    """
    trim = libc_function("malloc_trim")
    if trim is not None:
        trim(0)


def keep_heap_top(pad_bytes: int) -> bool:
    """Keep up to ``pad_bytes`` of freed memory at the top of each heap instead of returning it.

    Returns whether the C library took the setting.
    """
    mallopt = libc_function("mallopt")
    return mallopt is not None and mallopt(M_TOP_PAD, pad_bytes) == 1


def drop_file_pages(address: int, length: int) -> None:
    """Take the pages of ``[address, address + length)`` out of this process's resident memory.

    Only for a read-only, shared map of a file: its pages stay in the page cache, and reading
    them again maps them back with the same bytes. (On private or anonymous memory this would
    lose data: callers check what they hold.) Linux only; elsewhere it does nothing.
    """
    madvise = libc_function("madvise") if sys.platform.startswith("linux") else None
    start = address - address % PAGE_SIZE
    if madvise is None or length <= 0:
        return
    madvise(ctypes.c_void_p(start), ctypes.c_size_t(address + length - start),
            ctypes.c_int(MADV_DONTNEED))
