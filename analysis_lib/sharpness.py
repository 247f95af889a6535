"""Sharpness and flatness of a found minimum: the measures of the literature behind one API.

Every measure takes ``(model, loss_fn, data, ...)`` like the curvature probes (``data`` an
iterable of ``(inputs, targets)`` batches, the loss their sample-weighted mean, the model
evaluated in eval mode), is seeded, leaves the model's parameters, buffers and modes exactly as
they were (also when it raises), and returns a :class:`SharpnessResult` with ``.value``,
``.stderr`` (None where the measure is deterministic given its seed), the settings used and the
cost. With ``L`` the mean loss and ``theta`` the flat parameter vector:

* :func:`worst_case_sharpness`: ``max_{||delta|| <= rho} L(theta + delta) - L(theta)`` (SAM,
  Foret et al. 2021), by projected gradient ascent with restarts; ``norm="l2"`` or ``"linf"``;
  ``adaptive=True`` constrains ``delta / |theta|`` instead (Kwon et al. 2021, Andriushchenko et
  al. 2023) and ascends in those normalised coordinates, so rescaling a ReLU layer by ``a`` and
  the next by ``1/a`` (Dinh et al. 2017) leaves every iterate unchanged; ``m``: m-sharpness, the
  mean over disjoint batches of ``m`` samples of each batch's own maximum.
* :func:`average_sharpness`: ``E[L(theta + delta)] - L(theta)`` with ``delta ~ N(0, rho^2 I)``,
  or ``N(0, rho^2 diag(theta^2))`` when adaptive, with its standard error.
* :func:`epsilon_sharpness`: Keskar et al. 2017,
  ``100 (max_{y in C_eps} L(theta + y) - L(theta)) / (1 + L(theta))`` on the box
  ``C_eps = {|y_i| <= eps (|theta_i| + 1)}``, maximised with scipy's L-BFGS-B.
* :func:`sigma_flatness`: Jiang et al. 2019, the largest ``sigma`` for which
  ``E_u[L(theta + u)] - L(theta)``, ``u ~ N(0, sigma^2 I)``, stays under a threshold, by
  bisection over a fixed set of seeded draws; reports ``1 / sigma^2``.
* :func:`sharpness_report`: all of the above and the curvature's ``lambda_max`` and trace as one
  tidy row (a dict); :func:`sharpness_measurement` wraps it as a ``(model, task) -> dict``
  measurement for sweeps.

Quick use::

    from analysis_lib.sharpness import worst_case_sharpness, sharpness_report

    res = worst_case_sharpness(model, loss_fn, data, rho=0.05)
    res.value, res.forward_passes, res.seconds
    row = sharpness_report(model, loss_fn, data)    # {"worst_case": ..., "lambda_max": ...}

How it is evaluated: perturbed losses go through ``torch.func.functional_call`` on the flat
parameter vector mapped to named parameters (nothing is copied into the module), and
``torch.func.vmap`` evaluates many perturbations (restarts, noise draws, the disjoint batches of
m-sharpness) in one pass over the data. Cost is counted in *passes*: one pass is the model
evaluated (forward) or differentiated (backward) at one parameter vector on every sample of the
data once, however the samples are batched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize
import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from ._checks import check_int
from ._evaluation import FunctionalModel, eval_mode, generator, select_parameters, warn_batchnorm

__all__ = [
    "NORMS",
    "SharpnessResult",
    "average_sharpness",
    "epsilon_sharpness",
    "sharpness_measurement",
    "sharpness_report",
    "sigma_flatness",
    "worst_case_sharpness",
]

NORMS = ("l2", "linf")
#: Samples per vectorised call (perturbations x samples of data): bounds the activations held.
_MAX_SAMPLES = 1 << 16


@dataclass
class SharpnessResult:
    """One sharpness measure of a model at its current parameters.

    Attributes:
        measure: the measure's name (``"worst_case"``, ``"average"``, ``"epsilon"``,
            ``"sigma_flatness"``).
        value: the measure.
        stderr: its standard error where it is a Monte Carlo estimate (average sharpness), None
            where it is deterministic given the seed.
        loss: ``L(theta)``, the mean loss over the data at the parameters.
        settings: the settings used (the arguments, defaults filled in).
        forward_passes: forward passes through the model over all the data (see the module
            docstring).
        backward_passes: backward passes over all the data.
        seconds: the wall time.
        details: what else the measure found (per-batch maxima, the sigma, the evaluations of a
            bisection, ...).
        perturbation: the maximising perturbation ``delta`` as a flat vector in the order of
            ``model.named_parameters()`` (worst case and epsilon; for m-sharpness, shape
            ``(batches, n)``), else None.
    """

    measure: str
    value: float
    stderr: float | None
    loss: float
    settings: dict[str, Any]
    forward_passes: int
    backward_passes: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict, repr=False)
    perturbation: Tensor | None = field(default=None, repr=False)


# -- argument checks ---------------------------------------------------------------------------
def _check_positive(name: str, value: Any) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"Invalid {name}: {value!r} (expected a finite number > 0)")
    return float(value)


def _check_norm(norm: Any) -> str:
    if norm not in NORMS:
        raise ValueError(f"Invalid norm: {norm!r} (expected one of {NORMS})")
    return norm


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"Invalid {name}: {value!r} (expected True or False)")
    return bool(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, torch.Generator):
        raise ValueError("Invalid seed: a torch.Generator (expected an integer >= 0, recorded)")
    return check_int("seed", seed, 0)


# -- the model as a function of a flat perturbation ----------------------------------------------
class _Guard:
    """Eval mode for the block, and afterwards every parameter, buffer and module flag exactly
    as before, also when the block raises."""

    def __init__(self, model: torch.nn.Module) -> None:
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"Invalid model: {type(model).__name__} (expected a torch.nn.Module)")
        self.model = model

    def __enter__(self) -> _Guard:
        tensors = [*self.model.named_parameters(), *self.model.named_buffers()]
        self._saved = [(t, t.detach().clone()) for _, t in tensors]
        self._mode = eval_mode(self.model)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._mode.__exit__(*exc)
        finally:
            with torch.no_grad():
                for t, saved in self._saved:
                    if t.shape != saved.shape or not torch.equal(t, saved):
                        t.data = saved  # NaN != NaN: then the same bits are put back


class _Objective:
    """``u -> L(theta + scale * u)`` for flat perturbations ``u`` (``scale = |theta|`` when
    adaptive, else 1), batched over perturbations with vmap, counting passes."""

    def __init__(self, model, loss_fn, data, params=None) -> None:
        named = select_parameters(model, params)
        fm = FunctionalModel(model, loss_fn, data, named)
        self.function, self.model, self.loss_fn = fm, model, loss_fn
        self.space, self.batches, self.n_samples = fm.space, fm.batches, fm.samples
        self.dtype, self.device = fm.dtype, fm.device
        self.theta = self.space.flatten(fm.parameters()).clone()
        self.forward_passes = 0
        self.backward_passes = 0
        warn_batchnorm(model, "sharpness")

    @property
    def size(self) -> int:
        return self.space.size

    def scale(self, adaptive: bool) -> Tensor:
        return self.theta.abs() if adaptive else torch.ones_like(self.theta)

    def _loss(self, u: Tensor, scale: Tensor, x: Any, y: Any) -> Tensor:
        p = self.space.unflatten(self.theta + scale * u)
        return self.loss_fn(self.function.outputs(p, x), y)

    def _chunk(self, count: int, batch: int) -> int:
        return max(1, min(count, _MAX_SAMPLES // max(batch, 1)))

    def values(self, u: Tensor, scale: Tensor) -> Tensor:
        """``L(theta + scale * u_r)`` over all the data for each row of ``u`` (shape (R, n))."""
        total = torch.zeros(u.shape[0], dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for b in self.batches:
                step = self._chunk(u.shape[0], b.size)
                f = vmap(self._loss, in_dims=(0, None, None, None))
                for i in range(0, u.shape[0], step):
                    total[i : i + step] += b.weight * f(u[i : i + step], scale, b.inputs, b.targets)
        self.forward_passes += u.shape[0]
        return total

    def values_and_grads(self, u: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """Values as :meth:`values` and their gradients with respect to ``u`` (shape (R, n))."""
        total = torch.zeros(u.shape[0], dtype=self.dtype, device=self.device)
        grads = torch.zeros_like(u)
        f = vmap(grad_and_value(self._loss), in_dims=(0, None, None, None))
        for b in self.batches:
            step = self._chunk(u.shape[0], b.size)
            for i in range(0, u.shape[0], step):
                g, v = f(u[i : i + step], scale, b.inputs, b.targets)
                total[i : i + step] += b.weight * v.detach()
                grads[i : i + step] += b.weight * g.detach()
        self.forward_passes += u.shape[0]
        self.backward_passes += u.shape[0]
        return total, grads

    def loss(self) -> float:
        """``L(theta)``; a ValueError when it is not finite."""
        value = float(self.values(torch.zeros(1, self.size, **self._like()), self.scale(False))[0])
        if not math.isfinite(value):
            raise ValueError(
                f"Invalid model: the loss over data at its parameters is {value} (expected finite)"
            )
        return value

    def _like(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "device": self.device}

    def randn(self, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(**self._like())

    def rand(self, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
        return torch.rand(shape, generator=gen, dtype=torch.float64).to(**self._like())


class _Groups:
    """The data cut into ``k`` disjoint batches of ``m`` samples (a seeded permutation; the last
    ``N mod m`` samples of it are left out), stacked for vmap: per-batch losses and gradients
    of many perturbations each in one call."""

    def __init__(self, obj: _Objective, m: int, gen: torch.Generator) -> None:
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
        step = max(1, _MAX_SAMPLES // (self.m * restarts))
        for i in range(0, self.k, step):
            yield slice(i, i + step)

    def values(self, u: Tensor, scale: Tensor) -> Tensor:
        """``L_j(theta + scale * u[j, r])`` for u of shape (k, R, n) -> (k, R)."""
        inner = vmap(self.obj._loss, in_dims=(0, None, None, None))
        f = vmap(inner, in_dims=(0, None, 0, 0))
        out = torch.empty(u.shape[:2], **self.obj._like())
        with torch.no_grad():
            for s in self._calls(u.shape[1]):
                out[s] = f(u[s], scale, self.x[s], self.y[s])
        self.obj.forward_passes += u.shape[1]
        return out

    def values_and_grads(self, u: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        inner = vmap(grad_and_value(self.obj._loss), in_dims=(0, None, None, None))
        f = vmap(inner, in_dims=(0, None, 0, 0))
        vals = torch.empty(u.shape[:2], **self.obj._like())
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

    def __init__(self, obj: _Objective) -> None:
        self.obj = obj

    def values(self, u: Tensor, scale: Tensor) -> Tensor:
        return self.obj.values(u[0], scale)[None]

    def values_and_grads(self, u: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        v, g = self.obj.values_and_grads(u[0], scale)
        return v[None], g[None]


def _result(measure, value, stderr, loss, settings, obj, start, **extra) -> SharpnessResult:
    return SharpnessResult(
        measure=measure,
        value=float(value),
        stderr=None if stderr is None else float(stderr),
        loss=float(loss),
        settings=settings,
        forward_passes=obj.forward_passes,
        backward_passes=obj.backward_passes,
        seconds=time.perf_counter() - start,
        **extra,
    )


# -- worst case ----------------------------------------------------------------------------------
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
    """
    start = time.perf_counter()
    rho = _check_positive("rho", rho)
    norm = _check_norm(norm)
    adaptive = _check_bool("adaptive", adaptive)
    steps = check_int("steps", steps, 1)
    restarts = check_int("restarts", restarts, 1)
    step_size = 2.0 * rho if step_size is None else _check_positive("step_size", step_size)
    seed = _check_seed(seed)
    if m is not None:
        m = check_int("m", m, 1)
    settings = dict(
        rho=rho,
        norm=norm,
        adaptive=adaptive,
        m=m,
        steps=steps,
        restarts=restarts,
        step_size=step_size,
        seed=seed,
    )
    with _Guard(model):
        obj = _Objective(model, loss_fn, data, params)
        if m is not None and m > obj.n_samples:
            raise ValueError(
                f"Invalid m: {m} (larger than the {obj.n_samples} samples of data; "
                "m-sharpness needs at least one batch of m samples)"
            )
        gen = generator(seed)  # the starts; the batches of m-sharpness draw from their own
        groups = _Whole(obj) if m is None else _Groups(obj, m, generator(seed))
        loss = obj.loss()
        scale = obj.scale(adaptive)
        if m is None:
            base = torch.full((1, 1), loss, **obj._like())
        else:
            base = groups.values(torch.zeros(groups.k, 1, obj.size, **obj._like()), scale)
            if not bool(torch.isfinite(base).all()):
                raise ValueError("Invalid model: a batch's loss at its parameters is not finite")
        u = _start(obj, (groups.k, restarts), rho, norm, gen)
        best = torch.full((groups.k, restarts), -math.inf, **obj._like())
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
                u = _project(u + step_size * _ascent_direction(g, norm), rho, norm)
        per_run = best - base  # (k, R)
        top, which = per_run.max(dim=1)
        delta = scale * best_u[torch.arange(groups.k), which]
        details = dict(restart_values=per_run.mean(dim=0).cpu().numpy())
        if m is not None:
            details.update(batch_values=top.cpu().numpy(), batches=groups.k)
            details["dropped"] = groups.dropped
        return _result(
            "worst_case",
            top.mean(),
            None,
            loss,
            settings,
            obj,
            start,
            details=details,
            perturbation=delta[0] if m is None else delta,
        )


