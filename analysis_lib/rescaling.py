"""Dinh et al.'s (2017) reparametrisation: the same function with other parameters.

For a layer ``h = phi(W1 x + b1)`` followed by ``W2 h + ...`` with a positively homogeneous
activation (``phi(a z) = a phi(z)`` for ``a > 0``: ReLU, leaky ReLU, max-pooling, or none), the
map ``(W1, b1, W2) -> (a W1, a b1, W2 / a)`` leaves the network's output, hence its loss, exactly
as it was, for every ``a > 0``. It moves the minimum's curvature: the Hessian blocks of the first
layer scale by ``1 / a^2`` and those of the second by ``a^2``, so ``lambda_max`` and plain
(non-adaptive) sharpness can be made as large as one likes, while measures whose perturbations
scale with ``|theta|`` (adaptive sharpness) do not move.

    from analysis_lib.rescaling import rescale_layers

    same = rescale_layers(model, 10.0)                  # the first two layers with parameters
    same = rescale_layers(model, 10.0, "0", "2")        # or named, as in named_modules()
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._checks import check_positive

__all__ = ["rescale_layers", "weighted_layers"]


def weighted_layers(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of the modules that own a ``weight``
    parameter of two or more dimensions (linear and convolution layers), in order.

    Args:
        model: the network.

    Returns:
        The module names, in ``named_modules()`` order.

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module``.

    Example:
        >>> from torch import nn
        >>> weighted_layers(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))
        ['0', '2']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: expected a torch.nn.Module, got {type(model).__name__}")
    return [
        name
        for name, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2
    ]


def rescale_layers(
    model: nn.Module, a: float, first: str | None = None, second: str | None = None
) -> nn.Module:
    """A copy of ``model`` with layer ``first``'s weight and bias multiplied by ``a`` and layer
    ``second``'s weight divided by ``a`` (``second``'s bias unchanged); ``model`` is untouched.

    The copy computes the same function when everything between the two layers is positively
    homogeneous of degree 1 (ReLU, max-pooling, flattening; not tanh, batch norm or a second
    bias-free path): the caller's responsibility, checked by the tests on ReLU networks.
    ``first`` and ``second`` default to the first two :func:`weighted_layers`.

    Args:
        model: the network (not modified).
        a: the scale factor, a finite number > 0.
        first: name of the layer multiplied by ``a`` (see :func:`weighted_layers`).
        second: name of the layer divided by ``a``.

    Returns:
        The rescaled deep copy of ``model``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> x = torch.randn(4, 2)
        >>> torch.allclose(rescale_layers(net, 4.0)(x), net(x), atol=1e-6)
        True

    Raises:
        ValueError: ``a`` not a finite number > 0; unknown layer names; ``second``'s input
            width (``weight.shape[1]``) not ``first``'s output width (``weight.shape[0]``).
    """
    a = check_positive("a", a)
    layers = weighted_layers(model)
    if first is None and second is None:
        if len(layers) < 2:
            raise ValueError("Invalid model: fewer than two layers with a weight matrix")
        first, second = layers[0], layers[1]
    modules = dict(model.named_modules())
    for arg, name in (("first", first), ("second", second)):
        if name not in layers:
            raise ValueError(f"Invalid {arg}: {name!r} (layers with a weight: {layers})")
    if first == second:
        raise ValueError(f"Invalid second: {second!r} is the first layer too")
    w1, w2 = modules[first].weight, modules[second].weight
    if w2.shape[1] != w1.shape[0]:
        raise ValueError(
            f"Invalid second: {second!r} takes {w2.shape[1]} inputs, {first!r} gives "
            f"{w1.shape[0]} outputs (flattened feature maps are not supported)"
        )
    out = copy.deepcopy(model)
    new = dict(out.named_modules())
    with torch.no_grad():
        new[first].weight.mul_(a)
        if getattr(new[first], "bias", None) is not None:
            new[first].bias.mul_(a)
        new[second].weight.div_(a)
    return out
