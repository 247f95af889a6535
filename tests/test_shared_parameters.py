"""Models whose parameters are reached by two names: a module used in two places of the module
tree, and one weight tied between two layers. Every probe must leave such a model as it found
it (the same ``nn.Parameter`` objects in every module, bit-identical values, still trained by
an optimizer that holds them) and compute the right numbers for it, checked against functions
of the shared tensors written out by hand."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from analysis_lib import curvature, landscape, sharpness
from analysis_lib._evaluation import ModelCall, shares_tensors
from analysis_lib.curvature import SharpnessCallback
from analysis_lib.problems.tasks import Task
from analysis_lib.training import train


def reused_model() -> nn.Sequential:
    """One ``nn.Linear`` applied twice: its tensors are named ``0.*`` only, and the module
    is reached as ``0`` and ``2``."""
    hidden = nn.Linear(4, 4)
    return nn.Sequential(hidden, nn.Tanh(), hidden, nn.Tanh(), nn.Linear(4, 3)).double()


class TiedModel(nn.Module):
    """Two layers holding one weight (``b.weight is a.weight``), each with its own bias."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.b(torch.tanh(self.a(x)))))


def tied_model() -> nn.Module:
    return TiedModel().double()


def tied_sequential() -> nn.Sequential:
    """The tied model as an ``nn.Sequential`` that starts with a linear layer (the shape the
    surfaces' first-layer path is built for)."""
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    return nn.Sequential(a, nn.Tanh(), b, nn.Tanh(), nn.Linear(4, 3)).double()


def reused_by_hand(p, x):
    """The reused model's outputs as a function of its three distinct tensors written out."""
    w, b, wo, bo = p
    h = torch.tanh(x @ w.T + b)
    h = torch.tanh(h @ w.T + b)
    return h @ wo.T + bo


def tied_by_hand(p, x):
    w, ba, bb, wo, bo = p
    h = torch.tanh(x @ w.T + ba)
    h = torch.tanh(h @ w.T + bb)
    return h @ wo.T + bo


CASES = {
    "reused": (reused_model, reused_by_hand),
    "tied": (tied_model, tied_by_hand),
    "tied_sequential": (tied_sequential, tied_by_hand),
}


