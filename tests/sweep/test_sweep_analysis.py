"""Tests of analysis_lib.sweep.analysis against independent references: scipy's own Welch test
and its confidence interval, Holm's adjustment worked by hand, and small trial tables whose
answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis_lib.stats import welch
from analysis_lib.sweep import lr_sensitivity, summarize
from analysis_lib.sweep.analysis import (
    _holm,
    chosen_lr_position,
    chosen_trials,
    lr_robustness,
    pairwise_differences,
)


def make_trials(spec: dict) -> pd.DataFrame:
    """A trials table: ``spec[label][lr]`` is a list of (val_loss, val_accuracy,
    test_accuracy) per seed, or None for a diverged seed."""
    rows = []
    for label, by_lr in spec.items():
        for lr, seeds in by_lr.items():
            for seed, values in enumerate(seeds):
                ok = values is not None
                vl, va, ta = values if ok else (math.nan,) * 3
                rows.append(
                    {"label": label, "optimizer": label.lower(), "hparams": "{}", "lr": lr,
                     "seed": seed, "status": "ok" if ok else "diverged", "val_loss": vl,
                     "val_accuracy": va, "test_loss": 1 - ta if ok else math.nan,
                     "test_accuracy": ta}
                )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def trials():
    # A: best val loss at lr 0.01 (interior); B: best at the highest lr 0.1 (an edge), with a
    # diverged seed at 1.0; C: like A but with a test accuracy far lower.
    return make_trials(
        {
            "A": {
                0.001: [(0.5, 0.80, 0.80)] * 3,
                0.01: [(0.1, 0.95, 0.950), (0.1, 0.95, 0.952), (0.1, 0.95, 0.948)],
                0.1: [(0.3, 0.90, 0.90)] * 3,
            },
            "B": {
                0.01: [(0.5, 0.80, 0.80)] * 3,
                0.1: [(0.2, 0.94, 0.951), (0.2, 0.945, 0.945), (0.2, 0.94, 0.949)],
                1.0: [(0.15, 0.96, 0.96), None, (0.15, 0.96, 0.96)],
            },
            "C": {
                0.001: [(0.3, 0.90, 0.90)] * 3,
                0.01: [(0.2, 0.92, 0.90), (0.2, 0.92, 0.905), (0.2, 0.92, 0.895)],
                0.1: [(0.4, 0.85, 0.85)] * 3,
            },
        }
    )


def test_welch_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.95, 0.01, 3), rng.normal(0.93, 0.02, 4)
    p, low, high = welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert p == pytest.approx(ref.pvalue, rel=1e-10)
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_constant_samples_are_unknown_unless_floored():
    a, b = np.array([0.9, 0.9, 0.9]), np.array([0.89, 0.89, 0.89])
    assert all(math.isnan(v) for v in welch(a, b))
    # floored at the rounding variance of a step of 0.01: Welch with s^2 = 0.01^2 / 12 each
    p, low, high = welch(a, b, 0.01**2 / 12)
    se = math.sqrt(2 * 0.01**2 / 12 / 3)
    assert p == pytest.approx(2 * stats.t.sf(0.01 / se, 4))
    assert (low, high) == pytest.approx(
        (0.01 - stats.t.ppf(0.975, 4) * se, 0.01 + stats.t.ppf(0.975, 4) * se)
    )
    # a floor below the sample variance changes nothing
    x, y = np.array([0.9, 0.92, 0.91]), np.array([0.88, 0.87, 0.9])
    assert welch(x, y, 1e-9) == welch(x, y)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    np.testing.assert_allclose(_holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(_holm(np.array([0.5, 0.6])), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(_holm(np.array([np.nan, 0.01])), [1.0, 0.02])  # NaN counts as 1


def test_chosen_trials_and_positions(trials):
    summary = summarize(trials, "val_loss", seeds=3)
    # B's lr 1.0 has the lowest mean val loss over its finished seeds but a diverged one
    assert dict(zip(summary["label"], summary["lr"], strict=True)) == {
        "A": 0.01,
        "B": 0.1,
        "C": 0.01,
    }
    chosen = chosen_trials(trials, summary)
    assert len(chosen) == 9 and set(chosen["lr"]) == {0.01, 0.1}
    pos = chosen_lr_position(trials, summary).set_index("label")
    assert pos["position"].to_dict() == {"A": "interior", "B": "interior", "C": "interior"}
    assert pos.loc["B", "index"] == 1 and pos.loc["B", "lr_max"] == 1.0
    # without B's top rate, its choice sits on the edge of its grid
    edge = trials[~((trials["label"] == "B") & (trials["lr"] == 1.0))]
    pos = chosen_lr_position(edge, summarize(edge, "val_loss", seeds=3)).set_index("label")
    assert pos.loc["B", "position"] == "highest"


def test_lr_robustness_counts_the_rates_within_tolerance(trials):
    sens = lr_sensitivity(trials, "val_accuracy")
    rob = lr_robustness(sens, tolerance=0.06).set_index("label")
    # A: 0.95 best, 0.90 within 0.06, 0.80 not -> lrs 0.01..0.1, one decade
    assert rob.loc["A", "points"] == 2 and rob.loc["A", "decades"] == pytest.approx(1.0)
    # B: lr 1.0 had a failed seed, so it does not count; best 0.9417 at 0.1 alone
    assert rob.loc["B", "points"] == 1 and rob.loc["B", "decades"] == 0.0
    assert rob.loc["B", "best"] == pytest.approx(np.mean([0.94, 0.945, 0.94]))
    # C: 0.92 best; 0.90 and 0.85 -> 0.001 and 0.01 within 0.06, two points, one decade
    assert rob.loc["C", "points"] == 2 and rob.loc["C", "lr_low"] == 0.001
    assert rob["contiguous"].all()
    holes = sens.copy()
    holes.loc[(holes["label"] == "A") & (holes["lr"] == 0.01), "mean"] = 0.5
    holes.loc[(holes["label"] == "A") & (holes["lr"] == 0.001), "mean"] = 0.9
    rob = lr_robustness(holes, tolerance=0.01).set_index("label")
    assert rob.loc["A", "points"] == 2 and not rob.loc["A", "contiguous"]
    assert rob.loc["A", "decades"] == pytest.approx(2.0)


def test_pairwise_differences_support_only_the_clear_gap(trials):
    summary = summarize(trials, "val_loss", seeds=3)
    pairs = pairwise_differences(trials, summary).set_index(["a", "b"])
    assert list(pairs.index) == [("A", "B"), ("A", "C"), ("B", "C")]
    ab, ac = pairs.loc[("A", "B")], pairs.loc[("A", "C")]
    # A vs C: 0.950 vs 0.900, spreads of 0.002 and 0.005 -> clearly supported
    assert ac["diff"] == pytest.approx(0.05) and ac["supported"] and not ac["intervals_overlap"]
    assert ac["diff_low"] > 0
    # A vs B: 0.950 vs 0.948 -> not supported, intervals overlap, the diff interval holds 0
    assert not ab["supported"] and ab["intervals_overlap"] and ab["diff_low"] < 0 < ab["diff_high"]
    ref = stats.ttest_ind([0.95, 0.952, 0.948], [0.951, 0.945, 0.949], equal_var=False)
    assert ab["p"] == pytest.approx(ref.pvalue)
    np.testing.assert_allclose(pairs["p_holm"], _holm(pairs["p"].to_numpy()))


def test_pairwise_with_constant_seeds_needs_a_resolution(trials):
    same = make_trials({"A": {0.01: [(0.1, 0.9, 0.95)] * 3}, "B": {0.01: [(0.1, 0.9, 0.94)] * 3}})
    summary = summarize(same)
    bare = pairwise_differences(same, summary).iloc[0]
    assert math.isnan(bare["p"]) and not bare["supported"] and bare["p_holm"] == 1.0
    # one count of 1/100: a 0.01 difference, reproduced by every seed, is supported
    floored = pairwise_differences(same, summary, resolution=0.01).iloc[0]
    assert floored["supported"] and floored["diff"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="resolution"):
        pairwise_differences(same, summary, resolution=0)


def test_pairwise_leaves_out_labels_with_one_seed(trials):
    one = trials[~((trials["label"] == "C") & (trials["seed"] > 0))]
    pairs = pairwise_differences(one, summarize(one, "val_loss"))
    assert list(zip(pairs["a"], pairs["b"], strict=True)) == [("A", "B")]


def test_bad_input_is_rejected(trials):
    summary = summarize(trials)
    with pytest.raises(TypeError, match="trials"):
        pairwise_differences(trials.to_dict(), summary)
    with pytest.raises(ValueError, match="missing columns"):
        chosen_trials(trials.drop(columns="status"), summary)
    with pytest.raises(ValueError, match="level"):
        pairwise_differences(trials, summary, level=1.5)
    with pytest.raises(ValueError, match="tolerance"):
        lr_robustness(lr_sensitivity(trials), tolerance=-1)
    with pytest.raises(ValueError, match="test_error"):
        pairwise_differences(trials, summary, metric="test_error")
