"""The one configuration object of a build, and how it is read from TOML files.

A :class:`BuildConfig` is frozen: it travels unchanged to every worker and is written whole into
the manifest, so a shard directory always says exactly how it was made (and ``--resume`` can
refuse to continue with different options).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ImgshardError
from .storage.files import read_regular_file
from .values import is_whole_number

COLOR_CHANNELS = {"rgb": 3, "grayscale": 1, "rgba": 4}
RESIZE_MODES = ("stretch", "crop", "pad")
INTERPOLATIONS = ("bilinear", "bicubic", "lanczos", "nearest", "area")
DTYPES = ("float16", "float32", "uint8")
#: ``16``: 16-bit and float images keep their precision in float outputs; ``8``: every image is
#: rounded to 8 bits first (as before full depth existed).
BIT_DEPTHS = (8, 16)
#: The bit depth of a recorded config that names none: builds from before full depth existed,
#: ``--bit-depth 8`` builds and uint8 builds (see :meth:`BuildConfig.to_dict`).
RECORDED_BIT_DEPTH = 8
#: ``none``: keep every file; ``exact``: keep the first path (sorted) of each group of files
#: whose stored pixels are identical, and skip the others (see ``dedupe.py``).
DEDUPE_MODES = ("none", "exact")
#: ``pillow``: every image through Pillow; ``fast``: JPEGs through simplejpeg and OpenCV (the
#: ``imgshard[fast]`` extra, ``bilinear`` only; see ``fast_decode.py``).
DECODERS = ("pillow", "fast")

#: Pillow's own decompression-bomb threshold (about 89.5 megapixels): a larger image is skipped.
DEFAULT_MAX_PIXELS = 89_478_485

#: 256 images of 224x224x3 float16 are ~77 MB: big enough for sequential reads and few files,
#: small enough that a reader's shuffle window of several shards stays well under 1 GB and that
#: two workers get many tasks to balance (see docs/build.md, "Why 256 images per shard").
DEFAULT_SHARD_SIZE = 256
#: Floats are ``pixel * rescale + offset``: by default in [0, 1], as Keras' Rescaling(1/255).
DEFAULT_RESCALE = 1 / 255


class ConfigError(ImgshardError):
    """An option has a value a build cannot use; the message is one line for the user."""


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """Every option that decides what a build writes.

    Options that only change how fast or how loudly it runs (``workers``, ``quiet``) are not
    here, so that two builds with equal configs are byte-identical whatever their worker count.
    """

    size: tuple[int, int] = (224, 224)
    color: str = "rgb"
    resize: str = "stretch"
    interpolation: str = "bilinear"
    dtype: str = "float16"
    rescale: float = DEFAULT_RESCALE
    offset: float = 0.0
    shard_size: int = DEFAULT_SHARD_SIZE
    val_split: float | None = None
    seed: int = 0
    shuffle: bool = True
    labels: str | None = None
    no_labels: bool = False
    #: a CSV of numeric targets per file (``path,<name>...``), stored beside the shards
    targets: str | None = None
    classes: tuple[str, ...] | None = None
    follow_links: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    bit_depth: int = 16
    dedupe: str = "none"
    decoder: str = "pillow"

    def __post_init__(self) -> None:
        validate(self)

    @property
    def channels(self) -> int:
        return COLOR_CHANNELS[self.color]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one stored image: (height, width, channels)."""
        return (self.size[0], self.size[1], self.channels)

    @property
    def full_depth(self) -> bool:
        """Whether 16-bit and float images keep their precision: float dtypes at bit depth 16
        (``uint8`` stores 8-bit pixels whatever the bit depth)."""
        return self.bit_depth == 16 and self.dtype != "uint8"

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values, as stored under the manifest's ``config`` key.

        ``bit_depth`` is written only for a full-depth build: an 8-bit one (``--bit-depth 8``,
        or ``uint8``) writes today's keys and so today's ``dataset_id``, and a recorded config
        without the key reads as 8 bits (:meth:`from_record`), as every build before it did.
        """
        values = dataclasses.asdict(self)
        values["size"] = list(self.size)
        values["classes"] = None if self.classes is None else list(self.classes)
        if self.targets is None:  # a build without targets keeps the config (and id) it had
            del values["targets"]
        if not self.full_depth:
            del values["bit_depth"]
        if self.dedupe == "none":  # left out: a build without it keeps the dataset_id it had
            del values["dedupe"]
        if self.decoder == "pillow":  # likewise: the default keeps the dataset_id it had
            del values["decoder"]
        return values

    @classmethod
    def from_record(cls, values: dict[str, Any]) -> "BuildConfig":
        """A config recorded by a build (a manifest's): :meth:`from_dict`, but a missing
        ``bit_depth`` is :data:`RECORDED_BIT_DEPTH`, not the default of a new build."""
        return cls.from_dict({"bit_depth": RECORDED_BIT_DEPTH, **values})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BuildConfig":
        """Inverse of :meth:`to_dict`; also accepts TOML spellings (``"224x224"``, dashes)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown option {key!r}")
            kwargs[name] = value
        if "size" in kwargs:
            kwargs["size"] = parse_size(kwargs["size"])
        if kwargs.get("classes") is not None:
            kwargs["classes"] = parse_classes(kwargs["classes"])
        return cls(**kwargs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: float) -> bool:
    """A number no float overflows on: a JSON or TOML integer has no limit (``1000...0``)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


#: What every option's value must be, and how to say so. Checked before any value is used, so
#: that a TOML ``no_labels = "false"`` or a manifest's ``size = true`` is one clear line rather
#: than a truthy string or a 1x1 build.
OPTION_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "size": (lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(map(is_whole_number, v)),
             "two whole numbers (height, width)"),
    "color": (lambda v: isinstance(v, str), "a string"),
    "resize": (lambda v: isinstance(v, str), "a string"),
    "interpolation": (lambda v: isinstance(v, str), "a string"),
    "dtype": (lambda v: isinstance(v, str), "a string"),
    "rescale": (_is_number, "a number"),
    "offset": (_is_number, "a number"),
    "shard_size": (is_whole_number, "a whole number"),
    "val_split": (lambda v: v is None or _is_number(v), "a number"),
    "seed": (is_whole_number, "a whole number"),
    "shuffle": (lambda v: isinstance(v, bool), "true or false"),
    "labels": (_is_text_or_none, "a file name (a string)"),
    "no_labels": (lambda v: isinstance(v, bool), "true or false"),
    "targets": (_is_text_or_none, "a file name (a string)"),
    "classes": (lambda v: v is None or (isinstance(v, (tuple, list))
                                        and all(isinstance(n, str) for n in v)),
                "a list of class names (strings)"),
    "follow_links": (lambda v: isinstance(v, bool), "true or false"),
    "max_pixels": (is_whole_number, "a whole number"),
    "bit_depth": (is_whole_number, "8 or 16"),
    "dedupe": (lambda v: isinstance(v, str), "a string"),
    "decoder": (lambda v: isinstance(v, str), "a string"),
}


def changed_options(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The options whose values differ between two configs' dicts, sorted.

    ``labels`` and ``targets`` are paths as given, relative to where the build ran: the same
    file named from another folder, or by its absolute path, is the same option (its content is
    compared by sha256 on resume).
    """
    return sorted(key for key in set(recorded) | set(current)
                  if recorded.get(key) != current.get(key)
                  and not (key in ("labels", "targets")
                           and _same_file(recorded.get(key), current.get(key))))


def _same_file(first: Any, second: Any) -> bool:
    if not (isinstance(first, str) and isinstance(second, str)):
        return False
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):
        return False


