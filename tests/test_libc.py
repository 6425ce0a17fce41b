"""The C heap controls: taken by glibc, harmless elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from imgshard.libc import libc_function

GLIBC = platform.libc_ver()[0] == "glibc"


def test_a_function_the_c_library_lacks_is_none():
    assert libc_function("no_such_function_in_any_libc") is None


@pytest.mark.skipif(not GLIBC, reason="the heap controls are glibc's")
def test_glibc_takes_the_heap_top_pad():
    """In a process of its own: the setting lasts for the life of the process."""
    code = "from imgshard.libc import keep_heap_top; print(keep_heap_top(1 << 20))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"

