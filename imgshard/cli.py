"""The ``imgshard`` command: a thin shell over :func:`imgshard.build` and friends.

Every option of ``build`` may also come from a TOML file (``--config``); a flag given on the
command line wins over the file, and the file over the defaults of :class:`BuildConfig`.
Errors of imgshard's own become one ``Error: ...`` line and exit code 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from typing import Any

import click

from .build import BuildResult
from .build import build as run_build
from .build_plan import BuildPlan
from .build_plan import plan as make_plan
from .cli_errors import Group, user_errors
from .cli_merge import merge, reshard
from .cli_append import append
from .cli_options import LazyProgressBar, build_options, resolve_options, storage_option
from .config import DTYPES, ConfigError
from .executors import executor_kind, executor_named
from .interrupts import sigterm_as_interrupt
from .leakage import duplicate_lines, leakage_lines, reason_group, summarize_duplicates
from .outdir import check_apart
from .resources import check_memory, default_workers
from .source_depth import source_depth
from .storage import Location
from .summary import label_lines, printable
from .wording import counted, split_counts
from .version import __version__

@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgshard")
def cli() -> None:
    """Turn an image folder into float16 .npy shards once; stream them to Keras every epoch."""


@cli.command()
@click.argument("src", type=click.Path(path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=str),
              help="TOML file of options; flags given here override it.")
@build_options
@storage_option
@click.pass_context
@user_errors
def build(ctx: click.Context, src: str, out: str, config_file: str | None, dry_run: bool,
          overwrite: bool, resume: bool, quiet: bool, executor: str, scheduler: str | None,
          storage_options: dict[str, Any], **options: Any) -> None:
    """Decode, resize and cast every image of SRC into shards in OUT.

    SRC and OUT may be local folders or URLs (s3://bucket/prefix, gs://..., memory://...).
    """
    config, workers = resolve_options(ctx, config_file, options)
    if scheduler is not None and not executor_kind(executor).takes_scheduler:
        raise ConfigError("--scheduler needs --executor dask")
    source, target = Location.of(src, storage_options), Location.of(out, storage_options)
    check_apart(source, target, config.labels, config.targets)
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_interrupt())  # left last: the workers stop under it
        runner = stack.enter_context(executor_named(executor, workers=workers, scheduler=scheduler,
                                                    reaches=(source, target)))
        if not dry_run:
            runner.start(config)  # before the scan: see there
        build_plan = make_plan(source, config, None if dry_run else runner, dedupe=not dry_run)
        if dry_run:
            describe_plan(build_plan, source)
            check_memory(config, runner.workers_here or 1)
            return
        with LazyProgressBar(total=build_plan.scan.num_samples, disable=quiet,
                             desc="build") as bar:
            result = run_build(source, target, overwrite=overwrite,
                               resume=resume, progress=bar.update, build_plan=build_plan,
                               executor=runner)
    if result.already_complete:
        click.echo(f"{target} is already complete: nothing to resume")
    elif not quiet:
        summarize(result, str(target))


def describe_plan(build_plan: BuildPlan, source: Location) -> None:
    """Print what a build would write: counts per split and class, skips, shape, disk use in
    each dtype, and whether uint8 would lose anything (the sources' bit depth)."""
    scan, config = build_plan.scan, build_plan.config
    click.echo(f"Would build {counted(scan.num_samples, 'image')}:")
    for split, samples in scan.splits.items():
        shards = counted(build_plan.num_shards(split), "shard")
        click.echo(f"  {split}: {counted(len(samples), 'image')} in {shards} of up to "
                   f"{config.shard_size:,}")
        if scan.class_names is not None:
            counts = Counter(label for sample in samples for label in (
                sample.label if isinstance(sample.label, tuple) else (sample.label,)))
            width = max(len(name) for name in scan.class_names)
            for label, name in enumerate(scan.class_names):
                click.echo(f"    {name:<{width}}  {counts.get(label, 0):>9,}")
    for line in label_lines(scan.label_kind, scan.target_names):
        click.echo(line[0].upper() + line[1:])
    echo_skips(scan.skipped, "Would skip")
    empty = scan.empty_samples()
    click.echo(f"Not opened: {counted(scan.num_samples, 'image file')} (a dry run decodes nothing)"
               + (f"; {empty:,} of them are empty and will be skipped" if empty else ""))
    if config.dedupe == "exact":
        click.echo("--dedupe exact: exact duplicates are found when the build decodes (each "
                   "file twice); the counts above still hold them")
    height, width, channels = config.image_shape
    click.echo(f"Each image: {height}x{width}x{channels} {config.dtype}, "
               f"{build_plan.bytes_per_image():,} bytes")
    others = ", ".join(f"as {dtype}: about {human_bytes(build_plan.estimated_bytes(dtype))}"
                       for dtype in DTYPES if dtype != config.dtype)
    click.echo(f"On disk: about {human_bytes(build_plan.estimated_bytes())} as {config.dtype} "
               f"(this build); {others}")
    paths = [sample.path for samples in scan.splits.values() for sample in samples]
    click.echo(source_depth(source, paths).describe())


def echo_skips(skipped, verb: str) -> None:
    if not skipped:
        return
    by_reason = Counter(reason_group(skip.reason) for skip in skipped)
    click.echo(f"{verb} {counted(len(skipped), 'file')}:")
    for reason, count in by_reason.most_common():
        example = next(skip.path if skip.reason == reason else f"{skip.path}: {skip.reason}"
                       for skip in skipped if reason_group(skip.reason) == reason)
        click.echo(f"  {count:>7,}  {reason}  (e.g. {example})")


def summarize(result: BuildResult, out: str) -> None:
    """The end-of-build summary: images per split, skips by reason, time, speed and bytes."""
    manifest = result.manifest
    duplicates = summarize_duplicates(manifest.extra.get("duplicates"))
    for line in leakage_lines(duplicates):  # first: the one thing not to miss
        click.echo(printable(line))
    click.echo(f"Built {out}: "
               + split_counts({name: split.num_samples for name, split in manifest.splits.items()}))
    for line in label_lines(manifest.label_kind, manifest.target_names):
        click.echo(line[0].upper() + line[1:])
    echo_skips(manifest.skipped, "Skipped")
    for line in duplicate_lines(duplicates):
        click.echo(printable(line))
    click.echo(f"{result.elapsed:.1f} s, {result.images_per_second:,.0f} images/s, "
               f"{human_bytes(result.bytes_written)} written")


def human_bytes(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


@cli.command()
@click.argument("directory", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON document.")
@storage_option
@user_errors
def inspect(directory: str, as_json: bool, storage_options: dict[str, Any]) -> None:
    """Summarise a shard directory (or URL) from its manifest (never reads the shards)."""
    from .summary import render, summarize_directory

    summary = summarize_directory(Location.of(directory, storage_options))
    if as_json:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))
        return
    for line in render(summary, human_bytes):
        click.echo(line)


@cli.command()
@click.argument("directory", type=click.Path(path_type=str))
@click.option("--deep", is_flag=True, help="Also read every value: NaN/inf, range, labels.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes computing checksums. [all cores]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@storage_option
@user_errors
def verify(directory: str, deep: bool, workers: int | None, quiet: bool,
           storage_options: dict[str, Any]) -> None:
    """Check that DIRECTORY (or URL) matches its manifest; exit 1 if anything differs."""
    from .manifest import read_manifest
    from .verify import verify_directory

    location = Location.of(directory, storage_options)
    directory = str(location)
    files = sum(1 + bool(s.labels) + bool(s.targets)
                for split in read_manifest(location).splits.values() for s in split.shards)
    with LazyProgressBar(total=files, disable=quiet, desc="verify", unit="file") as bar:
        problems = verify_directory(location, deep=deep, workers=workers or default_workers(),
                                    progress=bar.update)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found")
        raise SystemExit(1)
    click.echo(f"OK: {directory} matches its manifest ({files} files checked"
               f"{', every value read' if deep else ''})")


@cli.command()
@click.argument("directory", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str),
              help="PNG file to write.")
@click.option("--split", default="train", show_default=True, help="Split to show.")
@click.option("--per-class", type=click.IntRange(min=1), default=8, show_default=True,
              help="Samples per class (one row per class).")
@click.option("--seed", type=int, default=0, show_default=True, help="Which random samples.")
@storage_option
@user_errors
def preview(directory: str, output: str, split: str, per_class: int, seed: int,
            storage_options: dict[str, Any]) -> None:
    """Write a PNG contact sheet of random samples, one labelled row per class."""
    from .preview import write_preview

    width, height = write_preview(Location.of(directory, storage_options), output, split=split,
                                  per_class=per_class, seed=seed)
    click.echo(f"Wrote {output} ({width}x{height})")


cli.add_command(append)
cli.add_command(merge)
cli.add_command(reshard)


def main() -> None:
    try:
        cli(prog_name="imgshard")
    except BrokenPipeError:  # outside a command (click handles those): end as quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
