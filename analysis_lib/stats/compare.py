"""Comparisons of optimizer configurations over seeds, and how small a difference they can see.

* :func:`t_interval`: the Student-t interval of a mean.
* :func:`paired_difference` (its :class:`PairedResult`) and :func:`paired_comparisons`:
  differences over shared seeds compared as pairs (the t-interval of the per-seed differences,
  no variance floor), with :func:`holm`'s step-down adjustment over a table.
* :func:`welch`: Welch's unpaired comparison of two samples, with an optional variance floor.
* :func:`detectable_difference` and :func:`binomial_detectable_difference`: the smallest true
  difference that the seeds (a paired t-test) or the size of the test set (two accuracies on the
  same examples) would detect with the stated power, printed beside every "no difference".
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as _scipy_stats

from .._checks import check_float, check_int
from ._common import check_columns, check_confidence

__all__ = [
    "PairedResult",
    "binomial_detectable_difference",
    "detectable_difference",
    "holm",
    "paired_comparisons",
    "paired_difference",
    "t_interval",
    "welch",
]


def _values(values: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as e:
        raise ValueError(f"Invalid {name}: expected numbers ({e})") from None
    if np.isinf(a).any():
        raise ValueError(f"Invalid {name}: infinite values")
    return a


def t_interval(values: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` (NaN dropped) and its Student-t interval,
    ``mean -/+ t_{(1+confidence)/2, n-1} s / sqrt(n)``; NaN ends with fewer than two values.

    Args:
        values: numbers (any array-like, flattened); NaN entries are dropped.
        confidence: the interval's coverage, strictly between 0 and 1.

    Returns:
        ``(mean, low, high)`` as floats; all NaN when no value is left, ``low`` and ``high``
        NaN with a single value.

    Raises:
        ValueError: ``confidence`` outside (0, 1), or ``values`` not numbers or infinite.

    Example:
        >>> [round(x, 6) for x in t_interval([1.0, 2.0, 3.0])]
        [2.0, -0.484138, 4.484138]
    """
    confidence = check_confidence(confidence)
    a = _values(values, "values")
    a = a[~np.isnan(a)]
    if a.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(a.mean())
    if a.size < 2:
        return mean, math.nan, math.nan
    half = float(
        _scipy_stats.t.ppf((1 + confidence) / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    )
    return mean, mean - half, mean + half


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are left out of the
    family and stay NaN): the i-th smallest of ``m`` becomes ``max_{j<=i} min(1, (m-j+1) p_(j))``,
    so rejecting where the adjusted value is below alpha controls the family-wise error.

    Args:
        pvalues: p-values (any array-like, flattened), each in [0, 1] or NaN.

    Returns:
        The adjusted p-values as a float array, in the input's order (NaN where the input is).

    Raises:
        ValueError: ``pvalues`` not numbers, infinite, or outside [0, 1].

    Example:
        >>> holm([0.01, 0.04, 0.03]).tolist()
        [0.03, 0.06, 0.06]
    """
    p = _values(pvalues, "pvalues")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("Invalid pvalues: values outside [0, 1]")
    out = np.full(p.shape, np.nan)
    keep = np.flatnonzero(~np.isnan(p))
    order = keep[np.argsort(p[keep], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out


@dataclass(frozen=True)
class PairedResult:
    """The difference ``a - b`` over shared seeds, compared as pairs.

    Attributes:
        mean: the mean of the per-seed differences; ``low``, ``high`` its t-interval.
        n: the number of seeds where both values are there; ``sd`` the standard deviation of
            the differences; ``t`` and ``p`` the paired t-test of a zero mean difference.
        detectable: the smallest true mean difference this design would detect (two-sided test
            at ``alpha``) with probability ``power`` (:func:`detectable_difference` with ``sd``).
    """

    mean: float
    low: float
    high: float
    n: int
    sd: float
    t: float
    p: float
    detectable: float
    confidence: float = 0.95
    alpha: float = 0.05
    power: float = 0.8


def paired_difference(
    a: Any, b: Any, *, confidence: float = 0.95, alpha: float = 0.05, power: float = 0.8
) -> PairedResult:
    """``a - b`` over shared seeds (``a[i]`` and ``b[i]`` from the same seed: the same
    initialisation and batch order), as pairs: the per-seed differences' mean, t-interval and
    paired t-test (scipy's ``ttest_rel``), no variance floor; pairs where either is NaN are
    dropped. With identical differences (``sd = 0``) the interval is a point and ``p`` is 0 or
    1: say so rather than trust it, as with any two seeds.

    Args:
        a: one configuration's values, one per seed.
        b: the other's, in the same seed order as ``a`` (same length).
        confidence: the coverage of the interval of the mean difference, in (0, 1).
        alpha: the test level used for ``detectable``, in (0, 1).
        power: the power used for ``detectable``, in (``alpha``, 1).

    Returns:
        A :class:`PairedResult` of ``a - b``.

    Raises:
        ValueError: ``a`` or ``b`` not numbers or infinite, of different lengths, fewer than two
            complete pairs, or ``confidence``, ``alpha`` or ``power`` out of range.
    """
    xa, xb = _values(a, "a"), _values(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"Invalid b: {xb.size} values for {xa.size} values of a (paired)")
    d = xa - xb
    d = d[~np.isnan(d)]
    n = int(d.size)
    if n < 2:
        raise ValueError(f"Invalid a: {n} complete pairs (expected at least 2)")
    mean, low, high = t_interval(d, confidence)
    sd = float(d.std(ddof=1))
    if sd > 0:
        t = mean / (sd / math.sqrt(n))
        p = float(2 * _scipy_stats.t.sf(abs(t), n - 1))
    else:
        t = math.copysign(math.inf, mean) if mean else 0.0
        p = 0.0 if mean else 1.0
    mdd = detectable_difference(n, sd, alpha=alpha, power=power)
    return PairedResult(mean, low, high, n, sd, t, p, mdd, confidence, alpha, power)


def detectable_difference(n: int, sd: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference that a two-sided paired t-test at level ``alpha`` over
    ``n`` pairs whose differences have standard deviation ``sd`` rejects with probability
    ``power``: the ``delta`` at which the noncentral t distribution (``n - 1`` degrees of
    freedom, noncentrality ``delta sqrt(n) / sd``) puts ``power`` beyond the critical values.

    Args:
        n: the number of pairs (>= 2).
        sd: the standard deviation of the per-pair differences (>= 0), in the values' units.
        alpha: the two-sided test level, in (0, 1).
        power: the required probability of rejecting, in (``alpha``, 1).

    Returns:
        The detectable difference, in the units of ``sd`` (0.0 when ``sd`` is 0).

    Raises:
        ValueError: an argument out of range, naming it.

    Example:
        >>> round(detectable_difference(10, 1.0), 4)
        0.996
    """
    n = check_int("n", n, 2)
    sd = check_float("sd", sd, 0.0)
    alpha = check_float("alpha", alpha, 0.0, 1.0, low_open=True, high_open=True)
    power = check_float("power", power, alpha, 1.0, low_open=True, high_open=True)
    if sd == 0:
        return 0.0
    df, crit = n - 1, float(_scipy_stats.t.ppf(1 - alpha / 2, n - 1))
    nc = optimize.brentq(
        lambda c: _t_test_power(c, df, crit) - power, 0.0, _bracket(df, crit, power)
    )
    return float(nc * sd / math.sqrt(n))


def _t_test_power(nc: float, df: int, crit: float) -> float:
    """``P(|T| > crit)`` for ``T = (Z + nc) / sqrt(V / df)``, ``Z`` standard normal and ``V``
    chi-squared with ``df`` degrees of freedom (the noncentral t), as the expectation over ``V``
    of the two normal tails: scipy's ``nct`` where it gives a number, else integrated directly
    (``nct`` returns NaN for one degree of freedom and a large noncentrality: two seeds)."""
    t = _scipy_stats.nct
    value = float(t.sf(crit, df, nc) + t.cdf(-crit, df, nc))
    if math.isfinite(value):
        return value

    def tails(v: float) -> float:
        s = crit * math.sqrt(v / df)
        return float(_scipy_stats.norm.sf(s - nc) + _scipy_stats.norm.cdf(-s - nc))

    return float(_scipy_stats.chi2(df).expect(tails))


def _bracket(df: int, crit: float, power: float) -> float:
    """A noncentrality at which the test's power is at least ``power``."""
    high = 1.0
    while _t_test_power(high, df, crit) < power:
        high *= 2
    return high


def binomial_detectable_difference(
    accuracy: float, n_test: int, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest difference between two accuracies near ``accuracy``, measured on the same
    ``n_test`` examples, that a two-sided z-test at ``alpha`` detects with ``power``, treating
    the two models' errors as independent (``sd = sqrt(2 p (1 - p) / n_test)``; errors that
    coincide on the same examples make the real threshold smaller): what the size of the test
    set alone allows, however many seeds.

    Args:
        accuracy: the accuracy ``p`` near which the two are compared, in [0, 1].
        n_test: the number of test examples (>= 1).
        alpha: the two-sided test level, in (0, 1).
        power: the required probability of detecting, in (``alpha``, 1).

    Returns:
        The detectable difference in accuracy, as a fraction (not percentage points).

    Raises:
        ValueError: an argument out of range, naming it.

    Example:
        >>> round(binomial_detectable_difference(0.9, 10000), 6)
        0.011886
    """
    p = check_float("accuracy", accuracy, 0.0, 1.0)
    n_test = check_int("n_test", n_test, 1)
    alpha = check_float("alpha", alpha, 0.0, 1.0, low_open=True, high_open=True)
    power = check_float("power", power, alpha, 1.0, low_open=True, high_open=True)
    z = _scipy_stats.norm.ppf(1 - alpha / 2) + _scipy_stats.norm.ppf(power)
    return float(z * math.sqrt(2 * p * (1 - p) / n_test))


def paired_comparisons(
    frame: pd.DataFrame,
    value: str,
    by: str,
    pair: str = "seed",
    *,
    baseline: Any = None,
    confidence: float = 0.95,
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """Every pair of the ``by`` groups (or each against ``baseline``) compared on ``value`` as
    pairs over the ``pair`` column (rows of two groups with the same ``pair`` value, e.g. the
    same seed, are paired): one row per comparison with ``a``, ``b``, ``n``, ``mean``
    (``a - b``), ``low``, ``high``, ``p``, ``p_holm`` (Holm over the whole table),
    ``detectable`` and ``supported`` (``p_holm < alpha``). A group with two rows of one ``pair``
    value is refused (ambiguous pairing).

    Args:
        frame: a DataFrame in long form, one row per group and pair value.
        value: the column compared.
        by: the column naming the groups (e.g. the optimizer).
        pair: the column whose equal values are paired (default ``"seed"``).
        baseline: a value of ``by`` to compare every other group against; None compares every
            pair of groups.
        confidence: the coverage of each interval, in (0, 1).
        alpha: the level for ``supported`` and ``detectable``, in (0, 1).
        power: the power for ``detectable``, in (``alpha``, 1).

    Returns:
        A DataFrame with one row per comparison and the columns listed above.

    Raises:
        ValueError: ``frame`` not a DataFrame or lacking a column, two rows of one group with
            the same ``pair`` value, ``baseline`` not a group, fewer than two complete pairs in
            a comparison, or an argument out of range.
    """
    check_columns(frame, [value, by, pair], "value, by or pair")
    duplicated = frame.duplicated([by, pair])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise ValueError(
            f"Invalid frame: two rows of {by}={row[by]!r} with {pair}={row[pair]!r} (each group "
            "needs one value per pair)"
        )
    wide = frame.pivot(index=pair, columns=by, values=value)
    names = list(wide.columns)
    if baseline is not None and baseline not in names:
        raise ValueError(f"Invalid baseline: {baseline!r} (not a value of {by}: {names})")
    if baseline is None:
        couples = list(itertools.combinations(names, 2))
    else:
        couples = [(g, baseline) for g in names if g != baseline]
    rows = []
    for a, b in couples:
        r = paired_difference(wide[a], wide[b], confidence=confidence, alpha=alpha, power=power)
        rows.append(
            dict(
                a=a, b=b, n=r.n, mean=r.mean, low=r.low, high=r.high, p=r.p, detectable=r.detectable
            )
        )
    table = pd.DataFrame(rows, columns=["a", "b", "n", "mean", "low", "high", "p", "detectable"])
    table.insert(7, "p_holm", holm(table["p"]) if len(table) else [])
    table["supported"] = table["p_holm"] < alpha
    return table


def _spread(x: np.ndarray) -> float:
    """The sample variance, exactly 0 when every value is the same (not a rounding residue)."""
    return 0.0 if np.ptp(x) == 0 else float(x.var(ddof=1))


def welch(a: Any, b: Any, floor: float = 0.0) -> tuple[float, float, float]:
    """``(p, low, high)``: Welch's two-sided p-value for ``mean(a) == mean(b)`` and the 95%
    interval of ``mean(a) - mean(b)`` (NaN values dropped; at least two values each), each
    sample's variance floored at ``floor`` (e.g. ``resolution**2 / 12`` for values that are
    counts of ``1 / resolution``). With ``t = d / sqrt(va/n + vb/m)`` and the
    Welch-Satterthwaite degrees of freedom ``(va/n + vb/m)^2 / ((va/n)^2/(n-1) + (vb/m)^2/(m-1))``.
    Both spreads zero (no floor, each sample constant): the spread is unknown, so ``p`` and the
    interval are NaN.

    Args:
        a: the first sample (array-like of numbers; NaN dropped).
        b: the second sample.
        floor: the lower bound of each sample's variance (>= 0), in squared units of the values.

    Returns:
        ``(p, low, high)`` as floats; all NaN when both spreads are zero.

    Raises:
        ValueError: ``floor`` negative, a sample not numbers or infinite, or with fewer than
            two values.

    Example:
        >>> [round(x, 4) for x in welch([1, 2, 3, 4], [2, 3, 4, 5])]
        [0.3153, -3.2337, 1.2337]
    """
    floor = check_float("floor", floor, 0.0)
    xa, xb = _values(a, "a"), _values(b, "b")
    xa, xb = xa[~np.isnan(xa)], xb[~np.isnan(xb)]
    for name, x in (("a", xa), ("b", xb)):
        if x.size < 2:
            raise ValueError(f"Invalid {name}: {x.size} values (expected at least 2)")
    diff = float(xa.mean() - xb.mean())
    va = max(_spread(xa), floor) / len(xa)
    vb = max(_spread(xb), floor) / len(xb)
    se2 = va + vb
    if se2 == 0:
        return math.nan, math.nan, math.nan
    df = se2**2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    t = diff / math.sqrt(se2)
    p = float(2 * _scipy_stats.t.sf(abs(t), df))
    half = float(_scipy_stats.t.ppf(0.975, df) * math.sqrt(se2))
    return p, diff - half, diff + half
