"""Epsilon sharpness (Keskar et al. 2017): ``100 (max_{y in C_eps} L(theta + y) - L(theta)) /
(1 + L(theta))`` on the box ``C_eps = {|y_i| <= eps (|theta_i| + 1)}``, maximised with scipy's
L-BFGS-B from seeded starts: :func:`epsilon_sharpness`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import numpy as np
import scipy.optimize
import torch

from .._checks import check_positive
from .._evaluation import generator
from ._objective import (
    Guard,
    Objective,
    SharpnessResult,
    at_least,
    check_seed,
    checked,
    make_result,
)

__all__ = ["epsilon_sharpness"]


def epsilon_sharpness(
    model: torch.nn.Module,
    loss_fn: Callable,
    data: Iterable,
    epsilon: float = 1e-3,
    *,
    maxiter: int = 20,
    restarts: int = 1,
    seed: int = 0,
    params=None,
) -> SharpnessResult:
    """Keskar et al.'s sharpness ``100 (max_{y in C_eps} L(theta + y) - L(theta)) /
    (1 + L(theta))`` over the box ``C_eps = {|y_i| <= eps (|theta_i| + 1)}`` (in the full
    parameter space), maximised with scipy's L-BFGS-B (``maxiter`` iterations) from
    ``restarts`` seeded uniform starts in the box (at an exact minimum the gradient at ``y = 0``
    vanishes, so starting there would not move). Each evaluation is one forward and one
    backward pass. ``stderr`` is None; ``perturbation`` is the best ``y``; ``details["max_loss"]``
    the maximum found.

    Args:
        model, loss_fn, data: as for :func:`~analysis_lib.sharpness.average_sharpness`.
        epsilon: the relative size of the box, > 0 (default 1e-3).
        maxiter: L-BFGS-B iterations per restart, >= 1 (default 20).
        restarts: random starts, >= 1 (default 1).
        seed: an integer >= 0 for the starts (default 0).
        params: restrict to these parameter names or module prefixes (None: all).

    Returns:
        A :class:`SharpnessResult` with ``measure="epsilon"``.

    Raises:
        ValueError: an invalid argument (the message names it), a reduced-precision model, an
            ``epsilon`` the model's dtype cannot represent, or bad ``data``.
        NonFiniteError: the loss at the parameters or a batch is not finite, or no restart found
            a finite perturbed loss.
    """
    start = time.perf_counter()
    settings = checked(
        epsilon=(epsilon, check_positive),
        maxiter=(maxiter, at_least(1)),
        restarts=(restarts, at_least(1)),
        seed=(seed, check_seed),
    )
    epsilon, maxiter, restarts, seed = settings.values()
    with Guard(model):
        obj = Objective(model, loss_fn, data, params, {"epsilon": (epsilon, "")})
        loss = obj.loss()
        ones = obj.scale(False)
        bound = (epsilon * (obj.theta.abs() + 1)).double().cpu().numpy()
        gen = generator(seed)

        def negative(y: np.ndarray) -> tuple[float, np.ndarray]:
            u = torch.as_tensor(y, dtype=obj.dtype, device=obj.device)[None]
            v, g = obj.values_and_grads(u, ones)
            value = float(v[0])
            if not math.isfinite(value):  # a non-finite loss: no maximum there
                return math.inf, np.zeros_like(y)
            return -value, -g[0].double().cpu().numpy()

        best, best_y = -math.inf, np.zeros_like(bound)
        for _ in range(restarts):
            x0 = (torch.rand(obj.size, generator=gen, dtype=torch.float64).numpy() * 2 - 1) * bound
            out = scipy.optimize.minimize(
                negative,
                x0,
                jac=True,
                method="L-BFGS-B",
                bounds=scipy.optimize.Bounds(-bound, bound),
                options=dict(maxiter=maxiter),
            )
            if math.isfinite(out.fun) and -out.fun > best:
                best, best_y = -float(out.fun), np.clip(out.x, -bound, bound)
        if best == -math.inf:
            y = torch.as_tensor(bound, dtype=obj.dtype, device=obj.device)
            raise obj.perturbed_nonfinite("epsilon_sharpness", y[None], ones)
        value = 100.0 * (best - loss) / (1.0 + loss)
        return make_result(
            "epsilon",
            value,
            None,
            loss,
            settings,
            obj,
            start,
            details=dict(max_loss=best),
            perturbation=torch.as_tensor(best_y, dtype=obj.dtype, device=obj.device),
        )
