"""Claims of papers tested on paired per-seed results: one row per claim with its effect, its
paired interval, the smallest difference the design could detect, and a verdict.

* :class:`Claim`: one claim, e.g. "AdamNX outperforms Adam in test accuracy" (``kind="greater"``)
  or "Ada2MS reaches SGD+momentum's test accuracy" (``kind="not_worse"`` with a ``margin``), on
  a value where higher is better or, for sharpness measures, lower is better (flatter).
* :func:`claims_table`: every claim tested on the rows of a long frame, the two groups paired on
  a column (the seed: the same initialisation and batch order for every optimizer), with
  one-sided paired t-tests for and against the claim, each family Holm-adjusted over the table,
  and the verdict "supported", "contradicted" or "not resolvable at this power".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

from .._checks import check_float, check_int
from ._common import check_columns, check_confidence
from .compare import binomial_detectable_difference, detectable_difference, holm

__all__ = ["Claim", "claims_table"]

KINDS = ("greater", "not_worse")
VERDICTS = ("supported", "contradicted", "not resolvable at this power")
COLUMNS = [
    "text", "where", "value", "a", "b", "kind", "margin", "n", "effect", "low", "high",
    "p_support", "p_contra", "p_support_holm", "p_contra_holm", "detectable",
    "detectable_test", "verdict",
]  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """One claim comparing two groups (values of the ``by`` column of :func:`claims_table`, e.g.
    two optimizers) on one column, each seed's result of ``a`` paired with ``b``'s.

    The per-pair difference is oriented so that a positive value favours the claim: ``a - b``
    when higher is better, ``b - a`` when lower is (``higher_is_better=False``: a sharpness
    measure, where "greater" reads "``a`` finds flatter minima than ``b``").

    Attributes:
        text: the claim in words, e.g. ``"AdamNX outperforms Adam"`` (a non-empty string).
        value: the column compared, e.g. ``"test_accuracy"`` or ``"lambda_max"``.
        a: the group the claim is about.
        b: the group it is compared with (not ``a``).
        kind: ``"greater"`` (``a`` better than ``b``: mean oriented difference > 0) or
            ``"not_worse"`` (``a`` no worse than ``b`` by more than ``margin``: mean oriented
            difference > ``-margin``).
        higher_is_better: False where lower values are better (sharpness, loss, error).
        margin: for ``"not_worse"``, the tolerated shortfall (>= 0) in the value's units; 0
            for ``"greater"``.
        where: the rows the claim is about, as ``{column: value}`` (e.g. ``{"task": "cifar10"}``);
            the rows of the frame equal to every item are used. Empty: all rows. Stored as a
            tuple of ``(column, value)`` items; shown in the table's ``where`` column as
            ``"task=cifar10"``.

    Raises:
        ValueError: an attribute of the wrong type or out of range, naming it: ``text`` or
            ``value`` not a non-empty string, ``b`` equal to ``a``, ``kind`` unknown,
            ``higher_is_better`` not a bool, ``margin`` not a finite number >= 0 (or non-zero
            for ``"greater"``), ``where`` not a mapping.
    """

    text: str
    value: str
    a: str
    b: str
    kind: str = "greater"
    higher_is_better: bool = True
    margin: float = 0.0
    where: Mapping[str, Any] | tuple = ()

    def __post_init__(self) -> None:
        for name in ("text", "value"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(
                    f"Invalid {name}: {getattr(self, name)!r} (expected a non-empty str)"
                )
        about = f"claim {self.text!r}"
        if self.b == self.a:
            raise ValueError(f"Invalid b: {self.b!r} is also a ({about}; expected another group)")
        if self.kind not in KINDS:
            raise ValueError(f"Invalid kind: {self.kind!r} ({about}; expected one of {KINDS})")
        if not isinstance(self.higher_is_better, bool | np.bool_):
            raise ValueError(
                f"Invalid higher_is_better: {self.higher_is_better!r} ({about}; expected a bool)"
            )
        margin = check_float(f"margin ({about})", self.margin, 0.0)
        if self.kind == "greater" and margin != 0:
            raise ValueError(
                f"Invalid margin: {self.margin!r} ({about}; a margin belongs to kind='not_worse', "
                "'greater' tests a mean difference > 0)"
            )
        where = self.where
        if isinstance(where, Mapping):
            where = tuple(where.items())
        if not isinstance(where, tuple) or not all(
            isinstance(w, tuple) and len(w) == 2 for w in where
        ):
            raise ValueError(f"Invalid where: {self.where!r} ({about}; expected {{column: value}})")
        object.__setattr__(self, "higher_is_better", bool(self.higher_is_better))
        object.__setattr__(self, "margin", margin)
        object.__setattr__(self, "where", where)

    @property
    def label(self) -> str:
        """``where`` as text, ``"column=value, ..."`` (empty when every row is used)."""
        return ", ".join(f"{column}={value}" for column, value in self.where)


def _numbers(frame: pd.DataFrame, claim: Claim) -> pd.Series:
    """The claim's value column as floats (NaN kept), refusing non-numbers and infinities."""
    column = frame[claim.value]
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise ValueError(
            f"Invalid value: column {claim.value!r} holds {column.dtype} (claim {claim.text!r}; "
            "expected numbers)"
        )
    x = pd.Series(column.to_numpy(dtype=float, na_value=np.nan), index=frame.index)
    if np.isinf(x).any():
        raise ValueError(
            f"Invalid frame: infinite {claim.value} in the rows of claim {claim.text!r}"
        )
    return x


