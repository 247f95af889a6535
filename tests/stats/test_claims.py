"""The table of claims against scipy's one-sided t-tests and intervals and hand-computed cases:
the three verdicts, the orientation of a lower-is-better value, a non-inferiority margin, Holm
across the table, pairing on the seed, the zero-variance case and the argument checks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis_lib import stats
from analysis_lib.stats import Claim, claims_table

COLUMNS = [
    "text", "where", "value", "a", "b", "kind", "margin", "n", "effect", "low", "high",
    "p_support", "p_contra", "p_support_holm", "p_contra_holm", "detectable",
    "detectable_test", "verdict",
]  # fmt: skip
SUPPORTED, CONTRADICTED, OPEN = "supported", "contradicted", "not resolvable at this power"


def results(shifts, seeds=6, noise=0.002, seed=0, value="test_accuracy", base=0.9):
    """One row per (label, seed): a seed effect shared by every label (same initialisation and
    batch order), the label's shift and a little noise."""
    rng = np.random.default_rng(seed)
    shared = base + 0.02 * rng.normal(size=seeds)
    rows = [
        {"label": label, "seed": s, value: shared[s] + shift + noise * rng.normal()}
        for label, shift in shifts.items()
        for s in range(seeds)
    ]
    return pd.DataFrame(rows)


def with_differences(differences, base=None):
    """A frame where ``label == name`` minus ``label == "ref"`` is exactly ``differences[name]``
    seed by seed (up to rounding)."""
    n = len(next(iter(differences.values())))
    base = np.linspace(0.8, 0.9, n) if base is None else np.asarray(base)
    rows = [{"label": "ref", "seed": s, "acc": base[s]} for s in range(n)]
    for name, d in differences.items():
        rows += [{"label": name, "seed": s, "acc": base[s] + d[s]} for s in range(n)]
    return pd.DataFrame(rows)


def targeted(p, n=5, sd=0.01):
    """Differences whose one-sided t-test of a mean > 0 has the p-value ``p``."""
    z = np.linspace(-1.0, 1.0, n)
    z = (z - z.mean()) / z.std(ddof=1)
    return sps.t.isf(p, n - 1) * sd / math.sqrt(n) + sd * z


def differences_of(frame, claim, value=None):
    wide = frame.pivot(index="seed", columns="label", values=value or claim.value).dropna()
    d = wide[claim.a] - wide[claim.b]
    return (d if claim.higher_is_better else -d).to_numpy()


# -- against scipy ---------------------------------------------------------------------------------
def test_every_column_against_scipy():
    frame = results({"adamnx": 0.004, "adam": 0.0, "ada2ms": -0.001}, seeds=7, noise=0.004)
    frame["lambda_max"] = 40 + 5 * np.random.default_rng(1).normal(size=len(frame))
    claims = [
        Claim("AdamNX outperforms Adam", "test_accuracy", "adamnx", "adam"),
        Claim("Ada2MS reaches Adam", "test_accuracy", "ada2ms", "adam", "not_worse", margin=0.003),
        Claim("AdamNX is flatter", "lambda_max", "adamnx", "adam", higher_is_better=False),
    ]
    table = claims_table(frame, claims, confidence=0.9)
    assert list(table.columns) == COLUMNS and len(table) == 3
    for claim, (_, row) in zip(claims, table.iterrows(), strict=True):
        d = differences_of(frame, claim)
        n = len(d)
        assert row["n"] == n == 7
        assert row["effect"] == pytest.approx(d.mean())
        up = sps.ttest_1samp(d, -claim.margin, alternative="greater")
        down = sps.ttest_1samp(d, -claim.margin, alternative="less")
        assert row["p_support"] == pytest.approx(up.pvalue, rel=1e-9)
        assert row["p_contra"] == pytest.approx(down.pvalue, rel=1e-9)
        interval = sps.t.interval(0.9, n - 1, loc=d.mean(), scale=sps.sem(d))
        assert (row["low"], row["high"]) == pytest.approx(interval, rel=1e-9)
        assert row["detectable"] == pytest.approx(stats.detectable_difference(n, d.std(ddof=1)))
        assert math.isnan(row["detectable_test"])  # no n_test
        assert (row["text"], row["value"], row["a"], row["b"]) == (
            claim.text,
            claim.value,
            claim.a,
            claim.b,
        )
        assert (row["kind"], row["margin"], row["where"]) == (claim.kind, claim.margin, "")
    np.testing.assert_allclose(table["p_support_holm"], stats.holm(table["p_support"]))
    np.testing.assert_allclose(table["p_contra_holm"], stats.holm(table["p_contra"]))


