"""The 2-D toy problems against independent references: minima on a fine grid, hand-derived
gradients and Hessians, finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis_lib.problems import toy

PROBLEMS = toy.toy_problems()
IDS = [p.name for p in PROBLEMS]
WITH_MINIMA = [p for p in PROBLEMS if p.minima]


def hand_gradient(name: str, x: float, y: float, **params) -> tuple[float, float]:
    """Gradients derived by hand from each definition (independent of autograd)."""
    if name == "rosenbrock":
        return -2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)
    if name == "beale":
        t = [1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3]
        dx = sum(2 * ti * (y ** (i + 1) - 1) for i, ti in enumerate(t))
        dy = sum(2 * ti * x * (i + 1) * y**i for i, ti in enumerate(t))
        return dx, dy
    if name == "himmelblau":
        a, b = x * x + y - 11, x + y * y - 7
        return 4 * x * a + 2 * b, 2 * a + 4 * y * b
    if name == "rastrigin":
        return (
            2 * x + 20 * math.pi * math.sin(2 * math.pi * x),
            2 * y + 20 * math.pi * math.sin(2 * math.pi * y),
        )
    if name == "saddle":
        return 2 * x, -2 * y
    if name == "badly_scaled":
        return 100 * x, y
    raise KeyError(name)


@pytest.mark.parametrize("problem", WITH_MINIMA, ids=[p.name for p in WITH_MINIMA])
def test_minima_have_zero_gradient_and_the_lowest_value_on_a_fine_grid(problem):
    minima = torch.tensor(problem.minima, dtype=torch.float64)
    f, g = problem.value_and_grad(minima)
    assert torch.allclose(f, torch.full_like(f, problem.min_value), atol=1e-20)
    assert g.abs().max() < 1e-9
    _, _, grid_values = problem.grid(601)
    assert grid_values.min() >= problem.min_value - 1e-12
    # and the grid comes close to the minimum value (the minima lie inside the bounds)
    assert grid_values.min() - problem.min_value < 0.05 * (grid_values.max() - problem.min_value)
    assert problem.inside(problem.minima).all()
    assert problem.inside(problem.start)


def test_saddle_has_no_minimum_and_is_unbounded_below():
    p = toy.saddle()
    assert p.minima == () and p.min_value is None
    values = p.value(torch.tensor([[0.0, 10.0], [0.0, 100.0]], dtype=torch.float64))
    assert values.tolist() == [-100.0, -10000.0]
    assert p.gradient(torch.zeros(2, dtype=torch.float64)).abs().max() == 0
    with pytest.raises(ValueError, match="no minima"):
        p.distance_to_minimum([0.0, 0.0])


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_batched_and_single_point_evaluation_agree(problem):
    rng = np.random.default_rng(1)
    (x0, x1), (y0, y1) = problem.bounds
    pts = np.stack([rng.uniform(x0, x1, (3, 4)), rng.uniform(y0, y1, (3, 4))], -1)
    batch_f, batch_g = problem.value_and_grad(torch.tensor(pts))
    assert batch_f.shape == (3, 4) and batch_g.shape == (3, 4, 2)
    for i in range(3):
        for j in range(4):
            f, g = problem.value_and_grad(torch.tensor(pts[i, j]))
            assert f.shape == () and g.shape == (2,)
            assert torch.equal(f, batch_f[i, j]) and torch.equal(g, batch_g[i, j])


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_gradients_match_finite_differences(problem):
    rng = np.random.default_rng(2)
    (x0, x1), (y0, y1) = problem.bounds
    pts = np.stack([rng.uniform(x0, x1, 20), rng.uniform(y0, y1, 20)], -1)
    g = problem.gradient(torch.tensor(pts)).numpy()
    h = 1e-6
    for k, e in enumerate(np.eye(2)):

        def f(q):
            return problem.value(torch.tensor(q)).numpy()

        fd = (f(pts + h * e) - f(pts - h * e)) / (2 * h)
        scale = np.abs(g).max() + 1.0
        np.testing.assert_allclose(g[:, k], fd, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize(
    "problem",
    [p for p in PROBLEMS if p.name != "rotated_quadratic"],
    ids=[p.name for p in PROBLEMS if p.name != "rotated_quadratic"],
)
def test_gradients_match_hand_derivations(problem):
    rng = np.random.default_rng(3)
    (x0, x1), (y0, y1) = problem.bounds
    for x, y in zip(rng.uniform(x0, x1, 10), rng.uniform(y0, y1, 10), strict=True):
        g = problem.gradient(torch.tensor([x, y], dtype=torch.float64)).tolist()
        np.testing.assert_allclose(g, hand_gradient(problem.name, x, y), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("condition", "angle"), [(20.0, 30.0), (100.0, -60.0), (1.0, 0.0)])
def test_rotated_quadratic_has_the_asked_condition_number_and_valley_angle(condition, angle):
    p = toy.rotated_quadratic(condition=condition, angle=angle)
    hess = torch.autograd.functional.hessian(
        p.value, torch.tensor([0.3, -0.2], dtype=torch.float64)
    )
    eigvals, eigvecs = torch.linalg.eigh(hess)
    np.testing.assert_allclose(eigvals.tolist(), [1 / condition, 1.0], rtol=1e-12)
    if condition > 1:  # the valley floor (low curvature) runs at `angle` degrees
        u = eigvecs[:, 0].numpy()
        t = math.radians(angle)
        assert abs(abs(u @ [math.cos(t), math.sin(t)]) - 1) < 1e-12


def test_badly_scaled_gradient_ratio_at_the_start():
    p = toy.badly_scaled()
    gx, gy = p.gradient(torch.tensor(p.start, dtype=torch.float64)).tolist()
    assert gx / gy == pytest.approx(100.0)


def test_scaled_multiplies_loss_and_gradient():
    p = toy.rosenbrock()
    q = p.scaled(100.0)
    pts = torch.tensor([[0.3, -0.4], [-1.0, 2.0]], dtype=torch.float64)
    f, g = p.value_and_grad(pts)
    fq, gq = q.value_and_grad(pts)
    assert torch.allclose(fq, 100 * f, rtol=1e-14) and torch.allclose(gq, 100 * g, rtol=1e-14)
    assert q.minima == p.minima and q.config()["scale"] == 100.0
    assert "loss × 100" in q.label


def test_gradient_noise_is_seeded_unbiased_and_of_the_asked_size():
    p = toy.rotated_quadratic().with_noise(0.5)
    g = torch.zeros(2, dtype=torch.float64)

    def draws(seed, n=20000):
        gen = torch.Generator().manual_seed(seed)
        return torch.stack([p.noisy_gradient(g, gen) for _ in range(n)])

    a, b, c = draws(0), draws(0), draws(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.mean(0).abs().max() < 4 * 0.5 / math.sqrt(len(a))
    np.testing.assert_allclose(a.std(0).numpy(), [0.5, 0.5], rtol=0.03)
    # the noise scales with the loss
    big = p.scaled(10.0).noisy_gradient(g, torch.Generator().manual_seed(0))
    assert torch.allclose(big, 10 * a[0])
    assert toy.rosenbrock().noisy_gradient(g, torch.Generator()) is g  # deterministic


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_config_rebuilds_the_problem(problem):
    c = problem.scaled(3.0).with_noise(0.25).config()
    rebuilt = toy.toy_problem(c["name"], **c["params"]).scaled(c["scale"]).with_noise(c["noise"])
    assert rebuilt == problem.scaled(3.0).with_noise(0.25)
    pts = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    assert torch.equal(rebuilt.value(pts), problem.scaled(3.0).value(pts))


def test_levels_are_log_spaced_where_the_range_is_wide():
    lv = toy.rosenbrock().levels(12)
    assert len(lv) == 12 and np.all(np.diff(lv) > 0)
    np.testing.assert_allclose(np.diff(np.log(lv)), np.log(lv[1] / lv[0]), rtol=1e-9)
    lin = toy.saddle().levels(9)
    np.testing.assert_allclose(np.diff(lin), lin[1] - lin[0])
    assert lin[0] == pytest.approx(-4.0, abs=1e-3) and lin[-1] == pytest.approx(4.0, abs=1e-3)


def test_distance_to_the_nearest_minimum():
    p = toy.himmelblau()
    d = p.distance_to_minimum([[3.0, 2.0], [3.0, 2.5], [-2.805118086952745, 3.131312518250573]])
    np.testing.assert_allclose(d, [0.0, 0.5, 0.0], atol=1e-15)


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: toy.rotated_quadratic(condition=0.5), "condition"),
        (lambda: toy.rotated_quadratic(angle=float("nan")), "angle"),
        (lambda: toy.badly_scaled(ratio=-1), "ratio"),
        (lambda: toy.rastrigin(amplitude=0), "amplitude"),
        (lambda: toy.rosenbrock().scaled(0.0), "factor"),
        (lambda: toy.rosenbrock().with_noise(-1.0), "std"),
        (lambda: toy.toy_problem("nope"), "name"),
        (lambda: toy.rosenbrock().value(torch.zeros(3)), "points"),
        (lambda: toy.rosenbrock().grid(1), "n"),
    ],
)
def test_bad_input_is_named(call, arg):
    with pytest.raises(ValueError, match=f"Invalid {arg}"):
        call()
