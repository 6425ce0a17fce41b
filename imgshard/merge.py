"""``imgshard merge`` and ``imgshard reshard``: new shard directories from finished ones, with
every pixel copied as it is stored, never decoded again.

``merge`` joins datasets of the same pixel options: the class names become their sorted union
(labels renumbered into it), each split is the inputs' rows in the order given, and
``samples.csv`` gains a ``source`` column naming the input of each sample. ``reshard`` is the
merge of one dataset into shards of another size: the same rows, labels and provenance.

The output is written as a build writes (:mod:`imgshard.outdir`): into an empty directory, or
with ``overwrite`` over an earlier imgshard output; locked; a progress log whose plan names
the shards it may write (so that an interrupted merge is cleaned by the next ``--overwrite``);
the manifest last. A merge streams its inputs into output shards on ``workers`` threads
(:mod:`imgshard.merge_copy`); its bytes depend only on the inputs, their order and the shard
size.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import BuildConfig
from .errors import ImgshardError
from .formats import shard_format
from .layout import SAMPLES_NAME, SAMPLES_PARTIAL, SOURCES_KEPT
from .leakage import duplicates_in, duplicates_record
from .manifest import Manifest, SplitInfo, read_manifest, write_manifest
from .merge_copy import Input, Writer, copy_splits
from .merge_plan import (
    MergeError,
    check_compatible,
    class_union,
    label_table,
    split_layout,
    split_names,
)
from .merge_samples import (
    Duplicates,
    duplicated_hashes,
    find_duplicates,
    rewrite_samples,
)
from .outdir import check_apart, locked, prepare_out
from .resources import default_workers
from .resume import finish_log
from .resume_log import ResumeLog
from .samples_csv import open_samples_csv, read_samples
from .storage import Location
from .values import is_whole_argument
from .version import __version__

#: The largest shard size taken (a manifest's counts go up to 2**40).
MAX_SHARD_SIZE = 1 << 40
#: The most threads a merge copies on (more only wait for the same disk or network).
MAX_THREADS = 32
#: Keys of an input's manifest extras that describe that input's own merge, not the output.
MERGE_KEYS = ("merged_from", "duplicate_paths")
#: Keys of an input's manifest extras true of that input's samples alone: the groups of
#: duplicates are found again in the output (a merge's union has duplicates across its inputs
#: that no input's record names), or left out when an input's rows carry no hashes.
INPUT_ONLY_KEYS = ("duplicates",)
#: Keys of an input's manifest extras naming files of the input that a merge does not hold (the
#: record of the input's source files, which ``imgshard append`` reads: a reshard copies it).
INPUT_FILE_KEYS = ("sources",)


@dataclass(frozen=True)
class MergeResult:
    """What a merge or reshard wrote: the output's manifest, the paths found in more than one
    input, and how long it took."""

    manifest: Manifest
    duplicates: Duplicates
    seconds: float
    num_inputs: int


def merge(inputs: Sequence[str | Location], out: str | Location, *,
          shard_size: int | None = None, overwrite: bool = False, workers: int | None = None,
          progress: Callable[[int], None] | None = None,
          storage_options: dict[str, Any] | None = None) -> MergeResult:
    """Join the shard directories ``inputs`` (paths or URLs) into ``out``.

    Args:
        shard_size: samples per output shard (default: the first input's).
        overwrite: replace an earlier imgshard output in ``out``.
        workers: threads copying output shards (default: one per core); any number gives the
            same bytes.
        progress: called with the number of samples copied, as they are.

    Raises:
        MergeError, ManifestError, OutputError, ShardError: one line for the user.
    """
    if isinstance(inputs, (str, bytes, os.PathLike, Location)):
        raise MergeError(f"merge takes a list of input directories, got one: {str(inputs)[:80]!r} "
                         "(pass [directory])")
    locations = [_location(given, storage_options) for given in inputs]
    if not locations:
        raise MergeError("merge needs at least one input directory")
    return _combine(locations, _location(out, storage_options), shard_size=shard_size,
                    overwrite=overwrite, workers=workers, progress=progress, merged=True)


def reshard(directory: str | Location, out: str | Location, *, shard_size: int,
            overwrite: bool = False, workers: int | None = None,
            progress: Callable[[int], None] | None = None,
            storage_options: dict[str, Any] | None = None) -> MergeResult:
    """Write the dataset ``directory`` into ``out`` in shards of ``shard_size`` samples: the same
    samples in the same order, splits and labels (its ``parent_id`` is the input's id)."""
    return _combine([_location(directory, storage_options)], _location(out, storage_options),
                    shard_size=shard_size, overwrite=overwrite, workers=workers,
                    progress=progress, merged=False)


def _combine(locations: list[Location], out: Location, *, shard_size: int | None,
             overwrite: bool, workers: int | None, progress: Callable[[int], None] | None,
             merged: bool) -> MergeResult:
    started = time.perf_counter()
    workers = _workers(workers)
    for location in locations:
        check_apart(location, out)
    manifests = [read_manifest(location) for location in locations]
    names = [str(location) for location in locations]
    check_compatible(names, manifests)
    size = _shard_size(_default_shard_size(names[0], manifests[0]) if shard_size is None
                       else shard_size)
    union = class_union(manifests)
    inputs = [Input(location, manifest, label_table(manifest.class_names, union))
              for location, manifest in zip(locations, manifests)]
    layouts = {split: split_layout(split, manifests, size) for split in split_names(manifests)}
    with locked(out):
        out = dataclasses.replace(out, temp_tag=secrets.token_hex(6))
        prepare_out(out, overwrite=overwrite, resumes=False)  # no --resume: --overwrite
        plan = {"build": out.temp_tag, "merge": [m.dataset_id for m in manifests],
                "shards": {split: layout.num_shards for split, layout in layouts.items()}}
        log = ResumeLog(out, plan, append=False)
        try:
            splits = copy_splits(_writer(out, manifests[0], union), list(layouts.values()),
                                 inputs, union, workers=workers, progress=progress)
            duplicates = _write_samples(out, inputs, names, layouts,
                                        source_column=merged or _holds_merges(manifests))
            groups = _groups(out, manifests, splits)
            _check_unchanged(locations, names, manifests)
            kept = not merged and _copy_record(inputs[0], out)
        finally:
            log.close()
        manifest = _manifest(names, manifests, union, size, splits, duplicates, merged,
                             sources_kept=kept, groups=groups)
        write_manifest(out, manifest)
        finish_log(out)
    return MergeResult(manifest, duplicates, time.perf_counter() - started, len(inputs))


def _copy_record(given: Input, out: Location) -> bool:
    """Copy a reshard input's record of its source files (the same files, so an append to the
    reshard can tell which changed); whether it had one."""
    if given.manifest.extra.get("sources") != SOURCES_KEPT \
            or not given.location.exists(SOURCES_KEPT):
        return False
    with given.location.open_listed(SOURCES_KEPT) as record, \
            out.atomic_file(SOURCES_KEPT) as copy:
        shutil.copyfileobj(record, copy, 1 << 20)
    return True


def _writer(out: Location, first: Manifest, union: list[str] | None) -> Writer:
    return Writer(out, shard_format(), tuple(first.image_shape), np.dtype(first.dtype),
                  None if union is None else len(union))


def _workers(workers: Any) -> int:
    """The threads to copy on: ``workers``, or without it one per core this process may use;
    at most :data:`MAX_THREADS`."""
    if workers is None:
        return min(default_workers(), MAX_THREADS)
    if not is_whole_argument(workers) or workers < 1:
        raise MergeError(f"workers must be a whole number >= 1, got {repr(workers)[:40]}")
    return int(min(workers, MAX_THREADS))


def _check_unchanged(locations: list[Location], names: list[str],
                     manifests: list[Manifest]) -> None:
    """Refuse to finish when an input's manifest changed since it was read: another process
    rebuilt (or edited) it while its shards and then its ``samples.csv`` were read, so the
    rows copied might not describe the pixels copied. (A build retires the manifest first and
    writes it last: one still equal at the end was not being rewritten when the rows were.)"""
    for location, name, manifest in zip(locations, names, manifests):
        try:
            now = read_manifest(location).dataset_id
        except ImgshardError:
            now = None
        if now != manifest.dataset_id:
            raise MergeError(f"{name} changed while it was being merged (rebuilt or edited by "
                             "another process?): merge again once it is finished")


def _holds_merges(manifests: list[Manifest]) -> bool:
    """Whether an input is itself a merge: its rows name their sources, which a reshard keeps."""
    return any("merged_from" in manifest.extra for manifest in manifests)


def _write_samples(out: Location, inputs: list[Input], names: list[str], layouts: dict, *,
                   source_column: bool) -> Duplicates:
    """Stage the output's ``samples.csv`` (with ``source_column``, each row's input; with the
    hash columns when every input was searched for duplicates), find the paths in two inputs,
    publish it."""
    folder = out.staging_folder()
    path = os.path.join(folder, SAMPLES_PARTIAL)
    hashed = _searched([given.manifest for given in inputs])
    try:
        stream, writer = open_samples_csv(path, source_column=source_column, hash_columns=hashed)
        with stream:
            hashes = rewrite_samples(inputs, names, layouts, writer, source_column=source_column,
                                     hash_columns=hashed)
        duplicated = duplicated_hashes(hashes)
        duplicates = Duplicates()
        if len(duplicated):
            with open(path, "rb") as written:
                rows = read_samples(written, max_rows=sum(i.manifest.shard_samples
                                                          for i in inputs))
                duplicates = find_duplicates(rows, duplicated)
        out.publish(path, SAMPLES_NAME)
    finally:
        out.end_staging(folder)
    return duplicates


def _searched(manifests: list[Manifest]) -> bool:
    """Whether every input was searched for duplicates (its ``samples.csv`` rows carry the
    hashes: its manifest has a ``duplicates`` list)."""
    return all(isinstance(manifest.extra.get("duplicates"), list) for manifest in manifests)


def _groups(out: Location, manifests: list[Manifest], splits: dict[str, SplitInfo]) -> dict:
    """The output's ``duplicates`` key: the groups of its published ``samples.csv`` (none when
    an input was not searched: a search of part of the samples would pass for the whole)."""
    if not _searched(manifests):
        return {}
    config = BuildConfig.from_dict(manifests[0].config)
    return duplicates_record(duplicates_in(out, config, splits))


def _manifest(names: list[str], manifests: list[Manifest], union: list[str] | None,
              shard_size: int, splits: dict[str, SplitInfo], duplicates: Duplicates,
              merged: bool, *, sources_kept: bool, groups: dict) -> Manifest:
    """The output's manifest: the first input's config (with the output's shard size; a
    merge's classes are the union's, so its ``classes`` option is cleared)."""
    first = manifests[0]
    extra = {key: value for key, value in first.extra.items()
             if key not in (*INPUT_FILE_KEYS, *INPUT_ONLY_KEYS)
             and not (merged and key in MERGE_KEYS)}
    extra.update(groups)
    if sources_kept:
        extra["sources"] = SOURCES_KEPT
    if merged:
        extra["merged_from"] = [{"source": name, "dataset_id": manifest.dataset_id}
                                for name, manifest in zip(names, manifests)]
        extra["duplicate_paths"] = duplicates.to_json()
    skipped = sorted((skip for manifest in manifests for skip in manifest.skipped),
                     key=lambda skip: (skip.path, skip.reason))
    return Manifest(
        imgshard_version=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        source=" + ".join(names) if merged else first.source,
        image_shape=tuple(first.image_shape),
        dtype=first.dtype,
        class_names=union,
        config={**first.config, "shard_size": shard_size,
                **({"classes": None} if merged else {})},
        splits=splits,
        skipped=skipped,
        extra=extra,
        parent_id=None if merged else first.dataset_id,
    )


def _shard_size(value: Any) -> int:
    if not is_whole_argument(value) or not 1 <= value <= MAX_SHARD_SIZE:
        raise MergeError(f"shard size must be a whole number from 1 to {MAX_SHARD_SIZE}, got "
                         f"{repr(value)[:40]}")
    return int(value)


def _default_shard_size(name: str, first: Manifest) -> Any:
    """The first input's shard size (a manifest may lack it: its config keys are optional)."""
    if "shard_size" not in first.config:
        raise MergeError(f"{name}'s manifest gives no shard_size: choose one (--shard-size)")
    return first.config["shard_size"]


def _location(given: str | Location, options: dict[str, Any] | None) -> Location:
    return given if isinstance(given, Location) else Location.of(given, options)

