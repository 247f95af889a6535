"""Numbers that overflow or are not numbers (issue 21, section 4): sharpness radii not
representable in the model's dtype, measures whose every perturbed loss is not finite, NaN
inputs and losses named as such, reduced-precision models refused, Lanczos on a non-symmetric
operator, NaN in a surface direction or a sample, a cache entry path that is a directory."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import analysis_lib
from analysis_lib import io
from analysis_lib.curvature import (
    DenseOperator,
    LinearOperator,
    NonFiniteError,
    lanczos,
    power_iteration,
    slq,
)
from analysis_lib.landscape import surface_1d, surface_2d
from analysis_lib.sharpness import (
    average_sharpness,
    epsilon_sharpness,
    sigma_flatness,
    worst_case_sharpness,
)

MEASURES = {
    "worst_case": lambda m, d, r: worst_case_sharpness(m, F.cross_entropy, d, r, steps=2),
    "average": lambda m, d, r: average_sharpness(m, F.cross_entropy, d, r, samples=4),
    "epsilon": lambda m, d, r: epsilon_sharpness(m, F.cross_entropy, d, r, maxiter=2),
    "sigma": lambda m, d, r: sigma_flatness(m, F.cross_entropy, d, sigma_init=r, samples=2),
}


def mlp(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def data(dtype=torch.float32, n=24, batches=2):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=gen).to(dtype)
    y = torch.randint(0, 3, (n,), generator=gen)
    step = n // batches
    return [(x[i : i + step], y[i : i + step]) for i in range(0, n, step)]


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, snap):
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k]) or (v.isnan() == snap[k].isnan()).all(), k


# -- sharpness: radii that overflow, losses that are not finite ---------------------------------
def test_non_finite_error_is_one_value_error_exported_by_the_package():
    from analysis_lib import _checks
    from analysis_lib.curvature import _common as algorithms

    assert analysis_lib.NonFiniteError is NonFiniteError is _checks.NonFiniteError
    assert algorithms.NonFiniteError is NonFiniteError
    assert issubclass(NonFiniteError, ValueError)


@pytest.mark.parametrize("name", ["worst_case", "average", "epsilon", "sigma"])
@pytest.mark.parametrize("radius", [1e39, 5e38, 1e-46])
def test_a_radius_not_representable_in_float32_is_refused_before_any_work(name, radius):
    model = mlp()
    snap = snapshot(model)
    calls = []

    def loss_fn(out, y):  # counts evaluations: none may happen
        calls.append(1)
        return F.cross_entropy(out, y)

    call = {
        "worst_case": lambda: worst_case_sharpness(model, loss_fn, data(), radius),
        "average": lambda: average_sharpness(model, loss_fn, data(), radius),
        "epsilon": lambda: epsilon_sharpness(model, loss_fn, data(), radius),
        "sigma": lambda: sigma_flatness(model, loss_fn, data(), sigma_init=radius),
    }[name]
    with pytest.raises(ValueError, match=r"Invalid (rho|epsilon|sigma_init): .*float32"):
        call()
    assert calls == []
    assert_unchanged(model, snap)


def test_the_same_radius_is_fine_in_float64():
    res = average_sharpness(mlp(torch.float64), F.cross_entropy, data(torch.float64), 1e39)
    # representable: the perturbed losses are finite (huge) or the measure says why not
    assert math.isfinite(res.value)


def test_a_default_step_size_that_overflows_is_named():
    with pytest.raises(ValueError, match=r"Invalid step_size: 6e\+38 \(2 rho by default\)"):
        worst_case_sharpness(mlp(), F.cross_entropy, data(), 3e38)


@pytest.mark.parametrize("name", ["worst_case", "average", "epsilon"])
def test_perturbations_whose_losses_overflow_raise_non_finite_error(name):
    model = mlp()
    snap = snapshot(model)
    calls = {
        "worst_case": lambda: worst_case_sharpness(
            model, F.cross_entropy, data(), 3e38, norm="linf", step_size=1e38, steps=2
        ),
        "average": lambda: MEASURES[name](model, data(), 1e37),
        "epsilon": lambda: MEASURES[name](model, data(), 3e37),
    }
    with pytest.raises(NonFiniteError, match=r"perturbed loss(es)? .*not finite"):
        calls[name]()
    assert_unchanged(model, snap)


class NanAway(nn.Module):
    """A finite loss at its parameters (zero) and NaN at every other point."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        out = self.w.expand(x.shape[0], -1) + 0 * x[:, :3]
        return torch.where((self.w != 0).any(), out * math.nan, out)


