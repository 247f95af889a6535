"""The statistics of a designed comparison, against scipy, hand-computed cases and simulation:
the cluster bootstrap of tau, the granulated Kendall coefficient, paired differences, Holm's
adjustment and the differences a design could detect."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis_lib import stats


# -- cluster bootstrap -----------------------------------------------------------------------------
def clustered(rng, configs=8, seeds=3, within=0.05):
    """Minima whose measure and target are set by their configuration (independent of each
    other across configurations: the true tau is 0) plus a little seed noise."""
    x = np.repeat(rng.normal(size=configs), seeds) + within * rng.normal(size=configs * seeds)
    y = np.repeat(rng.normal(size=configs), seeds) + within * rng.normal(size=configs * seeds)
    return x, y, np.repeat(np.arange(configs), seeds)


def test_cluster_bootstrap_keeps_its_coverage_where_the_naive_one_loses_it():
    rng = np.random.default_rng(0)
    naive = cluster = 0
    trials = 40
    for _ in range(trials):
        x, y, labels = clustered(rng)
        r = stats.kendall_tau(x, y, n_boot=300, seed=1)
        c = stats.kendall_tau(x, y, clusters=labels, n_boot=300, seed=1)
        assert c.tau == r.tau  # the estimate is the same; only its interval differs
        naive += r.low <= 0 <= r.high
        cluster += c.low <= 0 <= c.high
    # 8 clusters of 3 look like 24 independent minima to the naive bootstrap: too narrow
    assert cluster >= 33, cluster
    assert naive <= cluster - 6, (naive, cluster)


def test_cluster_bootstrap_is_seeded_and_checks_its_labels():
    rng = np.random.default_rng(2)
    x, y, labels = clustered(rng, configs=5)
    a = stats.kendall_tau(x, y, clusters=labels, n_boot=200, seed=3)
    b = stats.kendall_tau(x, y, clusters=list(map(str, labels)), n_boot=200, seed=3)
    assert (a.low, a.high) == (b.low, b.high)  # labels of any type
    assert a.n_boot == 200 and a.valid <= 200
    with pytest.raises(ValueError, match="clusters"):
        stats.kendall_tau(x, y, clusters=labels[:-1])
    with pytest.raises(ValueError, match="clusters"):
        stats.kendall_tau(x, y, clusters=np.zeros_like(labels))
    frame = pd.DataFrame({"m": x, "g": y, "config": labels})
    table = stats.tau_table(frame, ["m"], against="g", clusters="config", n_boot=200, seed=3)
    assert (table.loc[0, "low"], table.loc[0, "high"]) == (a.low, a.high)


# -- granulated Kendall ----------------------------------------------------------------------------
def population() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    rows = []
    for lr, width, seed in itertools.product([0.01, 0.1, 1.0], [16, 32], [0, 1]):
        gap = lr * (1 + width / 64) + 0.01 * seed + rng.normal(scale=0.05)
        rows.append(dict(lr=lr, width=width, seed=seed, gap=gap, m=rng.normal() + 3 * lr))
    return pd.DataFrame(rows)


def by_hand(frame, measure, target, axis, others):
    """The mean scipy tau-b over the groups of rows equal in every column of ``others``."""
    taus = []
    for _, g in frame.groupby(others):
        if g[axis].nunique() > 1:
            t = sps.kendalltau(g[measure], g[target]).statistic
            if not math.isnan(t):
                taus.append(t)
    return np.mean(taus), len(taus)


def test_granulated_kendall_against_groups_taken_by_hand():
    frame = population()
    res = stats.granulated_kendall(frame, "m", "gap", ["lr", "width"], fixed=["seed"])
    for axis, others in (("lr", ["width", "seed"]), ("width", ["lr", "seed"])):
        mean, count = by_hand(frame, "m", "gap", axis, others)
        assert res.per_axis[axis] == pytest.approx(mean, abs=1e-12)
        assert res.groups[axis] == count
    assert res.groups == {"lr": 4, "width": 6}
    assert res.psi == pytest.approx(np.mean(list(res.per_axis.values())))
    assert res.low <= res.psi <= res.high
    for axis, (low, high) in res.interval_per_axis.items():
        assert low <= res.per_axis[axis] <= high


def test_granulated_kendall_skips_undefined_groups_and_checks_arguments():
    frame = population()
    frame.loc[frame["width"] == 32, "m"] = 1.0  # constant measure: tau undefined there
    res = stats.granulated_kendall(frame, "m", "gap", ["lr", "width"], fixed=["seed"])
    assert res.groups["lr"] == 2  # only width = 16 groups remain along lr
    with pytest.raises(ValueError, match="axes"):
        stats.granulated_kendall(frame, "m", "gap", [])
    with pytest.raises(ValueError, match="axes"):
        stats.granulated_kendall(frame, "m", "gap", ["lr", "lr"])
    with pytest.raises(ValueError, match="columns"):
        stats.granulated_kendall(frame, "m", "gap", ["depth"])


# -- paired differences ----------------------------------------------------------------------------
def test_t_interval_is_scipys():
    values = np.array([0.2, 0.5, 0.1, 0.9, 0.4])
    mean, low, high = stats.t_interval(values, 0.9)
    ref = sps.t.interval(0.9, 4, loc=values.mean(), scale=sps.sem(values))
    assert (low, high) == pytest.approx(ref)
    assert mean == pytest.approx(values.mean())
    assert math.isnan(stats.t_interval([1.0])[1])


def test_paired_difference_is_scipys_paired_test():
    rng = np.random.default_rng(5)
    seed_effect = rng.normal(scale=1.0, size=6)  # shared initialisation and batch order
    a = seed_effect + 0.3 + rng.normal(scale=0.05, size=6)
    b = seed_effect + rng.normal(scale=0.05, size=6)
    r = stats.paired_difference(a, b)
    ref = sps.ttest_rel(a, b)
    assert r.t == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    assert (r.low, r.high) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert r.n == 6 and r.mean == pytest.approx(np.mean(a - b))
    # the same numbers treated as independent samples see nothing: the pairing is the power
    assert r.p < 0.001 and sps.ttest_ind(a, b, equal_var=False).pvalue > 0.3
    assert r.detectable < 0.3 < r.mean
    with pytest.raises(ValueError, match="b"):
        stats.paired_difference(a, b[:-1])
    with pytest.raises(ValueError, match="pairs"):
        stats.paired_difference([1.0, np.nan], [0.0, 1.0])


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> monotone 0.06
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
    with pytest.raises(ValueError, match="pvalues"):
        stats.holm([0.5, 1.5])


def test_detectable_difference_has_its_power_in_simulation():
    n, sd = 5, 1.0
    delta = stats.detectable_difference(n, sd)
    rng = np.random.default_rng(6)
    d = delta + sd * rng.normal(size=(20000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1))
    assert rejected == pytest.approx(0.8, abs=0.015)
    # many pairs: the normal approximation (z_0.975 + z_0.8) sd / sqrt(n)
    big = stats.detectable_difference(400, 2.0)
    assert big == pytest.approx((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * 2.0 / 20, rel=5e-3)
    assert stats.detectable_difference(3, 0.0) == 0.0


@pytest.mark.parametrize(("n", "alpha", "power"), [(2, 0.05, 0.8), (5, 0.01, 0.95)])
def test_detectable_difference_where_scipys_noncentral_t_gives_nan(n, alpha, power):
    # two seeds (one degree of freedom) or strict settings: nct's tails come out NaN there
    delta = stats.detectable_difference(n, 1.0, alpha=alpha, power=power)
    rng = np.random.default_rng(8)
    d = delta + rng.normal(size=(40000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > sps.t.ppf(1 - alpha / 2, n - 1))
    assert rejected == pytest.approx(power, abs=0.01)
    r = stats.paired_difference([0.9, 0.8], [0.7, 0.75])  # two seeds: a result, not a crash
    assert r.n == 2 and r.detectable > abs(r.mean)


def test_binomial_detectable_difference_closed_form():
    value = stats.binomial_detectable_difference(0.9, 1000)
    expected = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * math.sqrt(2 * 0.9 * 0.1 / 1000)
    assert value == pytest.approx(expected)
    assert stats.binomial_detectable_difference(0.9, 4000) == pytest.approx(value / 2)
    with pytest.raises(ValueError, match="accuracy"):
        stats.binomial_detectable_difference(1.2, 100)


def test_paired_comparisons_table():
    rng = np.random.default_rng(7)
    seeds = rng.normal(size=4)
    rows = [
        dict(optimizer=name, seed=s, acc=seeds[s] + shift + rng.normal(scale=0.03))
        for name, shift in (("sgdm", 0.0), ("adam", 0.2), ("adamw", 0.2))
        for s in range(4)
    ]
    frame = pd.DataFrame(rows).sample(frac=1, random_state=0)  # row order must not matter
    table = stats.paired_comparisons(frame, "acc", by="optimizer")
    assert len(table) == 3
    one = table[(table.a == "adam") & (table.b == "sgdm")].iloc[0]
    wide = frame.pivot(index="seed", columns="optimizer", values="acc")
    assert one["mean"] == pytest.approx((wide["adam"] - wide["sgdm"]).mean())
    np.testing.assert_allclose(table["p_holm"], stats.holm(table["p"]))
    # two real differences found; adam and adamw (the same by construction) not told apart
    assert set(table.loc[table.supported, "b"]) == {"sgdm"}
    same = table[(table.a == "adam") & (table.b == "adamw")].iloc[0]
    assert not same["supported"] and same["low"] < 0 < same["high"]
    against = stats.paired_comparisons(frame, "acc", by="optimizer", baseline="sgdm")
    assert sorted(against.a) == ["adam", "adamw"] and set(against.b) == {"sgdm"}
    with pytest.raises(ValueError, match="two rows"):
        stats.paired_comparisons(pd.concat([frame, frame.iloc[:1]]), "acc", by="optimizer")
    with pytest.raises(ValueError, match="baseline"):
        stats.paired_comparisons(frame, "acc", by="optimizer", baseline="sgd")


def test_generalization_gaps_side_by_side():
    frame = pd.DataFrame(
        dict(
            train_accuracy=[1.0, 0.9],
            test_accuracy=[0.8, 0.85],
            train_loss=[0.01, 0.3],
            test_loss=[0.9, 0.4],
        )
    )
    gaps = stats.generalization_gaps(frame)
    np.testing.assert_allclose(gaps["error_gap"], [0.2, 0.05])
    np.testing.assert_allclose(gaps["loss_gap"], [0.89, 0.1])
    assert "error_gap" not in frame  # the input is not modified
    with pytest.raises(ValueError, match="columns"):
        stats.generalization_gaps(frame.drop(columns="test_loss"))


# -- the package's shape ---------------------------------------------------------------------------
def test_stats_is_a_package_of_units_at_the_bottom_layer():
    """Every unit of ``analysis_lib.stats`` is short, says what it owns, imports only NumPy,
    pandas, SciPy, :mod:`analysis_lib._checks` and its sibling units (no private name of
    another module), and the package re-exports every public name of its units."""
    import ast
    import importlib
    from pathlib import Path

    folder = Path(stats.__file__).parent
    allowed = {"__future__", "collections", "dataclasses", "itertools", "math", "typing"}
    allowed |= {"numpy", "pandas", "scipy"}
    exported = set()
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{path.name} has no docstring"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= allowed, path.name
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in allowed, (path.name, node.module)
            elif isinstance(node, ast.ImportFrom):  # a sibling unit, or analysis_lib._checks
                target = "." * node.level + (node.module or "")
                assert node.level == 1 or target == ".._checks", (path.name, target)
                assert not any(a.name.startswith("_") for a in node.names), (path.name, target)
        if not path.stem.startswith("_"):
            exported |= set(importlib.import_module(f"analysis_lib.stats.{path.stem}").__all__)
    assert exported == set(stats.__all__)
    assert all(getattr(stats, name) is not None for name in stats.__all__)
