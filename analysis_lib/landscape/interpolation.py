"""The loss along the line between two models, batch-norm statistics recomputed at every point.

Owns :func:`interpolate`: without batch norm a batched :func:`~.surface.surface_1d` from model a
towards model b; with batch norm a loop over copies of model a, each with the interpolated
parameters and running statistics recomputed from the training data (or interpolated too).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .. import progress_bar
from .._checks import check_grid
from .directions import difference, parameters
from .evaluator import check_data, evaluate_points
from .grid import LandscapeGrid
from .surface import surface_1d

__all__ = ["interpolate"]


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def _recompute_bn(model: nn.Module, batches) -> None:
    """Running statistics of every batch-norm layer set to the exact per-channel mean and
    unbiased variance of its inputs over all of ``batches`` (weighted by their sizes), as the
    model sees them in eval mode: one pass per layer, in the order the forward pass reaches them,
    each with the layers before it already using their new statistics."""
    bns = _batch_norms(model)
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
    done: set[int] = set()
    for _ in range(len(bns)):
        sums: dict[int, list] = {}

        def collect(module, inputs, sums=sums):
            x = inputs[0].detach().double()
            x = x.movedim(1, -1).reshape(-1, x.shape[1]) if x.dim() > 1 else x[:, None]
            acc = sums.setdefault(id(module), [module, 0, 0.0, 0.0])
            acc[1] += x.shape[0]
            acc[2] = acc[2] + x.sum(0)
            acc[3] = acc[3] + (x * x).sum(0)

        hooks = [bn.register_forward_pre_hook(collect) for bn in bns if id(bn) not in done]
        try:
            for x, _ in batches:
                model(x)
        finally:
            for hook in hooks:
                hook.remove()
        if not sums:  # the remaining layers are never reached
            break
        bn, n, s1, s2 = next(iter(sums.values()))  # the first one the forward pass reached
        mean = s1 / n
        var = (s2 - n * mean * mean).clamp_min(0) / max(n - 1, 1)
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
        done.add(id(bn))


def _model_at(model_a, params, direction, alpha: float, buffers_b, bn_batches) -> nn.Module:
    """A copy of model a at ``theta_a + alpha (theta_b - theta_a)`` in eval mode, its running
    statistics recomputed from ``bn_batches`` or, when that is None, interpolated like the
    parameters (``buffers_b`` are model b's)."""
    point = copy.deepcopy(model_a)
    with torch.no_grad():
        for k, p in point.named_parameters():
            p.copy_(params[k] + alpha * direction[k])
        if bn_batches is None:
            for k, b in point.named_buffers():
                if b.is_floating_point():
                    b.copy_((1 - alpha) * b + alpha * buffers_b[k])
    if bn_batches is not None:
        _recompute_bn(point, bn_batches)
    return point.eval()


def interpolate(
    model_a: nn.Module,
    model_b: nn.Module,
    loss_fn: Callable,
    data,
    alphas,
    *,
    recompute_bn: bool = True,
    bn_data=None,
    accuracy_fn=None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> LandscapeGrid:
    """Loss and accuracy along the line ``theta(alpha) = (1 - alpha) theta_a + alpha theta_b``
    (alpha = 0 is model a, 1 is model b; values outside [0, 1] extrapolate).

    Without batch norm, this is :func:`surface_1d` around ``theta_a`` along
    ``theta_b - theta_a`` (batched; the buffers are model a's). With batch norm, each point is
    a copy of model a with the interpolated parameters and, with ``recompute_bn`` (the
    default), running statistics recomputed from ``bn_data``, the *training* data: the exact
    per-channel mean and unbiased variance of each batch-norm layer's inputs over all of it,
    layer after layer as the eval-mode network sees them. ``bn_data`` is then required, so that a
    curve drawn on the test split never takes its statistics from the test split. Without
    ``recompute_bn``, the running statistics are interpolated too. Evaluated in eval mode; the
    models are not modified.

    Args:
        model_a: the network at alpha = 0.
        model_b: the network at alpha = 1, with the same parameter names and shapes.
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
        data: an iterable of ``(inputs, targets)`` batches to evaluate on.
        alphas: the interpolation coefficients, a non-empty 1-D sequence of finite numbers.
        recompute_bn: recompute batch-norm statistics from ``bn_data`` at each point (default
            True); False interpolates them. Ignored without batch norm.
        bn_data: the training batches for the statistics; required with batch norm and
            ``recompute_bn``.
        accuracy_fn: ``accuracy_fn(outputs, targets)``, or None (classification accuracy for
            integer targets, else NaN).
        chunk_size: points per evaluation without batch norm; None: automatic.
        progress: show a progress bar (default True).

    Returns:
        A 1-D :class:`LandscapeGrid` over ``alphas`` (``method="loop"`` with batch norm).

    Raises:
        ValueError: an invalid ``alphas``, a model that is not a ``torch.nn.Module`` or whose
            parameters do not match the other's, no ``bn_data`` when it is required, or bad
            ``data``.
        NonFiniteError: a batch holds NaN or infinite values.
    """
    alphas = check_grid("alphas", alphas)
    direction = difference(model_a, model_b)
    for name, m in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(m, nn.Module):
            raise ValueError(f"Invalid {name}: {type(m).__name__} (expected a torch.nn.Module)")
    if not _batch_norms(model_a):
        return surface_1d(
            model_a,
            loss_fn,
            data,
            direction,
            alphas,
            chunk_size=chunk_size,
            accuracy_fn=accuracy_fn,
            progress=progress,
        )
    if recompute_bn and bn_data is None:
        raise ValueError(
            "Invalid bn_data: None, but the models have batch norm and recompute_bn=True: pass "
            "the training data (e.g. bn_data=task.data('train')) to recompute the running "
            "statistics from, or recompute_bn=False to interpolate them"
        )
    start = time.perf_counter()
    params = parameters(model_a)
    device = next(iter(params.values())).device
    batches = check_data(data, device)
    bn_batches = check_data(bn_data, device, "bn_data") if recompute_bn else None
    buffers_b = dict(model_b.named_buffers())
    origin = [{k: torch.zeros_like(p) for k, p in params.items()}]  # the point model itself
    loss, acc = np.empty(len(alphas)), np.empty(len(alphas))
    for i, alpha in enumerate(
        progress_bar(alphas, desc="landscape", unit="point", progress=progress)
    ):
        point = _model_at(model_a, params, direction, float(alpha), buffers_b, bn_batches)
        lo, ac = evaluate_points(
            point,
            loss_fn,
            batches,
            origin,
            np.zeros((1, 1)),
            accuracy_fn=accuracy_fn,
            progress=False,
        )
        loss[i], acc[i] = lo[0], ac[0]
    return LandscapeGrid(
        alphas=alphas,
        betas=None,
        loss=loss,
        accuracy=acc,
        seconds=time.perf_counter() - start,
        chunk_size=1,
        method="loop",
    )