def _start(obj: _Objective, lead: tuple[int, int], rho: float, norm: str, gen) -> Tensor:
    """Seeded random starts in the ball: uniform in the cube (linf), uniform on the sphere of
    radius rho / 2 (l2)."""
    shape = (*lead, obj.size)
    if norm == "linf":
        return (obj.rand(shape, gen) * 2 - 1) * rho
    z = obj.randn(shape, gen)
    return z * (0.5 * rho / torch.linalg.vector_norm(z, dim=-1, keepdim=True))


# -- average case --------------------------------------------------------------------------------
def _antithetic_increase(obj: _Objective, z: Tensor, scale: Tensor, loss: float) -> Tensor:
    """``(L(theta + scale z_s) + L(theta - scale z_s)) / 2 - L(theta)`` for each row of ``z``."""
    vals = obj.values(torch.cat([z, -z]), scale)
    s = z.shape[0]
    return (vals[:s] + vals[s:]) / 2 - loss


def average_sharpness(
    model: torch.nn.Module,
    loss_fn: Callable,
    data: Iterable,
    rho: float,
    *,
    adaptive: bool = False,
    samples: int = 64,
    seed: int = 0,
    params=None,
) -> SharpnessResult:
    """``E[L(theta + delta)] - L(theta)`` with ``delta ~ N(0, rho^2 I)``, or
    ``N(0, rho^2 diag(theta^2))`` when ``adaptive``, by Monte Carlo with ``samples`` seeded
    antithetic pairs ``(delta, -delta)`` (the pair's mean cancels the gradient term, so its
    variance is that of the curvature term alone), with the standard error of the mean over
    the pairs. Costs ``2 samples + 1`` forward passes, vectorised over draws."""
    start = time.perf_counter()
    rho = _check_positive("rho", rho)
    adaptive = _check_bool("adaptive", adaptive)
    samples = check_int("samples", samples, 2)
    seed = _check_seed(seed)
    settings = dict(rho=rho, adaptive=adaptive, samples=samples, seed=seed)
    with _Guard(model):
        obj = _Objective(model, loss_fn, data, params)
        loss = obj.loss()
        z = rho * obj.randn((samples, obj.size), generator(seed))
        inc = _antithetic_increase(obj, z, obj.scale(adaptive), loss).double()
        stderr = float(inc.std(correction=1)) / math.sqrt(samples)
        details = dict(increases=inc.cpu().numpy())
        return _result("average", inc.mean(), stderr, loss, settings, obj, start, details=details)


