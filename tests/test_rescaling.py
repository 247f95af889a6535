"""Dinh et al.'s rescaling: a ReLU network rescaled by (a, 1/a) computes the same function and
loss (MLP and CNN), its Hessian's top eigenvalue moves, adaptive sharpness does not; the original
is untouched; a tanh network is not invariant; bad inputs are named."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from analysis_lib.curvature import dense_hessian
from analysis_lib.problems.mnist1d import ResidualMLP
from analysis_lib.problems.tasks import mlp, small_cnn
from analysis_lib.rescaling import rescale_layers, weighted_layers
from analysis_lib.sharpness import worst_case_sharpness


def _mlp(activation="relu"):
    torch.manual_seed(0)
    net = mlp(5, [8, 6], 3, activation=activation).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    return net, x, y


@pytest.mark.parametrize("a", [0.1, 0.5, 3.0, 20.0])
@pytest.mark.parametrize("which", [None, ("2", "4")])
def test_relu_mlp_same_function_and_loss(a, which):
    net, x, y = _mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scaled = rescale_layers(net, a, *(which or ()))
    torch.testing.assert_close(scaled(x), net(x), rtol=1e-12, atol=1e-12)
    loss = nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(scaled(x), y)) == pytest.approx(float(loss(net(x), y)), rel=1e-12)
    first, second = which or ("0", "2")
    mods, new = dict(net.named_modules()), dict(scaled.named_modules())
    torch.testing.assert_close(new[first].weight, a * mods[first].weight)
    torch.testing.assert_close(new[second].weight, mods[second].weight / a)
    for k, v in net.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])


def test_relu_cnn_same_function():
    torch.manual_seed(1)
    net = small_cnn(1, 8, 10, 4, "relu").double()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    assert len(weighted_layers(net)) >= 3
    scaled = rescale_layers(net, 7.0)
    torch.testing.assert_close(scaled(x), net(x), rtol=1e-10, atol=1e-12)


def test_curvature_moves_adaptive_sharpness_does_not():
    net, x, y = _mlp()
    loss, data = nn.functional.cross_entropy, [(x, y)]
    scaled = rescale_layers(net, 10.0)
    top = [float(torch.linalg.eigvalsh(dense_hessian(m, loss, data))[-1]) for m in (net, scaled)]
    assert top[1] > 5 * top[0]
    kw = dict(adaptive=True, steps=5, restarts=1, seed=2)
    w = [worst_case_sharpness(m, loss, data, 0.2, **kw).value for m in (net, scaled)]
    assert w[0] > 0 and w[1] == pytest.approx(w[0], rel=1e-8)


def test_tanh_is_not_invariant():
    net, x, _ = _mlp("tanh")
    assert (rescale_layers(net, 5.0)(x) - net(x)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(a=0.0), "Invalid a"),
        (dict(a=-1.0), "Invalid a"),
        (dict(a=float("inf")), "Invalid a"),
        (dict(a=True), "Invalid a"),
        (dict(a=2.0, first="9", second="2"), "Invalid first"),
        (dict(a=2.0, first="0", second="1"), "Invalid second"),
        (dict(a=2.0, first="0", second="0"), "Invalid second"),
        (dict(a=2.0, first="0", second="4"), "Invalid second"),  # 8 outputs, 6 inputs
    ],
)
def test_bad_inputs_name_the_argument(kwargs, match):
    net, _, _ = _mlp()
    with pytest.raises(ValueError, match=match):
        rescale_layers(net, **kwargs)


def _residual(seed=0):
    torch.manual_seed(seed)
    net = ResidualMLP(7, 6, 3).double()  # 105 parameters: a dense Hessian in a second
    x = torch.randn(30, 7, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    return net, x, y


def _scaled_residual(net, a):
    """MNIST-1D's residual MLP rescaled as the README says: the first layer's weights and bias
    and the second layer's bias times a, the output weights times 1/a."""
    out = copy.deepcopy(net)
    with torch.no_grad():
        out.linear1.weight.mul_(a), out.linear1.bias.mul_(a), out.linear2.bias.mul_(a)
        out.linear3.weight.div_(a)
    return out


def test_the_residual_mlp_has_the_readmes_rescaling_and_adaptive_sharpness_keeps_it():
    net, x, y = _residual()
    loss, data = nn.functional.cross_entropy, [(x, y)]
    scaled = _scaled_residual(net, 8.0)
    torch.testing.assert_close(scaled(x), net(x), rtol=1e-12, atol=1e-12)
    kw = dict(adaptive=True, steps=5, restarts=1, seed=2)
    w = [worst_case_sharpness(m, loss, data, 0.2, **kw).value for m in (net, scaled)]
    assert w[0] > 0 and w[1] == pytest.approx(w[0], rel=1e-8)
    top = [float(torch.linalg.eigvalsh(dense_hessian(m, loss, data))[-1]) for m in (net, scaled)]
    assert abs(top[1] / top[0] - 1) > 0.5  # the curvature moves


def test_a_rotation_of_hidden_units_keeps_the_function_but_not_adaptive_sharpness():
    """A reparametrisation that mixes weights (no ReLU: a linear hidden layer rotated by Q and
    the next layer by Q^T) leaves the function alone but is not per-weight: the adaptive measure
    moves, as the README says it may."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 3)).double()
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 3, (30,))
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    rotated = copy.deepcopy(net)
    with torch.no_grad():
        rotated[0].weight.copy_(q @ net[0].weight), rotated[0].bias.copy_(q @ net[0].bias)
        rotated[1].weight.copy_(net[1].weight @ q.T)
    torch.testing.assert_close(rotated(x), net(x), rtol=1e-10, atol=1e-12)
    loss, data = nn.functional.cross_entropy, [(x, y)]
    kw = dict(adaptive=True, steps=5, restarts=1, seed=2)
    w = [worst_case_sharpness(m, loss, data, 0.2, **kw).value for m in (net, rotated)]
    assert abs(w[1] / w[0] - 1) > 0.05
