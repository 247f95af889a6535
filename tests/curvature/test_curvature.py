"""Curvature probes against dense references of tiny models (float64 unless said otherwise).

The dense Hessian comes from ``torch.autograd.functional.hessian`` of the full-data mean loss as a
function of the flat parameter vector; eigenpairs from ``torch.linalg.eigh``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from analysis_lib.curvature import (
    BACKENDS,
    DenseOperator,
    GGNOperator,
    HessianOperator,
    ParameterSpace,
    SharpnessCallback,
    curvature_operator,
    hessian_eigenvalues,
    hessian_trace,
    hutchinson,
    hutchpp,
    lanczos,
    power_iteration,
    preconditioned_hessian,
    slq,
    spectral_density,
    stability_thresholds,
)
from analysis_lib.optim import Ada2MS, AdamNX

N_SAMPLES = 13  # batches of 5, 5 and 3: the last one ragged


def tiny_mlp(dtype=torch.float64, seed=0, outputs=3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, outputs)).to(dtype)


def tiny_data(dtype=torch.float64, seed=0, regression=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, 4, generator=gen, dtype=dtype)
    if regression:
        y = torch.randn(N_SAMPLES, 3, generator=gen, dtype=dtype)
    else:
        y = torch.randint(0, 3, (N_SAMPLES,), generator=gen)
    return x, y


def batches(x, y, sizes=(5, 5, 3)):
    out, start = [], 0
    for s in sizes:
        out.append((x[start : start + s], y[start : start + s]))
        start += s
    return out


def dense_hessian(model, loss_fn, x, y, names=None):
    """The Hessian of loss_fn(model(x), y) over the parameters ``names`` (default: all)."""
    named = [(n, p) for n, p in model.named_parameters() if names is None or n in names]
    space = ParameterSpace(named)
    others = {n: p.detach() for n, p in model.named_parameters() if n not in space.names}
    others.update(dict(model.named_buffers()))

    def f(flat):
        return loss_fn(functional_call(model, {**others, **space.unflatten(flat)}, (x,)), y)

    theta = space.flatten({n: p.detach() for n, p in named})
    return torch.autograd.functional.hessian(f, theta)


@pytest.fixture(scope="module")
def problem():
    model = tiny_mlp()
    x, y = tiny_data()
    return model, x, y, dense_hessian(model, F.cross_entropy, x, y)


@pytest.fixture(scope="module")
def hessian_op(problem):
    model, x, y, _ = problem
    return HessianOperator(model, F.cross_entropy, batches(x, y))


def symmetric(eigenvalues, seed=0):
    """A dense symmetric matrix with the given eigenvalues and a random eigenbasis."""
    gen = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    return (q * lam) @ q.T, q


# -- operators -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_hessian_matches_dense_hessian_over_ragged_batches(problem, backend):
    model, x, y, h = problem
    op = HessianOperator(model, F.cross_entropy, batches(x, y), backend=backend)
    assert op.size == h.shape[0] == sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(op.dense(), h, rtol=1e-10, atol=1e-12)


def test_ragged_batches_are_weighted_by_size(problem):
    model, x, y, h = problem
    op = HessianOperator(model, F.cross_entropy, batches(x, y, sizes=(12, 1)))
    torch.testing.assert_close(op.dense(), h, rtol=1e-10, atol=1e-12)
    # the unweighted mean of the two batch Hessians (what per-batch averaging gives) differs
    naive = (
        dense_hessian(model, F.cross_entropy, x[:12], y[:12])
        + dense_hessian(model, F.cross_entropy, x[12:], y[12:])
    ) / 2
    assert (naive - h).abs().max() > 1e-2


def test_data_may_be_a_dataloader(problem):
    model, x, y, h = problem
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    op = HessianOperator(model, F.cross_entropy, loader)
    torch.testing.assert_close(op.dense(), h, rtol=1e-10, atol=1e-12)


def test_backends_agree_in_float32():
    model = tiny_mlp(torch.float32)
    x, y = tiny_data(torch.float32)
    v = torch.randn(
        sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(1)
    )
    hv = [
        HessianOperator(model, F.cross_entropy, batches(x, y), backend=b).matvec(v)
        for b in BACKENDS
    ]
    assert hv[0].dtype == torch.float32
    torch.testing.assert_close(hv[0], hv[1], rtol=1e-5, atol=1e-6)


def test_parameter_subset_is_the_block_of_the_full_hessian(problem):
    model, x, y, h = problem
    op = HessianOperator(model, F.cross_entropy, batches(x, y), params=["2"])  # the last layer
    names = [n for n, _ in model.named_parameters()]
    assert op.space.names == ["2.weight", "2.bias"]
    first = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("2."))
    torch.testing.assert_close(op.dense(), h[first:, first:], rtol=1e-10, atol=1e-12)
    single = HessianOperator(model, F.cross_entropy, batches(x, y), params="0.bias")
    i = names.index("0.bias")
    lo = sum(p.numel() for p in list(model.parameters())[:i])
    torch.testing.assert_close(single.dense(), h[lo : lo + 5, lo : lo + 5], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="params"):
        HessianOperator(model, F.cross_entropy, batches(x, y), params=["3"])


def test_batch_norm_is_evaluated_in_eval_mode_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = tiny_data()
    model.train()
    model(x)  # non-trivial running statistics
    stats = model[1].running_mean.clone()
    model.eval()
    reference = dense_hessian(model, F.cross_entropy, x, y)
    model.train()
    with pytest.warns(UserWarning, match="batch norm"):
        op = HessianOperator(model, F.cross_entropy, batches(x, y))
    torch.testing.assert_close(op.dense(), reference, rtol=1e-10, atol=1e-12)
    assert model.training and model[1].training  # the model's mode is restored
    torch.testing.assert_close(model[1].running_mean, stats, rtol=0, atol=0)


def explicit_ggn(model, x, y, output_hessian):
    """sum_i J_i^T H_i J_i with J_i the Jacobian of sample i's outputs (built with
    torch.autograd.functional.jacobian) and H_i = output_hessian(z_i)."""
    named = list(model.named_parameters())
    space = ParameterSpace(named)
    theta = space.flatten({n: p.detach() for n, p in named})
    jac = torch.autograd.functional.jacobian(
        lambda flat: functional_call(model, space.unflatten(flat), (x,)), theta
    )  # (N, C, n)
    z = model(x).detach()
    return sum(jac[i].T @ output_hessian(z[i]) @ jac[i] for i in range(len(x)))


def test_ggn_for_cross_entropy_is_jt_h_j():
    model = tiny_mlp()
    x, y = tiny_data()

    def h_out(z):  # the Hessian of the mean cross-entropy in one sample's logits
        p = torch.softmax(z, dim=0)
        return (torch.diag(p) - torch.outer(p, p)) / N_SAMPLES

    g = GGNOperator(model, F.cross_entropy, batches(x, y)).dense()
    torch.testing.assert_close(g, explicit_ggn(model, x, y, h_out), rtol=1e-10, atol=1e-12)
    assert torch.linalg.eigvalsh(g).min() > -1e-12  # positive semi-definite


def test_ggn_for_mse_is_jt_h_j_and_equals_the_hessian_of_a_linear_model():
    model = tiny_mlp()
    x, y = tiny_data(regression=True)
    g = GGNOperator(model, F.mse_loss, batches(x, y)).dense()
    expected = explicit_ggn(
        model, x, y, lambda z: 2 * torch.eye(3, dtype=z.dtype) / (N_SAMPLES * 3)
    )
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-12)
    linear = nn.Linear(4, 3).double()
    torch.testing.assert_close(
        GGNOperator(linear, F.mse_loss, batches(x, y)).dense(),
        dense_hessian(linear, F.mse_loss, x, y),
        rtol=1e-10,
        atol=1e-12,
    )


def reference_denominator(name, opt, p):
    """sqrt(d) + eps from the optimizer's state, written out independently of the library."""
    group = opt.param_groups[0]
    beta2, eps = group["betas"][1], group["eps"]
    state = opt.state[p]
    if name == "adamnx":
        return state["exp_avg_sq"].sqrt() + eps
    bc2 = 1 - beta2 ** float(state["step"])
    v_hat = state["exp_avg_sq"] / bc2
    if name == "adamw":
        return v_hat.sqrt() + eps
    every = torch.cat([opt.state[q]["exp_avg_sq"].flatten() for q in group["params"]]) / bc2
    alpha = group["alpha"]
    return (v_hat**alpha * every.mean() ** (1 - alpha)).sqrt() + eps


