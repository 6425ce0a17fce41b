"""The output directory: refuse to mix a new build into foreign or finished files.

A build writes only into an empty directory, or with ``overwrite`` into one that holds nothing
but an earlier imgshard build (whose manifest is removed first, so that a build interrupted while
replacing it is never mistaken for complete). Files imgshard did not write are never deleted.
"""

from __future__ import annotations

import os
import re

from .errors import ImgshardError
from .manifest import MANIFEST_NAME, SAMPLES_NAME
from .progress import PROGRESS_NAME, REMOTE_PROGRESS_PREFIX, SAMPLES_PARTIAL, SOURCES_NAME
from .shards import TEMP_PREFIX
from .storage import Location
from .tasks import PART_PREFIX

OWN_FILE = re.compile(r"[\w.-]+-\d{5}(\.labels)?\.npy")


class OutputError(ImgshardError):
    """The output directory cannot take this build."""


def is_own_file(name: str) -> bool:
    """Whether ``name`` is a file an imgshard build writes into OUT."""
    return (name in (MANIFEST_NAME, SAMPLES_NAME, PROGRESS_NAME, SAMPLES_PARTIAL, SOURCES_NAME)
            or name.startswith((TEMP_PREFIX, PART_PREFIX, REMOTE_PROGRESS_PREFIX))
            or OWN_FILE.fullmatch(name) is not None)


def prepare_out(out: Location, *, overwrite: bool) -> None:
    """Make ``out`` an empty, writable directory, or raise :class:`OutputError`."""
    if out.is_local and os.path.exists(out.url) and not os.path.isdir(out.url):
        raise OutputError(f"output {out} exists and is not a directory")
    names = sorted(out.listdir())
    if names and not overwrite:
        raise OutputError(f"output {out} is not empty (use --overwrite to replace an earlier build)")
    foreign = [name for name in names if not is_own_file(name)]
    if foreign:
        raise OutputError(f"output {out} holds {foreign[0]!r}, which imgshard did not write: "
                          "refusing to overwrite it (choose an empty directory)")
    if MANIFEST_NAME in names:
        out.remove(MANIFEST_NAME)
    for name in names:
        if name != MANIFEST_NAME:
            out.remove(name, missing_ok=True)
    probe = f"{TEMP_PREFIX}probe.{os.getpid()}"
    try:
        out.makedirs()
        out.write_bytes(probe, b"")
        out.remove(probe)
    except OSError as error:
        reason = error.strerror or " ".join(str(error).split()) or type(error).__name__
        raise OutputError(f"cannot write to output {out}: {reason}"[:300]) from None
    except ImgshardError as error:
        raise OutputError(f"cannot write to output {error}") from None


def remove_leftovers(out: Location) -> None:
    """Remove the temporary and part files a killed build left (``--resume`` redoes them)."""
    for name in out.listdir():
        if name.startswith((TEMP_PREFIX, PART_PREFIX)):
            out.remove(name, missing_ok=True)
