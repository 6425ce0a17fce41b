"""Copy the rows of input shards into the output's shards, without decoding an image.

Each input shard file is mapped from the descriptor its checksum was computed on (for a URL,
from a temporary download), so the bytes copied are the bytes verified against the input's
manifest; a file that does not match stops the copy before anything looks finished. The rows
go out in chunks of about :data:`CHUNK_BYTES` through the shard format's row writer, which
hashes them as it writes. Output shards are written on threads, each shard's bytes fixed by the
plan (:func:`imgshard.merge_plan.shard_pieces`) whichever thread writes it; an input shard read
by two of them is verified once. Memory holds a chunk and an output shard's labels per thread,
whatever the size of the inputs.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np

from .errors import ShardError
from .formats import ShardFormat, check_labels, class_counts
from .layout import images_name, labels_name
from .manifest import Manifest, ShardInfo, SplitInfo
from .merge_plan import Piece, SplitLayout, shard_pieces
from .storage import Location

#: The bytes of rows copied at once.
CHUNK_BYTES = 1 << 22
#: Output shards queued per thread (ahead of the one written): enough to keep it busy.
AHEAD = 4


@dataclass(frozen=True)
class Input:
    """One input dataset: where it is, its manifest, and its labels' table into the output's."""

    location: Location
    manifest: Manifest
    table: np.ndarray | None


class VerifiedShards:
    """Input shard files opened and verified once, shared by the output shards (maybe written
    by several threads) that copy rows from them, and closed when the last of those is done."""

    def __init__(self, inputs: list[Input], file_format: ShardFormat,
                 pieces: list[list[Piece]]) -> None:
        self._inputs = inputs
        self._format = file_format
        self._uses = Counter((p.source, p.shard.images) for shard in pieces for p in shard)
        self._open: dict[tuple[int, str], _Opened] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def rows(self, piece: Piece) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """The input's images and labels (output numbering) of the shard ``piece`` reads.

        Raises:
            Stopped: another thread's verification of that shard failed (it raises why).
        """
        key = (piece.source, piece.shard.images)
        with self._lock:
            opened = self._open.setdefault(key, _Opened())
        try:
            with opened.lock:
                if opened.failed:
                    raise Stopped()
                if opened.files is None:
                    opened.open(lambda files: self._verified(self._inputs[piece.source],
                                                             piece.shard, files))
            yield opened.arrays
        finally:
            with self._lock:
                self._uses[key] -= 1
                done = self._uses[key] == 0
                if done:
                    del self._open[key]
            if done:
                opened.close()

    def close(self) -> None:
        """Close the input shards still open (output shards that would read them stopped)."""
        with self._lock:
            left, self._open = list(self._open.values()), {}
        for opened in left:
            opened.close()

    def _verified(self, source: Input, shard: ShardInfo, files: contextlib.ExitStack
                  ) -> tuple[np.ndarray, np.ndarray | None]:
        manifest = source.manifest
        images = _opened(source, files, self._format, shard.images,
                         shape=(shard.num_samples, *manifest.image_shape), dtype=manifest.dtype,
                         sha256=shard.sha256)
        if source.table is None:
            return images, None
        return images, source.table[verified_labels(source, shard, self._format, files)]


@dataclass
class _Opened:
    """One input shard's verified arrays and the files they are mapped from; ``failed`` once
    its verification failed (the files then closed at once)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    files: contextlib.ExitStack | None = None
    arrays: tuple[np.ndarray, np.ndarray | None] | None = None
    failed: bool = False

    def open(self, verified: Callable[[contextlib.ExitStack],
                                      tuple[np.ndarray, np.ndarray | None]]) -> None:
        files = contextlib.ExitStack()
        try:
            self.arrays = verified(files)
        except BaseException:
            self.failed = True
            files.close()
            raise
        self.files = files

    def close(self) -> None:
        files, self.files, self.arrays = self.files, None, None
        if files is not None:
            files.close()


class Stopped(Exception):
    """Another output shard failed: this one stops where it is."""


@dataclass(frozen=True)
class OutputShard:
    """One output shard to write: its split's layout, its index, and the input rows it holds."""

    layout: SplitLayout
    index: int
    pieces: list[Piece]


