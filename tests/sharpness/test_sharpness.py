"""Sharpness measures against closed forms on quadratic losses, Dinh et al.'s rescaling, the
model left exactly as it was, and bad inputs."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from analysis_lib.curvature import dense_hessian, hessian_eigenvalues
from analysis_lib.problems.tasks import mlp
from analysis_lib.sharpness import (
    average_sharpness,
    epsilon_sharpness,
    sharpness_measurement,
    sharpness_report,
    sigma_flatness,
    worst_case_sharpness,
)


# -- a model whose loss is 0.5 (theta - theta*)^T A (theta - theta*) -----------------------------
class Constant(nn.Module):
    """Outputs its parameter vector for every sample, whatever the input."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta.expand(x.shape[0], -1)


def quadratic_loss(a: torch.Tensor):
    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = out - target
        return 0.5 * ((d @ a) * d).sum(-1).mean()

    return loss_fn


def quadratic(a: torch.Tensor, theta_star: torch.Tensor, n_samples: int = 12, batch: int = 5):
    """The model at theta*, its loss and data (targets = theta* for every sample, ragged
    batches)."""
    model = Constant(theta_star)
    x = torch.zeros(n_samples, 1, dtype=torch.float64)
    y = theta_star.expand(n_samples, -1).clone()
    data = [(x[i : i + batch], y[i : i + batch]) for i in range(0, n_samples, batch)]
    return model, quadratic_loss(a), data