@pytest.mark.parametrize("name", ["adamw", "adamnx", "ada2ms"])
def test_preconditioned_hessian_is_p_inv_sqrt_h_p_inv_sqrt(name):
    model = tiny_mlp()
    x, y = tiny_data()
    factory = {
        "adamw": torch.optim.AdamW,
        "adamnx": AdamNX,
        "ada2ms": lambda ps, lr: Ada2MS(ps, lr=lr, alpha=0.4),
    }[name]
    opt = factory(model.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    h = dense_hessian(model, F.cross_entropy, x, y)
    p = torch.cat([reference_denominator(name, opt, q).flatten() for q in model.parameters()])
    expected = h / torch.outer(p.sqrt(), p.sqrt())
    op = preconditioned_hessian(model, F.cross_entropy, batches(x, y), opt)
    torch.testing.assert_close(op.dense(), expected, rtol=1e-9, atol=1e-12)
    # the same through curvature_operator, and on one layer only
    sub = curvature_operator(model, F.cross_entropy, batches(x, y), preconditioner=opt, params="2")
    k = sub.size
    torch.testing.assert_close(sub.dense(), expected[-k:, -k:], rtol=1e-9, atol=1e-12)


def test_preconditioner_needs_optimizer_state():
    model = tiny_mlp()
    x, y = tiny_data()
    with pytest.raises(ValueError, match="optimizer"):
        preconditioned_hessian(
            model, F.cross_entropy, batches(x, y), torch.optim.AdamW(model.parameters())
        )


# -- Lanczos and power iteration -----------------------------------------------------------------
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_lanczos_eigenpairs_of_a_dense_matrix(which):
    lam = np.concatenate([np.linspace(-9.0, -4.0, 4), np.linspace(-1.0, 3.0, 52), [5.0, 6.5]])
    a, q = symmetric(lam, seed=3)  # column j of q is the eigenvector of lam[j]
    res = lanczos(DenseOperator(a), k=3, which=which, tol=1e-10, seed=0)
    key = {"LA": -lam, "SA": lam, "LM": -np.abs(lam)}[which]
    wanted = np.argsort(key)[:3]
    np.testing.assert_allclose(res.values, lam[wanted], rtol=0, atol=1e-10)
    assert res.converged and res.matvecs < len(lam)
    cosines = (q[:, wanted] * res.vectors).sum(dim=0).abs()
    assert bool((cosines > 1 - 1e-9).all()), cosines
    explicit = torch.linalg.vector_norm(
        a @ res.vectors - res.vectors * torch.as_tensor(res.values), dim=0
    ).numpy()
    np.testing.assert_allclose(res.residuals, explicit, rtol=1e-2, atol=1e-13)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_lanczos_on_the_hessian_of_a_tiny_model(problem, hessian_op, which):
    h = problem[3]
    exact = torch.linalg.eigvalsh(h).numpy()
    key = {"LA": -exact, "SA": exact, "LM": -np.abs(exact)}[which]
    expected = exact[np.argsort(key)][:3]
    res = lanczos(hessian_op, k=3, which=which, tol=1e-9)
    np.testing.assert_allclose(res.values, expected, rtol=1e-8, atol=1e-10)
    # each reported residual bounds the distance to the nearest true eigenvalue
    distance = np.abs(res.values[:, None] - exact[None, :]).min(axis=1)
    assert np.all(distance <= res.residuals + 1e-12)


def test_residuals_bound_the_error_before_convergence():
    lam = np.linspace(0.0, 1.0, 200) ** 3 * 10
    a, _ = symmetric(lam, seed=1)
    res = lanczos(DenseOperator(a), k=4, tol=1e-14, max_matvecs=12)
    assert not res.converged and res.matvecs == 12
    distance = np.abs(res.values[:, None] - lam[None, :]).min(axis=1)
    assert np.all(distance <= res.residuals)
    assert np.abs(res.values - np.sort(lam)[::-1][:4]).max() > 1e-2  # far from converged
    assert res.history.shape == (12, 4)


def test_lanczos_restarts_after_an_invariant_subspace():
    lam = np.arange(20.0)
    a, q = symmetric(lam, seed=2)
    v0 = q[:, 19] + q[:, 10] + q[:, 0]  # its Krylov space is 3-dimensional
    res = lanczos(DenseOperator(a), k=4, which="LA", tol=1e-10, v0=v0)
    assert res.converged and res.matvecs > 3
    np.testing.assert_allclose(res.values, [19.0, 18.0, 17.0, 16.0], atol=1e-10)
    gram = res.vectors.T @ res.vectors
    torch.testing.assert_close(gram, torch.eye(4, dtype=gram.dtype), rtol=0, atol=1e-10)


def test_full_dimension_lanczos_is_exact_and_budget_is_capped():
    lam = np.arange(1.0, 11.0)
    a, _ = symmetric(lam)
    res = lanczos(DenseOperator(a), k=10, which="SA", tol=1e-300, max_matvecs=10_000)
    assert res.matvecs == 10 and res.converged
    np.testing.assert_allclose(res.values, lam, atol=1e-10)


def test_warm_start_from_an_eigenvector_costs_few_products():
    lam = np.linspace(0.0, 5.0, 100)
    a, q = symmetric(lam, seed=4)
    cold = lanczos(DenseOperator(a), tol=1e-8)
    warm = lanczos(DenseOperator(a), tol=1e-8, v0=q[:, -1] + 1e-9 * q[:, 0])
    assert warm.matvecs <= 3 < cold.matvecs
    assert abs(warm.values[0] - 5.0) < 1e-10


def test_power_iteration_finds_the_largest_magnitude_eigenvalue():
    lam = np.concatenate([[-4.0], np.linspace(-1, 2, 40)])
    a, _ = symmetric(lam, seed=5)
    res = power_iteration(DenseOperator(a), tol=1e-8, max_matvecs=500)
    assert res.converged and abs(res.values[0] + 4.0) <= res.residuals[0] + 1e-12
    assert res.history.shape == (res.matvecs, 1)
    # it needs far more products than Lanczos for the same tolerance
    assert lanczos(DenseOperator(a), which="LM", tol=1e-8).matvecs * 2 < res.matvecs
    loose = power_iteration(DenseOperator(a), tol=1e-3, criterion="relative_change")
    assert loose.converged and loose.matvecs < res.matvecs


# -- trace -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dense_h(problem):
    return DenseOperator(problem[3])


@pytest.mark.parametrize("estimator", [hutchinson, hutchpp])
def test_trace_estimators_are_unbiased_with_calibrated_errors(dense_h, estimator):
    exact = float(torch.trace(dense_h.matrix))
    results = [estimator(dense_h, matvecs=30, seed=s) for s in range(300)]
    estimates = np.array([r.estimate for r in results])
    stderrs = np.array([r.stderr for r in results])
    assert abs(estimates.mean() - exact) <= 4 * estimates.std() / np.sqrt(len(results))
    assert np.mean(np.abs(estimates - exact) <= 3 * stderrs) >= 0.9
    # the reported stderr is the spread over seeds, on average (within 35%)
    assert 0.65 < np.sqrt(np.mean(stderrs**2)) / estimates.std() < 1.35
    assert all(r.matvecs == 30 for r in results)


def test_hutchpp_has_a_smaller_error_than_hutchinson_when_a_few_eigenvalues_dominate():
    lam = np.concatenate([[100.0, 60.0, 30.0, 20.0], np.linspace(0.0, 1.0, 196)])
    op = DenseOperator(symmetric(lam, seed=6)[0])
    plain = np.mean([hutchinson(op, matvecs=30, seed=s).stderr for s in range(20)])
    plus = np.mean([hutchpp(op, matvecs=30, seed=s).stderr for s in range(20)])
    assert plain > 5 * plus


def test_hutchpp_is_exact_when_the_sketch_spans_the_space():
    a, _ = symmetric(np.linspace(-1.0, 2.0, 8))
    res = hutchpp(DenseOperator(a), matvecs=30)
    assert abs(res.estimate - float(torch.trace(a))) < 1e-12 and res.stderr < 1e-12


# -- spectral density ------------------------------------------------------------------------------
def test_slq_density_integrates_to_one_with_the_mean_trace_over_n(dense_h):
    h = dense_h.matrix
    n = h.shape[0]
    res = slq(dense_h, lanczos_steps=15, runs=200, seed=0)
    assert abs(np.trapezoid(res.density, res.grid) - 1) < 1e-6
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, rtol=1e-12)
    means = res.run_means
    assert abs(res.mean - float(torch.trace(h)) / n) <= 4 * means.std() / np.sqrt(len(means))
    assert res.matvecs == 200 * 15


