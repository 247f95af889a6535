"""Rank correlation with a bootstrap interval: does a sharpness measure order minima the way their
generalisation gap does?

Kendall's tau-b of paired observations ``(x_i, y_i)``, i = 1..n::

    tau_b = sum_{i<j} s^x_ij s^y_ij / sqrt( (sum_{i<j} |s^x_ij|) (sum_{i<j} |s^y_ij|) ),
    s^x_ij = sign(x_i - x_j),  s^y_ij = sign(y_i - y_j)

(concordant minus discordant pairs, over the pairs untied in x and in y; scipy's default
``kendalltau``). Its uncertainty comes from the nonparametric bootstrap over the observations
(the minima): ``n`` of them drawn with replacement, tau-b of each resample (a pair drawn twice is
a tie and drops out of the counts), and the percentile interval of those. Seeded: the same seed
gives the same interval.

* :func:`kendall_tau` (its :class:`TauResult`) and :func:`tau_table`, one row per measure; with
  ``clusters`` (minima that share a configuration and differ by seed) a two-stage cluster
  bootstrap: configurations with replacement, then seeds with replacement within each drawn
  configuration, so the interval is not narrowed by treating seeds of one configuration as
  independent minima.
* :func:`granulated_kendall` (its :class:`GranulatedResult`): Jiang et al. (2020)'s granulated
  Kendall coefficient: for each varied axis, the mean tau over the groups of rows that differ
  only along that axis; ``psi`` the mean over the axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._checks import check_int
from ._common import check_columns, check_confidence

__all__ = ["GranulatedResult", "TauResult", "granulated_kendall", "kendall_tau", "tau_table"]


@dataclass(frozen=True)
class TauResult:
    """Kendall's tau-b and its bootstrap percentile interval.

    Attributes:
        tau: tau-b of the observations (NaN when x or y is constant).
        low, high: the ``confidence`` percentile interval over ``n_boot`` resamples (resamples
            whose tau is undefined, all ties, are left out; ``valid`` counts the rest).
        n: the number of paired observations (NaN pairs dropped).
        confidence: the interval's nominal coverage.
        n_boot: resamples drawn; ``valid``: resamples with a defined tau.
        seed: the bootstrap's seed.
    """

    tau: float
    low: float
    high: float
    n: int
    confidence: float
    n_boot: int
    valid: int
    seed: int


def _tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tau-b of each row of ``x`` and ``y`` (shape (B, n)); NaN where a row has no untied pair
    in x or in y."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    # every unordered pair appears twice (i, j) and (j, i) with the same product: halves cancel
    num = (sx * sy).sum(axis=(1, 2))
    den = np.sqrt(np.abs(sx).sum(axis=(1, 2)) * np.abs(sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _pairs(x, y, clusters=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        xa = np.asarray(x, dtype=float).ravel()
        ya = np.asarray(y, dtype=float).ravel()
    except (TypeError, ValueError) as e:
        raise ValueError(f"Invalid x or y: expected numbers ({e})") from None
    if xa.shape != ya.shape:
        raise ValueError(f"Invalid y: {ya.size} values for {xa.size} values of x")
    if np.isinf(xa).any() or np.isinf(ya).any():
        raise ValueError("Invalid x or y: infinite values (NaN pairs are dropped, inf is not)")
    keep = ~(np.isnan(xa) | np.isnan(ya))
    labels = None
    if clusters is not None:
        ca = np.asarray(clusters, dtype=object).ravel()
        if ca.shape != xa.shape:
            raise ValueError(f"Invalid clusters: {ca.size} labels for {xa.size} values of x")
        if pd.isna(ca).any():
            raise ValueError("Invalid clusters: missing labels")
        labels = pd.factorize(ca[keep])[0]
    return xa[keep], ya[keep], labels


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not values.size:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def _cluster_resamples(labels: np.ndarray, n_boot: int, rng: np.random.Generator):
    """Index arrays of a two-stage bootstrap: clusters drawn with replacement, then members
    drawn with replacement within each drawn cluster (one array per resample)."""
    members = [np.flatnonzero(labels == g) for g in range(labels.max() + 1)]
    for _ in range(n_boot):
        drawn = rng.integers(0, len(members), size=len(members))
        yield np.concatenate([rng.choice(members[g], size=members[g].size) for g in drawn])


def kendall_tau(
    x: Sequence[float] | np.ndarray | pd.Series,
    y: Sequence[float] | np.ndarray | pd.Series,
    *,
    clusters: Sequence | np.ndarray | pd.Series | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> TauResult:
    """Kendall's tau-b of ``x`` against ``y`` and a bootstrap percentile interval (see the
    module docstring). Pairs where either value is NaN are dropped (``n`` counts the rest); at
    least 3 must remain. ``clusters``: one label per observation (e.g. the configuration of
    each minimum); the bootstrap then resamples clusters, then observations within each drawn
    cluster, instead of observations; at least 2 clusters.

    Args:
        x: the first variable (e.g. a sharpness measure), one value per observation.
        y: the second (e.g. the generalisation gap), the same length as ``x``.
        clusters: one label per observation for the cluster bootstrap; None resamples the
            observations themselves.
        n_boot: the number of bootstrap resamples (>= 1).
        confidence: the coverage of the percentile interval, in (0, 1).
        seed: the seed of the bootstrap's generator (>= 0).

    Returns:
        A :class:`TauResult`: tau-b, its interval, ``n`` and the bootstrap's settings.

    Raises:
        ValueError: x, y (or clusters) of different lengths, infinite values, fewer than 3
            pairs or 2 clusters, or ``n_boot`` < 1, ``confidence`` outside (0, 1), ``seed`` < 0.
    """
    n_boot = check_int("n_boot", n_boot, 1)
    seed = check_int("seed", seed, 0)
    confidence = check_confidence(confidence)
    xa, ya, labels = _pairs(x, y, clusters)
    n = xa.size
    if n < 3:
        raise ValueError(f"Invalid x: {n} complete pairs (expected at least 3)")
    if labels is not None and labels.max() < 1:
        raise ValueError("Invalid clusters: one cluster (expected at least 2 to resample)")
    tau = float(_tau_b(xa[None], ya[None])[0])
    rng = np.random.default_rng(seed)
    if labels is None:
        taus = []
        chunk = max(1, 2_000_000 // (n * n))  # resamples per vectorised call: bounded memory
        for start in range(0, n_boot, chunk):
            idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
            taus.append(_tau_b(xa[idx], ya[idx]))
        boot = np.concatenate(taus)
    else:
        boot = np.array(
            [_tau_b(xa[i][None], ya[i][None])[0] for i in _cluster_resamples(labels, n_boot, rng)]
        )
    valid = int((~np.isnan(boot)).sum())
    low, high = _percentiles(boot, confidence)
    return TauResult(tau, low, high, n, float(confidence), n_boot, valid, seed)


def tau_table(
    frame: pd.DataFrame,
    measures: Sequence[str],
    against: str = "gap",
    *,
    clusters: str | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per measure: ``measure``, ``tau``, ``low``, ``high``, ``n`` of
    :func:`kendall_tau` of ``frame[measure]`` against ``frame[against]``, every measure with the
    same ``seed`` (and, with ``clusters`` a column name, the cluster bootstrap over it). Tidy,
    for a table or the titles of a scatter plot.

    Args:
        frame: a DataFrame with the columns of ``measures``, ``against`` and ``clusters``.
        measures: the columns to correlate, one row each.
        against: the column they are correlated with (default ``"gap"``).
        clusters: a column of cluster labels for the cluster bootstrap, or None.
        n_boot: the number of bootstrap resamples (>= 1).
        confidence: the coverage of each interval, in (0, 1).
        seed: the seed of every measure's bootstrap (>= 0).

    Returns:
        A DataFrame with the columns ``measure``, ``tau``, ``low``, ``high`` and ``n``.

    Raises:
        TypeError: ``frame`` not a DataFrame.
        ValueError: a column not in the frame, or any :func:`kendall_tau` refusal.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"Invalid frame: expected a DataFrame, got {type(frame).__name__}")
    missing = [c for c in [*measures, against, *([clusters] if clusters else [])] if c not in frame]
    if missing:
        raise ValueError(f"Invalid measures: columns {missing} are not in the frame")
    rows = []
    for m in measures:
        r = kendall_tau(
            frame[m],
            frame[against],
            clusters=None if clusters is None else frame[clusters],
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
        )
        rows.append(dict(measure=m, tau=r.tau, low=r.low, high=r.high, n=r.n))
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class GranulatedResult:
    """Jiang et al.'s granulated Kendall coefficient of a measure against a target.

    Attributes:
        psi: the mean of ``per_axis`` over the axes (NaN when no axis has a defined tau).
        per_axis: axis -> the mean tau-b over that axis' groups (NaN when none is defined).
        groups: axis -> the number of groups whose tau is defined (the others are skipped).
        low, high: percentile intervals (``confidence``) of ``psi`` and of each axis' mean,
            ``interval_per_axis``, from a bootstrap over each axis' groups (see
            :func:`granulated_kendall`).
    """

    psi: float
    per_axis: dict[str, float]
    groups: dict[str, int]
    low: float = math.nan
    high: float = math.nan
    interval_per_axis: dict[str, tuple[float, float]] = field(default_factory=dict)
    confidence: float = 0.95
    n_boot: int = 0
    seed: int = 0


def _axis_taus(frame: pd.DataFrame, measure: str, target: str, axis: str, fixed) -> np.ndarray:
    """tau-b of ``measure`` against ``target`` within each group of rows that share every
    column of ``fixed`` (all but ``axis``), for the groups where it is defined."""
    taus = []
    groups = frame.groupby(list(fixed), dropna=False, sort=True) if fixed else [(None, frame)]
    for _, g in groups:
        if g[axis].nunique() < 2:
            continue
        x, y, _ = _pairs(g[measure], g[target])
        if x.size >= 2:
            t = float(_tau_b(x[None], y[None])[0])
            if not math.isnan(t):
                taus.append(t)
    return np.asarray(taus, dtype=float)


def granulated_kendall(
    frame: pd.DataFrame,
    measure: str,
    target: str,
    axes: Sequence[str],
    *,
    fixed: Sequence[str] = (),
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> GranulatedResult:
    """Jiang et al. (2020)'s granulated Kendall coefficient of ``measure`` against ``target``.

    For each axis ``a`` of ``axes`` (the columns along which the population was varied), the
    rows are grouped by every other axis (and by the columns of ``fixed``, e.g. ``"seed"``, held
    equal without being an axis themselves), so that a group holds minima that differ only in
    ``a``; tau-b is computed within each group, groups where it is undefined (fewer than two
    values of ``a``, or all ties) are skipped, and ``per_axis[a]`` is the mean over the rest.
    ``psi`` is the mean of ``per_axis`` over the axes with a defined value.

    The intervals come from a bootstrap over groups: each axis' group taus are resampled with
    replacement (``n_boot`` times, seeded) and averaged; ``psi``'s resample is the mean of the
    axes' resampled means. Groups are the units: they differ in the other axes' values, and are
    the independent pieces of the design that each axis' coefficient averages over.

    Args:
        frame: one row per minimum, with the columns named by the other arguments.
        measure: the column of the measure.
        target: the column it is correlated with (e.g. the generalisation gap).
        axes: the columns varied in the population (a non-empty list, each once).
        fixed: further columns held equal within a group without being axes (e.g. ``"seed"``).
        n_boot: the number of bootstrap resamples (>= 1).
        confidence: the coverage of the percentile intervals, in (0, 1).
        seed: the seed of the bootstrap's generator (>= 0).

    Returns:
        A :class:`GranulatedResult`.

    Raises:
        ValueError: ``axes`` empty, a string, repeated or overlapping ``fixed``; ``frame`` not a
            DataFrame or lacking a column; infinite values; or ``n_boot``, ``confidence`` or
            ``seed`` out of range.
    """
    if isinstance(axes, str) or not len(axes):
        raise ValueError(f"Invalid axes: {axes!r} (expected a non-empty list of column names)")
    axes, fixed = list(axes), list(fixed)
    check_columns(frame, [measure, target, *axes, *fixed], "measure, target, axes or fixed")
    if len(set(axes)) != len(axes) or set(axes) & set(fixed):
        raise ValueError(f"Invalid axes: {axes} (each once, and none of fixed {fixed})")
    n_boot = check_int("n_boot", n_boot, 1)
    confidence = check_confidence(confidence)
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    per_axis, groups, intervals, boot_means = {}, {}, {}, []
    for a in axes:
        taus = _axis_taus(frame, measure, target, a, [c for c in axes if c != a] + fixed)
        groups[a] = int(taus.size)
        per_axis[a] = float(taus.mean()) if taus.size else math.nan
        if taus.size:
            means = taus[rng.integers(0, taus.size, size=(n_boot, taus.size))].mean(axis=1)
            intervals[a] = _percentiles(means, confidence)
            boot_means.append(means)
        else:
            intervals[a] = (math.nan, math.nan)
    defined = [v for v in per_axis.values() if not math.isnan(v)]
    psi = float(np.mean(defined)) if defined else math.nan
    low, high = (
        _percentiles(np.mean(boot_means, axis=0), confidence) if boot_means else (math.nan,) * 2
    )
    return GranulatedResult(
        psi, per_axis, groups, low, high, intervals, float(confidence), n_boot, seed
    )