def _pairs(frame: pd.DataFrame, claim: Claim, by: str, pair: str) -> tuple[np.ndarray, ...]:
    """``(a, b)``: the claim's values of ``a`` and ``b`` over the complete pairs (the ``pair``
    values where both groups have a row with a number), in ``pair`` order."""
    about = f"claim {claim.text!r}"
    check_columns(frame, [claim.value], f"value ({about})")
    check_columns(frame, [column for column, _ in claim.where], f"where ({about})")
    keep = frame[by].isin([claim.a, claim.b])
    for column, wanted in claim.where:
        keep &= frame[column] == wanted
    rows = frame[keep]
    values = _numbers(rows, claim)
    sides = []
    for group in (claim.a, claim.b):
        mine = rows[by] == group
        keys = rows.loc[mine, pair]
        if keys.isna().any():
            raise ValueError(f"Invalid frame: a row of {by}={group!r} without {pair} ({about})")
        if keys.duplicated().any():
            raise ValueError(
                f"Invalid frame: two rows of {by}={group!r} with {pair}="
                f"{keys[keys.duplicated()].tolist()[0]!r} ({about}; pairing on {pair} is ambiguous: "
                "each group needs one row per pair value; narrow the rows with where)"
            )
        sides.append(pd.Series(values[mine].to_numpy(), index=keys.to_numpy()))
    both = pd.concat(sides, axis=1, join="inner").dropna()
    if len(both) < 2:
        raise ValueError(
            f"Invalid claims: {about} has {len(both)} complete pairs of {by}={claim.a!r} and "
            f"{by}={claim.b!r} over {pair} (expected at least 2; rows found: "
            f"{len(sides[0])} and {len(sides[1])}{' where ' + claim.label if claim.where else ''})"
        )
    both = both.sort_index()
    return both[0].to_numpy(), both[1].to_numpy()


def _one_sided(effect: float, sd: float, n: int, boundary: float) -> tuple[float, float]:
    """``(p_support, p_contra)``: the one-sided t-test p-values of ``H0: mean <= boundary`` and
    of ``H0: mean >= boundary`` for ``n`` differences of mean ``effect`` and deviation ``sd``;
    with ``sd = 0`` (a deterministic difference) 0 or 1 by the side of the boundary the
    difference lies on (1 for both when it lies on the boundary)."""
    if sd == 0:
        return float(effect <= boundary), float(effect >= boundary)
    t = (effect - boundary) / (sd / math.sqrt(n))
    return float(_scipy_stats.t.sf(t, n - 1)), float(_scipy_stats.t.cdf(t, n - 1))


