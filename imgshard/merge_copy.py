"""Copy the rows of input shards into the output's shards, without decoding an image.

Each input shard file is mapped from the descriptor its checksum was computed on (for a URL,
from a temporary download), so the bytes copied are the bytes verified against the input's
manifest; a file that does not match stops the copy before anything looks finished. The rows
go out in chunks of about :data:`CHUNK_BYTES` through the shard format's row writer, which
hashes them as it writes: memory holds one chunk and one output shard's labels, whatever the
size of the inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import ShardError
from .formats import RowWriter, ShardFormat, check_labels
from .layout import images_name, labels_name
from .manifest import Manifest, ShardInfo, SplitInfo
from .merge_plan import SplitLayout
from .storage import Location

#: The bytes of rows copied at once.
CHUNK_BYTES = 1 << 22


@dataclass(frozen=True)
class Input:
    """One input dataset: where it is, its manifest, and its labels' table into the output's."""

    location: Location
    manifest: Manifest
    table: np.ndarray | None


@dataclass
class ShardCutter:
    """Writes one output split: rows appended in order are cut into shards of the layout."""

    out: Location
    layout: SplitLayout
    file_format: ShardFormat
    image_shape: tuple[int, ...]
    dtype: np.dtype
    class_names: list[str] | None
    shards: list[ShardInfo] = field(default_factory=list)
    counts: np.ndarray | None = None
    _file: contextlib.ExitStack | None = None
    _writer: RowWriter | None = None
    _labels: list[np.ndarray] = field(default_factory=list)

    def append(self, images: np.ndarray, labels: np.ndarray | None) -> None:
        """Write ``images`` (and their output ``labels``) after the rows before them."""
        done = 0
        while done < len(images):
            if self._writer is None:
                self._open()
            room = self.layout.shard_rows(len(self.shards)) - self._writer.rows
            take = min(room, len(images) - done)
            self._writer.append(images[done:done + take])
            if labels is not None:
                self._labels.append(labels[done:done + take])
            done += take
            if take == room:
                self._close()

    def finish(self) -> SplitInfo:
        """The split as the manifest lists it; every row of the layout must have come."""
        if self._writer is not None or len(self.shards) != self.layout.num_shards:
            raise RuntimeError(f"split {self.layout.split}: fewer rows than planned (a bug)")
        counts = None
        if self.class_names is not None:
            found = self.counts if self.counts is not None else np.zeros(len(self.class_names))
            counts = {name: int(found[i]) for i, name in enumerate(self.class_names)}
        return SplitInfo(num_samples=self.layout.total, class_counts=counts, shards=self.shards)

    def abort(self) -> None:
        """Remove the temporary file of the shard being written."""
        if self._file is not None:
            failure = RuntimeError("the copy failed")
            self._file.__exit__(type(failure), failure, None)
            self._file = self._writer = None

    def _open(self) -> None:
        index = len(self.shards)
        self._file = contextlib.ExitStack()
        stream = self._file.enter_context(self.out.atomic_file(self._name(images_name, index)))
        self._writer = self.file_format.RowStream(
            stream, expected_rows=self.layout.shard_rows(index), row_shape=self.image_shape,
            dtype=self.dtype)

    def _close(self) -> None:
        index = len(self.shards)
        with self._file:
            digest = self._writer.finish()
        rows, self._file, self._writer = self._writer.rows, None, None
        info = ShardInfo(images=self._name(images_name, index), num_samples=rows, sha256=digest)
        if self.class_names is not None:
            info = self._write_labels(info, index)
        self.shards.append(info)

    def _write_labels(self, info: ShardInfo, index: int) -> ShardInfo:
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int32)
        self._labels = []
        found = np.bincount(labels, minlength=len(self.class_names))
        self.counts = found if self.counts is None else self.counts + found
        name = self._name(labels_name, index)
        with self.out.atomic_file(name) as stream:
            writer = self.file_format.RowStream(stream, expected_rows=len(labels), row_shape=(),
                                                dtype=np.dtype(np.int32))
            writer.append(labels)
            digest = writer.finish()
        return ShardInfo(images=info.images, num_samples=info.num_samples, sha256=info.sha256,
                         labels=name, labels_sha256=digest)

    def _name(self, make: Callable[..., str], index: int) -> str:
        return make(self.layout.split, index, self.file_format.SUFFIX)


def copy_split(cutter: ShardCutter, inputs: list[Input], file_format: ShardFormat,
               progress: Callable[[int], None] | None = None) -> SplitInfo:
    """Copy every input's shards of the cutter's split, in order, into the cutter."""
    split = cutter.layout.split
    try:
        for source in inputs:
            for shard in source.manifest.splits[split].shards if split in source.manifest.splits \
                    else ():
                for images, labels in verified_rows(source, shard, file_format):
                    cutter.append(images, labels)
                    if progress:
                        progress(len(images))
    except BaseException:
        cutter.abort()
        raise
    return cutter.finish()


def verified_rows(source: Input, shard: ShardInfo, file_format: ShardFormat
                  ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The rows of one input shard in chunks, with their labels in the output's numbering,
    read from files whose checksums match the input's manifest."""
    manifest = source.manifest
    shape = (shard.num_samples, *manifest.image_shape)
    with contextlib.ExitStack() as files:
        images = _opened(source, files, file_format, shard.images, shape=shape,
                         dtype=manifest.dtype, sha256=shard.sha256)
        labels = None if source.table is None else verified_labels(source, shard, file_format,
                                                                   files)
        row_bytes = max(images[0:1].nbytes, 1)
        step = max(1, CHUNK_BYTES // row_bytes)
        for start in range(0, shard.num_samples, step):
            chunk = slice(start, start + step)
            yield images[chunk], None if labels is None else source.table[labels[chunk]]
        del images, labels


def verified_labels(source: Input, shard: ShardInfo, file_format: ShardFormat,
                    files: contextlib.ExitStack) -> np.ndarray:
    """The labels of one input shard, in the input's numbering, mapped (for the block of
    ``files``) from a file whose checksum matches the input's manifest, each a class of it."""
    labels = _opened(source, files, file_format, shard.labels, shape=(shard.num_samples,),
                     dtype="int32", sha256=shard.labels_sha256)
    check_labels(source.location.display(shard.labels), labels, source.manifest.num_classes)
    return labels


def _opened(source: Input, files: contextlib.ExitStack, file_format: ShardFormat, name: str,
            **expected) -> np.ndarray:
    """The input file ``name`` mapped from a local copy and checked (errors name the file
    where it lies, not a temporary download)."""
    path = files.enter_context(source.location.local_copy(name))
    try:
        return file_format.open_shard(path, **expected)
    except ShardError as error:
        raise ShardError(str(error).replace(path, source.location.display(name))) from None
