"""Argument checks shared by the modules. Each raises a ValueError that names the argument and
its value, before any work starts."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` as an int when it is an integer (Python's or NumPy's, not a bool) >= ``low``."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ValueError(f"Invalid {name}: {value!r} (expected an integer >= {low})")
    return int(value)
