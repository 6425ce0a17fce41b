"""Checks of values that come from outside (a config, a manifest, a progress log, a caller), and
how an option's value is shown back to the user.

Python counts ``True`` as the int 1, so ``seed = true`` in a config or ``"num_samples": true``
in a manifest would pass an ``isinstance(value, int)`` check; these checks say what we mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_whole_number(value: Any) -> bool:
    """Whether ``value`` is a Python int and not a bool (JSON and TOML tell the two apart)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: Any, *, least: int = 0) -> bool:
    """Whether ``value`` is a whole number (not a bool) of at least ``least``."""
    return is_whole_number(value) and value >= least


def is_whole_argument(value: Any) -> bool:
    """Whether ``value``, passed by a Python caller, is a whole number: a Python or numpy int
    (an index computed with numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def same_value(saved: Any, value: Any) -> bool:
    """Whether ``saved``, read from a saved state, is ``value``: equal, and a bool only where
    ``value`` is one (a bool is not an int); whatever a hostile state holds compares without
    raising."""
    try:
        return bool(saved == value) and isinstance(saved, bool) == isinstance(value, bool)
    except Exception:  # noqa: BLE001 - a hostile __eq__ raises anything: not the same
        return False


def counted(count: int, noun: str) -> str:
    """``count`` (with thousands separators) and ``noun``, in the plural unless it is one."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def option_text(name: str, value: Any) -> str:
    """``value`` of the build option ``name`` as it is typed on the command line: a size as
    ``HxW``, a list joined by commas, text without quotes (not Python's ``[8, 8]``, ``'crop'``)."""
    if name == "size" and isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    if value is None:
        return "none"
    return str(value)
