"""Argument checks shared by the modules. Each raises a ValueError that names the argument and
its value, before any work starts.

The rules are the same everywhere: an integer argument takes Python's or NumPy's integers (never
a bool, never a float such as ``2.0``); a real argument takes Python's or NumPy's integers and
floats (never a bool, a string or a tensor) and must be finite unless the caller allows
infinity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` as an int when it is an integer (Python's or NumPy's, not a bool) >= ``low``."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ValueError(f"Invalid {name}: {value!r} (expected an integer >= {low})")
    return int(value)


def _bounds_text(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a float when it is a real number (Python's or NumPy's int or float, not a
    bool), not NaN, finite (unless ``allow_inf``), and within ``[low, high]`` (an end excluded
    when ``low_open`` / ``high_open``)."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if ok:
        x = float(value)
        ok = not math.isnan(x) and (allow_inf or math.isfinite(x))
        if ok and low is not None:
            ok = x > low if low_open else x >= low
        if ok and high is not None:
            ok = x < high if high_open else x <= high
    if not ok:
        kind = "a number" if allow_inf else "a finite number"
        bounds = _bounds_text(low, high, low_open, high_open)
        raise ValueError(
            f"Invalid {name}: {value!r} (expected {kind}{' ' + bounds if bounds else ''})"
        )
    return x


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float when it is a finite real number > 0 (see :func:`check_float`)."""
    return check_float(name, value, 0.0, low_open=True)
