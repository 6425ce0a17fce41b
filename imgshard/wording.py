"""How counts and option values are shown back to the user: as they would say or type them."""

from __future__ import annotations

from typing import Any


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` (with thousands separators) and ``noun``, in the plural (``plural``, else
    ``noun`` + s) unless it is one."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def split_counts(counts: dict[str, int]) -> str:
    """Images per split, ``train 1,200, val 3 images`` (``train 1 image``; ``no images``)."""
    if not counts:
        return "no images"
    listed = ", ".join(f"{split} {count:,}" for split, count in counts.items())
    return f"{listed} image{'' if list(counts.values()) == [1] else 's'}"


def option_text(name: str, value: Any) -> str:
    """``value`` of the build option ``name`` as it is typed on the command line: a size as
    ``HxW``, a list joined by commas, text without quotes, the default rescale as 1/255, as
    ``--help`` writes it (not Python's ``[8, 8]``, ``'crop'``, ``0.00392156862745098``). No other
    number becomes a fraction: ``--val-split 1/4`` is no valid float, and a subnormal's 1/x
    overflows."""
    if name == "size" and isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"  # as TOML writes it
    if name == "rescale" and isinstance(value, float) and value == 1 / 255:
        return "1/255"
    return str(value)


def differing_option(name: str, given: Any, recorded: Any) -> str:
    """``--size 8x8 differs from the dataset's 6x6``; an on/off option by its flags,
    ``--no-shuffle differs from the dataset's --shuffle``."""
    flag = name.replace("_", "-")
    if isinstance(given, bool) or isinstance(recorded, bool):
        def typed(value: Any) -> str:
            if flag == "shuffle":
                return "--shuffle" if value else "--no-shuffle"
            return f"--{flag}" if value else f"no --{flag}"
        return f"{typed(given)} differs from the dataset's {typed(recorded)}"
    return f"--{flag} {option_text(name, given)} differs from the dataset's " \
           f"{option_text(name, recorded)}"