# -- verdicts --------------------------------------------------------------------------------------
def test_supported_contradicted_and_not_resolvable():
    jitter = 0.002 * np.array([1.0, -0.5, 0.3, -1.2, 0.8, -0.4])
    frame = with_differences(
        {
            "better": 0.02 + jitter,
            "worse": -0.02 + jitter,
            "vague": 0.001 + 0.03 * np.array([1.0, -1.0, 0.8, -0.9, 0.5, -0.6]),
        }
    )
    claims = [Claim(f"{g} beats ref", "acc", g, "ref") for g in ("better", "worse", "vague")]
    table = claims_table(frame, claims)
    assert table["verdict"].tolist() == [SUPPORTED, CONTRADICTED, OPEN]
    better, worse, vague = (table.iloc[i] for i in range(3))
    assert better["low"] > 0 and worse["high"] < 0 and vague["low"] < 0 < vague["high"]
    assert better["p_support"] < 1e-4 and worse["p_contra"] < 1e-4
    # not resolvable: the effect the seeds could detect is larger than the one seen
    assert vague["detectable"] > abs(vague["effect"])
    assert vague["p_support_holm"] >= 0.05 and vague["p_contra_holm"] >= 0.05


def test_orientation_when_lower_is_better():
    frame = results({"adamnx": -5.0, "adam": 0.0}, noise=0.5, value="lambda_max", base=40.0)
    flatter = Claim("AdamNX is flatter", "lambda_max", "adamnx", "adam", higher_is_better=False)
    sharper = Claim("AdamNX is sharper", "lambda_max", "adamnx", "adam")
    table = claims_table(frame, [flatter, sharper])
    wide = frame.pivot(index="seed", columns="label", values="lambda_max")
    by_hand = (wide["adam"] - wide["adamnx"]).mean()  # b - a: positive favours "flatter"
    assert by_hand > 4
    assert table.loc[0, "effect"] == pytest.approx(by_hand)
    assert table.loc[1, "effect"] == pytest.approx(-by_hand)
    assert (table.loc[0, "low"], table.loc[0, "high"]) == pytest.approx(
        (-table.loc[1, "high"], -table.loc[1, "low"])
    )
    assert table.loc[0, "p_support"] == pytest.approx(table.loc[1, "p_contra"])
    assert table["verdict"].tolist() == [SUPPORTED, CONTRADICTED]


def test_not_worse_within_the_margin():
    d = -0.002 + 0.0005 * np.array([-1.0, 0.5, 0.0, 1.0, -0.5, 0.0])  # slightly worse, tight
    frame = with_differences({"ada2ms": d})
    claims = [
        Claim("reaches, margin 0.01", "acc", "ada2ms", "ref", "not_worse", margin=0.01),
        Claim("reaches, no margin", "acc", "ada2ms", "ref", "not_worse"),
        Claim("outperforms", "acc", "ada2ms", "ref"),
    ]
    table = claims_table(frame, claims)
    assert table["verdict"].tolist() == [SUPPORTED, CONTRADICTED, CONTRADICTED]
    row = table.iloc[0]
    assert row["effect"] == pytest.approx(-0.002) and row["high"] < 0 < row["low"] + 0.01
    ref = sps.ttest_1samp(d, -0.01, alternative="greater").pvalue
    assert row["p_support"] == pytest.approx(ref, rel=1e-6) and row["margin"] == 0.01
    # the margin moves the null, not the effect or the interval
    assert (row["effect"], row["low"], row["high"]) == pytest.approx(
        tuple(table.loc[1, ["effect", "low", "high"]])
    )


def test_holm_across_the_table_by_hand():
    frame = with_differences({"x": targeted(0.001), "y": targeted(0.03), "z": targeted(0.04)})
    claims = [Claim(f"{g} beats ref", "acc", g, "ref") for g in "xyz"]
    table = claims_table(frame, claims)
    np.testing.assert_allclose(table["p_support"], [0.001, 0.03, 0.04], rtol=1e-6)
    # sorted 0.001, 0.03, 0.04: x3 = 0.003, x2 = 0.06, x1 = 0.04 -> monotone 0.003, 0.06, 0.06
    np.testing.assert_allclose(table["p_support_holm"], [0.003, 0.06, 0.06], rtol=1e-6)
    # the other family alone: 0.96 x3 and 0.97 x2 exceed 1, then 0.999 x1 -> all 1
    np.testing.assert_allclose(table["p_contra"], [0.999, 0.97, 0.96], rtol=1e-6)
    np.testing.assert_allclose(table["p_contra_holm"], [1.0, 1.0, 1.0])
    # y and z alone would pass at 0.05; across the table only x does
    assert table["verdict"].tolist() == [SUPPORTED, OPEN, OPEN]
    alone = claims_table(frame, claims[1:2])
    assert alone.loc[0, "verdict"] == SUPPORTED


