"""Dinh et al.'s rescaling: a ReLU network rescaled by (a, 1/a) computes the same function and
loss (MLP and CNN), its Hessian's top eigenvalue moves, adaptive sharpness does not; the original
is untouched; a tanh network is not invariant; bad inputs are named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis_lib.curvature import dense_hessian
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