def make(case: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return CASES[case][0]()


def data(n: int = 24, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[: n // 2], y[: n // 2]), (x[n // 2 :], y[n // 2 :])]


def loss_by_hand(case: str, p, batches) -> torch.Tensor:
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    return F.cross_entropy(CASES[case][1](p, x), y)


def snapshot(model: nn.Module):
    """Every place that holds a tensor (one attribute of one module, by every path that
    reaches it): the object there and a copy of its value."""
    places = []
    for path, module in model.named_modules(remove_duplicate=False):
        for attr, t in [*module._parameters.items(), *module._buffers.items()]:
            if t is not None:
                places.append((f"{path}.{attr}", module, attr, t, t.detach().clone()))
    return places


def assert_untouched(model: nn.Module, places) -> None:
    """The same objects at every place, still ``nn.Parameter`` where they were, with the same
    bits; the model's own forward and an optimizer step still work on every parameter."""
    for name, module, attr, obj, value in places:
        now = getattr(module, attr)
        assert now is obj, f"{name} is no longer the tensor it was"
        assert type(now) is type(obj), f"{name} became a {type(now).__name__}"
        assert torch.equal(now.detach(), value), f"{name} changed value"
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    before = [p.detach().clone() for p in params]
    x, y = data()[0]
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    for p, b in zip(params, before, strict=True):
        assert p.grad is not None and not torch.equal(p.detach(), b), "a parameter stopped moving"


def surface(model, d, first_layer):
    dirs = landscape.random_directions(model, seed=0)
    grid = np.linspace(-1, 1, 3)
    return landscape.surface_2d(
        model,
        F.cross_entropy,
        d,
        dirs.d1,
        dirs.d2,
        alphas=grid,
        betas=grid,
        first_layer=first_layer,
        progress=False,
    )


PROBES = {
    "hessian_eigenvalues": lambda m, d: curvature.hessian_eigenvalues(m, F.cross_entropy, d, k=2),
    "hessian_eigenvalues_forward": lambda m, d: curvature.hessian_eigenvalues(
        m, F.cross_entropy, d, k=1, backend="forward_over_reverse"
    ),
    "ggn_eigenvalues": lambda m, d: curvature.hessian_eigenvalues(
        m, F.cross_entropy, d, k=1, matrix="ggn"
    ),
    "hessian_trace": lambda m, d: curvature.hessian_trace(m, F.cross_entropy, d, matvecs=12),
    "spectral_density": lambda m, d: curvature.spectral_density(
        m, F.cross_entropy, d, lanczos_steps=8, runs=2
    ),
    "worst_case": lambda m, d: sharpness.worst_case_sharpness(
        m, F.cross_entropy, d, rho=0.05, steps=3
    ),
    "worst_case_adaptive_m": lambda m, d: sharpness.worst_case_sharpness(
        m, F.cross_entropy, d, rho=0.5, adaptive=True, m=6, steps=3
    ),
    "average": lambda m, d: sharpness.average_sharpness(m, F.cross_entropy, d, 0.05, samples=4),
    "epsilon": lambda m, d: sharpness.epsilon_sharpness(m, F.cross_entropy, d, maxiter=3),
    "sigma": lambda m, d: sharpness.sigma_flatness(m, F.cross_entropy, d, iterations=3),
    "surface_2d": lambda m, d: surface(m, d, "auto"),
    "surface_2d_generic": lambda m, d: surface(m, d, "off"),
    "surface_1d": lambda m, d: landscape.surface_1d(
        m,
        F.cross_entropy,
        d,
        landscape.random_direction(m, seed=0),
        np.linspace(-1, 1, 3),
        progress=False,
    ),
    "interpolate": lambda m, d: landscape.interpolate(
        m, copy.deepcopy(m), F.cross_entropy, d, np.linspace(0, 1, 3), progress=False
    ),
    "eigenvector_directions": lambda m, d: landscape.eigenvector_directions(m, F.cross_entropy, d),
}


@pytest.mark.parametrize("probe", sorted(PROBES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_probe_leaves_shared_parameters_as_they_were(case, probe):
    model = make(case)
    places = snapshot(model)
    PROBES[probe](model, data())
    assert_untouched(model, places)


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_call_places_each_shared_tensor_everywhere(case):
    model = make(case)
    assert shares_tensors(model)
    assert not shares_tensors(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)))
    x = data()[0][0]
    named = dict(model.named_parameters())
    moved = {k: v.detach() + 0.1 for k, v in named.items()}
    expected = CASES[case][1]([moved[k] for k in named], x)
    torch.testing.assert_close(ModelCall(model)(moved, (x,)), expected, rtol=0, atol=1e-12)
    # under vmap, nothing batched stays in the model
    stacked = {k: torch.stack([v, v + 0.05]) for k, v in moved.items()}
    out = torch.func.vmap(lambda p: ModelCall(model)(p, (x,)))(stacked)
    assert out.shape == (2, *expected.shape)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-12)
    model(x)  # the model's own forward still works


@pytest.mark.parametrize("case", sorted(CASES))
def test_hessian_of_shared_parameters_against_the_written_out_function(case):
    model, d = make(case), data()
    names = [n for n, _ in model.named_parameters()]
    p0 = tuple(p.detach().clone() for p in model.parameters())
    blocks = torch.autograd.functional.hessian(lambda *p: loss_by_hand(case, p, d), p0)
    sizes = [p.numel() for p in p0]
    dense = torch.cat(
        [
            torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(p0))], 1)
            for i in range(len(p0))
        ]
    )
    assert len(names) == len(p0)
    ours = curvature.dense_hessian(model, F.cross_entropy, d)
    torch.testing.assert_close(ours, dense, rtol=1e-10, atol=1e-10)
    top = curvature.hessian_eigenvalues(model, F.cross_entropy, d, k=1, tol=1e-10)
    assert abs(float(top.values[0]) - float(torch.linalg.eigvalsh(dense)[-1])) < 1e-7


