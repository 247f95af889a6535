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

When the observations are clustered (minima that share a configuration and differ by seed),
``kendall_tau(..., clusters=frame["config"])`` resamples as the design was drawn: configurations
with replacement, then seeds with replacement within each drawn configuration (a two-stage
cluster bootstrap), so the interval is not narrowed by treating seeds of one configuration as
independent minima.

The rest of the module is the statistics of a designed comparison:

* :func:`generalization_gaps`: the error gap (test error minus training error, the literature's
  "generalisation gap") and the loss gap (test loss minus training loss), side by side.
* :func:`granulated_kendall`: Jiang et al. (2020)'s granulated Kendall coefficient: for each
  varied axis, the mean tau over the groups of rows that differ only along that axis; ``psi``
  the mean over the axes.
* :func:`t_interval`, :func:`paired_difference`, :func:`holm` and :func:`paired_comparisons`:
  differences over shared seeds compared as pairs (the t-interval of the per-seed differences,
  no variance floor), with Holm's step-down adjustment over a table.
* :func:`detectable_difference` and :func:`binomial_detectable_difference`: the smallest true
  difference that the seeds (a paired t-test) or the size of the test set (two accuracies on the
  same examples) would detect with the stated power, printed beside every "no difference".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as _scipy_stats

from ._checks import check_float, check_int

__all__ = [
    "GranulatedResult",
    "PairedResult",
    "TauResult",
    "binomial_detectable_difference",
    "detectable_difference",
    "generalization_gaps",
    "granulated_kendall",
    "holm",
    "kendall_tau",
    "paired_comparisons",
    "paired_difference",
    "t_interval",
    "tau_table",
]


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


def _check_confidence(confidence) -> float:
    return check_float("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)


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

    Raises:
        ValueError: x, y (or clusters) of different lengths, infinite values, fewer than 3
            pairs or 2 clusters, or ``n_boot`` < 1, ``confidence`` outside (0, 1), ``seed`` < 0.
    """
    n_boot = check_int("n_boot", n_boot, 1)
    seed = check_int("seed", seed, 0)
    confidence = _check_confidence(confidence)
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
    for a table or the titles of a scatter plot."""
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


# -- gaps -----------------------------------------------------------------------------------------
def generalization_gaps(
    frame: pd.DataFrame, train: str = "train", test: str = "test"
) -> pd.DataFrame:
    """``frame`` with two columns added: ``error_gap``, the test error minus the training error
    (``(1 - test_accuracy) - (1 - train_accuracy)``, the literature's generalisation gap), and
    ``loss_gap``, the test loss minus the training loss. Read from the columns
    ``{train}_accuracy``, ``{test}_accuracy``, ``{train}_loss`` and ``{test}_loss`` (a sweep's
    trials table has them); ``test="val"`` measures against the validation split."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"Invalid frame: {type(frame).__name__} (expected a DataFrame)")
    columns = [f"{train}_accuracy", f"{test}_accuracy", f"{train}_loss", f"{test}_loss"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"Invalid frame: no columns {missing} (needed for the gaps)")
    out = frame.copy()
    out["error_gap"] = frame[f"{train}_accuracy"] - frame[f"{test}_accuracy"]
    out["loss_gap"] = frame[f"{test}_loss"] - frame[f"{train}_loss"]
    return out


# -- granulated Kendall ---------------------------------------------------------------------------
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


def _check_columns(frame: Any, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"Invalid frame: {type(frame).__name__} (expected a DataFrame)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"Invalid {what}: columns {missing} are not in the frame")


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
    """
    if isinstance(axes, str) or not len(axes):
        raise ValueError(f"Invalid axes: {axes!r} (expected a non-empty list of column names)")
    axes, fixed = list(axes), list(fixed)
    _check_columns(frame, [measure, target, *axes, *fixed], "measure, target, axes or fixed")
    if len(set(axes)) != len(axes) or set(axes) & set(fixed):
        raise ValueError(f"Invalid axes: {axes} (each once, and none of fixed {fixed})")
    n_boot = check_int("n_boot", n_boot, 1)
    confidence = _check_confidence(confidence)
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


# -- paired comparisons ---------------------------------------------------------------------------
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
    ``mean -/+ t_{(1+confidence)/2, n-1} s / sqrt(n)``; NaN ends with fewer than two values."""
    confidence = _check_confidence(confidence)
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
    so rejecting where the adjusted value is below alpha controls the family-wise error."""
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
    1: say so rather than trust it, as with any two seeds."""
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
    freedom, noncentrality ``delta sqrt(n) / sd``) puts ``power`` beyond the critical values."""
    n = check_int("n", n, 2)
    sd = check_float("sd", sd, 0.0)
    alpha = check_float("alpha", alpha, 0.0, 1.0, low_open=True, high_open=True)
    power = check_float("power", power, alpha, 1.0, low_open=True, high_open=True)
    if sd == 0:
        return 0.0
    df, crit = n - 1, float(_scipy_stats.t.ppf(1 - alpha / 2, n - 1))

    def shortfall(nc: float) -> float:
        t = _scipy_stats.nct
        return float(t.sf(crit, df, nc) + t.cdf(-crit, df, nc)) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    nc = optimize.brentq(shortfall, 0.0, high, xtol=1e-10)
    return float(nc * sd / math.sqrt(n))


def binomial_detectable_difference(
    accuracy: float, n_test: int, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest difference between two accuracies near ``accuracy``, measured on the same
    ``n_test`` examples, that a two-sided z-test at ``alpha`` detects with ``power``, treating
    the two models' errors as independent (``sd = sqrt(2 p (1 - p) / n_test)``; errors that
    coincide on the same examples make the real threshold smaller): what the size of the test
    set alone allows, however many seeds."""
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
    value is refused (ambiguous pairing)."""
    _check_columns(frame, [value, by, pair], "value, by or pair")
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


# -- Welch's unpaired comparison ------------------------------------------------------------------
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
    interval are NaN."""
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


# -- choosing the learning rate -------------------------------------------------------------------
def choose_lr(
    frame: pd.DataFrame,
    selection: str = "val_loss",
    *,
    failed: str = "diverged",
    seeds: int | None = None,
) -> float:
    """The learning rate chosen on the validation split from ``frame``, one row per (lr, seed)
    with columns ``lr``, ``selection`` and the boolean ``failed`` (e.g. the frame of
    :func:`analysis_lib.training.lr_sweep`, or a sweep's trials).

    The rule (the sweep's, :func:`analysis_lib.sweep.summarize`): for each lr, the score is
    the mean of ``selection`` over its seeds, lower is better for ``"val_loss"`` and higher
    for ``"val_accuracy"``. An lr where any seed failed (diverged), or with fewer than
    ``seeds`` rows, or whose mean is not finite, counts as the worst, so a rate that works
    only for lucky seeds is never chosen. Ties go to the smaller lr. NaN when every lr failed.
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
    sign = 1.0 if selection == "val_loss" else -1.0  # lower score is better
    best, best_score = math.nan, math.inf
    for lr, at in sorted(frame.groupby("lr"), key=lambda kv: kv[0]):
        ok = at[~at[failed].astype(bool)]
        complete = len(ok) == len(at) and (seeds is None or len(ok) >= seeds)
        score = sign * float(ok[selection].mean()) if complete and len(ok) else math.inf
        if not math.isfinite(score):
            score = math.inf
        if score < best_score:
            best, best_score = float(lr), score
    return best


__all__ += ["choose_lr"]


__all__ += ["welch"]
