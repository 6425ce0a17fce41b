"""Hostile use of ShardReader(classes=...) and imgshard.mix (issue 16): what a user can do to a
reader or a mix that must end in one line, never in a traceback."""

from __future__ import annotations

import os
import uuid

import fsspec
import pytest
from test_mix import SMALL, build_named

from imgshard import ReaderError, ShardReader, mix

OPTIONS = {"batch_size": 2, "prefetch": 0, "num_replicas": 1, "rank": 0}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> str:
    return build_named(tmp_path_factory.mktemp("small"), **SMALL)


@pytest.fixture
def remote_small(small):
    """``small`` copied to an fsspec memory store, as its URL."""
    memory = fsspec.filesystem("memory")
    prefix = f"imgshard-attack-read-{uuid.uuid4().hex[:8]}"
    for name in sorted(os.listdir(small)):
        with open(os.path.join(small, name), "rb") as file:
            memory.pipe(f"{prefix}/{name}", file.read())
    yield f"memory://{prefix}"
    memory.rm(prefix, recursive=True)


@pytest.mark.parametrize("where", ["local", "url"])
def test_a_closed_reader_refuses_to_serve_in_one_line_alone_or_in_a_mix(
        small, remote_small, tmp_path, where):
    """A URL reader closed before it downloaded a shard raised RuntimeError ("cannot schedule
    new futures after shutdown") from its download pool, alone or under a mix, while a local
    one went on serving as if open: both now say, in one line, that the reader is closed."""
    directory = small if where == "local" else remote_small
    closed = ShardReader(directory, cache_dir=str(tmp_path / "cache"), **OPTIONS)
    mixed = mix([ShardReader(small, **OPTIONS), closed])
    closed.close()
    with pytest.raises(ReaderError, match="^.* is closed: open a new ShardReader$"):
        list(closed)
    with pytest.raises(ReaderError, match="^.* is closed: open a new ShardReader$"):
        list(mixed)