def test_slq_is_a_gauss_quadrature_of_the_spectral_measure(dense_h):
    h = dense_h.matrix
    steps = 6
    res = slq(dense_h, lanczos_steps=steps, runs=1, seed=7)
    gen = torch.Generator().manual_seed(7)  # the start slq draws first from seed 7
    z = torch.randint(0, 2, (h.shape[0],), generator=gen, dtype=torch.float64) * 2 - 1
    for power in range(2 * steps):  # exact for polynomials of degree < 2 * steps
        exact = float(z @ torch.linalg.matrix_power(h, power) @ z / (z @ z))
        quad = float((res.weights[0] * res.nodes[0] ** power).sum())
        assert abs(quad - exact) <= 1e-9 * max(1.0, abs(exact)), power
    # all n steps: the nodes are the eigenvalues
    full = slq(dense_h, lanczos_steps=h.shape[0], runs=1)
    nodes = full.nodes[0][full.weights[0] > 1e-20]
    exact = torch.linalg.eigvalsh(h).numpy()
    assert np.abs(nodes[:, None] - exact[None, :]).min(axis=1).max() < 1e-9


# -- entry points --------------------------------------------------------------------------------
def test_entry_points_on_the_tiny_model(problem):
    model, x, y, h = problem
    data = batches(x, y)
    exact = torch.linalg.eigvalsh(h).numpy()[::-1]
    top = hessian_eigenvalues(model, F.cross_entropy, data, k=2, tol=1e-9)
    np.testing.assert_allclose(top.values, exact[:2], rtol=1e-8)
    assert top.vectors.shape == (h.shape[0], 2) and top.matvecs > 0 and top.seconds > 0
    again = hessian_eigenvalues(model, F.cross_entropy, data, k=2, tol=1e-9)
    np.testing.assert_array_equal(top.values, again.values)  # same seed, same numbers

    tr = hessian_trace(model, F.cross_entropy, data, matvecs=20, seed=3)
    assert tr.matvecs == 20 and tr.method == "hutch++" and tr.stderr > 0
    assert abs(tr.estimate - float(torch.trace(h))) < 5 * tr.stderr
    assert tr.estimate == hessian_trace(model, F.cross_entropy, data, matvecs=20, seed=3).estimate
    assert tr.estimate != hessian_trace(model, F.cross_entropy, data, matvecs=20, seed=4).estimate
    plain = hessian_trace(model, F.cross_entropy, data, matvecs=20, method="hutchinson")
    assert plain.method == "hutchinson"

    dens = spectral_density(model, F.cross_entropy, data, lanczos_steps=10, runs=3, grid=200)
    assert dens.grid.shape == dens.density.shape == (200,) and dens.matvecs == 30
    assert abs(np.trapezoid(dens.density, dens.grid) - 1) < 1e-3

    power = hessian_eigenvalues(model, F.cross_entropy, data, which="LM", method="power", tol=1e-3)
    lm = exact[np.argmax(np.abs(exact))]
    assert abs(power.values[0] - lm) <= power.residuals[0] + 1e-12