# -- epsilon sharpness ---------------------------------------------------------------------------
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
    the maximum found."""
    start = time.perf_counter()
    epsilon = _check_positive("epsilon", epsilon)
    maxiter = check_int("maxiter", maxiter, 1)
    restarts = check_int("restarts", restarts, 1)
    seed = _check_seed(seed)
    settings = dict(epsilon=epsilon, maxiter=maxiter, restarts=restarts, seed=seed)
    with _Guard(model):
        obj = _Objective(model, loss_fn, data, params)
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
        value = 100.0 * (best - loss) / (1.0 + loss)
        return _result(
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


# -- sigma flatness ------------------------------------------------------------------------------
def sigma_flatness(
    model: torch.nn.Module,
    loss_fn: Callable,
    data: Iterable,
    threshold: float = 0.1,
    *,
    adaptive: bool = False,
    samples: int = 8,
    sigma_init: float = 0.01,
    iterations: int = 10,
    seed: int = 0,
    params=None,
) -> SharpnessResult:
    """Jiang et al.'s flatness: the largest ``sigma`` for which the expected loss increase
    ``E_u[L(theta + u)] - L(theta)``, ``u ~ N(0, sigma^2 I)`` (``N(0, sigma^2 diag(theta^2))``
    when ``adaptive``), stays at or under ``threshold``; the value is ``1 / sigma^2`` (large:
    sharp).

    The expectation is taken over ``samples`` fixed, seeded antithetic pairs ``sigma (z, -z)``:
    the same ``z`` at every ``sigma``, so the estimate is a smooth function of ``sigma`` and the
    search reproducible. The search brackets the crossing by factors of 4 from ``sigma_init``,
    then bisects ``iterations`` times in ``log sigma`` (a relative precision of about
    ``4^(2^-iterations) - 1``). A non-finite increase counts as above the threshold. When no
    sigma up to ``4^30 sigma_init`` crosses, sigma is inf and the value 0; when even
    ``4^-30 sigma_init`` does, the value is inf. ``details``: the sigma, and every
    ``(sigma, increase)`` evaluated."""
    start = time.perf_counter()
    threshold = _check_positive("threshold", threshold)
    adaptive = _check_bool("adaptive", adaptive)
    samples = check_int("samples", samples, 1)
    sigma_init = _check_positive("sigma_init", sigma_init)
    iterations = check_int("iterations", iterations, 0)
    seed = _check_seed(seed)
    settings = dict(
        threshold=threshold,
        adaptive=adaptive,
        samples=samples,
        sigma_init=sigma_init,
        iterations=iterations,
        seed=seed,
    )
    with _Guard(model):
        obj = _Objective(model, loss_fn, data, params)
        loss = obj.loss()
        z = obj.randn((samples, obj.size), generator(seed))
        scale = obj.scale(adaptive)
        trace: list[tuple[float, float]] = []

        def below(sigma: float) -> bool:
            inc = float(_antithetic_increase(obj, sigma * z, scale, loss).double().mean())
            trace.append((sigma, inc))
            return math.isfinite(inc) and inc <= threshold

        lo, hi, sigma = 0.0, math.inf, sigma_init
        for _ in range(31):  # from sigma_init up (while under) or down (while over)
            if below(sigma):
                lo, sigma = sigma, sigma * 4
                if hi < math.inf:
                    break
            else:
                hi, sigma = sigma, sigma / 4
                if lo > 0:
                    break
        if lo > 0 and hi < math.inf:
            for _ in range(iterations):
                mid = math.sqrt(lo * hi)
                if below(mid):
                    lo = mid
                else:
                    hi = mid
        sigma = lo if hi < math.inf else math.inf
        value = math.inf if sigma == 0 else 1.0 / sigma**2
        details = dict(sigma=sigma, evaluations=trace)
        return _result("sigma_flatness", value, None, loss, settings, obj, start, details=details)


# -- the report ----------------------------------------------------------------------------------
def sharpness_report(
    model: torch.nn.Module,
    loss_fn: Callable,
    data: Iterable,
    *,
    rho: float = 0.05,
    adaptive_rho: float = 0.5,
    average_rho: float = 0.01,
    adaptive_average_rho: float = 0.1,
    epsilon: float = 1e-3,
    sigma_threshold: float = 0.1,
    m: int | None = None,
    steps: int = 20,
    restarts: int = 2,
    samples: int = 64,
    eigen_tol: float = 1e-4,
    trace_matvecs: int = 60,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Every sharpness measure of the model at its parameters, and the Hessian's largest
    eigenvalue and trace, as one tidy row (a dict of numbers).

    Keys: ``loss``; ``worst_case`` (l2, ``rho``) and ``worst_case_adaptive`` (l2,
    ``adaptive_rho``), both with ``m``; ``average`` (``average_rho``) and ``average_adaptive``
    (``adaptive_average_rho``), each with ``*_stderr``; ``epsilon`` (Keskar, ``epsilon``);
    ``sigma_flatness`` (``1 / sigma^2`` at ``sigma_threshold``) and ``sigma``; ``lambda_max``
    (Lanczos, with ``lambda_max_residual``); ``hessian_trace`` (Hutch++ with
    ``trace_matvecs`` products, with ``hessian_trace_stderr``); the cost ``forward_passes``,
    ``backward_passes`` (sharpness measures), ``hessian_matvecs`` and ``seconds``. The settings
    are the arguments: record them beside the row. Every measure is seeded with ``seed``.
    ``progress``: the curvature probes' progress bars (None: unless ``TQDM_DISABLE``).
    """
    from .curvature import hessian_eigenvalues, hessian_trace

    start = time.perf_counter()
    for name, value in [
        ("rho", rho),
        ("adaptive_rho", adaptive_rho),
        ("average_rho", average_rho),
        ("adaptive_average_rho", adaptive_average_rho),
        ("epsilon", epsilon),
        ("sigma_threshold", sigma_threshold),
        ("eigen_tol", eigen_tol),
    ]:
        _check_positive(name, value)
    trace_matvecs = check_int("trace_matvecs", trace_matvecs, 3)
    for name, value in [("steps", steps), ("restarts", restarts), ("samples", samples)]:
        check_int(name, value, 2 if name == "samples" else 1)
    if m is not None:
        check_int("m", m, 1)
    _check_seed(seed)
    if not isinstance(data, list | tuple):
        data = list(data)  # read a DataLoader once, for every measure
    worst = dict(steps=steps, restarts=restarts, m=m, seed=seed)
    results = {
        "worst_case": worst_case_sharpness(model, loss_fn, data, rho, **worst),
        "worst_case_adaptive": worst_case_sharpness(
            model, loss_fn, data, adaptive_rho, adaptive=True, **worst
        ),
        "average": average_sharpness(model, loss_fn, data, average_rho, samples=samples, seed=seed),
        "average_adaptive": average_sharpness(
            model, loss_fn, data, adaptive_average_rho, adaptive=True, samples=samples, seed=seed
        ),
        "epsilon": epsilon_sharpness(model, loss_fn, data, epsilon, seed=seed),
        "sigma_flatness": sigma_flatness(model, loss_fn, data, sigma_threshold, seed=seed),
    }
    row: dict[str, Any] = {"loss": results["worst_case"].loss}
    for key, res in results.items():
        row[key] = res.value
        if res.stderr is not None:
            row[f"{key}_stderr"] = res.stderr
    row["sigma"] = results["sigma_flatness"].details["sigma"]
    eig = hessian_eigenvalues(
        model, loss_fn, data, k=1, tol=eigen_tol, seed=seed, progress=progress
    )
    tr = hessian_trace(model, loss_fn, data, matvecs=trace_matvecs, seed=seed, progress=progress)
    row["lambda_max"] = float(eig.values[0])
    row["lambda_max_residual"] = float(eig.residuals[0])
    row["hessian_trace"] = float(tr.estimate)
    row["hessian_trace_stderr"] = float(tr.stderr)
    row["forward_passes"] = sum(r.forward_passes for r in results.values())
    row["backward_passes"] = sum(r.backward_passes for r in results.values())
    row["hessian_matvecs"] = eig.matvecs + tr.matvecs
    row["seconds"] = time.perf_counter() - start
    return row


class sharpness_measurement:  # lower case: used like a function that makes a measurement
    """A sweep measurement ``(model, task) -> dict``: :func:`sharpness_report` of the model on
    ``task.data(split, batch_size)`` with ``task.loss_fn`` and ``settings`` (no progress bars).
    A plain object, so it pickles to the workers of a sweep::

        register_measurement("sharpness", sharpness_measurement(m=128))
    """

    def __init__(self, split: str = "train", batch_size: int | None = None, **settings: Any):
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size, 1)
        self.split = split
        self.batch_size = batch_size
        self.settings = {"progress": False, **settings}

    def __call__(self, model: torch.nn.Module, task: Any) -> dict[str, Any]:
        data = task.data(self.split, self.batch_size)
        return sharpness_report(model, task.loss_fn, data, **self.settings)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings.items() if k != "progress")
        return f"sharpness_measurement(split={self.split!r}, batch_size={self.batch_size}, {args})"
