"""The output directory: apart from the source, one build at a time, and never a foreign file lost.

A build writes only into an empty directory, or with ``overwrite`` into one that holds nothing
but what an earlier imgshard build itself records having written:

* a finished build: its ``manifest.json`` (``"format": "imgshard"``), the shard and label files
  it lists and its samples file;
* an interrupted one: its progress log, whose plan line names its build id and how many shards
  each split may have; so its shard files, ``samples.csv``, the partial samples file, and the
  temporary and part files whose names carry that build id.

Only plain file names count, and only names that are in the directory are ever deleted. The
first name nothing accounts for is refused in one line. The manifest goes first (renamed to
:data:`RETIRED_NAME`, which still accounts for its files), so that an interrupted overwrite is
never mistaken for a finished build, nor leaves files that a next overwrite would call foreign.

A local OUT is locked while a build writes it (:func:`locked`): an OS lock on
:data:`LOCK_NAME` (see :mod:`imgshard.storage.lock`), which dies with its process, so a crashed
build never leaves it held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .errors import ImgshardError
from .formats import shard_format
from .layout import (
    BUILD_ID,
    FORMAT,
    LOCK_NAME,
    MANIFEST_NAME,
    RETIRED_NAME,
    SAMPLES_NAME,
    SAMPLES_PARTIAL,
    SOURCES_KEPT,
    SOURCES_NAME,
    is_plain_name,
    part_prefix,
    shard_names,
    temp_prefix,
)
from .manifest import MAX_MANIFEST_BYTES, parse_json
from .resume_log import holds_log, log_names, read_plan
from .storage import Location
from .storage.lock import ForeignLockFile, LockHeld

#: Fixed names an interrupted build (one with a progress log) may leave besides its shards.
INTERRUPTED_BUILD_FILES = (SAMPLES_NAME, SAMPLES_PARTIAL, SOURCES_NAME, SOURCES_KEPT)


class OutputError(ImgshardError):
    """The output directory cannot take this build."""


def check_apart(src: Location, out: Location, labels: str | None = None,
                targets: str | None = None) -> None:
    """Refuse an OUT that is SRC, inside SRC, or holds SRC: a build would read its own output,
    or an overwrite would delete its source. So too a ``labels`` (or ``targets``) file inside
    OUT: saved under a name the earlier build records (``samples.csv``), it would be read, then
    deleted."""
    for kind, listing in (("labels", labels), ("targets", targets)):
        if listing is not None and out.contains(listing):
            raise OutputError(f"the {kind} file {listing} is inside the output {out}: keep it "
                              "outside (an --overwrite deletes what OUT holds)")
    if src.overlaps(out):
        raise OutputError(f"output {out} and source {src} overlap: choose an output outside the "
                          "source (and not holding it)")


# -- one build at a time ------------------------------------------------------------------------

@contextlib.contextmanager
def locked(out: Location) -> Iterator[None]:
    """Hold OUT's lock (:data:`LOCK_NAME`) for the block, creating OUT; refuse at once when
    another process holds it. An object store cannot be locked: there this does nothing.
    """
    _check_directory(out)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(out.lock(LOCK_NAME))
        except LockHeld as held:
            raise OutputError(f"{out} is being written by another imgshard process "
                              f"(pid {held.holder})") from None
        except ForeignLockFile as error:
            raise _foreign(out, LOCK_NAME) from error.__cause__
        except OSError as error:
            raise _cannot_write(out, error) from None
        yield


# -- what an earlier build wrote ------------------------------------------------------------------

def prepare_out(out: Location, *, overwrite: bool, resumes: bool = True) -> None:
    """Make ``out`` an empty, writable directory, or raise :class:`OutputError`.

    With ``overwrite``, the files an earlier build records having written are deleted (the
    manifest first); anything else in ``out`` makes it refuse before deleting anything.
    ``resumes``: the command has a ``--resume`` to point to (a merge has not).
    """
    _check_directory(out)
    names = sorted(set(out.listdir()) - {LOCK_NAME})  # the lock is this build's own
    if names and not overwrite:
        resumable = (" or --resume to finish the interrupted one"
                     if resumes and holds_log(out) else "")
        raise OutputError(f"output {out} is not empty (use --overwrite to replace an earlier "
                          f"build{resumable})")
    if names:
        _remove_earlier_build(out, names)
    probe = f"{temp_prefix(out.temp_tag)}probe"
    try:
        out.makedirs()
        out.write_bytes(probe, b"")
        out.remove(probe)
    except OSError as error:
        raise _cannot_write(out, error) from None
    except ImgshardError as error:
        raise OutputError(f"cannot write to output {error}") from None


def _remove_earlier_build(out: Location, names: list[str]) -> None:
    """Delete ``names`` if an earlier build's records account for every one (else refuse).

    In a local OUT, only regular files can be imgshard's: a folder, link, FIFO or device is
    refused before any file is read (reading a FIFO would hang).
    """
    irregular = [name for name in names if not out.is_regular_file(name)]
    if irregular:
        raise _foreign(out, irregular[0])
    present = set(names)
    records = [name for name in (MANIFEST_NAME, RETIRED_NAME) if name in present]
    owned = set(records)
    for name in records:
        owned |= _manifest_files(out, name)
    log = _log_names(out, present)
    owned |= set(log)
    recorded = _recorded_build(out) if log else None
    if recorded is not None:
        owned |= _planned_files(names, *recorded)
    foreign = [name for name in names if name not in owned]
    if foreign and foreign[0] in log_names(out):
        raise OutputError(f"output {out} holds {foreign[0]!r}, a progress log imgshard cannot "
                          "read (damaged or edited), so nothing proves which files its build "
                          "wrote: refusing to overwrite (delete it by hand if you know the "
                          "folder holds only imgshard's files, or choose an empty directory)")
    if foreign:
        raise _foreign(out, foreign[0])
    if MANIFEST_NAME in present and RETIRED_NAME not in present:
        out.replace(MANIFEST_NAME, RETIRED_NAME)  # nothing looks finished from here on
    elif MANIFEST_NAME in present:
        out.remove(MANIFEST_NAME)
    last = {MANIFEST_NAME, RETIRED_NAME, *log}
    for name in names:
        if name not in last:
            out.remove(name, missing_ok=True)
    for name in [*reversed(log), RETIRED_NAME]:  # the records go last, the plan line last of all
        out.remove(name, missing_ok=True)


def _manifest_files(out: Location, name: str) -> set[str]:
    """The files a manifest lists (shards, labels, samples), or refuse a manifest that is not
    imgshard's. Read here with a few checks of its own: a listed name counts only if it is the
    one imgshard gives that file (an edited manifest cannot claim a user's file)."""
    try:
        text = out.read_at_most(name, MAX_MANIFEST_BYTES)  # None: larger than any manifest
        document = parse_json(text) if text is not None else None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("not imgshard's")
        listed = {SAMPLES_NAME} & {document.get("samples", SAMPLES_NAME)}
        listed |= {SOURCES_KEPT} if document.get("sources") == SOURCES_KEPT else set()
        suffix = shard_format().SUFFIX
        for split, info in document["splits"].items():
            for index, shard in enumerate(info["shards"]):
                listed |= {shard["images"], shard.get("labels"), shard.get("targets")} & \
                    set(shard_names(split, index, suffix))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, OSError,
            ImgshardError):
        raise _foreign(out, name, "which is not an imgshard manifest") from None
    return {name for name in listed if is_plain_name(name)}