def test_float32_model_gives_eigenvalues_to_float32_accuracy(problem):
    _, x, y, h = problem
    model32 = tiny_mlp(torch.float32)
    res = hessian_eigenvalues(model32, F.cross_entropy, batches(x.float(), y), k=3, tol=1e-5)
    assert res.vectors.dtype == torch.float32
    np.testing.assert_allclose(res.values, torch.linalg.eigvalsh(h).numpy()[::-1][:3], rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(problem):
    model, x, y, _ = problem
    cpu = hessian_eigenvalues(model, F.cross_entropy, batches(x, y), k=2, tol=1e-9)
    gpu = hessian_eigenvalues(tiny_mlp().cuda(), F.cross_entropy, batches(x, y), k=2, tol=1e-9)
    assert gpu.vectors.is_cuda
    np.testing.assert_allclose(gpu.values, cpu.values, rtol=1e-8)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, k=44), "k"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, k=0), "k"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, which="BE"), "which"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, tol=0.0), "tol"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, max_matvecs=0), "max_matvecs"),
        (
            lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, k=3, max_matvecs=2),
            "max_matvecs",
        ),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, seed=-1), "seed"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, method="arnoldi"), "method"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, k=2, method="power"), "power"),
        (lambda m, d: hessian_trace(m, F.cross_entropy, d, matvecs=0), "matvecs"),
        (lambda m, d: hessian_trace(m, F.cross_entropy, d, matvecs=3), "matvecs"),
        (
            lambda m, d: hessian_trace(m, F.cross_entropy, d, method="hutchinson", matvecs=1),
            "matvecs",
        ),
        (lambda m, d: hessian_trace(m, F.cross_entropy, d, method="exact"), "method"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, lanczos_steps=0), "lanczos_steps"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, runs=0), "runs"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, sigma=-1.0), "sigma"),
        (lambda m, d: curvature_operator(m, F.cross_entropy, d, matrix="fisher"), "matrix"),
        (lambda m, d: curvature_operator(m, F.cross_entropy, d, backend="jax"), "backend"),
        (lambda m, d: curvature_operator(m, F.cross_entropy, []), "data"),
        (lambda m, d: curvature_operator(m, F.cross_entropy, [(d[0][0][:0], d[0][1][:0])]), "data"),
        (lambda m, d: curvature_operator(m, F.cross_entropy, d[0]), "data"),
        (lambda m, d: curvature_operator(m, "cross_entropy", d), "loss_fn"),
        (lambda m, d: lanczos(curvature_operator(m, F.cross_entropy, d), v0=torch.zeros(43)), "v0"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(problem, call, match):
    model, x, y, _ = problem
    with pytest.raises(ValueError, match=match):
        call(model, batches(x, y))


# -- sharpness during training ---------------------------------------------------------------------
def tiny_task():
    from analysis_lib.problems.tasks import Task

    x, y = tiny_data()
    return Task(
        "tiny",
        x,
        y,
        x[:4],
        y[:4],
        x[:4],
        y[:4],
        model_factory=lambda: tiny_mlp(),
        loss="cross_entropy",
        num_classes=3,
    )


def test_stability_thresholds_follow_the_optimizer():
    p = [torch.zeros(2, requires_grad=True)]
    assert stability_thresholds(torch.optim.SGD(p, lr=0.1)) == {"lr": 0.1, "threshold_gd": 20.0}
    heavy = stability_thresholds(torch.optim.SGD(p, lr=0.1, momentum=0.9))
    assert heavy["threshold_momentum"] == pytest.approx(38.0) and "threshold_adam" not in heavy
    nesterov = stability_thresholds(torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True))
    assert nesterov["threshold_momentum"] == pytest.approx(3.8 / (2.8 * 0.1))
    adaptive = (torch.optim.Adam, torch.optim.AdamW, AdamNX, Ada2MS)
    for opt in (make(p, lr=0.01) for make in adaptive):
        assert stability_thresholds(opt)["threshold_adam"] == pytest.approx(3800.0)