def validate(config: BuildConfig) -> None:
    """Raise :class:`ConfigError` for the first option value a build cannot use."""
    for name, (accepts, expected) in OPTION_TYPES.items():
        value = getattr(config, name)
        if not accepts(value):
            raise ConfigError(f"option {name} must be {expected}, got {value!r}")
    height, width = config.size
    if height < 1 or width < 1:
        raise ConfigError(f"size must be at least 1x1, got {height}x{width}")
    choices = {
        "color": (config.color, tuple(COLOR_CHANNELS)),
        "resize": (config.resize, RESIZE_MODES),
        "interpolation": (config.interpolation, INTERPOLATIONS),
        "dtype": (config.dtype, DTYPES),
        "bit depth": (config.bit_depth, BIT_DEPTHS),
        "dedupe": (config.dedupe, DEDUPE_MODES),
        "decoder": (config.decoder, DECODERS),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}, "
                              f"got {value!r}")
    if config.decoder == "fast" and config.interpolation != "bilinear":
        raise ConfigError(f"--decoder fast resizes with bilinear only, got "
                          f"{config.interpolation!r}")
    if config.shard_size < 1:
        raise ConfigError(f"shard size must be a whole number >= 1, got {config.shard_size!r}")
    if config.val_split is not None and not 0 < config.val_split < 1:
        raise ConfigError(f"val split must lie strictly between 0 and 1, got {config.val_split}")
    if not all(_is_finite(v) for v in (config.rescale, config.offset)):
        raise ConfigError("rescale and offset must be finite numbers")
    # uint8 stores the raw pixels; a reader serves them as floats through these values
    check_stored_values(config.rescale, config.offset,
                        "float32" if config.dtype == "uint8" else config.dtype)
    if config.max_pixels < 1:
        raise ConfigError(f"max pixels must be >= 1, got {config.max_pixels}")
    if config.labels is not None and config.no_labels:
        raise ConfigError("--labels and --no-labels exclude each other")
    if config.classes is not None and config.no_labels:
        raise ConfigError("--classes and --no-labels exclude each other")
    if config.classes is not None and not config.classes:  # e.g. --classes ","
        raise ConfigError("--classes names no class")
    if config.classes is not None and len(set(config.classes)) != len(config.classes):
        raise ConfigError("--classes names a class twice")


