"""Batch-norm statistics along an interpolation: exact, from the training data, layer by layer."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis_lib import landscape


def two_bn_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8),
        torch.nn.BatchNorm1d(8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 6),
        torch.nn.BatchNorm1d(6),
        torch.nn.Tanh(),
        torch.nn.Linear(6, 3),
    ).double()


def data(seed: int, sizes) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            3 * torch.randn(n, 5, generator=gen, dtype=torch.float64) + 1,
            torch.randint(3, (n,), generator=gen),
        )
        for n in sizes
    ]


def exact_reference(a, b, alpha, train, test) -> float:
    """Mean test loss of the interpolated model whose running statistics are set by hand, layer
    by layer, to the mean and unbiased variance of each layer's inputs over all of ``train``."""
    m = copy.deepcopy(a).eval()
    with torch.no_grad():
        for p, pb in zip(m.parameters(), b.parameters(), strict=True):
            p.copy_((1 - alpha) * p + alpha * pb)
        x = torch.cat([x for x, _ in train])
        h1 = m[0](x)
        m[1].running_mean.copy_(h1.mean(0))
        m[1].running_var.copy_(h1.var(0, unbiased=True))
        h2 = m[3](m[2](m[1](h1)))
        m[4].running_mean.copy_(h2.mean(0))
        m[4].running_var.copy_(h2.var(0, unbiased=True))
        n = sum(len(y) for _, y in test)
        return sum(float(F.cross_entropy(m(x), y)) * len(y) for x, y in test) / n


def test_statistics_are_exact_over_unequal_batches_and_two_layers():
    a, b = two_bn_model(0), two_bn_model(1)
    for m in (a, b):  # running statistics that differ from the data's
        m.train()
        with torch.no_grad():
            m(torch.randn(7, 5, dtype=torch.float64))
    train, test = data(0, [9, 17, 4]), data(1, [10, 3])
    alphas = np.array([0.0, 0.3, 1.0])
    line = landscape.interpolate(a, b, F.cross_entropy, test, alphas, bn_data=train, progress=False)
    for i, alpha in enumerate(alphas):
        ref = exact_reference(a, b, float(alpha), train, test)
        assert line.loss[i] == pytest.approx(ref, rel=1e-10)
    # the statistics come from bn_data, not from the evaluation data
    own = landscape.interpolate(a, b, F.cross_entropy, test, alphas, bn_data=test, progress=False)
    assert np.all(np.abs(own.loss - line.loss) > 1e-6)
    assert a.training and b.training  # the models were not touched


def test_bn_data_is_required_when_statistics_are_recomputed():
    a, b = two_bn_model(0), two_bn_model(1)
    with pytest.raises(ValueError, match="bn_data"):
        landscape.interpolate(a, b, F.cross_entropy, data(0, [4]), [0.0, 1.0], progress=False)
    # without batch norm nothing is needed
    lin = torch.nn.Linear(5, 3).double()
    lin2 = copy.deepcopy(lin)
    line = landscape.interpolate(lin, lin2, F.cross_entropy, data(0, [4]), [0.0], progress=False)
    assert np.isfinite(line.loss).all()