def _log_names(out: Location, present: set[str]) -> list[str]:
    """The progress log's files (the plan line's first) when its plan is an imgshard build's,
    or when it is empty: a build stopped between creating it and writing its plan line."""
    log = [name for name in log_names(out) if name in present]
    if not log:
        return []
    if _recorded_build(out) is None and any(out.size(name) for name in log):
        return []
    return log


def _recorded_build(out: Location) -> tuple[str, dict[str, int], bool] | None:
    """The build id and the shard count of each split that OUT's progress log plans, and
    whether its config names a targets file (a build without one writes no targets file)."""
    try:
        plan = read_plan(out)
    except (OSError, ValueError, RecursionError, ImgshardError):
        return None
    if not isinstance(plan, dict):
        return None
    build, shards = plan.get("build"), plan.get("shards")
    if not isinstance(build, str) or not BUILD_ID.fullmatch(build) or not isinstance(shards, dict):
        return None
    if not all(is_plain_name(split) and type(count) is int for split, count in shards.items()):
        return None
    config = plan.get("config")
    return build, shards, isinstance(config, dict) and isinstance(config.get("targets"), str)


def _planned_files(names: list[str], build: str, shards: dict[str, int],
                   targets: bool) -> set[str]:
    """Which of ``names`` the build ``build`` (of ``shards`` shards per split, with ``targets``
    files or not) may have written."""
    tagged = (temp_prefix(build), part_prefix(build))
    return {name for name in names
            if name in INTERRUPTED_BUILD_FILES or name.startswith(tagged)
            or _planned_shard(name, shards, targets)}


def _planned_shard(name: str, shards: dict[str, int], targets: bool) -> bool:
    """Whether ``name`` is the images, labels or (with ``targets``) targets file of a shard
    the plan counts."""
    split, _, rest = name.rpartition("-")
    digits = rest.split(".", 1)[0]
    if split not in shards or not (digits.isascii() and digits.isdigit()):
        return False
    index = int(digits)
    suffix = shard_format().SUFFIX
    return index < shards[split] and name in shard_names(split, index, suffix)[:3 if targets
                                                                              else 2]


def check_resumable(out: Location) -> None:
    """Refuse a local OUT that holds anything but regular files, before a resume reads it: a
    FIFO named like the progress log or a shard would hang it, a folder is no build's."""
    irregular = [name for name in sorted(out.listdir()) if not out.is_regular_file(name)]
    if irregular:
        raise OutputError(f"output {out} holds {irregular[0]!r}, which is not a file imgshard "
                          "wrote: refusing to resume")


def remove_leftovers(out: Location, build: str) -> None:
    """Remove the temporary and part files of the build ``build`` (workers killed mid-write)."""
    tagged = (temp_prefix(build), part_prefix(build))
    for name in out.listdir():
        if name.startswith(tagged):
            out.remove(name, missing_ok=True)


def _check_directory(out: Location) -> None:
    if out.occupied_by_file():
        raise OutputError(f"output {out} exists and is not a directory")


def _foreign(out: Location, name: str, why: str = "which imgshard did not write") -> OutputError:
    return OutputError(f"output {out} holds {name!r}, {why}: refusing to overwrite it "
                       "(choose an empty directory)")


def _cannot_write(out: Location, error: OSError) -> OutputError:
    reason = error.strerror or " ".join(str(error).split()) or type(error).__name__
    return OutputError(f"cannot write to output {out}: {reason}"[:300])