def stored_values(rescale: float, offset: float, dtype: str) -> np.ndarray:
    """The stored value of each 8-bit pixel value: ``pixel * rescale + offset`` as ``dtype``."""
    with np.errstate(over="ignore", invalid="ignore"):
        return (np.arange(256, dtype=np.float64) * rescale + offset).astype(dtype)


def check_stored_values(rescale: float, offset: float, dtype: str) -> None:
    """Refuse a rescale and offset that turn some pixel value into inf in ``dtype`` (float16
    overflows at 65504), or two pixel values into the same value (a zero rescale, or steps finer
    than the dtype's precision there): every image holding them would change, silently.

    A float build stores these values; a uint8 build stores the pixels, and a reader serves
    them as these values in the float dtype it is asked for (float32 is checked at build time).
    """
    stored = stored_values(rescale, offset, dtype)
    overflowing = np.flatnonzero(~np.isfinite(stored))
    if overflowing.size:
        pixel = int(overflowing[-1] if stored[overflowing[-1]] > 0 else overflowing[0])
        raise ConfigError(f"rescale and offset overflow {dtype}: pixel value {pixel} "
                          f"would be {pixel * rescale + offset:g} (largest "
                          f"{dtype}: {float(np.finfo(dtype).max):g})")
    merged = np.flatnonzero(stored[1:] == stored[:-1])
    if merged.size:
        pixel = int(merged[0])
        raise ConfigError(f"rescale {rescale:g} and offset {offset:g} give pixel "
                          f"values {pixel} and {pixel + 1} the same stored value "
                          f"({float(stored[pixel]):g} in {dtype}): choose a larger "
                          "rescale, or an offset nearer 0")


def parse_size(value: Any) -> tuple[int, int]:
    """``224`` or ``"224"`` -> (224, 224); ``"224x160"`` or ``[224, 160]`` -> (224, 160) as (H, W).

    Only whole numbers and text are sizes: ``true`` or ``1.5`` is an error, not 1x1.
    """
    if isinstance(value, (list, tuple)) and len(value) == 2:
        parts = list(value)
    elif is_whole_number(value):
        parts = [value, value]
    elif isinstance(value, str):
        text = value.strip().lower()
        parts = text.split("x") if "x" in text else [text, text]
    else:
        parts = [None]
    try:
        if not all(is_whole_number(p) or isinstance(p, str) for p in parts):
            raise TypeError
        height, width = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"size must look like 224 or 224x160 (HxW), got {value!r}") from None
    if height < 1 or width < 1:
        raise ConfigError(f"size must be at least 1x1, got {value!r}")
    return height, width


def parse_classes(value: Any) -> tuple[str, ...]:
    """``"cat,dog"`` or ``["cat", "dog"]`` -> ("cat", "dog")."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"option classes must be a list of class names or a comma-separated "
                          f"string, got {value!r}")
    return tuple(n.strip() for n in names if n.strip())


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a build config file: a flat TOML table of option names (dashes or underscores)."""
    try:
        values = tomllib.load(io.BytesIO(read_regular_file(path)))
    except OSError as error:
        raise ConfigError(f"cannot read config {os.fspath(path)}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {os.fspath(path)} is not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {os.fspath(path)} is not valid TOML: it is not UTF-8 text"
                          ) from None
    values = values.get("build", values)
    if not isinstance(values, dict):
        raise ConfigError(f"config {os.fspath(path)}: 'build' must be a table of options")
    for key, value in values.items():
        if isinstance(value, dict):
            raise ConfigError(f"config {os.fspath(path)}: option {key!r} must not be a table")
    return values