@pytest.mark.parametrize("name", ["worst_case", "average", "epsilon", "sigma"])
def test_a_loss_that_is_nan_everywhere_but_at_the_start_raises(name):
    with pytest.raises(NonFiniteError, match=r"^\w+: every perturbed loss is not finite"):
        MEASURES[name](NanAway(), data(), 0.01)


def test_m_sharpness_names_the_batches_without_a_finite_loss():
    with pytest.raises(NonFiniteError, match=r"m-sharpness batches \[0, 1, 2\]"):
        worst_case_sharpness(NanAway(), F.cross_entropy, data(), 0.01, m=8, steps=1)


@pytest.mark.parametrize("name", ["worst_case", "average", "epsilon", "sigma"])
@pytest.mark.parametrize("where", ["inputs", "targets"])
def test_nan_inputs_are_named_as_such(name, where):
    batches = data(torch.float64)
    x, y = batches[1]
    if where == "inputs":
        x = x.clone()
        x[5, 2] = math.nan
        batches[1] = (x, y)
        loss_model = mlp(torch.float64)
    else:  # regression targets
        y = torch.randn(len(x), 3, dtype=torch.float64)
        y[5, 0] = math.nan
        batches = [(batches[0][0], torch.zeros(len(batches[0][0]), 3, dtype=torch.float64))]
        batches.append((x, y))
        loss_model = mlp(torch.float64)
    fn = F.cross_entropy if where == "inputs" else F.mse_loss
    call = {
        "worst_case": worst_case_sharpness,
        "average": average_sharpness,
        "epsilon": epsilon_sharpness,
        "sigma": sigma_flatness,
    }[name]
    with pytest.raises(
        NonFiniteError, match=rf"Invalid data: the {where} of batch 1 hold NaN"
    ) as e:
        call(loss_model, fn, batches, 0.01)
    assert "sample 5" in str(e.value) and "Invalid model" not in str(e.value)


def test_a_nan_loss_is_named_as_such():
    def nan_loss(out, y):
        return F.cross_entropy(out, y) * math.nan

    with pytest.raises(
        NonFiniteError, match="loss over data at the model's parameters is nan"
    ) as e:
        average_sharpness(mlp(), nan_loss, data(), 0.01)
    assert "Invalid model" not in str(e.value) and "loss function itself" in str(e.value)


def test_infinite_inputs_are_named_when_the_loss_is_not_finite():
    batches = data()
    batches[0][0][3, 1] = math.inf
    linear = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(NonFiniteError, match="inputs of batch 0 hold NaN or infinite values"):
        worst_case_sharpness(linear, F.cross_entropy, batches, 0.01)


# -- sharpness: reduced precision ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["worst_case", "average", "epsilon", "sigma"])
def test_reduced_precision_is_refused_as_the_curvature_probes_do(dtype, name):
    model = mlp(dtype)
    snap = snapshot(model)
    with pytest.raises(
        ValueError, match=r"Invalid model: dtype .*sharpness is computed in float32 or float64 only"
    ) as e:
        MEASURES[name](model, data(dtype), 0.01)
    assert "float32 copy" in str(e.value)
    assert_unchanged(model, snap)
    # what the message says to do works and matches float32
    copy32 = copy.deepcopy(model).float()
    assert math.isfinite(
        MEASURES[name](copy32, [(x.float(), y) for x, y in data(dtype)], 0.01).value
    )


# -- Lanczos and a non-symmetric operator ---------------------------------------------------------
def _nonsymmetric(n=8, dtype=torch.float64):
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return (a + a.T + 0.5 * torch.triu(a, 1)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("algorithm", [lanczos, power_iteration, slq])
def test_a_non_symmetric_dense_matrix_is_refused(dtype, algorithm):
    op = DenseOperator(_nonsymmetric(dtype=dtype))
    with pytest.raises(ValueError, match=r"Invalid op: DenseOperator.* is not symmetric"):
        algorithm(op)
    assert op.matvecs == 0  # refused before any product


def test_a_symmetric_matrix_with_rounding_is_accepted_in_float32():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 20, generator=gen)
    m = x.T @ x  # symmetric up to the rounding of the product
    res = lanczos(DenseOperator(m), k=2, tol=1e-4)
    want = torch.linalg.eigvalsh(m.double()).numpy()[::-1][:2]
    assert res.converged
    assert abs(res.values - want).max() <= 1e-3 * want[0]