@pytest.mark.slow
def test_sharpness_callback_tracks_the_top_eigenvalue_with_warm_starts():
    from analysis_lib.training import train

    task = tiny_task()
    data = task.data("train", batch_size=5)  # ragged: 5, 5, 3
    cb = SharpnessCallback(task.loss_fn, data, every=4, tol=1e-9)
    run = train(
        task,
        "sgd",
        steps=20,
        lr=0.5,
        callbacks=[cb],
        device="cpu",
        progress=False,
        lr_schedule=lambda t: 1.0 if t <= 10 else 0.5,
    )
    m = run.measurements
    assert list(m["step"]) == [4, 8, 12, 16, 20]
    exact = torch.linalg.eigvalsh(dense_hessian(run.model, task.loss_fn, *task.split("train")))
    assert m["sharpness"].iloc[-1] == pytest.approx(float(exact[-1]), rel=1e-8)
    assert (m["sharpness_residual"] < 1e-6).all()
    assert m["sharpness_matvecs"].iloc[-1] < m["sharpness_matvecs"].iloc[0]  # warm start
    np.testing.assert_allclose(m["threshold_gd"], 2 / m["lr"])
    assert list(m["lr"]) == [0.5, 0.5, 0.25, 0.25, 0.25]
    assert "preconditioned_sharpness" not in m


