"""Reading a finished sweep: the trials at each optimizer's chosen learning rate, whether that
rate lies inside its grid, how wide a range of rates works, and which pairwise differences of
test accuracy the seeds support.

The summary itself (chosen lr, mean and 95% t-interval over seeds) is
:func:`analysis_lib.sweep.summarize`; the per-lr curves are
:func:`analysis_lib.sweep.lr_sensitivity`. This module owns the readings built on their
tables; the statistics are :mod:`analysis_lib.stats`'s (:func:`~analysis_lib.stats.welch`,
:func:`~analysis_lib.stats.holm`, the t-interval)::

    from analysis_lib.sweep import analysis, read_trials, summarize

    trials = read_trials("data/sweeps/digits_mlp_comparison")
    summary = summarize(trials)
    analysis.chosen_lr_position(trials, summary)     # is every chosen lr interior to its grid?
    analysis.pairwise_differences(trials, summary)   # Welch t-tests, Holm-corrected

**Which differences are supported.** For two optimizers A and B with test accuracies
:math:`a_1..a_n` and :math:`b_1..b_m` over seeds at their chosen rates, Welch's t statistic is

.. math:: t = (\\bar a - \\bar b) / \\sqrt{s_a^2/n + s_b^2/m},

with Welch–Satterthwaite degrees of freedom
:math:`\\nu = (s_a^2/n + s_b^2/m)^2 / (s_a^4/(n^2(n-1)) + s_b^4/(m^2(m-1)))`. Its two-sided p-value
and the 95% interval :math:`\\bar a - \\bar b \\pm t_{0.975,\\nu}\\sqrt{s_a^2/n + s_b^2/m}` are
reported for every pair; since a table of k optimizers makes k(k-1)/2 comparisons, a difference
is called *supported* when its Holm-adjusted p-value (family-wise error 5% over the whole table)
is below 0.05. Accuracies are counts: when every seed of an optimizer lands on the same count,
its sample variance is zero, which says only that the spread is below one count; with
``resolution`` (one count, 1/n) each variance is floored at the variance of rounding to a count,
:math:`\\text{resolution}^2/12`. The overlap of the two optimizers' own 95% intervals is reported too: intervals
that do not overlap imply a significant difference, but overlapping ones do not imply the
opposite (it is the more conservative rule).

Caveat: with three seeds per optimizer, each variance rests on two degrees of freedom, so the
test has little power (only large differences are detected) and leans on the normality of the
seed-to-seed spread; and seeds vary only the initialisation and batch order, not the data split,
so the intervals say nothing about another split or another task. In particular they leave out
the test set's own sampling error (for an accuracy near 0.95 on 359 samples, a binomial
standard error of about 0.011): a supported difference is one that the seeds reproduce on this
test set, not one shown to hold on new data.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

from .._checks import check_float, check_positive
from ..stats import holm, welch
from .tables import mean_interval

__all__ = ["chosen_lr_position", "chosen_trials", "lr_robustness", "pairwise_differences"]

_NEEDED_TRIALS = ("label", "lr", "status", "seed")


def _check_frame(frame, name: str, columns) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"Invalid {name}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"Invalid {name}: missing columns {missing}")


def chosen_trials(trials: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The trials (status ``ok``) of each optimizer label at the learning rate that ``summary``
    chose for it, in the summary's order of labels; labels whose every lr failed have none.

    Args:
        trials: the trials table (``label``, ``lr``, ``status``, ``seed`` columns).
        summary: the summary table (``label``, ``lr``; a NaN lr: no chosen rate).

    Returns:
        A DataFrame with the trials' columns, one row per chosen trial (empty when none).

    Raises:
        TypeError: ``trials`` or ``summary`` is not a DataFrame.
        ValueError: a required column is missing.
    """
    _check_frame(trials, "trials", _NEEDED_TRIALS)
    _check_frame(summary, "summary", ("label", "lr"))
    parts = []
    for label, lr in zip(summary["label"], summary["lr"], strict=True):
        if not math.isfinite(lr):
            continue
        at = trials[(trials["label"] == label) & (trials["lr"] == lr) & (trials["status"] == "ok")]
        parts.append(at)
    if not parts:
        return trials.iloc[:0].copy()
    return pd.concat(parts, ignore_index=True)


