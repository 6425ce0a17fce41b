"""Options several ``imgshard`` commands share."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import click

from .config import (
    COLOR_CHANNELS,
    DECODERS,
    DEDUPE_MODES,
    DTYPES,
    INTERPOLATIONS,
    RESIZE_MODES,
    BuildConfig,
    ConfigError,
    load_toml,
    parse_classes,
    parse_size,
)
from .errors import ImgshardError
from .executors import EXECUTORS
from .storage import parse_storage_options

if TYPE_CHECKING:
    from tqdm import tqdm


def storage_option(command):
    """``--storage-option KEY=VALUE`` (repeatable), passed to fsspec for URLs as a dict."""
    def to_dict(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]):
        try:
            return parse_storage_options(pairs)
        except ImgshardError as error:  # one line and exit 1, as every bad option value
            raise click.ClickException(str(error)) from None

    return click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
                        callback=to_dict,
                        help="fsspec option for URLs (repeatable), e.g. endpoint_url=http://...,"
                             " anon=true.")(command)


class LazyProgressBar:
    """A tqdm bar that appears with the first progress, so early errors print on a clean line."""

    def __init__(self, **options: Any) -> None:
        self.options = {"unit": "img", "dynamic_ncols": True, **options}
        self.bar: tqdm | None = None

    def update(self, count: int) -> None:
        if self.options.get("disable"):
            return  # a disabled bar (--quiet) never imports tqdm
        if self.bar is None:
            from tqdm import tqdm  # imported here: ~12 ms that a --quiet build never pays

            self.bar = tqdm(**self.options)
        self.bar.update(count)

    def __enter__(self) -> LazyProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()


#: The options of ``build``, in the order ``--help`` shows them: flag -> (how click reads the
#: value, help). ``None`` marks an on/off flag. None of them has a default here: what the user
#: left out comes from the TOML file or from :class:`BuildConfig` (see :func:`resolve_options`).
BUILD_FLAGS: dict[str, tuple[Any, str]] = {
    "--size": (str, "Target size HxW, e.g. 224x224; one number means square. [224]"),
    "--color": (click.Choice(list(COLOR_CHANNELS)), "Channels 3/1/4. [rgb]"),
    "--resize": (click.Choice(RESIZE_MODES),
                 "stretch (as Keras), crop (centred, target aspect) or pad (letterbox). [stretch]"),
    "--interpolation": (click.Choice(INTERPOLATIONS),
                        "Resampling filter, antialiased when shrinking. [bilinear]"),
    "--decoder": (click.Choice(DECODERS), "fast: JPEGs by simplejpeg + OpenCV (pip install "
                  "'imgshard[fast]'; bilinear only; >= 40 dB of pillow's). [pillow]"),
    "--dtype": (click.Choice(DTYPES), "Stored dtype. [float16]"),
    "--bit-depth": (click.Choice(["8", "16"]),
                    "16: 16-bit and float images keep their precision in float dtypes; 8: "
                    "round every image to 8 bits first. [16]"),
    "--rescale": (float, "Floats are pixel * rescale + offset (uint8: when read as floats). [1/255]"),
    "--offset": (float, "Added after rescale. [0]"),
    "--shard-size": (int, "Images per shard. [256]"),
    "--workers": (int, "Worker processes, at most one per core and one per shard task. [all cores]"),
    "--val-split": (float, "Hold out this fraction of every class as 'val'."),
    "--seed": (int, "Seed of the val split and of the sample order. [0]"),
    "--shuffle/--no-shuffle": (None, "Mix the samples of a split across shards (seeded). [shuffle]"),
    "--labels": (click.Path(dir_okay=False, path_type=str),
                 "CSV of path,label rows (paths relative to SRC) instead of class folders."),
    "--no-labels": (None, "Unlabelled images, no label files."),
    "--targets": (click.Path(dir_okay=False, path_type=str),
                  "CSV of path,<name>,... rows of numbers stored beside the shards (regression)."),
    "--classes": (str, "Comma-separated class names: their order sets the labels."),
    "--follow-links": (None, "Follow symbolic links."),
    "--max-pixels": (int, "Skip images with more pixels (decompression bombs). [89478485]"),
    "--dedupe": (click.Choice(DEDUPE_MODES), "exact: skip every file whose stored pixels "
                 "repeat an earlier path's (sorted), before the val split. [none]"),
}
#: What a build does rather than what it writes: flag -> help (on/off flags).
RUN_FLAGS = {
    "--dry-run": "Scan only and print what would be built, its bytes as each dtype, and whether uint8 loses anything.",
    "--overwrite": "Replace an earlier imgshard build in OUT.",
    "--resume": "Finish an interrupted build in OUT (same options); its finished shards stay.",
}


#: The build options that say how to run it, not what it writes.
RUN_OPTIONS = ("--workers",)
#: The help of a build option an append may give otherwise than recorded.
APPEND_HELP = {"--labels": "Where the dataset's labels CSV is now, if it moved (its rows are "
                           "checked against the dataset's). [the dataset's]"}


def build_options(command, run_flags: dict[str, str] = RUN_FLAGS, *, recorded: bool = False):
    """The options of ``build`` (see :data:`BUILD_FLAGS` and ``run_flags``), then
    ``--quiet``, ``--executor`` and ``--scheduler``. ``recorded``: they default to the dataset's
    own (an append), which the help says instead of a build's defaults."""
    def text_of(flag: str, text: str) -> str:
        if not recorded or flag in RUN_OPTIONS:
            return text
        if flag in APPEND_HELP:
            return APPEND_HELP[flag]
        return re.sub(r"\s*\[[^\]]*\]$", "", text) + " [the dataset's]"

    options = [click.option(flag, type=kind, help=text_of(flag, text)) if kind is not None
               else click.option(flag, is_flag=True, default=None, help=text_of(flag, text))
               for flag, (kind, text) in BUILD_FLAGS.items()]
    options += [click.option(flag, is_flag=True, help=text) for flag, text in run_flags.items()]
    options += [
        click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary."),
        click.option("--executor", type=click.Choice(list(EXECUTORS)), default="local",
                     show_default=True,
                     help="Run the shard tasks on local processes or a Dask cluster."),
        click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler, e.g. "
                     "tcp://host:8786, or 'local' for a LocalCluster. [local]")]
    for option in reversed(options):
        command = option(command)
    return command