class Matrix(LinearOperator):
    """A general operator (no exact symmetry check) backed by a matrix."""

    def __init__(self, m):
        super().__init__(m.shape[0], m.dtype, m.device)
        self.m = m

    def _matvec(self, v):
        return self.m @ v


def test_check_symmetric_true_checks_any_operator_with_two_products():
    bad = Matrix(_nonsymmetric())
    with pytest.raises(ValueError, match=r"not symmetric \(for random u, v"):
        lanczos(bad, check_symmetric=True)
    assert bad.matvecs == 2
    a = _nonsymmetric()
    good = Matrix(a + a.T)
    plain = lanczos(Matrix(a + a.T), k=2, seed=5)
    checked = lanczos(good, k=2, seed=5, check_symmetric=True)
    assert (plain.values == checked.values).all()  # the check leaves the draws alone
    assert good.matvecs == checked.matvecs + 2
    assert lanczos(DenseOperator(_nonsymmetric()), check_symmetric=False).matvecs > 0
    with pytest.raises(ValueError, match="Invalid check_symmetric: 'yes'"):
        lanczos(good, check_symmetric="yes")


# -- surfaces ----------------------------------------------------------------------------------------
def _directions(model):
    gen = torch.Generator().manual_seed(2)
    return [
        {k: torch.randn(p.shape, generator=gen) for k, p in model.named_parameters()}
        for _ in range(2)
    ]


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_direction_is_refused_naming_it(which, bad):
    model = mlp()
    d = _directions(model)
    d[which]["2.weight"][1, 4] = bad
    calls = []

    def loss_fn(out, y):
        calls.append(1)
        return F.cross_entropy(out, y)

    with pytest.raises(ValueError, match=rf"Invalid d{which + 1}\['2\.weight'\]: .*\(1, 4\)"):
        surface_2d(model, loss_fn, data(), d[0], d[1], [-1.0, 0.0, 1.0], [0.0, 1.0])
    assert calls == []


@pytest.mark.parametrize("where, batch", [("inputs", 1), ("targets", 0)])
def test_a_nan_sample_is_refused_naming_the_batch(where, batch):
    model = mlp()
    batches = [(x, torch.randn(len(x), 3)) for x, _ in data(batches=3)]
    x, y = batches[batch]
    t = (x if where == "inputs" else y).clone()
    t[2, 0] = math.nan
    batches[batch] = (t, y) if where == "inputs" else (x, t)
    with pytest.raises(ValueError, match=rf"Invalid data: the {where} of batch {batch} hold NaN"):
        surface_1d(model, F.mse_loss, batches, _directions(model)[0], [0.0, 1.0])


def test_a_cache_entry_path_that_is_a_directory_is_named_before_the_grid(cache_dir):
    model = mlp()
    d = _directions(model)
    calls = []

    def loss_fn(out, y):
        calls.append(1)
        return F.cross_entropy(out, y)

    grid = surface_1d(model, loss_fn, data(), d[0], [0.0, 1.0], cache="probe")
    (entry,) = cache_dir.glob("probe-*.npz")
    entry.unlink()
    entry.mkdir()  # the entry's path is now a directory
    calls.clear()
    with pytest.raises(ValueError, match=rf"Invalid cache entry: .*{entry.name} is a directory"):
        surface_1d(model, loss_fn, data(), d[0], [0.0, 1.0], cache="probe")
    assert calls == []
    entry.rmdir()
    partial = entry.with_name(entry.stem + ".partial.npz")
    partial.mkdir()
    with pytest.raises(ValueError, match=rf"Invalid partial file: .*{partial.name} is a directory"):
        surface_1d(model, loss_fn, data(), d[0], [0.0, 1.0], cache="probe")
    assert calls == []
    assert grid.loss.shape == (2,)


def test_io_cached_names_a_directory_entry_before_computing(cache_dir):
    config = {"a": 1}
    io.cache_path("thing", config).mkdir(parents=True)
    computed = []
    with pytest.raises(ValueError, match=r"Invalid cache entry: .* is a directory"):
        io.cached("thing", config, lambda: computed.append(1) or {"x": [1.0]})
    assert computed == []
