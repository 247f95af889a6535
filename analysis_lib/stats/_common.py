"""The argument checks that the units of :mod:`analysis_lib.stats` share (private to the
package): a confidence level, and the columns a DataFrame must have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from .._checks import check_float

__all__ = ["check_columns", "check_confidence"]


def check_confidence(confidence) -> float:
    """``confidence`` checked: a finite number strictly between 0 and 1.

    Args:
        confidence: the value to check.

    Returns:
        ``confidence`` as a float.

    Raises:
        ValueError: ``confidence`` not a finite number in (0, 1), naming it.
    """
    return check_float("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)


def check_columns(frame: Any, columns: Sequence[str], what: str) -> None:
    """Refuse anything but a DataFrame, and one that lacks any of ``columns`` (named as
    ``what`` in the error).

    Args:
        frame: the object to check.
        columns: the column names it must have.
        what: the argument(s) named in the error about missing columns.

    Returns:
        None.

    Raises:
        ValueError: ``frame`` not a DataFrame, or lacking any of ``columns``.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"Invalid frame: {type(frame).__name__} (expected a DataFrame)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"Invalid {what}: columns {missing} are not in the frame")
