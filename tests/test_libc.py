"""The C heap controls: taken by glibc, and nothing where the C library lacks them."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from imgshard.libc import libc_function

LIBC, LIBC_VERSION = platform.libc_ver()
HAS_MALLINFO2 = LIBC == "glibc" and tuple(map(int, LIBC_VERSION.split("."))) >= (2, 33)

#: Mallocs 4 MB in blocks below glibc's mmap threshold (so from the heap), frees them, and
#: prints the size of the main heap afterwards, with the pad argv[1] set first (0: none).
HEAP_AFTER_FREE = """
import ctypes, sys
from imgshard.libc import keep_heap_top
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
          "fordblks", "keepcost")
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
pad = int(sys.argv[1])
if pad and not keep_heap_top(pad):
    sys.exit("the pad was not taken")
blocks = [libc.malloc(64 * 1024) for _ in range(64)]
for block in blocks:
    libc.free(block)
print(libc.mallinfo2().arena)
"""


def heap_after_free(pad: int) -> int:
    """In a process of its own: a pad lasts for the life of the process."""
    done = subprocess.run([sys.executable, "-c", HEAP_AFTER_FREE, str(pad)], capture_output=True,
                          text=True, check=True)
    return int(done.stdout)


def test_a_function_the_c_library_lacks_is_none():
    assert libc_function("no_such_function_in_any_libc") is None


@pytest.mark.skipif(not HAS_MALLINFO2, reason="needs glibc >= 2.33 (mallinfo2) to look")
def test_the_heap_top_pad_keeps_freed_memory_that_glibc_otherwise_trims():
    pad = 64 * 2**20
    assert heap_after_free(0) < pad <= heap_after_free(pad)
