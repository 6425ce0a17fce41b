"""``imgshard append``: options and the summary it prints."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import click

from .append import AppendResult, AppendStart, prepare_append
from .append import append as run_append
from .append_plan import Report
from .cli_errors import Command, user_errors
from .cli_options import LazyProgressBar, build_options, given_options, storage_option
from .config import ConfigError
from .executors import executor_kind
from .interrupts import sigterm_as_interrupt
from .leakage import duplicate_lines, leakage_lines, summarize_duplicates
from .storage import Location
from .summary import printable
from .wording import counted, split_counts

#: What an append does rather than what it writes (its options are the dataset's).
APPEND_RUN_FLAGS = {
    "--dry-run": "Scan only and print what would be appended.",
    "--resume": "Finish an interrupted append of OUT.",
}


@click.command(cls=Command)
@click.argument("src", type=click.Path(path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=str),
              help="TOML file of options (each must be the dataset's own).")
@functools.partial(build_options, run_flags=APPEND_RUN_FLAGS, recorded=True)
@storage_option
@click.pass_context
@user_errors
def append(ctx: click.Context, src: str, out: str, config_file: str | None, dry_run: bool,
           resume: bool, quiet: bool, executor: str, scheduler: str | None,
           storage_options: dict[str, Any], **options: Any) -> None:
    """Add the files of SRC that the dataset in OUT does not hold yet, after its shards.

    Every option comes from OUT's manifest (one given here must repeat it); no old shard,
    sample, split or label changes.
    """
    given, workers = given_options(ctx, config_file, options)
    if scheduler is not None and not executor_kind(executor).takes_scheduler:
        raise ConfigError("--scheduler needs --executor dask")
    source, target = Location.of(src, storage_options), Location.of(out, storage_options)
    if dry_run:
        describe(prepare_append(source, target, given))
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_interrupt())
        bar = stack.enter_context(LazyProgressBar(disable=quiet, desc="append"))
        result = run_append(source, target, given, workers=workers, executor=executor,
                            scheduler=scheduler, resume=resume, progress=bar.update)
    if not quiet:
        summarize(result, out)


def describe(start: AppendStart) -> None:
    """What an append would add (a dry run decodes nothing)."""
    plan = start.plan
    if not plan.num_samples:
        click.echo("Would append nothing: no new files")
    else:
        click.echo(f"Would append {counted(plan.num_samples, 'image')}:")
    for split, samples in plan.splits.items():
        click.echo(f"  {split}: {len(samples):,}")
    if plan.skipped:
        click.echo(f"Would skip {counted(len(plan.skipped), 'new file')}")
    _echo_changes(plan, plan.class_names)


def summarize(result: AppendResult, out: str) -> None:
    plan = result.plan
    duplicates = summarize_duplicates(result.manifest.extra.get("duplicates"))
    if result.nothing_new:
        click.echo(f"{out}: nothing new to append")
    else:
        for line in leakage_lines(duplicates):  # first: the grown dataset's, old and new
            click.echo(printable(line))
        click.echo(f"Appended to {out}: {split_counts(result.added())}, "
                   f"{counted(result.new_skips(), 'new file')} skipped ({result.elapsed:.1f} s)")
        for line in duplicate_lines(duplicates):
            click.echo(printable(line))
    _echo_changes(plan, plan.class_names)


def _echo_changes(plan, class_names: list[str] | None) -> None:
    if plan.new_classes:
        one = len(plan.new_classes) == 1
        unsorted = class_names is not None and class_names != sorted(class_names)
        click.echo(f"New class{'' if one else 'es'} {', '.join(plan.new_classes)} "
                   f"{'takes a label' if one else 'take labels'} after the old ones"
                   + (": class_names is no longer sorted" if unsorted else ""))
    if plan.changed is None:
        click.echo("Changed files cannot be told: the dataset has no readable record of its "
                   "sources (built by an older imgshard, resharded, or the record is damaged); "
                   "a new record starts from SRC as it is now")
    else:
        _echo_report("Changed since the dataset took them (left as they were)", plan.changed)
    _echo_report("Gone from SRC (kept in the dataset)", plan.disappeared)


def _echo_report(title: str, report: Report) -> None:
    if report.count:
        click.echo(f"{title}: {report.count:,}, e.g. {', '.join(report.examples[:3])}")