def dense_a(n: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    lam = torch.tensor([5.0, 2.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)[:n]
    return q @ torch.diag(lam) @ q.T


THETA_STAR = torch.tensor([0.5, -1.5, 2.0, 0.0, -0.3, 1.0], dtype=torch.float64)


@pytest.mark.parametrize("m", [None, 4])
def test_worst_case_l2_is_rho2_lambda_max_over_2(m):
    a = dense_a()
    model, loss_fn, data = quadratic(a, THETA_STAR)
    rho = 0.3
    res = worst_case_sharpness(model, loss_fn, data, rho, steps=40, m=m)
    expected = rho**2 * float(torch.linalg.eigvalsh(a)[-1]) / 2
    assert res.value == pytest.approx(expected, rel=1e-6)
    assert res.stderr is None
    delta = res.perturbation if m is None else res.perturbation[0]
    assert float(delta.norm()) == pytest.approx(rho, rel=1e-9)  # on the sphere
    assert res.forward_passes > 0 and res.backward_passes == 40 * 2
    assert res.settings["rho"] == rho and res.settings["m"] == m
    if m is not None:
        assert res.details["batches"] == 3 and res.details["dropped"] == 0


@pytest.mark.parametrize("adaptive", [False, True])
def test_worst_case_linf_diagonal_is_at_a_corner(adaptive):
    a_diag = torch.tensor([3.0, 1.0, 0.5, 2.0, 0.1, 1.5], dtype=torch.float64)
    model, loss_fn, data = quadratic(torch.diag(a_diag), THETA_STAR)
    rho = 0.2
    res = worst_case_sharpness(model, loss_fn, data, rho, norm="linf", adaptive=adaptive, steps=5)
    c = THETA_STAR.abs() if adaptive else torch.ones(6, dtype=torch.float64)
    expected = 0.5 * float((a_diag * (rho * c) ** 2).sum())
    assert res.value == pytest.approx(expected, rel=1e-9)


def test_average_sharpness_is_rho2_trace_over_2():
    a = dense_a()
    model, loss_fn, data = quadratic(a, THETA_STAR)
    rho = 0.1
    res = average_sharpness(model, loss_fn, data, rho, samples=200, seed=1)
    expected = rho**2 * float(torch.trace(a)) / 2
    assert res.stderr > 0
    assert abs(res.value - expected) < 4 * res.stderr
    assert res.forward_passes == 2 * 200 + 1 and res.backward_passes == 0
    # adaptive: delta ~ N(0, rho^2 diag(theta^2)), so E = rho^2 tr(diag(theta) A diag(theta)) / 2
    res = average_sharpness(model, loss_fn, data, rho, adaptive=True, samples=200, seed=1)
    expected = rho**2 * float((torch.diag(a) * THETA_STAR**2).sum()) / 2
    assert abs(res.value - expected) < 4 * res.stderr


def test_epsilon_sharpness_diagonal_box_closed_form():
    a_diag = torch.tensor([3.0, 1.0, 0.5, 2.0, 0.1, 1.5], dtype=torch.float64)
    model, loss_fn, data = quadratic(torch.diag(a_diag), THETA_STAR)
    eps = 1e-2
    res = epsilon_sharpness(model, loss_fn, data, eps)
    # a convex quadratic's maximum on a box is at a corner: 0.5 sum a_i eps^2 (|theta_i| + 1)^2,
    # and L(theta*) = 0, so the value is 100 times that
    expected = 100 * 0.5 * float((a_diag * eps**2 * (THETA_STAR.abs() + 1) ** 2).sum())
    assert res.value == pytest.approx(expected, rel=1e-8)
    assert res.loss == 0.0 and res.stderr is None
    assert res.forward_passes == res.backward_passes + 1  # L(theta), then value-and-gradient


def test_sigma_flatness_on_a_quadratic():
    a = dense_a()
    model, loss_fn, data = quadratic(a, THETA_STAR)
    thr = 0.05
    res = sigma_flatness(model, loss_fn, data, thr, samples=8, iterations=20)
    sigma = res.details["sigma"]
    assert res.value == pytest.approx(1 / sigma**2)
    # with fixed draws z the increase is sigma^2 q, q = mean_s z_s^T A z_s / 2: the crossing is
    # sqrt(thr / q); check against the increase the search recorded at one sigma
    s0, inc0 = res.details["evaluations"][0]
    q = inc0 / s0**2
    assert sigma == pytest.approx(math.sqrt(thr / q), rel=1e-4)
    assert sigma <= math.sqrt(thr / q) * (1 + 1e-12)  # the largest sigma known to be under


# -- Dinh et al.: a ReLU network rescaled by (a, 1/a) ---------------------------------------------
def _relu_problem():
    torch.manual_seed(0)
    net = mlp(5, [8], 3, activation="relu").double()
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    return net, nn.functional.cross_entropy, [(x[:25], y[:25]), (x[25:], y[25:])]


def _rescaled(net: nn.Module, a: float) -> nn.Module:
    out = mlp(5, [8], 3, activation="relu").double()
    out.load_state_dict(net.state_dict())
    with torch.no_grad():
        out[0].weight.mul_(a)
        out[0].bias.mul_(a)
        out[2].weight.div_(a)
    return out


def test_dinh_rescaling_adaptive_measures_unchanged_others_change():
    net, loss_fn, data = _relu_problem()
    scaled = _rescaled(net, 5.0)
    x = torch.cat([b[0] for b in data])
    torch.testing.assert_close(scaled(x), net(x), rtol=1e-12, atol=1e-12)

    kw = dict(adaptive=True, steps=10, restarts=2, seed=3)
    for norm in ("l2", "linf"):
        w0 = worst_case_sharpness(net, loss_fn, data, 0.3, norm=norm, **kw)
        w1 = worst_case_sharpness(scaled, loss_fn, data, 0.3, norm=norm, **kw)
        assert w0.loss == pytest.approx(w1.loss, rel=1e-12)
        assert w0.value > 0
        assert w1.value == pytest.approx(w0.value, rel=1e-9)
    a0 = average_sharpness(net, loss_fn, data, 0.2, adaptive=True, samples=16, seed=3)
    a1 = average_sharpness(scaled, loss_fn, data, 0.2, adaptive=True, samples=16, seed=3)
    assert a1.value == pytest.approx(a0.value, rel=1e-9)
    assert a1.stderr == pytest.approx(a0.stderr, rel=1e-6)

    l0 = float(torch.linalg.eigvalsh(dense_hessian(net, loss_fn, data))[-1])
    l1 = float(torch.linalg.eigvalsh(dense_hessian(scaled, loss_fn, data))[-1])
    assert l1 > 2 * l0 or l1 < l0 / 2
    e0 = epsilon_sharpness(net, loss_fn, data, 1e-2, maxiter=5).value
    e1 = epsilon_sharpness(scaled, loss_fn, data, 1e-2, maxiter=5).value
    assert abs(e1 - e0) > 0.1 * abs(e0)
    # not adaptive: the plain worst case moves too
    p0 = worst_case_sharpness(net, loss_fn, data, 0.3, steps=10).value
    p1 = worst_case_sharpness(scaled, loss_fn, data, 0.3, steps=10).value
    assert abs(p1 - p0) > 0.1 * abs(p0)


def test_m_sharpness_with_one_batch_is_the_whole_data_sharpness():
    net, loss_fn, data = _relu_problem()
    whole = worst_case_sharpness(net, loss_fn, data, 0.2, steps=8, seed=1)
    one = worst_case_sharpness(net, loss_fn, data, 0.2, steps=8, seed=1, m=40)
    assert one.value == pytest.approx(whole.value, rel=1e-9)
    # m = 8: five batches, each its own maximum (independently: the loop over batches by hand)
    res = worst_case_sharpness(net, loss_fn, data, 0.2, steps=8, seed=1, m=8)
    assert res.details["batches"] == 5 and len(res.details["batch_values"]) == 5
    assert res.value == pytest.approx(float(np.mean(res.details["batch_values"])))
    assert res.perturbation.shape == (5, sum(p.numel() for p in net.parameters()))
    odd = worst_case_sharpness(net, loss_fn, data, 0.2, steps=2, m=7)
    assert odd.details["batches"] == 5 and odd.details["dropped"] == 5


# -- the model is left exactly as it was ----------------------------------------------------------
def _bn_model():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    model.train()
    model[1].eval()  # mixed modes, restored exactly
    with torch.no_grad():
        model[1].running_mean.normal_()
    return model


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.grad for p in model.parameters()],
    )


