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

    from analysis_lib.stats import kendall_tau, tau_table

    res = kendall_tau(frame["worst_case"], frame["gap"], seed=0)
    res.tau, res.low, res.high, res.n
    tau_table(frame, ["worst_case", "lambda_max"], against="gap")   # one row per measure
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._checks import check_int

__all__ = ["TauResult", "kendall_tau", "tau_table"]


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


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
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
    return xa[keep], ya[keep]


def kendall_tau(
    x: Sequence[float] | np.ndarray | pd.Series,
    y: Sequence[float] | np.ndarray | pd.Series,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> TauResult:
    """Kendall's tau-b of ``x`` against ``y`` and a bootstrap percentile interval over the
    observations (see the module docstring). Pairs where either value is NaN are dropped
    (``n`` counts the rest); at least 3 must remain.

    Raises:
        ValueError: x and y of different lengths, infinite values, fewer than 3 pairs, or
            ``n_boot`` < 1, ``confidence`` outside (0, 1), ``seed`` < 0.
    """
    n_boot = check_int("n_boot", n_boot, 1)
    seed = check_int("seed", seed, 0)
    if not isinstance(confidence, int | float) or not 0 < confidence < 1:
        raise ValueError(f"Invalid confidence: {confidence!r} (expected a number in (0, 1))")
    xa, ya = _pairs(x, y)
    n = xa.size
    if n < 3:
        raise ValueError(f"Invalid x: {n} complete pairs (expected at least 3)")
    tau = float(_tau_b(xa[None], ya[None])[0])
    rng = np.random.default_rng(seed)
    taus = []
    chunk = max(1, 2_000_000 // (n * n))  # resamples per vectorised call: bounded memory
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        taus.append(_tau_b(xa[idx], ya[idx]))
    boot = np.concatenate(taus)
    boot = boot[~np.isnan(boot)]
    tail = (1 - confidence) / 2
    low, high = (
        (float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail)))
        if boot.size
        else (math.nan, math.nan)
    )
    return TauResult(tau, low, high, n, float(confidence), n_boot, int(boot.size), seed)


def tau_table(
    frame: pd.DataFrame,
    measures: Sequence[str],
    against: str = "gap",
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per measure: ``measure``, ``tau``, ``low``, ``high``, ``n`` of
    :func:`kendall_tau` of ``frame[measure]`` against ``frame[against]``, every measure with the
    same ``seed``. Tidy, for a table or the titles of a scatter plot."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"Invalid frame: expected a DataFrame, got {type(frame).__name__}")
    missing = [c for c in [*measures, against] if c not in frame.columns]
    if missing:
        raise ValueError(f"Invalid measures: columns {missing} are not in the frame")
    rows = []
    for m in measures:
        r = kendall_tau(frame[m], frame[against], n_boot=n_boot, confidence=confidence, seed=seed)
        rows.append(dict(measure=m, tau=r.tau, low=r.low, high=r.high, n=r.n))
    return pd.DataFrame(rows)
