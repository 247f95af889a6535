"""Tests for analysis_lib.landscape.barrier: the loss barrier along an interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from analysis_lib.landscape.barrier import LossBarrier, loss_barrier

# L(alpha) = 1 + alpha + 4 alpha (1 - alpha) = 1 + 5 alpha - 4 alpha^2 on a grid of step 1/16 from
# -0.5 to 1.5 (it holds 0, 1/2, 5/8 and 1 exactly). By hand: L(0) = 1, L(1) = 2; L peaks at
# alpha = 5/8 with L = 1 + 25/8 - 25/16 = 41/16, so the "max" barrier is 41/16 - 2 = 9/16; the
# excess over the straight line 1 + alpha is 4 alpha (1 - alpha), largest (1) at alpha = 1/2.
ALPHAS = np.linspace(-0.5, 1.5, 33)


def bump(alphas):
    return 1 + 5 * alphas - 4 * alphas**2


def test_barrier_of_a_parabola_matches_the_hand_computation():
    top = loss_barrier(ALPHAS, bump(ALPHAS))
    assert isinstance(top, LossBarrier)
    assert top.height == pytest.approx(9 / 16, abs=1e-12)
    assert top.alpha == pytest.approx(5 / 8)
    assert (top.loss_a, top.loss_b) == pytest.approx((1.0, 2.0))
    line = loss_barrier(ALPHAS, bump(ALPHAS), reference="linear")
    assert line.height == pytest.approx(1.0, abs=1e-12)
    assert line.alpha == pytest.approx(0.5)


def test_points_outside_the_segment_are_ignored_and_no_climb_is_zero():
    loss = 2.0 - ALPHAS  # falls monotonically from model a to model b
    loss[ALPHAS < 0] = 1e6  # extrapolation may blow up: not part of the path
    loss[ALPHAS > 1] = 1e6
    for reference in ("max", "linear"):
        assert loss_barrier(ALPHAS, loss, reference=reference).height == 0.0
    # a convex valley between the ends: below both references everywhere
    assert loss_barrier(ALPHAS, (ALPHAS - 0.5) ** 2).height == 0.0


def test_matches_the_notebook_formula_on_a_noisy_curve():
    rng = np.random.default_rng(0)
    loss = np.exp(rng.normal(size=ALPHAS.size))
    inside = (ALPHAS >= 0) & (ALPHAS <= 1)
    expected = loss[inside].max() - max(loss[ALPHAS == 0][0], loss[ALPHAS == 1][0])
    assert loss_barrier(ALPHAS, loss).height == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("alphas", "loss", "match"),
    [
        (np.linspace(0.1, 1, 5), np.ones(5), "alphas"),  # no alpha = 0
        (np.linspace(0, 0.9, 5), np.ones(5), "alphas"),  # no alpha = 1
        (np.linspace(0, 1, 5), np.ones(4), "loss"),
        (np.linspace(0, 1, 5), [1, 2, np.nan, 1, 1], "loss"),
        ([0, 1, np.inf], [1, 1, 1], "alphas"),
    ],
)
def test_bad_input_is_named(alphas, loss, match):
    with pytest.raises(ValueError, match=match):
        loss_barrier(alphas, loss)


def test_unknown_reference():
    with pytest.raises(ValueError, match="reference"):
        loss_barrier(ALPHAS, bump(ALPHAS), reference="mean")