def _assert_same(model, snap):
    state, modes, grads = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v.view(-1).view(torch.uint8), state[k].view(-1).view(torch.uint8)), k
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))


MEASURES = {
    "worst_case": lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, steps=3),
    "worst_case_m": lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, steps=3, m=4),
    "adaptive_linf": lambda m, f, d: worst_case_sharpness(
        m, f, d, 0.1, norm="linf", adaptive=True, steps=3
    ),
    "average": lambda m, f, d: average_sharpness(m, f, d, 0.1, samples=4),
    "epsilon": lambda m, f, d: epsilon_sharpness(m, f, d, 1e-2, maxiter=3),
    "sigma": lambda m, f, d: sigma_flatness(m, f, d, 0.1, samples=2, iterations=2),
}


@pytest.mark.filterwarnings("ignore:the model has batch norm")
@pytest.mark.parametrize("name", sorted(MEASURES))
def test_model_restored_bit_for_bit_also_when_the_loss_raises(name):
    model = _bn_model()
    x, y = torch.randn(12, 4), torch.randint(0, 2, (12,))
    data = [(x[:6], y[:6]), (x[6:], y[6:])]
    snap = _snapshot(model)
    res = MEASURES[name](model, nn.functional.cross_entropy, data)
    assert math.isfinite(res.value) and res.seconds > 0
    _assert_same(model, snap)

    calls = 0

    def flaky(out, target):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("loss failed")
        return nn.functional.cross_entropy(out, target)

    with pytest.raises(RuntimeError, match="loss failed"):
        MEASURES[name](model, flaky, data)
    _assert_same(model, snap)


@pytest.mark.filterwarnings("ignore:the model has batch norm")
def test_the_same_seed_gives_the_same_numbers():
    model = _bn_model()
    x, y = torch.randn(12, 4), torch.randint(0, 2, (12,))
    for name, measure in MEASURES.items():
        r0 = measure(model, nn.functional.cross_entropy, [(x, y)])
        r1 = measure(model, nn.functional.cross_entropy, [(x, y)])
        assert r0.value == r1.value, name


