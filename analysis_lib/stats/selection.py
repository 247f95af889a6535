"""The choice of the learning rate from a sweep's validation results: :func:`choose_lr`, the
rule shared by :func:`analysis_lib.training.lr_sweep` and :mod:`analysis_lib.sweep`.
"""

from __future__ import annotations

import math

import pandas as pd

from .._checks import check_float, check_int

__all__ = ["choose_lr"]


def choose_lr(
    frame: pd.DataFrame,
    selection: str = "val_loss",
    *,
    failed: str = "diverged",
    seeds: int | None = None,
    rtol: float = 1e-3,
) -> float:
    """The learning rate chosen on the validation split from ``frame``, one row per (lr, seed)
    with columns ``lr``, ``selection`` and the boolean ``failed`` (e.g. the frame of
    :func:`analysis_lib.training.lr_sweep`, or a sweep's trials).

    The rule (the sweep's, :func:`analysis_lib.sweep.summarize`): for each lr, the score is
    the mean of ``selection`` over its seeds, lower is better for ``"val_loss"`` and higher
    for ``"val_accuracy"``. An lr where any seed failed (diverged), or with fewer than
    ``seeds`` rows, or whose mean is not finite, counts as the worst, so a rate that works
    only for lucky seeds is never chosen. Scores within ``rtol`` (relative) of the best are
    ties, and ties go to the smaller lr, so a near-tie is not broken by the last bits of
    floating point (the same choice on any machine). NaN when every lr failed.

    Args:
        frame: the per-(lr, seed) results, with the columns ``lr``, ``selection`` and ``failed``.
        selection: the score column, ``"val_loss"`` (lower is better) or ``"val_accuracy"``.
        failed: the boolean column marking failed runs (default ``"diverged"``).
        seeds: the number of rows an lr needs to be eligible (>= 1); None: no minimum.
        rtol: scores within ``rtol * |best|`` of the best count as ties (>= 0; default 1e-3).

    Returns:
        The chosen learning rate as a float, or NaN when no lr is eligible.

    Raises:
        ValueError: ``selection`` not one of the two names, a missing column, ``seeds`` < 1 or
            ``rtol`` < 0.
        TypeError: ``frame`` not a DataFrame.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame(dict(lr=[0.1, 0.1, 0.01, 0.01], val_loss=[0.5, None, 0.7, 0.8],
        ...                       diverged=[False, True, False, False]))
        >>> choose_lr(f)
        0.01
        >>> g = pd.DataFrame(dict(lr=[0.01, 0.1], val_loss=[0.5004, 0.5], diverged=False))
        >>> choose_lr(g), choose_lr(g, rtol=0.0)  # 0.08% apart: a tie, the smaller rate
        (0.01, 0.1)
    """
    if selection not in ("val_loss", "val_accuracy"):
        raise ValueError(
            f"Invalid selection: {selection!r} (expected 'val_loss' or 'val_accuracy')"
        )
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"Invalid frame: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("lr", selection, failed) if c not in frame.columns]
    if missing:
        raise ValueError(f"Invalid frame: it lacks the column(s) {missing}")
    if seeds is not None:
        seeds = check_int("seeds", seeds, 1)
    rtol = check_float("rtol", rtol, 0.0)
    sign = 1.0 if selection == "val_loss" else -1.0  # lower score is better
    scores = {}
    for lr, at in frame.groupby("lr"):
        ok = at[~at[failed].astype(bool)]
        complete = len(ok) == len(at) and (seeds is None or len(ok) >= seeds)
        score = sign * float(ok[selection].mean()) if complete and len(ok) else math.inf
        scores[float(lr)] = score if math.isfinite(score) else math.inf
    best = min(scores.values(), default=math.inf)
    if not math.isfinite(best):
        return math.nan
    return min(lr for lr, score in scores.items() if score <= best + rtol * abs(best))
