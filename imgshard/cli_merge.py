"""``imgshard merge`` and ``imgshard reshard``: options and the summary they print."""

from __future__ import annotations

from typing import Any

import click

from .cli_errors import Command, user_errors
from .cli_options import LazyProgressBar, storage_option
from .interrupts import sigterm_as_interrupt
from .leakage import duplicate_lines, leakage_lines, summarize_duplicates
from .manifest import read_manifest
from .merge import MergeResult
from .merge import merge as run_merge
from .merge import reshard as run_reshard
from .storage import Location
from .wording import counted, split_counts

#: How many duplicated paths the summary names.
EXAMPLES_SHOWN = 3


def _common(command):
    command = click.option("--workers", type=click.IntRange(min=1), default=None,
                           help="Threads copying shards; any number gives the same bytes. "
                                "[one per core]")(command)
    command = click.option("--overwrite", is_flag=True,
                           help="Replace an earlier imgshard output in OUT.")(command)
    command = click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")(
        command)
    return storage_option(command)


@click.command(cls=Command)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=str),
              help="The merged shard directory (a folder or URL).")
@click.option("--shard-size", type=int, default=None,
              help="Images per output shard. [the first input's]")
@_common
@user_errors
def merge(inputs: tuple[str, ...], out: str, shard_size: int | None, workers: int | None,
          overwrite: bool, quiet: bool, storage_options: dict[str, Any]) -> None:
    """Join the shard directories INPUTS into one, copying pixels without decoding them.

    They must share the image shape, dtype and pixel options; class names become their sorted
    union; each split is the inputs' samples in the order given.
    """
    total = _samples(inputs, storage_options)
    with sigterm_as_interrupt(), LazyProgressBar(total=total, disable=quiet, desc="merge") as bar:
        result = run_merge(list(inputs), out, shard_size=shard_size, overwrite=overwrite,
                           workers=workers, progress=bar.update,
                           storage_options=storage_options)
    if not quiet:
        _summarize(result, out, f"Merged {counted(len(inputs), 'dataset')} into")


@click.command(cls=Command)
@click.argument("directory", type=click.Path(path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--shard-size", type=int, required=True, help="Images per output shard.")
@_common
@user_errors
def reshard(directory: str, out: str, shard_size: int, workers: int | None, overwrite: bool,
            quiet: bool, storage_options: dict[str, Any]) -> None:
    """Copy the dataset DIRECTORY into OUT in shards of another size, without decoding."""
    total = _samples((directory,), storage_options)
    with sigterm_as_interrupt(), LazyProgressBar(total=total, disable=quiet,
                                                 desc="reshard") as bar:
        result = run_reshard(directory, out, shard_size=shard_size, overwrite=overwrite,
                             workers=workers, progress=bar.update,
                             storage_options=storage_options)
    if not quiet:
        _summarize(result, out, "Resharded into")


def _samples(inputs: tuple[str, ...], storage_options: dict[str, Any]) -> int:
    """The samples the inputs hold (for the progress bar; each manifest is read again, and
    checked, by the merge itself)."""
    return sum(read_manifest(Location.of(given, storage_options)).shard_samples
               for given in inputs)


def _summarize(result: MergeResult, out: str, verb: str) -> None:
    """Leakage first (an image of one input's train split in another's val), then what was
    written, the duplicate groups and the paths found in two inputs."""
    manifest = result.manifest
    groups = summarize_duplicates(manifest.extra.get("duplicates"))
    for line in leakage_lines(groups):
        click.echo(line)
    splits = split_counts({name: split.num_samples for name, split in manifest.splits.items()})
    shards = sum(len(split.shards) for split in manifest.splits.values())
    classes = "" if manifest.class_names is None \
        else f", {counted(len(manifest.class_names), 'class', 'classes')}"
    click.echo(f"{verb} {out}: {splits} in {counted(shards, 'shard')} of "
               f"{manifest.config['shard_size']}{classes} ({result.seconds:.1f} s)")
    for line in duplicate_lines(groups):
        click.echo(line)
    if result.num_inputs < 2:
        return
    duplicates = result.duplicates
    if not duplicates.count:
        click.echo("Duplicates: no path in two inputs.")
        return
    click.echo(f"Duplicates: {counted(duplicates.count, 'path')} "
               f"{'occurs' if duplicates.count == 1 else 'occur'} in more than one input:")
    for example in duplicates.examples[:EXAMPLES_SHOWN]:
        click.echo(f"  {example['path']}  (in {', '.join(example['sources'])})")