# -- pairing ---------------------------------------------------------------------------------------
def test_pairs_are_matched_by_seed_in_any_row_order_and_only_complete():
    frame = results({"adamnx": 0.01, "adam": 0.0}, seeds=7)
    frame = frame.drop(frame[(frame.label == "adam") & (frame.seed == 5)].index)
    frame = frame.drop(frame[(frame.label == "adamnx") & (frame.seed == 6)].index)
    frame.loc[(frame.label == "adamnx") & (frame.seed == 2), "test_accuracy"] = np.nan
    frame["other"] = 1.0  # unrelated columns are ignored
    claim = Claim("AdamNX outperforms Adam", "test_accuracy", "adamnx", "adam")
    shuffled = frame.sample(frac=1, random_state=4).reset_index(drop=True)
    table = claims_table(shuffled, [claim])
    pairs = frame.pivot(index="seed", columns="label", values="test_accuracy").loc[[0, 1, 3, 4]]
    d = (pairs["adamnx"] - pairs["adam"]).to_numpy()
    assert table.loc[0, "n"] == 4
    assert table.loc[0, "effect"] == pytest.approx(d.mean())
    ref = sps.ttest_1samp(d, 0.0, alternative="greater").pvalue
    assert table.loc[0, "p_support"] == pytest.approx(ref)
    pd.testing.assert_frame_equal(table, claims_table(frame, [claim]))


def test_where_selects_the_rows_of_a_task():
    one = results({"adamnx": 0.02, "adam": 0.0}).assign(task="cifar10")
    two = results({"adamnx": -0.02, "adam": 0.0}, seed=1).assign(task="mnist")
    frame = pd.concat([one, two], ignore_index=True)
    claims = [
        Claim("AdamNX outperforms Adam", "test_accuracy", "adamnx", "adam", where={"task": t})
        for t in ("cifar10", "mnist")
    ]
    table = claims_table(frame, claims)
    assert table["where"].tolist() == ["task=cifar10", "task=mnist"]
    assert table["verdict"].tolist() == [SUPPORTED, CONTRADICTED]
    alone = claims_table(one, [Claim("x", "test_accuracy", "adamnx", "adam")])
    assert table.loc[0, "effect"] == pytest.approx(alone.loc[0, "effect"])
    assert claims[0].where == (("task", "cifar10"),) and hash(claims[0])  # frozen, hashable
    with pytest.raises(ValueError, match="two rows"):  # both tasks share the seeds
        claims_table(frame, [Claim("x", "test_accuracy", "adamnx", "adam")])
    with pytest.raises(ValueError, match="where"):
        claims_table(frame, [Claim("x", "test_accuracy", "adamnx", "adam", where={"depth": 2})])


# -- zero variance ---------------------------------------------------------------------------------
def test_a_deterministic_difference():
    base = [0.5, 0.25, 0.75, 0.625]  # exact binary fractions: the differences are exact
    frame = with_differences({"up": [0.125] * 4, "down": [-0.125] * 4, "tie": [0.0] * 4}, base=base)
    claims = [
        Claim("up beats ref", "acc", "up", "ref"),
        Claim("down beats ref", "acc", "down", "ref"),
        Claim("tie beats ref", "acc", "tie", "ref"),
        Claim("down within 0.125", "acc", "down", "ref", "not_worse", margin=0.125),
        Claim("down within 0.25", "acc", "down", "ref", "not_worse", margin=0.25),
    ]
    table = claims_table(frame, claims)
    assert not table.drop(columns="detectable_test").isna().any().any()
    assert table["p_support"].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert table["p_contra"].tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert table["verdict"].tolist() == [SUPPORTED, CONTRADICTED, OPEN, OPEN, SUPPORTED]
    assert (table["low"] == table["effect"]).all() and (table["high"] == table["effect"]).all()
    assert table["effect"].tolist() == [0.125, -0.125, 0.0, -0.125, -0.125]
    assert (table["detectable"] == 0.0).all()


# -- the test set's resolution ---------------------------------------------------------------------
def test_detectable_test_is_the_binomial_one_at_bs_accuracy():
    frame = results({"adamnx": 0.01, "adam": 0.0})
    frame["lambda_max"] = 30 + frame["seed"] + (frame["label"] == "adam")
    claims = [
        Claim("AdamNX outperforms Adam", "test_accuracy", "adamnx", "adam"),
        Claim("AdamNX is flatter", "lambda_max", "adamnx", "adam", higher_is_better=False),
    ]
    table = claims_table(frame, claims, n_test=10000, alpha=0.01, power=0.9)
    b_mean = frame.loc[frame.label == "adam", "test_accuracy"].mean()
    expected = stats.binomial_detectable_difference(b_mean, 10000, alpha=0.01, power=0.9)
    assert table.loc[0, "detectable_test"] == pytest.approx(expected)
    assert math.isnan(table.loc[1, "detectable_test"])  # not a proportion
    by_column = claims_table(frame, claims, n_test={"test_accuracy": 10000}, alpha=0.01, power=0.9)
    pd.testing.assert_frame_equal(table, by_column)
    with pytest.raises(ValueError, match="n_test"):
        claims_table(frame, claims, n_test={"lambda_max": 10000})