@pytest.mark.parametrize("first_layer", ["auto", "off"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_surface_of_shared_parameters_against_moved_copies(case, first_layer):
    model, d = make(case), data()
    dirs = landscape.random_directions(model, seed=3)
    alphas, betas = np.array([-0.5, 0.0, 1.0]), np.array([0.0, 0.75])
    grid = landscape.surface_2d(
        model,
        F.cross_entropy,
        d,
        dirs.d1,
        dirs.d2,
        alphas=alphas,
        betas=betas,
        first_layer=first_layer,
        progress=False,
    )
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            p = [v.detach() + a * dirs.d1[k] + b * dirs.d2[k] for k, v in model.named_parameters()]
            expected = float(loss_by_hand(case, p, d))
            assert grid.loss[i, j] == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_sharpness_of_shared_parameters_against_the_written_out_function(case):
    model, d = make(case), data()
    res = sharpness.average_sharpness(model, F.cross_entropy, d, 0.05, samples=4, seed=2)
    assert np.isfinite(res.value)
    # for a small radius the worst case is the first-order one, rho |g|, with g the gradient of
    # the loss written out by hand (both uses of a shared tensor contribute to it)
    p0 = [p.detach().clone().requires_grad_() for p in model.parameters()]
    grads = torch.autograd.grad(loss_by_hand(case, p0, d), p0)
    norm = float(torch.sqrt(sum((g * g).sum() for g in grads)))
    rho = 1e-4
    wc = sharpness.worst_case_sharpness(model, F.cross_entropy, d, rho=rho)
    assert wc.value == pytest.approx(rho * norm, rel=2e-3)


def shared_task(case: str) -> Task:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(48, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (48,), generator=g)
    return Task(
        "shared",
        x,
        y,
        x[:8],
        y[:8],
        x[:8],
        y[:8],
        model_factory=lambda: CASES[case][0](),
        num_classes=3,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_sharpness_callback_inside_train_changes_nothing(case):
    task = shared_task(case)
    cb = SharpnessCallback(task.loss_fn, task.data("train"), every=2, max_matvecs=8)
    snaps = landscape.SnapshotCallback(every=3)
    settings = {"steps": 6, "batch_size": 16, "lr": 0.01, "seed": 0, "progress": False}
    probed = train(task, "adamw", callbacks=[cb, snaps], **settings)
    unprobed = train(task, "adamw", **settings)
    sharp = probed.measurements.dropna(subset=["sharpness"])
    assert list(sharp["step"]) == [2, 4, 6] and (sharp["sharpness"] > 0).all()
    for (k, a), (_, b) in zip(
        probed.model.named_parameters(), unprobed.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), f"{k}: the callback changed training"
    held = {id(p) for group in probed.optimizer.param_groups for p in group["params"]}
    for path, module, attr, obj, _ in snapshot(probed.model):
        if attr in module._parameters:
            assert type(obj) is nn.Parameter and id(obj) in held, f"{path} left the optimizer"
    first, last = snaps.snapshots[0], snaps.snapshots[-1]
    assert all(not torch.equal(first[k], last[k]) for k in first), "a parameter never moved"
    plane = landscape.pca_directions(snaps, final=probed.model)
    assert set(plane.d1) == {n for n, _ in probed.model.named_parameters()}


def test_params_select_a_reused_module_by_either_name():
    model, d = make("reused"), data()
    by_first = curvature.dense_hessian(model, F.cross_entropy, d, params="0")
    by_second = curvature.dense_hessian(model, F.cross_entropy, d, params="2")
    by_both = curvature.dense_hessian(model, F.cross_entropy, d, params=["0", "2.weight"])
    assert by_first.shape == (20, 20)
    torch.testing.assert_close(by_second, by_first, rtol=0, atol=0)
    torch.testing.assert_close(by_both, by_first, rtol=0, atol=0)
    full = curvature.dense_hessian(model, F.cross_entropy, d)
    torch.testing.assert_close(by_first, full[:20, :20], rtol=1e-12, atol=1e-12)
