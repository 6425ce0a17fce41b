"""Checks of values that come from outside (a config, a manifest, a progress log, a caller).

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