def test_sharpness_callback_measures_the_preconditioned_sharpness_of_adam():
    from analysis_lib.training import train

    task = tiny_task()
    cb = SharpnessCallback(task.loss_fn, task.data("train"), every=5, tol=1e-9)
    run = train(task, "adamw", steps=10, lr=0.05, callbacks=[cb], device="cpu", progress=False)
    opt, model = run.optimizer, run.model
    h = dense_hessian(model, task.loss_fn, *task.split("train"))
    p = torch.cat([reference_denominator("adamw", opt, q).flatten() for q in model.parameters()])
    expected = torch.linalg.eigvalsh(h / torch.outer(p.sqrt(), p.sqrt()))[-1]
    last = run.measurements.iloc[-1]
    assert last["preconditioned_sharpness"] == pytest.approx(float(expected), rel=1e-8)
    assert last["threshold_adam"] == pytest.approx(38 / 0.05)
    with pytest.raises(ValueError, match="every"):
        SharpnessCallback(task.loss_fn, task.data("train"), every=0)
    with pytest.raises(ValueError, match="data"):
        SharpnessCallback(task.loss_fn, [], every=1)


def test_dense_hessian_helper_matches_the_reference(problem):
    from analysis_lib.curvature import dense_hessian as library_dense

    model, x, y, h = problem
    torch.testing.assert_close(
        library_dense(model, F.cross_entropy, batches(x, y)), h, rtol=1e-10, atol=1e-12
    )


def test_progress_bar_follows_tqdm_disable(monkeypatch):
    from analysis_lib import progress_bar

    def _bar(total, desc, progress):
        return progress_bar(total=total, desc=desc, progress=progress)

    monkeypatch.setenv("TQDM_DISABLE", "1")  # the one convention: it silences every bar
    assert _bar(10, "x", None).disable and _bar(10, "x", True).disable
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not _bar(10, "x", None).disable and _bar(10, "x", False).disable


