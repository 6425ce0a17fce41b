"""How the ``imgshard`` command reports errors: one ``Error: ...`` line, never a traceback.

imgshard's own errors and OS errors become one line and exit code 1; a usage error one line
naming where help is and exit code 2; Ctrl-C or SIGTERM a line saying whether ``--resume`` can
continue, and exit code 130 or 143.
"""

from __future__ import annotations

import contextlib
import functools

import click

from .errors import ImgshardError
from .interrupts import Terminated
from .resume_log import holds_log
from .storage import Location
from .summary import printable


def user_errors(command):
    """Turn imgshard's own errors and OS errors into one clean line and exit code 1.

    A closed standard output (``imgshard inspect OUT | head -1``) is not an error to report:
    it goes on to click, which ends the command quietly (exit code 1), as other tools do.
    """
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            raise
        except ImgshardError as error:  # may quote a manifest's text: no control sequence
            raise click.ClickException(printable(str(error))) from None
        except KeyboardInterrupt as interrupt:
            click.echo(f"\n{interrupted_message()}", err=True)
            raise SystemExit(143 if isinstance(interrupt, Terminated) else 130) from None
        except OSError as error:
            where = f" {error.filename}" if error.filename else ""
            reason = error.strerror or " ".join(str(error).split()) or type(error).__name__
            raise click.ClickException(f"cannot write or read{where}: {reason}"[:300]) from None
    return wrapper


def interrupted_message() -> str:
    """What to do after Ctrl-C or SIGTERM: ``--resume`` only for a build or append that wrote its
    progress log (before that, as during a scan or the deletion of an earlier build, there is
    nothing to resume); other commands just stop."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.info_name in ("merge", "reshard"):
        return ("Interrupted: the output has no manifest.json; run the same command with "
                "--overwrite to start again.")
    if ctx is None or ctx.info_name not in ("build", "append"):
        return "Interrupted."
    try:
        resumable = holds_log(Location.of(ctx.params["out"], ctx.params["storage_options"]))
    except (ImgshardError, OSError):
        resumable = True  # cannot tell: the hint that fits a build interrupted midway
    if ctx.info_name == "append":
        return ("Interrupted: the dataset is as it was (its manifest unchanged); run the same "
                "command" + (" with --resume to finish the append." if resumable else " again."))
    if resumable:
        return ("Interrupted: the output has no manifest.json yet; run the same command with "
                "--resume to continue.")
    return "Interrupted before the build wrote anything to resume: run the same command again."


class OneLineUsage:
    """A usage error (an unknown option or command, a value not among the choices, a missing
    argument) is one ``Error: ...`` line naming where help is, exit code 2, instead of click's
    usage banner, a hint and the error over four lines."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line_usage():
            return super().make_context(info_name, args, parent=parent, **extra)

    def resolve_command(self, ctx, args):
        with _one_line_usage():
            return super().resolve_command(ctx, args)


@contextlib.contextmanager
def _one_line_usage():
    try:
        yield
    except click.UsageError as error:
        if error.ctx is None:
            raise
        where = error.ctx.command_path
        # without a context, click prints the message alone
        raise click.UsageError(f"{error.format_message()} (see '{where} --help')") from None


class Command(OneLineUsage, click.Command):
    pass


class Group(OneLineUsage, click.Group):
    command_class = Command