# -- the report ----------------------------------------------------------------------------------
def test_report_and_sweep_measurement():
    from analysis_lib.problems.tasks import teacher_student

    task = teacher_student(input_dim=4, student_hidden=(6,), n_train=32, n_val=8, n_test=8)
    model = task.make_model(seed=0)
    measure = sharpness_measurement(
        batch_size=16, steps=3, restarts=1, samples=4, trace_matvecs=6, m=8
    )
    measure = pickle.loads(pickle.dumps(measure))  # it travels to a sweep's workers
    row = measure(model, task)
    keys = {
        "loss",
        "worst_case",
        "worst_case_adaptive",
        "average",
        "average_stderr",
        "average_adaptive",
        "average_adaptive_stderr",
        "epsilon",
        "sigma_flatness",
        "sigma",
        "lambda_max",
        "lambda_max_residual",
        "hessian_trace",
        "hessian_trace_stderr",
        "forward_passes",
        "backward_passes",
        "hessian_matvecs",
        "seconds",
    }
    assert set(row) == keys
    assert all(isinstance(v, float | int) and math.isfinite(v) for v in row.values())
    assert row["loss"] == pytest.approx(task.evaluate(model, "train")["loss"], rel=1e-5)
    ref = float(hessian_eigenvalues(model, task.loss_fn, task.data("train"), k=1).values[0])
    assert row["lambda_max"] == pytest.approx(ref, rel=1e-3)


# -- bad inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, f, d: worst_case_sharpness(m, f, d, 0.0), "Invalid rho: 0.0"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, -1), "Invalid rho: -1"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, math.nan), "Invalid rho: nan"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, math.inf), "Invalid rho: inf"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, "0.1"), "Invalid rho"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, norm="l1"), "Invalid norm: 'l1'"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, m=13), "Invalid m: 13"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, m=0), "Invalid m: 0"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, steps=0), "Invalid steps: 0"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, restarts=1.5), "Invalid restarts"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, seed=-1), "Invalid seed: -1"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, adaptive="yes"), "Invalid adaptive"),
        (lambda m, f, d: worst_case_sharpness(m, f, d, 0.1, step_size=0), "Invalid step_size"),
        (lambda m, f, d: worst_case_sharpness(m, f, [], 0.1), "Invalid data: no samples"),
        (lambda m, f, d: worst_case_sharpness(m, None, d, 0.1), "Invalid loss_fn"),
        (lambda m, f, d: worst_case_sharpness(None, f, d, 0.1), "Invalid model: NoneType"),
        (lambda m, f, d: worst_case_sharpness(m, f, d[0], 0.1), "Invalid data: expected an"),
        (lambda m, f, d: average_sharpness(m, f, d, 0), "Invalid rho: 0"),
        (lambda m, f, d: average_sharpness(m, f, d, 0.1, samples=1), "Invalid samples: 1"),
        (lambda m, f, d: average_sharpness(m, f, [], 0.1), "Invalid data: no samples"),
        (lambda m, f, d: epsilon_sharpness(m, f, d, -1e-3), "Invalid epsilon: -0.001"),
        (lambda m, f, d: epsilon_sharpness(m, f, d, 1e-3, maxiter=0), "Invalid maxiter: 0"),
        (lambda m, f, d: sigma_flatness(m, f, d, 0), "Invalid threshold: 0"),
        (lambda m, f, d: sigma_flatness(m, f, d, 0.1, sigma_init=-1), "Invalid sigma_init"),
        (lambda m, f, d: sharpness_report(m, f, d, epsilon=0), "Invalid epsilon: 0"),
        (lambda m, f, d: sharpness_report(m, f, d, samples=0), "Invalid samples: 0"),
        (lambda m, f, d: sharpness_report(m, f, d, m=100), "Invalid m: 100"),
    ],
)
def test_bad_inputs_name_the_argument(call, match):
    model = nn.Sequential(nn.Linear(3, 2))
    data = [(torch.randn(12, 3), torch.randint(0, 2, (12,)))]
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=match):
        call(model, nn.functional.cross_entropy, data)
    _assert_same(model, snap)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_at_theta_is_an_error(bad):
    model = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        model[0].bias[0] = bad
    data = [(torch.randn(6, 3), torch.randint(0, 2, (6,)))]
    for call in MEASURES.values():
        with pytest.raises(
            ValueError, match=r"loss over data at the model's parameters .*parameter '0\.bias'"
        ):
            call(model, nn.functional.cross_entropy, data)