def _test_size(n_test: Any, claim: Claim, xa: np.ndarray, xb: np.ndarray, **level) -> float:
    """The difference the test set alone could detect at ``b``'s mean accuracy, or NaN where
    ``n_test`` does not apply to the claim."""
    if isinstance(n_test, Mapping):
        if claim.value not in n_test:
            return math.nan
        size = check_int(f"n_test[{claim.value!r}]", n_test[claim.value], 1)
        if not ((xa >= 0) & (xa <= 1) & (xb >= 0) & (xb <= 1)).all():
            raise ValueError(
                f"Invalid n_test: {claim.value!r} has values outside [0, 1] (claim "
                f"{claim.text!r}; a test-set size applies to an accuracy or an error rate)"
            )
    elif n_test is None or not ((xa >= 0) & (xa <= 1) & (xb >= 0) & (xb <= 1)).all():
        return math.nan
    else:
        size = n_test
    return binomial_detectable_difference(float(xb.mean()), size, **level)


def _check_n_test(n_test: Any) -> Any:
    if n_test is None:
        return None
    if isinstance(n_test, Mapping):
        for key, size in n_test.items():
            check_int(f"n_test[{key!r}]", size, 1)
        return n_test
    return check_int("n_test", n_test, 1)


def _check_claims(claims: Any) -> list[Claim]:
    if isinstance(claims, Claim | str | bytes) or not hasattr(claims, "__iter__"):
        raise ValueError(f"Invalid claims: {claims!r} (expected a sequence of Claim)")
    claims = list(claims)
    for i, claim in enumerate(claims):
        if not isinstance(claim, Claim):
            raise ValueError(
                f"Invalid claims: item {i} is a {type(claim).__name__} (expected a Claim)"
            )
    return claims


