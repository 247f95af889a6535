"""Kendall's tau-b against scipy and hand-counted pairs; its bootstrap interval: seeded, around
the estimate, excluding 0 for a strong relation and covering the truth for independent data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis_lib import stats
from analysis_lib.stats import kendall_tau, tau_table


def test_a_hand_counted_case():
    # pairs of (1,2,3,4) against (1,3,2,4): five concordant, one discordant (2-3): tau = 4/6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4], n_boot=10).tau == pytest.approx(2 / 3)
    assert kendall_tau([1, 2, 3], [3, 2, 1], n_boot=10).tau == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 1000], n_boot=10).tau == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tau_b_equals_scipy_also_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 40).astype(float)  # many ties
    y = x + rng.integers(-3, 4, 40)
    ref = sps.kendalltau(x, y).statistic  # tau-b
    assert kendall_tau(x, y, n_boot=10).tau == pytest.approx(ref, abs=1e-12)
    z = rng.normal(size=25)
    w = rng.normal(size=25)
    assert kendall_tau(z, w, n_boot=10).tau == pytest.approx(sps.kendalltau(z, w).statistic)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=0.5, size=30)
    a = kendall_tau(x, y, seed=5)
    b = kendall_tau(x, y, seed=5)
    c = kendall_tau(x, y, seed=6)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low < a.tau < a.high
    assert a.low > 0.3  # a strong relation: the interval is well away from 0
    assert a.valid == a.n_boot == 2000 and a.n == 30


def test_interval_covers_zero_for_independent_data_most_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(40):
        r = kendall_tau(rng.normal(size=30), rng.normal(size=30), n_boot=400, seed=1)
        covered += r.low <= 0 <= r.high
    assert covered >= 34  # nominal 95%: 38 of 40 expected; 34 is far in the tail


def test_the_interval_narrows_with_more_minima():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    small = kendall_tau(x[:20], y[:20], n_boot=500)
    large = kendall_tau(x, y, n_boot=500)
    assert large.high - large.low < 0.6 * (small.high - small.low)


def test_nan_pairs_are_dropped_and_the_table():
    frame = pd.DataFrame(
        dict(a=[1.0, 2.0, np.nan, 4.0, 5.0], b=[5.0, 4.0, 3.0, 2.0, 1.0], gap=[1, 2, 3, 4, 5])
    )
    table = tau_table(frame, ["a", "b"], n_boot=50)
    assert list(table["measure"]) == ["a", "b"]
    assert table.set_index("measure").loc["a", "n"] == 4
    assert table.set_index("measure").loc["a", "tau"] == pytest.approx(1.0)
    assert table.set_index("measure").loc["b", "tau"] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kendall_tau([1, 2, 3], [1, 2]), "Invalid y"),
        (lambda: kendall_tau([1, 2], [1, 2]), "Invalid x"),
        (lambda: kendall_tau([1, 2, np.inf], [1, 2, 3]), "Invalid x or y"),
        (lambda: kendall_tau([1, 2, 3], [1, 2, 3], n_boot=0), "n_boot"),
        (lambda: kendall_tau([1, 2, 3], [1, 2, 3], confidence=1.5), "confidence"),
        (lambda: kendall_tau([1, 2, 3], [1, 2, 3], seed=-1), "seed"),
        (lambda: tau_table(pd.DataFrame(dict(a=[1, 2, 3])), ["b"], "a"), "measures"),
    ],
)
def test_bad_inputs_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_choose_lr_breaks_near_ties_by_the_smaller_rate_within_rtol():
    """Mean validation losses 0.5000 (lr 0.1) and 0.5004 (lr 0.01) are 0.08% apart: a tie
    under the default rtol (1e-3), so the smaller rate wins whichever of the two is ahead by
    rounding; 0.3% apart is not a tie."""
    near = pd.DataFrame(
        dict(lr=[0.01, 0.01, 0.1, 0.1], val_loss=[0.5003, 0.5005, 0.5, 0.5], diverged=False)
    )
    assert stats.choose_lr(near) == 0.01
    assert stats.choose_lr(near, rtol=0.0) == 0.1
    flipped = near.assign(val_loss=[0.5, 0.5, 0.5003, 0.5005])
    assert stats.choose_lr(flipped) == 0.01
    apart = near.assign(val_loss=[0.5015, 0.5015, 0.5, 0.5])
    assert stats.choose_lr(apart) == 0.1
    acc = near.assign(val_accuracy=[0.65, 0.65, 0.6504, 0.6504])  # higher is better
    assert stats.choose_lr(acc, "val_accuracy") == 0.01
    assert stats.choose_lr(acc, "val_accuracy", rtol=0.0) == 0.1
    with pytest.raises(ValueError, match="Invalid rtol"):
        stats.choose_lr(near, rtol=-1e-3)