def chosen_lr_position(trials: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per label: the chosen lr, its grid's ends, its index in the grid and ``position``:
    ``"interior"``, ``"lowest"`` or ``"highest"`` (an edge: the grid may not contain the best
    rate), or ``"none"`` when every lr failed.

    Args:
        trials: the trials table (``label``, ``lr``, ``status``, ``seed`` columns).
        summary: the summary table (``label``, ``lr``).

    Returns:
        A DataFrame, one row per summary label, with columns ``label``, ``lr``, ``lr_min``,
        ``lr_max``, ``grid_size``, ``index`` (-1 for ``"none"``) and ``position``.

    Raises:
        TypeError: ``trials`` or ``summary`` is not a DataFrame.
        ValueError: a required column is missing, or a summary label has no trials.

    Examples:
        >>> trials = pd.DataFrame({"label": ["sgd"] * 3, "lr": [0.01, 0.1, 1.0],
        ...                        "status": "ok", "seed": 0})
        >>> summary = pd.DataFrame({"label": ["sgd"], "lr": [0.1]})
        >>> print(chosen_lr_position(trials, summary).to_string(index=False))
        label  lr  lr_min  lr_max  grid_size  index position
          sgd 0.1    0.01     1.0          3      1 interior
    """
    _check_frame(trials, "trials", _NEEDED_TRIALS)
    _check_frame(summary, "summary", ("label", "lr"))
    rows = []
    for label, lr in zip(summary["label"], summary["lr"], strict=True):
        grid = np.sort(trials.loc[trials["label"] == label, "lr"].unique())
        if not len(grid):
            raise ValueError(f"Invalid summary: label {label!r} has no trials")
        if not math.isfinite(lr):
            index, position = -1, "none"
        else:
            index = int(np.flatnonzero(grid == lr)[0])
            position = (
                "lowest" if index == 0 else "highest" if index == len(grid) - 1 else "interior"
            )
        rows.append(
            {"label": label, "lr": lr, "lr_min": float(grid[0]), "lr_max": float(grid[-1]),
             "grid_size": len(grid), "index": index, "position": position}
        )  # fmt: skip
    return pd.DataFrame(rows)


def lr_robustness(
    sensitivity: pd.DataFrame, tolerance: float = 0.01, metric_name: str = "mean"
) -> pd.DataFrame:
    """How wide a range of learning rates works, per label of a
    :func:`~analysis_lib.sweep.lr_sensitivity` table: the grid points whose mean metric (over
    seeds; an lr where a seed failed never qualifies) is within ``tolerance`` of the label's
    best: ``points`` counts them, ``lr_low`` and ``lr_high`` are the smallest and largest,
    ``decades`` = log10(lr_high / lr_low) (0 when only the best rate qualifies) and
    ``contiguous`` says whether no grid point between them falls short.

    Args:
        sensitivity: an :func:`~analysis_lib.sweep.lr_sensitivity` table (``label``, ``lr``,
            ``failed`` and ``metric_name`` columns).
        tolerance: how far below the best mean a rate may be and still count (>= 0).
        metric_name: the column compared.

    Returns:
        A DataFrame, one row per label, with columns ``label``, ``best``, ``points``,
        ``lr_low``, ``lr_high``, ``decades`` and ``contiguous`` (NaN and 0 where no rate
        qualifies).

    Raises:
        TypeError: ``sensitivity`` is not a DataFrame.
        ValueError: a required column is missing, or ``tolerance`` is negative or NaN.
    """
    _check_frame(sensitivity, "sensitivity", ("label", "lr", "failed", metric_name))
    check_float("tolerance", tolerance, 0.0, allow_inf=True)
    rows = []
    for label, group in sensitivity.groupby("label", sort=False):
        group = group.sort_values("lr")
        value = group[metric_name].where(group["failed"] == 0)
        best = value.max()
        good = (value >= best - tolerance).to_numpy() if math.isfinite(best) else None
        if good is None or not good.any():
            rows.append({"label": label, "best": math.nan, "points": 0, "lr_low": math.nan,
                         "lr_high": math.nan, "decades": math.nan, "contiguous": False})  # fmt: skip
            continue
        idx = np.flatnonzero(good)
        lrs = group["lr"].to_numpy(dtype=float)
        rows.append(
            {"label": label, "best": float(best), "points": len(idx), "lr_low": lrs[idx[0]],
             "lr_high": lrs[idx[-1]], "decades": float(np.log10(lrs[idx[-1]] / lrs[idx[0]])),
             "contiguous": bool(idx[-1] - idx[0] + 1 == len(idx))}
        )  # fmt: skip
    return pd.DataFrame(rows)


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's adjustment (:func:`analysis_lib.stats.holm`) over the whole table: a NaN p-value
    (an unknown spread) stays in the family and counts as 1, so its comparison supports
    nothing."""
    return holm(np.where(np.isnan(p), 1.0, p))


def _welch_or_nan(x: np.ndarray, y: np.ndarray, floor: float) -> tuple[float, float, float]:
    """:func:`analysis_lib.stats.welch`; NaN when a sample holds an infinite value."""
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan, math.nan, math.nan
    return welch(x, y, floor)


def pairwise_differences(
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    metric: str = "test_accuracy",
    level: float = 0.05,
    resolution: float | None = None,
) -> pd.DataFrame:
    """Every pair of labels (in the summary's order) compared on ``metric`` at their chosen
    learning rates, over seeds: ``diff`` = mean(a) - mean(b), its Welch 95% interval
    (``diff_low``, ``diff_high``), the Welch p-value ``p``, the Holm-adjusted ``p_holm`` over
    all pairs of the table, ``supported`` (``p_holm < level``) and ``intervals_overlap``
    (whether the two optimizers' own 95% t-intervals overlap). Labels with fewer than two
    seeds are left out. See the module docstring for the test and its caveats.

    ``resolution`` is the metric's smallest step, e.g. 1/n for the accuracy on n test samples:
    each sample's variance is then floored at ``resolution**2 / 12``, the variance of rounding
    to that step (Sheppard's correction), so seeds that all land on the same count do not make
    a spread of zero. Without it, two samples that are each constant get ``p = NaN`` and are
    not supported.

    Args:
        trials: the trials table (``label``, ``lr``, ``status``, ``seed`` and ``metric``).
        summary: the summary table (``label``, ``lr``).
        metric: the trials column compared.
        level: the family-wise error rate, in ``(0, 1)``.
        resolution: the metric's smallest step (> 0), or None for no variance floor.

    Returns:
        A DataFrame, one row per pair, with columns ``a``, ``b``, ``mean_a``, ``mean_b``,
        ``n_a``, ``n_b``, ``diff``, ``diff_low``, ``diff_high``, ``p``, ``p_holm``,
        ``supported`` and ``intervals_overlap``.

    Raises:
        TypeError: ``trials`` or ``summary`` is not a DataFrame.
        ValueError: a required column is missing, ``level`` is not in ``(0, 1)``, or
            ``resolution`` is not positive.
    """
    _check_frame(trials, "trials", (*_NEEDED_TRIALS, metric))
    check_float("level", level, 0.0, 1.0, low_open=True, high_open=True)
    if resolution is not None:
        check_positive("resolution", resolution)
    floor = 0.0 if resolution is None else resolution**2 / 12
    chosen = chosen_trials(trials, summary)
    samples = {
        label: chosen.loc[chosen["label"] == label, metric].dropna().to_numpy(dtype=float)
        for label in summary["label"]
    }
    samples = {k: v for k, v in samples.items() if len(v) >= 2}
    rows = []
    for a, b in combinations(samples, 2):
        x, y = samples[a], samples[b]
        p, low, high = _welch_or_nan(x, y, floor)
        ia, ib = mean_interval(x)[1:], mean_interval(y)[1:]  # the summary's own intervals
        rows.append(
            {"a": a, "b": b, "mean_a": x.mean(), "mean_b": y.mean(), "n_a": len(x), "n_b": len(y),
             "diff": x.mean() - y.mean(), "diff_low": low, "diff_high": high, "p": p,
             "intervals_overlap": bool(ia[0] <= ib[1] and ib[0] <= ia[1])}
        )  # fmt: skip
    out = pd.DataFrame(rows, columns=[
        "a", "b", "mean_a", "mean_b", "n_a", "n_b", "diff", "diff_low", "diff_high", "p",
        "intervals_overlap"])  # fmt: skip
    out.insert(len(out.columns) - 1, "p_holm", _holm(out["p"].to_numpy(dtype=float)))
    out.insert(len(out.columns) - 1, "supported", out["p_holm"] < level)
    return out
