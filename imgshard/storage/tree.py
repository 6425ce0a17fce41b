"""Walking a source tree: every file below a folder or a URL, in sorted order, accounted for.

Both walks yield the same :class:`Entry` records, so that the scan never asks where its source
is: a candidate file (reason None), or a skip with its reason. Hidden names are reported once (a
hidden folder as one entry). A local walk also reports links unless followed, loops, special
files and unreadable folders; an object store has no links and no empty folders.

Each walk hands ``record`` a size and a stamp per entry, taken from its own stat or listing: a
file's modification time in nanoseconds, or for an object a hash of its ETag or time (what a
resume compares to refuse a source that changed). An entry with neither gets ``-1`` for both.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

#: Object metadata that changes when an object is rewritten, by back end, in order of trust.
OBJECT_STAMP_KEYS = ("ETag", "etag", "md5Hash", "generation", "LastModified", "last_modified",
                     "mtime", "updated", "created")

Record = Callable[..., None]
Subfolders = Callable[[str], list[str]]


@dataclass(frozen=True, slots=True)  # slots: the build holds one per input file
class Entry:
    """A file met by the walk: a candidate (reason None) or a skip with its reason."""

    path: str
    reason: str | None = None


def ignore(size: int = -1, stamp: int = -1) -> None:
    """Records nothing: a walk without stamps."""


def walk(root: str, *, follow_links: bool, record: Record = ignore) -> Iterator[Entry]:
    """Yield every file below the local folder ``root`` in sorted order (see the module).

    The walk keeps a stack of folders, not a recursion: a tree thousands of levels deep is
    walked like any other, and a folder too deep for the OS's path limit is a reported entry.
    """
    listing = _listing(root, "")
    if isinstance(listing, Entry):
        record()
        yield listing
        return
    stack = [(iter(listing), "", frozenset({_identity(root)}))]
    while stack:
        children, prefix, ancestors = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        found = _visit(root, child, prefix + child.name, ancestors, follow_links, record)
        if isinstance(found, Entry):
            yield found
        else:
            stack.append(found)


def _visit(root: str, child: os.DirEntry, rel: str, ancestors: frozenset, follow_links: bool,
           record: Record) -> Entry | tuple[Iterator[os.DirEntry], str, frozenset]:
    """The entry ``child`` (at ``rel``) is, or for a folder to enter, its stack frame."""
    if child.name.startswith("."):
        record()
        folder = child.is_dir(follow_symlinks=False)
        return Entry(rel + "/" if folder else rel, "hidden folder" if folder else "hidden file")
    if child.is_symlink() and not follow_links:
        record()
        return Entry(rel, "symbolic link (not followed; use --follow-links)")
    try:
        info = os.stat(child.path)
    except OSError as error:
        record()
        return Entry(rel, "cannot read: " + ("broken symbolic link" if child.is_symlink()
                                             else str(error.strerror)))
    if stat.S_ISDIR(info.st_mode):
        identity = (info.st_dev, info.st_ino)
        if identity in ancestors:
            record()
            return Entry(rel + "/", "symbolic link loop")
        listing = _listing(root, rel + "/")
        if isinstance(listing, Entry):
            record()
            return listing
        return iter(listing), rel + "/", ancestors | {identity}
    record(info.st_size, info.st_mtime_ns)
    return Entry(rel) if stat.S_ISREG(info.st_mode) else Entry(rel, "not a regular file")


def _listing(root: str, prefix: str) -> list[os.DirEntry] | Entry:
    """The folder ``prefix`` of ``root`` sorted by name, or the entry reporting why not."""
    folder = os.path.join(root, prefix) if prefix else root
    try:
        with os.scandir(folder) as listing:
            return sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        return Entry(prefix.rstrip("/") + "/", f"cannot read folder: {error.strerror}")


def _identity(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return (info.st_dev, info.st_ino)


def walk_objects(found: dict[str, dict], root: str, *, record: Record = ignore,
                 ) -> Iterator[Entry]:
    """Yield every object of a listing (full name -> info) below ``root``, in sorted order.

    A hidden name (a path component starting with '.') is reported once, at its shallowest
    hidden component.
    """
    reported: set[str] = set()
    for full in sorted(found):
        rel = full[len(root):].lstrip("/")
        parts = rel.split("/")
        hidden = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
        if hidden is None:
            info = found[full]
            record(int(info.get("size") or 0), object_stamp(info))
            yield Entry(rel)
        elif hidden == len(parts) - 1:
            record()
            yield Entry(rel, "hidden file")
        elif (folder := "/".join(parts[:hidden + 1]) + "/") not in reported:
            reported.add(folder)
            record()
            yield Entry(folder, "hidden folder")


def object_stamp(info: dict) -> int:
    """A signed 8-byte hash of the first of an object's :data:`OBJECT_STAMP_KEYS` (0 if none)."""
    value = next((info[key] for key in OBJECT_STAMP_KEYS if info.get(key) is not None), None)
    if value is None:
        return 0
    digest = hashlib.blake2b(str(value).encode("utf-8", "surrogateescape"), digest_size=8)
    return int.from_bytes(digest.digest(), "little", signed=True)


def local_subfolders(root: str, follow_links: bool) -> Subfolders:
    """``folder -> names of the visible folders in it`` for a local tree (empty ones included)."""
    return lambda rel: _subfolders(os.path.join(root, rel) if rel else root, follow_links)


def _subfolders(path: str, follow_links: bool) -> list[str]:
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return [n for n in names if not n.startswith(".") and _is_folder(path, n, follow_links)]


def _is_folder(parent: str, name: str, follow_links: bool) -> bool:
    path = os.path.join(parent, name)
    if os.path.islink(path) and not follow_links:
        return False
    return os.path.isdir(path)


def implied_subfolders(entries: Iterable[Entry]) -> Subfolders:
    """``folder -> names of the visible folders in it``, as the objects' paths imply."""
    children: dict[str, set[str]] = {}
    for entry in entries:
        parts = entry.path.rstrip("/").split("/")
        for depth in range(len(parts) - 1):
            if not parts[depth].startswith("."):
                children.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    return lambda rel: sorted(children.get(rel, ()))