# -- reduced precision and non-finite values -------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_is_refused_and_a_float32_copy_is_right(problem, dtype):
    import copy

    _, x, y, h = problem
    low = tiny_mlp(dtype)
    data = batches(x.to(dtype), y)
    with pytest.raises(ValueError, match=r"model.*float32 or float64 only.*float32 copy"):
        hessian_eigenvalues(low, F.cross_entropy, data, k=2)
    with pytest.raises(ValueError, match="float32 or float64"):
        lanczos(DenseOperator(h.to(dtype)))
    # what the message says to do: a float32 copy of the model and of the inputs
    copy32 = copy.deepcopy(low).float()
    res = hessian_eigenvalues(copy32, F.cross_entropy, batches(x.to(dtype).float(), y), k=3)
    assert next(low.parameters()).dtype == dtype  # the model itself is untouched
    # the reference: the dense float64 Hessian at the same (rounded) parameters and inputs
    ref_model = copy.deepcopy(low).double()
    ref = dense_hessian(ref_model, F.cross_entropy, x.to(dtype).double(), y)
    want = torch.linalg.eigvalsh(ref).numpy()[::-1][:3]
    assert res.converged
    err = np.abs(res.values - want)
    assert np.all(err <= res.residuals + 1e-5), (err, res.residuals)  # the residuals bound it
    np.testing.assert_allclose(res.values, want, rtol=1e-4)


def test_residuals_bound_the_error_in_float32(problem):
    _, x, y, h = problem
    res = hessian_eigenvalues(tiny_mlp(torch.float32), F.cross_entropy, batches(x.float(), y), k=4)
    want = torch.linalg.eigvalsh(h).numpy()[::-1][:4]
    assert np.all(np.abs(res.values - want) <= res.residuals + 1e-6)


