"""Worst-case sharpness: ``max_{||delta / c|| <= rho} L(theta + delta) - L(theta)`` by projected
gradient ascent with restarts (SAM's sharpness, ``c = 1``), adaptive (``c = |theta|``) and
m-sharpness (the mean over disjoint batches of ``m`` samples of each batch's own maximum).

:func:`worst_case_sharpness` and its steps: the data as one group or cut into the batches of
m-sharpness (all batches and restarts ascend together under vmap), the seeded starts, the
ascent, and the best of the runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from .._checks import NonFiniteError, check_positive
from .._evaluation import generator
from ._objective import (
    MAX_SAMPLES,
    Guard,
    Objective,
    SharpnessResult,
    at_least,
    check_bool,
    check_norm,
    check_seed,
    checked,
    make_result,
    optional,
)

__all__ = ["worst_case_sharpness"]


# -- the data: one group, or the disjoint batches of m-sharpness -------------------------------
class _Groups:
    """The data cut into ``k`` disjoint batches of ``m`` samples (a seeded permutation; the last
    ``N mod m`` samples of it are left out), stacked for vmap: per-batch losses and gradients
    of many perturbations each in one call."""

    def __init__(self, obj: Objective, m: int, gen: torch.Generator) -> None:
        xs, ys = [], []
        for x, y, *_ in obj.batches:
            if not isinstance(x, Tensor) or not isinstance(y, Tensor):
                raise ValueError(
                    "Invalid data: m-sharpness needs batches of tensors (inputs, targets)"
                )
            xs.append(x)
            ys.append(y)
        x, y = torch.cat(xs), torch.cat(ys)
        n = x.shape[0]
        self.k = n // m
        self.dropped = n - self.k * m
        order = torch.randperm(n, generator=gen)[: self.k * m].to(x.device)
        self.x = x[order].reshape(self.k, m, *x.shape[1:])
        self.y = y[order].reshape(self.k, m, *y.shape[1:])
        self.m = m
        self.obj = obj

    def _calls(self, restarts: int):
        step = max(1, MAX_SAMPLES // (self.m * restarts))
        for i in range(0, self.k, step):
            yield slice(i, i + step)

    def values(self, u: Tensor, scale: Tensor) -> Tensor:
        """``L_j(theta + scale * u[j, r])`` for u of shape (k, R, n) -> (k, R)."""
        inner = vmap(self.obj.sample_loss, in_dims=(0, None, None, None))
        f = vmap(inner, in_dims=(0, None, 0, 0))
        out = torch.empty(u.shape[:2], **self.obj.like())
        with torch.no_grad():
            for s in self._calls(u.shape[1]):
                out[s] = f(u[s], scale, self.x[s], self.y[s])
        self.obj.forward_passes += u.shape[1]
        return out

    def values_and_grads(self, u: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        inner = vmap(grad_and_value(self.obj.sample_loss), in_dims=(0, None, None, None))
        f = vmap(inner, in_dims=(0, None, 0, 0))
        vals = torch.empty(u.shape[:2], **self.obj.like())
        grads = torch.empty_like(u)
        for s in self._calls(u.shape[1]):
            g, v = f(u[s], scale, self.x[s], self.y[s])
            vals[s], grads[s] = v.detach(), g.detach()
        self.obj.forward_passes += u.shape[1]
        self.obj.backward_passes += u.shape[1]
        return vals, grads


class _Whole:
    """All the data as one group, with the interface of :class:`_Groups` (k = 1)."""

    k = 1

    def __init__(self, obj: Objective) -> None:
        self.obj = obj

    def values(self, u: Tensor, scale: Tensor) -> Tensor:
        return self.obj.values(u[0], scale)[None]

    def values_and_grads(self, u: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        v, g = self.obj.values_and_grads(u[0], scale)
        return v[None], g[None]


# -- the ascent ----------------------------------------------------------------------------------
def _project(u: Tensor, rho: float, norm: str) -> Tensor:
    if norm == "linf":
        return u.clamp(-rho, rho)
    length = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    return u * torch.clamp(rho / length.clamp_min(torch.finfo(u.dtype).tiny), max=1.0)


def _ascent_direction(g: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return g.sign()
    length = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
    return g / length.clamp_min(torch.finfo(g.dtype).tiny)


def worst_case_sharpness(
    model: torch.nn.Module,
    loss_fn: Callable,
    data: Iterable,
    rho: float,
    *,
    norm: str = "l2",
    adaptive: bool = False,
    m: int | None = None,
    steps: int = 20,
    restarts: int = 2,
    step_size: float | None = None,
    seed: int = 0,
    params=None,
) -> SharpnessResult:
    """``max_{||delta / c|| <= rho} L(theta + delta) - L(theta)`` by projected gradient ascent.

    ``c = 1`` (SAM's sharpness) or, with ``adaptive=True``, ``c = |theta|`` (adaptive
    sharpness). The ascent runs in ``u = delta / c``: each step moves ``u`` by ``step_size``
    along the normalised gradient (``"l2"``) or its sign (``"linf"``) and projects back on the
    ball ``||u|| <= rho``. Each of ``restarts`` runs starts at a seeded random point of the ball
    (all runs advance together, one vectorised pass over the data per step); the value is the
    best feasible point met, so it is a lower bound of the true maximum that the steps tighten.

    Args:
        model, loss_fn, data: as the curvature probes (:class:`analysis_lib.curvature.
            HessianOperator`): ``loss_fn(outputs, targets)`` is a batch's mean loss.
        rho: the radius (> 0) of the ball, in the norm ``norm``.
        norm: ``"l2"`` or ``"linf"``.
        adaptive: constrain ``delta / |theta|`` instead of ``delta``.
        m: None for the sharpness of the whole data; an integer for m-sharpness: the data is cut
            by a seeded permutation into ``N // m`` disjoint batches of ``m`` samples (the
            ``N mod m`` left over are not used, ``details["dropped"]``), each batch's own
            maximum is found (all batches at once, with vmap) and the value is their mean.
            ``loss_fn`` must then work under ``torch.func.vmap`` (torch's losses do).
        steps: ascent steps per restart.
        restarts: independent random starts.
        step_size: the step length in ``u`` (default ``2 rho``: each step reaches across
            the ball, so on a quadratic the iterates follow a power iteration).
        seed: the starts (and the batches of m-sharpness).
        params: restrict to these parameter names or module prefixes (None: all).

    Returns:
        A :class:`SharpnessResult`; ``stderr`` is None, ``perturbation`` the best ``delta``
        (shape ``(n,)``; ``(N // m, n)`` for m-sharpness), ``details`` the best value of each
        restart (``"restart_values"``) and, for m-sharpness, each batch's maximum
        (``"batch_values"``).

    Raises:
        ValueError: an invalid argument (the message names it), a reduced-precision model, a
            ``rho`` or ``step_size`` the model's dtype cannot represent, an ``m`` larger than the
            data, or bad ``data``.
        NonFiniteError: the loss at the parameters or a batch is not finite, or no perturbed
            loss is.
    """
    start = time.perf_counter()
    settings = checked(
        rho=(rho, check_positive),
        norm=(norm, check_norm),
        adaptive=(adaptive, check_bool),
        m=(m, optional(at_least(1))),
        steps=(steps, at_least(1)),
        restarts=(restarts, at_least(1)),
        step_size=(step_size, optional(check_positive)),
        seed=(seed, check_seed),
    )
    note = " (2 rho by default)" if settings["step_size"] is None else ""
    if settings["step_size"] is None:
        settings["step_size"] = 2.0 * settings["rho"]
    rho, norm, m, seed = (settings[key] for key in ("rho", "norm", "m", "seed"))
    radii = {"rho": (rho, ""), "step_size": (settings["step_size"], note)}
    with Guard(model):
        obj = Objective(model, loss_fn, data, params, radii)
        groups = _split(obj, m, seed)
        loss = obj.loss()
        scale = obj.scale(settings["adaptive"])
        base = _base_losses(groups, loss, scale)
        u = _start(obj, (groups.k, settings["restarts"]), rho, norm, generator(seed))
        best, best_u = _ascend(groups, scale, u, settings)
        _check_found(obj, groups, best, u, scale)
        value, details, delta = _best_of_runs(groups, best - base, best_u, scale)
        extra = dict(details=details, perturbation=delta[0] if m is None else delta)
        return make_result("worst_case", value, None, loss, settings, obj, start, **extra)


def _split(obj: Objective, m: int | None, seed: int) -> _Whole | _Groups:
    """The data as one group (``m`` None), or cut into the disjoint batches of m-sharpness
    (a permutation drawn from ``seed``); a ValueError when ``m`` exceeds the samples."""
    if m is None:
        return _Whole(obj)
    if m > obj.n_samples:
        raise ValueError(
            f"Invalid m: {m} (larger than the {obj.n_samples} samples of data; "
            "m-sharpness needs at least one batch of m samples)"
        )
    return _Groups(obj, m, generator(seed))


def _check_found(obj: Objective, groups, best: Tensor, u: Tensor, scale: Tensor) -> None:
    """A :class:`NonFiniteError` when a group (the whole data, or a batch of m-sharpness) met
    no finite perturbed loss in any run (its maximum would be -inf)."""
    found = torch.isfinite(best).any(dim=1)
    if bool(found.all()):
        return
    what = "worst_case_sharpness"
    if isinstance(groups, _Groups):
        missing = torch.nonzero(~found).flatten().tolist()
        what += f" (m-sharpness batches {missing[:10]}{' ...' if len(missing) > 10 else ''})"
    raise obj.perturbed_nonfinite(what, u.reshape(-1, u.shape[-1]), scale)


def _base_losses(groups: _Whole | _Groups, loss: float, scale: Tensor) -> Tensor:
    """Each group's loss at the parameters, shape (k, 1): ``L(theta)`` for the whole data,
    each batch's own loss for m-sharpness (a ValueError when one is not finite)."""
    obj = groups.obj
    if isinstance(groups, _Whole):
        return torch.full((1, 1), loss, **obj.like())
    base = groups.values(torch.zeros(groups.k, 1, obj.size, **obj.like()), scale)
    bad = torch.nonzero(~torch.isfinite(base[:, 0])).flatten().tolist()
    if bad:
        raise NonFiniteError(
            f"The loss of m-sharpness batch {bad[0]} at the model's parameters is "
            f"{float(base[bad[0], 0])} (expected finite; the loss over all the data is {loss}): "
            "the loss function is not finite on some of its samples"
        )
    return base


def _ascend(
    groups: _Whole | _Groups, scale: Tensor, u: Tensor, settings: dict[str, Any]
) -> tuple[Tensor, Tensor]:
    """``steps`` projected ascent steps from the starts ``u`` (shape (k, R, n)) for every
    group and restart at once: ``u <- P(u + step_size * d(grad))``, ``d`` the normalised
    gradient (l2) or its sign (linf), ``P`` the projection on the ball of radius ``rho``.
    Returns the best value met by each run, shape (k, R), and where it was met (-inf and the
    start where no value was finite)."""
    rho, norm, steps = settings["rho"], settings["norm"], settings["steps"]
    best = torch.full(u.shape[:2], -math.inf, **groups.obj.like())
    best_u = u.clone()
    for t in range(steps + 1):
        if t < steps:
            vals, g = groups.values_and_grads(u, scale)
        else:
            vals = groups.values(u, scale)
        better = vals > best  # NaN never is: a non-finite loss is not a maximum
        best = torch.where(better, vals, best)
        best_u = torch.where(better[..., None], u, best_u)
        if t < steps:
            u = _project(u + settings["step_size"] * _ascent_direction(g, norm), rho, norm)
    return best, best_u


def _best_of_runs(
    groups: _Whole | _Groups, per_run: Tensor, best_u: Tensor, scale: Tensor
) -> tuple[Tensor, dict[str, Any], Tensor]:
    """From each run's increase ``per_run`` (shape (k, R)) and maximiser ``best_u``: the value
    (the mean over groups of each group's best run), the details (each restart's increase,
    averaged over groups, and, for m-sharpness, each batch's maximum) and each group's best
    ``delta = scale * u``, shape (k, n)."""
    top, which = per_run.max(dim=1)
    delta = scale * best_u[torch.arange(groups.k), which]
    details = dict(restart_values=per_run.mean(dim=0).cpu().numpy())
    if isinstance(groups, _Groups):
        details.update(batch_values=top.cpu().numpy(), batches=groups.k)
        details["dropped"] = groups.dropped
    return top.mean(), details, delta


def _start(obj: Objective, lead: tuple[int, int], rho: float, norm: str, gen) -> Tensor:
    """Seeded random starts in the ball: uniform in the cube (linf), uniform on the sphere of
    radius rho / 2 (l2)."""
    shape = (*lead, obj.size)
    if norm == "linf":
        return (obj.rand(shape, gen) * 2 - 1) * rho
    z = obj.randn(shape, gen)
    return z * (0.5 * rho / torch.linalg.vector_norm(z, dim=-1, keepdim=True))