def resolve_options(ctx: click.Context, config_file: str | None,
                    options: dict[str, Any]) -> tuple[BuildConfig, int | None]:
    """Merge defaults, the TOML file and the command line into a config and a worker count."""
    values, workers = given_options(ctx, config_file, options)
    try:
        return BuildConfig.from_dict(values), workers
    except TypeError as error:
        raise ConfigError(f"bad option value: {error}") from None


def given_options(ctx: click.Context, config_file: str | None,
                  options: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The build options the TOML file and the command line give (parsed), and the worker
    count; what neither gives is left out."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update({k.replace("-", "_"): v for k, v in load_toml(config_file).items()})
    for name, value in options.items():
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            values[name] = value
    workers = values.pop("workers", None)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
    if "size" in values:
        values["size"] = parse_size(values["size"])
    if isinstance(values.get("bit_depth"), str) and values["bit_depth"] in ("8", "16"):
        values["bit_depth"] = int(values["bit_depth"])  # click's choice (TOML gives a number)
    if values.get("classes") is not None:
        values["classes"] = parse_classes(values["classes"])
    for key in ("labels", "targets"):  # a config file's paths are relative to the file
        listing = values.get(key)
        if isinstance(listing, str) and config_file and not os.path.isabs(listing) \
                and ctx.get_parameter_source(key) != click.core.ParameterSource.COMMANDLINE:
            values[key] = os.path.join(os.path.dirname(config_file), listing)
    return values, workers