# -- argument checks -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"kind": "better"}, "kind"),
        ({"kind": "not_worse", "margin": -0.01}, "margin"),
        ({"kind": "not_worse", "margin": math.nan}, "margin"),
        ({"kind": "not_worse", "margin": math.inf}, "margin"),
        ({"kind": "not_worse", "margin": True}, "margin"),
        ({"kind": "not_worse", "margin": "0.01"}, "margin"),
        ({"margin": 0.01}, "margin"),  # a margin on "greater"
        ({"higher_is_better": "no"}, "higher_is_better"),
        ({"b": "adamnx"}, "b"),
        ({"text": ""}, "text"),
        ({"value": None}, "value"),
        ({"where": ["task"]}, "where"),
    ],
)
def test_bad_claims_are_refused_naming_the_field(fields, name):
    args = {"text": "AdamNX outperforms Adam", "value": "acc", "a": "adamnx", "b": "adam"}
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        Claim(**{**args, **fields})


def test_bad_tables_are_refused_naming_the_argument():
    frame = results({"adamnx": 0.01, "adam": 0.0}, seeds=4)
    good = Claim("AdamNX outperforms Adam", "test_accuracy", "adamnx", "adam")
    cases = [
        (dict(claims=[Claim("c", "val_acc", "adamnx", "adam")]), "Invalid value"),
        (dict(claims=[good], by="optimizer"), "Invalid by or pair"),
        (dict(claims=[good], pair="run"), "Invalid by or pair"),
        (dict(claims=[good], pair="label"), "Invalid pair"),
        (dict(claims=good), "Invalid claims"),
        (dict(claims=[good, "AdamNX > Adam"]), "Invalid claims: item 1"),
        (dict(claims=[good], alpha=True), "Invalid alpha"),
        (dict(claims=[good], alpha=0.0), "Invalid alpha"),
        (dict(claims=[good], power=0.01), "Invalid power"),
        (dict(claims=[good], confidence=1.0), "Invalid confidence"),
        (dict(claims=[good], n_test=0), "Invalid n_test"),
        (dict(claims=[good], n_test=100.0), "Invalid n_test"),
        (dict(claims=[Claim("few", "test_accuracy", "adamnx", "sgd")]), "claim 'few'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            claims_table(frame, **kwargs)
    with pytest.raises(ValueError, match="Invalid frame"):
        claims_table(frame.to_dict(), [good])
    duplicated = pd.concat([frame, frame.iloc[:1]])
    with pytest.raises(ValueError, match="two rows of label='adamnx' with seed=0"):
        claims_table(duplicated, [good])
    one_pair = frame[(frame.seed == 0) | (frame.label == "adamnx")]
    with pytest.raises(ValueError, match=r"AdamNX outperforms Adam.* 1 complete pairs"):
        claims_table(one_pair, [good])
    holes = ((frame.label == "adamnx") & (frame.seed > 0)) | (
        (frame.label == "adam") & (frame.seed == 0)
    )
    nan_pairs = frame.assign(test_accuracy=np.where(holes, np.nan, 0.9))  # no seed complete
    with pytest.raises(ValueError, match="0 complete pairs"):
        claims_table(nan_pairs, [good])
    infinite = frame.assign(test_accuracy=np.where(frame.seed == 1, np.inf, 0.9))
    with pytest.raises(ValueError, match="Invalid frame: infinite test_accuracy"):
        claims_table(infinite, [good])
    with pytest.raises(ValueError, match="Invalid value: column 'label'"):
        claims_table(frame, [Claim("c", "label", "adamnx", "adam")])
    flags = frame.assign(test_accuracy=frame.seed > 1)
    with pytest.raises(ValueError, match="Invalid value"):
        claims_table(flags, [good])
    missing_seed = frame.astype({"seed": float})
    missing_seed.loc[0, "seed"] = np.nan
    with pytest.raises(ValueError, match="without seed"):
        claims_table(missing_seed, [good])


def test_an_empty_table_and_an_untouched_frame():
    frame = results({"adamnx": 0.01, "adam": 0.0})
    copy = frame.copy()
    empty = claims_table(frame, [])
    assert list(empty.columns) == COLUMNS and len(empty) == 0
    claims_table(frame, [Claim("c", "test_accuracy", "adamnx", "adam")], n_test=1000)
    pd.testing.assert_frame_equal(frame, copy)