@dataclass(frozen=True)
class Writer:
    """What every output shard is written with: where, in which format, of what rows."""

    out: Location
    file_format: ShardFormat
    image_shape: tuple[int, ...]
    dtype: np.dtype
    num_classes: int | None

    def write(self, job: OutputShard, shards: VerifiedShards, stop: threading.Event
              ) -> tuple[ShardInfo, np.ndarray | None]:
        """Write one output shard (and its labels) from verified input rows, in chunks of
        about :data:`CHUNK_BYTES`; its info and class counts."""
        if stop.is_set():
            raise Stopped()
        rows = job.layout.shard_rows(job.index)
        labels: list[np.ndarray] = []
        name = self._name(images_name, job)
        with self.out.atomic_file(name) as stream:
            writer = self.file_format.RowStream(stream, expected_rows=rows,
                                                row_shape=self.image_shape, dtype=self.dtype)
            for piece in job.pieces:
                with shards.rows(piece) as (images, piece_labels):
                    step = max(1, CHUNK_BYTES // max(images[0:1].nbytes, 1))
                    for start in range(piece.start, piece.stop, step):
                        if stop.is_set():
                            raise Stopped()
                        chunk = slice(start, min(start + step, piece.stop))
                        writer.append(images[chunk])
                        if piece_labels is not None:
                            labels.append(piece_labels[chunk])
            if writer.rows != rows:
                raise RuntimeError(f"{name}: {writer.rows} rows, {rows} planned (a bug)")
            digest = writer.finish()
        info = ShardInfo(images=name, num_samples=rows, sha256=digest)
        if self.num_classes is None:
            return info, None
        return self._with_labels(info, job, labels)

    def _with_labels(self, info: ShardInfo, job: OutputShard, labels: list[np.ndarray]
                     ) -> tuple[ShardInfo, np.ndarray]:
        labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
        name = self._name(labels_name, job)
        with self.out.atomic_file(name) as stream:
            writer = self.file_format.RowStream(stream, expected_rows=len(labels), row_shape=(),
                                                dtype=np.dtype(np.int32))
            writer.append(labels)
            digest = writer.finish()
        info = ShardInfo(images=info.images, num_samples=info.num_samples, sha256=info.sha256,
                         labels=name, labels_sha256=digest)
        return info, class_counts(labels, self.num_classes)

    def _name(self, make: Callable[..., str], job: OutputShard) -> str:
        return make(job.layout.split, job.index, self.file_format.SUFFIX)


def copy_splits(writer: Writer, layouts: list[SplitLayout], inputs: list[Input],
                class_names: list[str] | None, *, workers: int,
                progress: Callable[[int], None] | None = None) -> dict[str, SplitInfo]:
    """Write every output shard of ``layouts`` on ``workers`` threads (hashing and file I/O
    let go of the GIL); on the first failure the others stop, and it is raised. Each shard's
    class counts are added to its split's as it is written (memory: a count per class and
    split, whatever the number of output shards)."""
    manifests = [source.manifest for source in inputs]
    jobs = [OutputShard(layout, index, pieces) for layout in layouts
            for index, pieces in enumerate(shard_pieces(layout, manifests))]
    shards = VerifiedShards(inputs, writer.file_format, [job.pieces for job in jobs])
    stop, counting = threading.Event(), threading.Lock()
    totals = {layout.split: np.zeros(len(class_names or ()), np.int64) for layout in layouts}

    def write(job: OutputShard) -> ShardInfo:
        try:
            info, counts = writer.write(job, shards, stop)
        except BaseException:
            stop.set()
            raise
        if counts is not None:
            with counting:
                totals[job.layout.split] += counts
        return info

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgshard-merge")
    queued, infos = iter(jobs), []
    try:  # at most AHEAD jobs a thread submitted at once: a future each, not one an output shard
        pending = deque(pool.submit(write, job)
                        for job in itertools.islice(queued, AHEAD * workers))
        while pending:
            infos.append(_result(pending[0], pending))
            pending.popleft()
            pending.extend(pool.submit(write, job) for job in itertools.islice(queued, 1))
            if progress:
                progress(infos[-1].num_samples)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        shards.close()
    return _split_infos(layouts, jobs, infos, class_names, totals)


def _result(future: Future, futures: Iterable[Future]) -> ShardInfo:
    """The result of ``future``; when it stopped because another failed, that failure (the
    first in order, whatever thread hit it first)."""
    try:
        return future.result()
    except Stopped:
        wait(futures)
        errors = [f.exception() for f in futures if not f.cancelled()]
        raise next((error for error in errors if error is not None
                    and not isinstance(error, Stopped)), RuntimeError("stopped, no cause")
                   ) from None


def _split_infos(layouts: list[SplitLayout], jobs: list[OutputShard], infos: list[ShardInfo],
                 class_names: list[str] | None, totals: dict[str, np.ndarray]
                 ) -> dict[str, SplitInfo]:
    splits = {}
    for layout in layouts:
        counts = None
        if class_names is not None:
            found = totals[layout.split]
            counts = {name: int(found[i]) for i, name in enumerate(class_names)}
        splits[layout.split] = SplitInfo(
            num_samples=layout.total, class_counts=counts,
            shards=[info for job, info in zip(jobs, infos) if job.layout is layout])
    return splits


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