class _NanOutputs(nn.Module):
    """A linear layer whose outputs are multiplied by NaN: the loss itself is NaN."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3).double()

    def forward(self, x):
        return self.lin(x) * float("nan")


@pytest.mark.parametrize(
    "setup, match",
    [
        ("param", r"parameter '0\.weight' holds NaN"),
        ("inputs", "inputs of batch 1 hold NaN"),
        ("loss", "the loss over the data is nan"),
    ],
)
@pytest.mark.parametrize("algorithm", ["lanczos", "power", "hutchinson", "hutch++", "slq"])
def test_non_finite_products_raise_an_error_saying_why(problem, setup, match, algorithm):
    from analysis_lib.curvature import NonFiniteError

    _, x, y, _ = problem
    model = tiny_mlp()
    x = x.clone()
    if setup == "param":
        with torch.no_grad():
            model[0].weight[1, 2] = float("nan")
    elif setup == "inputs":
        x[7, 1] = float("inf")
    else:
        model = _NanOutputs()
    data = batches(x, y)
    calls = {
        "lanczos": lambda: hessian_eigenvalues(model, F.cross_entropy, data, k=2),
        "power": lambda: hessian_eigenvalues(
            model, F.cross_entropy, data, which="LM", method="power"
        ),
        "hutchinson": lambda: hessian_trace(model, F.cross_entropy, data, method="hutchinson"),
        "hutch++": lambda: hessian_trace(model, F.cross_entropy, data),
        "slq": lambda: spectral_density(model, F.cross_entropy, data, lanczos_steps=5, runs=2),
    }
    with pytest.raises(NonFiniteError, match=match) as info:
        calls[algorithm]()
    assert "not finite" in str(info.value) and "must not contain" not in str(info.value)


def test_a_non_finite_dense_matrix_is_named():
    from analysis_lib.curvature import NonFiniteError

    a, _ = symmetric([3.0, 2.0, 1.0])
    a[0, 1] = a[1, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="matrix holds NaN"):
        lanczos(DenseOperator(a))


def test_an_operator_returning_a_wrong_shape_is_named():
    class Bad(DenseOperator):
        def _matvec(self, v):
            return v[:-1]

    with pytest.raises(ValueError, match=r"Bad._matvec returned \(2,\)"):
        lanczos(Bad(torch.eye(3, dtype=torch.float64)))


def test_sharpness_callback_records_nan_when_the_hessian_is_not_finite():
    model = tiny_mlp()
    x, y = tiny_data()
    cb = SharpnessCallback(F.cross_entropy, batches(x, y), every=1, max_matvecs=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert np.isfinite(cb(1, model, opt)["sharpness"])
    with torch.no_grad():
        model[2].bias[0] = float("inf")
    out = cb(2, model, opt)
    assert np.isnan(out["sharpness"]) and np.isnan(out["sharpness_residual"])
    assert "sharpness" not in cb.state_dict()["vectors"]  # no warm start from garbage


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, d: spectral_density(m, F.cross_entropy, d, sigma=float("inf")), "sigma"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, sigma=float("nan")), "sigma"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, sigma=True), "sigma"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, sigma="0.1"), "sigma"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, grid=[0.0, np.nan]), "grid"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, grid=np.zeros((2, 2))), "grid"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, grid=1.5), "grid"),
        (lambda m, d: spectral_density(m, F.cross_entropy, d, grid=True), "grid"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, tol=float("inf")), "tol"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, tol=float("nan")), "tol"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, k=True), "k"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, k=2.0), "k"),
        (
            lambda m, d: hessian_eigenvalues(
                m, F.cross_entropy, d, k=True, which="LM", method="power"
            ),
            "k",
        ),
        (lambda m, d: hessian_trace(m, F.cross_entropy, d, seed=1.0), "seed"),
        (lambda m, d: SharpnessCallback(F.cross_entropy, d, tol=float("inf")), "tol"),
        (lambda m, d: SharpnessCallback(F.cross_entropy, d, tol=np.nan), "tol"),
        (lambda m, d: SharpnessCallback(F.cross_entropy, d, backend="jax"), "backend"),
        (
            lambda m, d: SharpnessCallback(F.cross_entropy, d, preconditioned="yes"),
            "preconditioned",
        ),
        (lambda m, d: SharpnessCallback(F.cross_entropy, d[0]), "data"),
        (lambda m, d: SharpnessCallback(F.cross_entropy, [d[0][0]]), "data"),
        (lambda m, d: stability_thresholds(torch.optim.SGD(m.parameters(), lr=0.1), 1), "group"),
        (lambda m, d: stability_thresholds("sgd"), "optimizer"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, None), "data"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, 5), "data"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, [(d[0][0], d[0][1][:4])]), "data"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, v0=[1.0] * 43), "v0"),
        (lambda m, d: hessian_eigenvalues(m, F.cross_entropy, d, params=0), "params"),
        (lambda m, d: hessian_eigenvalues(None, F.cross_entropy, d), "model"),
        (
            lambda m, d: hessian_eigenvalues(
                m, lambda o, t: F.cross_entropy(o, t, reduction="none"), d
            ),
            "loss_fn",
        ),
        (lambda m, d: hessian_trace(m, lambda o, t: 1.0, d), "loss_fn"),
    ],
)
def test_non_finite_and_ill_typed_numbers_are_refused(problem, call, match):
    model, x, y, _ = problem
    with pytest.raises(ValueError, match=f"Invalid {match}"):
        call(model, batches(x, y))


def test_numpy_integers_and_floats_are_accepted_everywhere(problem):
    model, x, y, _ = problem
    d = batches(x, y)
    a = hessian_eigenvalues(
        model, F.cross_entropy, d, k=np.int64(2), seed=np.int32(3), tol=np.float32(1e-6)
    )
    b = hessian_eigenvalues(model, F.cross_entropy, d, k=2, seed=3, tol=1e-6)
    np.testing.assert_array_equal(a.values, b.values)
    t = hessian_trace(model, F.cross_entropy, d, matvecs=np.int16(9), seed=np.uint8(1))
    assert t.estimate == hessian_trace(model, F.cross_entropy, d, matvecs=9, seed=1).estimate
    s = spectral_density(
        model,
        F.cross_entropy,
        d,
        lanczos_steps=np.int64(5),
        runs=np.int64(2),
        sigma=np.float64(0.1),
        grid=np.int64(7),
    )
    assert s.grid.shape == (7,) and s.sigma == 0.1
    cb = SharpnessCallback(
        F.cross_entropy, d, every=np.int64(2), tol=np.float64(1e-3), seed=np.int64(1)
    )
    assert cb.every == 2
    from analysis_lib.landscape import eigenvector_directions

    plane = eigenvector_directions(model, F.cross_entropy, d, k=np.int64(2))
    np.testing.assert_allclose(plane.eigenvalues, a.values, rtol=1e-6)


def test_the_algorithms_are_units_without_private_imports():
    """Each module of ``analysis_lib.curvature`` says what it owns, stays short and imports no
    private name of another module; the package exports the algorithms' public names."""
    import ast
    import importlib
    from pathlib import Path

    import analysis_lib.curvature as curvature

    folder = Path(curvature.__file__).parent
    for path in sorted(folder.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        assert ast.get_docstring(tree), f"{path.name} has no docstring"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
    for unit in ("krylov", "power", "trace", "density"):
        module = importlib.import_module(f"analysis_lib.curvature.{unit}")
        for name in module.__all__:
            assert getattr(module, name).__module__ == module.__name__, name
    algorithms = {
        "DensityResult", "EigenResult", "NonFiniteError", "TraceResult", "check_symmetry",
        "default_max_matvecs", "gaussian_density", "hutchinson", "hutchpp", "lanczos",
        "power_iteration", "slq",
    }  # fmt: skip
    assert algorithms <= set(curvature.__all__)
    assert curvature.lanczos.__module__ == "analysis_lib.curvature.krylov"  # the function
