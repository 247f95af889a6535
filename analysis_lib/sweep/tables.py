"""The tables of a sweep's trials: the summary over seeds (:func:`summarize`: each optimizer's
learning rate chosen on the validation split and its test numbers) and the per-lr curves
(:func:`lr_sensitivity`).

This module owns how a trials table is reduced to those tables; the statistics themselves (the
Student-t interval) are :mod:`analysis_lib.stats`'s, and the choice of a learning rate is
:func:`analysis_lib.stats.choose_lr`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..stats import choose_lr, t_interval

__all__ = ["lr_sensitivity", "mean_interval", "summarize"]


def mean_interval(values) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its 95% Student-t interval
    (:func:`analysis_lib.stats.t_interval`); NaN ends for fewer than 2 values, and for values
    that are not all finite (a NaN or infinite measurement), whose mean is then NumPy's.

    Args:
        values: the sample, array-like of numbers.

    Returns:
        A tuple of three floats ``(mean, low, high)``.

    Examples:
        >>> [round(x, 4) for x in mean_interval([1.0, 2.0, 3.0])]
        [2.0, -0.4841, 4.4841]
        >>> mean_interval([1.0])
        (1.0, nan, nan)
    """
    values = np.asarray(values, dtype=float)
    if np.isfinite(values).all():
        return t_interval(values)
    return float(np.mean(values)), math.nan, math.nan


def lr_sensitivity(trials: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """One row per (label, lr): mean and 95% t-interval of ``metric`` over the seeds that
    finished (``n``), and ``failed``, the number of seeds that diverged or raised. Tidy, for a
    plot of ``metric`` against lr with one line (and band) per optimizer.

    Args:
        trials: the trials table (``label``, ``optimizer``, ``lr``, ``status`` and ``metric``).
        metric: the column averaged.

    Returns:
        A DataFrame with columns ``label``, ``optimizer``, ``lr``, ``n``, ``failed``, ``mean``,
        ``low`` and ``high``, sorted by label and lr.

    Raises:
        ValueError: ``metric`` is not a column of ``trials``.
    """
    if metric not in trials.columns:
        raise ValueError(f"Invalid metric: {metric!r} (not a column of the trials table)")
    out = []
    for (label, lr), group in trials.groupby(["label", "lr"], sort=False):
        ok = group[group["status"] == "ok"]
        mean, low, high = mean_interval(ok[metric].to_numpy(dtype=float))
        out.append(
            {
                "label": label,
                "optimizer": group["optimizer"].iloc[0],
                "lr": float(lr),
                "n": len(ok),
                "failed": int((group["status"] != "ok").sum()),
                "mean": mean,
                "low": low,
                "high": high,
            }
        )
    return pd.DataFrame(out).sort_values(["label", "lr"], kind="stable", ignore_index=True)


def summarize(
    trials: pd.DataFrame, selection: str = "val_loss", seeds: int | None = None
) -> pd.DataFrame:
    """Per optimizer label: the learning rate chosen on the validation split and the test
    numbers at it, mean and 95% Student-t interval over seeds.

    The chosen lr has the lowest mean validation loss over seeds (``selection="val_loss"``) or
    the highest mean validation accuracy (``"val_accuracy"``). An lr with any seed diverged,
    raised or missing (fewer than ``seeds`` trials) counts as the worst, so an lr that works
    only for lucky seeds is never chosen; ties go to the smaller lr. When every lr of an
    optimizer failed, its lr and numbers are NaN and ``status`` says so.

    Args:
        trials: the trials table (``label``, ``optimizer``, ``hparams``, ``lr``, ``status``,
            the selection column, ``test_loss`` and ``test_accuracy``).
        selection: ``"val_loss"`` or ``"val_accuracy"``.
        seeds: the number of seeds a complete lr has (None: not checked).

    Returns:
        A DataFrame, one row per label, with columns ``label``, ``optimizer``, ``hparams``,
        ``lr``, ``lrs``, ``failed_trials``, ``seeds``, ``{selection}_mean``,
        ``test_loss_mean``/``_low``/``_high``, ``test_accuracy_mean``/``_low``/``_high`` and
        ``status``.

    Raises:
        ValueError: ``selection`` is neither of the two.
    """
    if selection not in ("val_loss", "val_accuracy"):
        raise ValueError(f"Invalid selection: {selection!r}")
    rows = []
    for label, group in trials.groupby("label", sort=False):
        best = choose_lr(
            group.assign(failed=group["status"] != "ok"), selection, failed="failed", seeds=seeds
        )
        best = None if math.isnan(best) else best
        row = {
            "label": label,
            "optimizer": group["optimizer"].iloc[0],
            "hparams": group["hparams"].iloc[0],
            "lr": math.nan if best is None else float(best),
            "lrs": int(group["lr"].nunique()),
            "failed_trials": int((group["status"] != "ok").sum()),
        }
        chosen = (
            group[(group["lr"] == best) & (group["status"] == "ok")]
            if best is not None
            else group[:0]
        )
        row["seeds"] = len(chosen)
        row[f"{selection}_mean"] = float(chosen[selection].mean()) if len(chosen) else math.nan
        for metric in ("test_loss", "test_accuracy"):
            mean, low, high = mean_interval(chosen[metric].dropna().to_numpy(dtype=float))
            row[f"{metric}_mean"], row[f"{metric}_low"], row[f"{metric}_high"] = mean, low, high
        row["status"] = "ok" if best is not None else "every lr failed"
        rows.append(row)
    return pd.DataFrame(rows)
