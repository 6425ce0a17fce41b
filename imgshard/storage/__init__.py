"""Where a build reads and writes: a local folder, or an fsspec URL (``s3://``, ``gs://``, ...).

A :class:`Location` is one directory and the operations imgshard needs on it (list, open, atomic
write, replace, remove, streamed sha256, a local path where there is one, a walk, a lock).
``Location.of`` returns a :class:`~.local.LocalLocation` or an :class:`~.remote.FsspecLocation`;
only this package tells the two apart.

* :mod:`.location`: the protocol every kind of location implements;
* :mod:`.local`: a local folder (plain ``os`` calls, fsync and rename, memory maps);
* :mod:`.remote`: an fsspec URL (objects uploaded whole, server-side copies, no lock);
* :mod:`.files`: safe local file operations (atomic writes, opens that never block);
* :mod:`.tree`: walking a source tree; :mod:`.lock`: one writer at a time in a local folder;
* :mod:`.options`: storage options, parsed and masked in every message.
"""

from __future__ import annotations

from .local import LocalLocation
from .location import Location, MissingDirectory, is_url
from .options import StorageError, describe_error, parse_storage_options
from .remote import FsspecLocation

__all__ = ["FsspecLocation", "LocalLocation", "Location", "MissingDirectory", "StorageError",
           "describe_error", "is_url", "parse_storage_options"]