def claims_table(
    frame: pd.DataFrame,
    claims: Any,
    by: str = "label",
    pair: str = "seed",
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    confidence: float = 0.95,
    n_test: int | Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Every claim tested on paired per-seed results: one row per claim, in order.

    For each :class:`Claim`, the rows of ``frame`` (those matching its ``where``) with
    ``by == a`` and ``by == b`` are paired on ``pair`` (rows with the same seed share
    initialisation and batch order); only complete pairs count (a seed missing in one group, or
    a NaN value, drops the pair). ``d`` is the per-pair difference oriented to favour the claim
    (``a - b``, or ``b - a`` when lower is better) and ``m`` its margin (0 for ``"greater"``).
    The columns:

    * ``text``, ``where`` (the claim's ``where`` as text), ``value``, ``a``, ``b``, ``kind``,
      ``margin``: the claim; ``n``: the number of complete pairs.
    * ``effect``: the mean of ``d``; ``low``, ``high``: its two-sided ``confidence``
      t-interval.
    * ``p_support``: the one-sided paired t-test p-value of ``H0: mean(d) <= -m``;
      ``p_contra``: of ``H0: mean(d) >= -m``; ``p_support_holm``, ``p_contra_holm``: each
      family Holm-adjusted (:func:`~analysis_lib.stats.compare.holm`) over the table.
    * ``detectable``: the smallest true mean difference that a two-sided paired t-test at
      ``alpha`` over ``n`` pairs with the observed deviation of ``d`` detects with ``power``
      (:func:`~analysis_lib.stats.compare.detectable_difference`).
    * ``detectable_test``: the smallest accuracy difference that the test set of ``n_test``
      examples alone could detect, at ``b``'s mean value over the pairs
      (:func:`~analysis_lib.stats.compare.binomial_detectable_difference`); NaN without
      ``n_test`` or where a value lies outside [0, 1].
    * ``verdict``: ``"supported"`` when ``p_support_holm < alpha``, ``"contradicted"`` when
      ``p_contra_holm < alpha``, else ``"not resolvable at this power"``. A "greater" claim with
      a difference tightly around zero stays unresolvable by this rule: read ``high`` and
      ``detectable`` for the largest advantage the data still allow.

    When every ``d`` is the same (zero deviation: a deterministic difference, e.g. a run that
    does not depend on the seed), the interval is the point ``effect`` and the p-values are 0
    or 1 by the side of ``-m`` on which ``effect`` lies (1 for both on ``-m`` itself); the
    verdict then rests on no spread at all: say so rather than trust it.

    Args:
        frame: a long DataFrame, one row per group and pair value (and ``where`` setting).
        claims: a sequence of :class:`Claim` (may be empty: an empty table).
        by: the column naming the groups (e.g. the optimizer's label).
        pair: the column whose equal values are paired (default ``"seed"``).
        alpha: the level of the verdicts and of ``detectable``, in (0, 1).
        power: the power of ``detectable`` and ``detectable_test``, in (``alpha``, 1).
        confidence: the coverage of each interval, in (0, 1).
        n_test: the number of test examples (>= 1), applied to every claim whose values all lie
            in [0, 1]; or ``{value column: n_test}`` for the named columns only (their values
            must lie in [0, 1]); None: ``detectable_test`` is NaN.

    Returns:
        A DataFrame with one row per claim and the columns above, in that order.

    Raises:
        ValueError: naming the argument: ``frame`` not a DataFrame, lacking a column, with two
            rows of one group and pair value, a row without a pair value, or an infinite
            value; a claim's ``value`` column not numeric; a claim with fewer than two complete
            pairs (naming the claim); ``claims`` not Claims; ``by`` equal to ``pair``; or
            ``alpha``, ``power``, ``confidence`` or ``n_test`` out of range.

    Example:
        >>> frame = pd.DataFrame({"label": ["new"] * 3 + ["old"] * 3, "seed": [0, 1, 2] * 2,
        ...                       "acc": [0.91, 0.92, 0.90, 0.89, 0.905, 0.88]})
        >>> table = claims_table(frame, [Claim("new beats old", "acc", "new", "old")])
        >>> table[["n", "effect", "low", "p_support", "verdict"]].round(4)
           n  effect     low  p_support    verdict
        0  3  0.0183  0.0112     0.0041  supported
    """
    check_columns(frame, [by, pair], "by or pair")
    if by == pair:
        raise ValueError(f"Invalid pair: {pair!r} is the by column too (expected another column)")
    claims = _check_claims(claims)
    alpha = check_float("alpha", alpha, 0.0, 1.0, low_open=True, high_open=True)
    power = check_float("power", power, alpha, 1.0, low_open=True, high_open=True)
    confidence = check_confidence(confidence)
    n_test = _check_n_test(n_test)
    rows = []
    for claim in claims:
        xa, xb = _pairs(frame, claim, by, pair)
        d = xa - xb if claim.higher_is_better else xb - xa
        n, effect = len(d), float(d.mean())
        sd = 0.0 if np.ptp(d) == 0 else float(d.std(ddof=1))
        half = float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
        p_support, p_contra = _one_sided(effect, sd, n, -claim.margin)
        rows.append(
            dict(
                text=claim.text, where=claim.label, value=claim.value, a=claim.a, b=claim.b,
                kind=claim.kind, margin=claim.margin, n=n, effect=effect, low=effect - half,
                high=effect + half, p_support=p_support, p_contra=p_contra,
                detectable=detectable_difference(n, sd, alpha=alpha, power=power),
                detectable_test=_test_size(n_test, claim, xa, xb, alpha=alpha, power=power),
            )
        )  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["n"] = table["n"].astype(int)
    for family in ("p_support", "p_contra"):
        table[f"{family}_holm"] = holm(table[family].to_numpy(dtype=float)) if rows else []
    table["verdict"] = np.select(
        [table["p_support_holm"] < alpha, table["p_contra_holm"] < alpha],
        VERDICTS[:2],
        default=VERDICTS[2],
    ).astype(object)
    return table
