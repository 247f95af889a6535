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

from ._checks import (
    NonFiniteError,
    check_compute_dtype,
    check_finite_batches,
    check_int,
    check_representable,
)
from ._evaluation import FunctionalModel, eval_mode, generator, select_parameters, warn_batchnorm
from .curvature import hessian_eigenvalues, hessian_trace

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
#: Why sharpness refuses bfloat16 and float16 models (the probes' one rule on reduced precision,
#: :func:`analysis_lib._checks.check_compute_dtype`): a perturbed loss rounds to the unperturbed
#: one. With 8 (bfloat16) or 11 (float16) significant bits, loss increases below about 1e-3 of
#: the loss vanish: a bfloat16 MLP gave an average sharpness of 0.0 where float32 gives 1e-4,
#: a sigma flatness 33% off, and worst-case ascent failed inside torch.
_REDUCED_PRECISION = (
    "in reduced precision a perturbed loss rounds to the unperturbed one: bfloat16 and float16 "
    "keep 8 and 11 significant bits, so loss increases below about 1e-3 of the loss vanish"
)
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


def _check_norm(name: str, norm: Any) -> str:
    if norm not in NORMS:
        raise ValueError(f"Invalid {name}: {norm!r} (expected one of {NORMS})")
    return norm


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"Invalid {name}: {value!r} (expected True or False)")
    return bool(value)


def _check_seed(name: str, seed: Any) -> int:
    if isinstance(seed, torch.Generator):
        raise ValueError(f"Invalid {name}: a torch.Generator (expected an integer >= 0, recorded)")
    return check_int(name, seed, 0)


#: ``check(name, value)``: the value to record, or a ValueError naming the argument.
_Check = Callable[[str, Any], Any]


def _at_least(low: int) -> _Check:
    """The check of an integer ``>= low``."""
    return lambda name, value: check_int(name, value, low)


def _optional(check: _Check) -> _Check:
    """``check``, or None for None."""
    return lambda name, value: None if value is None else check(name, value)


def _checked(**arguments: tuple[Any, _Check]) -> dict[str, Any]:
    """The settings of a measure: each argument ``name=(value, check)`` checked in the order
    given, ``check(name, value)`` returning the value to record (``5`` -> ``5.0`` for a
    radius) or raising a ValueError that names the argument."""
    return {name: check(name, value) for name, (value, check) in arguments.items()}


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

    def __init__(self, model, loss_fn, data, params=None, radii=None) -> None:
        named = select_parameters(model, params)
        dtype = named[0][1].dtype
        check_compute_dtype("model", dtype, "sharpness", _REDUCED_PRECISION)
        for name, (value, note) in (radii or {}).items():
            check_representable(name, value, dtype, note)
        fm = FunctionalModel(model, loss_fn, data, named)
        check_finite_batches(fm.batches)
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
        """``L(theta)``; a :class:`NonFiniteError` naming the cause when it is not finite."""
        value = float(self.values(torch.zeros(1, self.size, **self._like()), self.scale(False))[0])
        if not math.isfinite(value):
            raise NonFiniteError(
                f"The loss over data at the model's parameters is {value} (expected finite): "
                f"{self.nonfinite_cause()}"
            )
        return value

    def nonfinite_cause(self) -> str:
        """Why the loss at the parameters is not finite: a parameter, a buffer or an input or
        target holding NaN or inf (NaN samples are refused up front), else the loss function's
        own value."""
        part = self.function.nonfinite_part()
        return part or "the parameters and the data are finite: the loss function itself returns it"

    def perturbed_nonfinite(self, what: str, u: Tensor, scale: Tensor) -> NonFiniteError:
        """The error of a measure ``what`` none of whose perturbed losses (at ``theta + scale u``
        for the rows of ``u``) is finite, saying whether the perturbations themselves overflow
        the model's dtype or the loss is not finite near the parameters."""
        delta = scale * u
        if not bool(torch.isfinite(delta).all()):
            why = (
                f"the perturbations themselves overflow the model's dtype {self.dtype} "
                "(the radius is too large for it)"
            )
        elif not bool(torch.isfinite(self.theta + delta).all()):
            why = f"the perturbed parameters overflow the model's dtype {self.dtype}"
        else:
            why = (
                "the loss is finite at the parameters but at no perturbation of this radius "
                "(it overflows or is NaN there): try a smaller radius"
            )
        return NonFiniteError(f"{what}: every perturbed loss is not finite (NaN or inf); {why}")

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
    settings = _checked(
        rho=(rho, _check_positive),
        norm=(norm, _check_norm),
        adaptive=(adaptive, _check_bool),
        m=(m, _optional(_at_least(1))),
        steps=(steps, _at_least(1)),
        restarts=(restarts, _at_least(1)),
        step_size=(step_size, _optional(_check_positive)),
        seed=(seed, _check_seed),
    )
    note = " (2 rho by default)" if settings["step_size"] is None else ""
    if settings["step_size"] is None:
        settings["step_size"] = 2.0 * settings["rho"]
    rho, norm, m, seed = (settings[key] for key in ("rho", "norm", "m", "seed"))
    radii = {"rho": (rho, ""), "step_size": (settings["step_size"], note)}
    with _Guard(model):
        obj = _Objective(model, loss_fn, data, params, radii)
        groups = _split(obj, m, seed)
        loss = obj.loss()
        scale = obj.scale(settings["adaptive"])
        base = _base_losses(groups, loss, scale)
        u = _start(obj, (groups.k, settings["restarts"]), rho, norm, generator(seed))
        best, best_u = _ascend(groups, scale, u, settings)
        _check_found(obj, groups, best, u, scale)
        value, details, delta = _best_of_runs(groups, best - base, best_u, scale)
        extra = dict(details=details, perturbation=delta[0] if m is None else delta)
        return _result("worst_case", value, None, loss, settings, obj, start, **extra)


def _split(obj: _Objective, m: int | None, seed: int) -> _Whole | _Groups:
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


def _check_found(obj: _Objective, groups, best: Tensor, u: Tensor, scale: Tensor) -> None:
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
        return torch.full((1, 1), loss, **obj._like())
    base = groups.values(torch.zeros(groups.k, 1, obj.size, **obj._like()), scale)
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
    best = torch.full(u.shape[:2], -math.inf, **groups.obj._like())
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
    settings = _checked(
        rho=(rho, _check_positive),
        adaptive=(adaptive, _check_bool),
        samples=(samples, _at_least(2)),
        seed=(seed, _check_seed),
    )
    rho, adaptive, samples, seed = settings.values()
    with _Guard(model):
        obj = _Objective(model, loss_fn, data, params, {"rho": (rho, "")})
        loss = obj.loss()
        z = rho * obj.randn((samples, obj.size), generator(seed))
        scale = obj.scale(adaptive)
        inc = _antithetic_increase(obj, z, scale, loss).double()
        finite = int(torch.isfinite(inc).sum())
        if finite == 0:
            raise obj.perturbed_nonfinite("average_sharpness", z, scale)
        if finite < samples:  # a mean with NaN or inf terms is no estimate
            raise NonFiniteError(
                f"average_sharpness: {samples - finite} of the {samples} antithetic pairs of "
                f"perturbed losses are not finite (NaN or inf) at rho={rho!r}: the loss is not "
                "finite everywhere within the radius; try a smaller rho"
            )
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
    settings = _checked(
        epsilon=(epsilon, _check_positive),
        maxiter=(maxiter, _at_least(1)),
        restarts=(restarts, _at_least(1)),
        seed=(seed, _check_seed),
    )
    epsilon, maxiter, restarts, seed = settings.values()
    with _Guard(model):
        obj = _Objective(model, loss_fn, data, params, {"epsilon": (epsilon, "")})
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
    settings = _checked(
        threshold=(threshold, _check_positive),
        adaptive=(adaptive, _check_bool),
        samples=(samples, _at_least(1)),
        sigma_init=(sigma_init, _check_positive),
        iterations=(iterations, _at_least(0)),
        seed=(seed, _check_seed),
    )
    threshold, adaptive, samples, sigma_init, iterations, seed = settings.values()
    with _Guard(model):
        obj = _Objective(model, loss_fn, data, params, {"sigma_init": (sigma_init, "")})
        loss = obj.loss()
        z = obj.randn((samples, obj.size), generator(seed))
        scale = obj.scale(adaptive)
        trace: list[tuple[float, float]] = []

        def below(sigma: float) -> bool:
            inc = float(_antithetic_increase(obj, sigma * z, scale, loss).double().mean())
            trace.append((sigma, inc))
            return math.isfinite(inc) and inc <= threshold

        sigma = _largest_below(below, sigma_init, iterations)
        if not any(math.isfinite(inc) for _, inc in trace):
            smallest = min(sig for sig, _ in trace)
            raise obj.perturbed_nonfinite("sigma_flatness", smallest * z, scale)
        value = math.inf if sigma == 0 else 1.0 / sigma**2
        details = dict(sigma=sigma, evaluations=trace)
        return _result("sigma_flatness", value, None, loss, settings, obj, start, details=details)


def _largest_below(below: Callable[[float], bool], sigma_init: float, iterations: int) -> float:
    """The crossing of a predicate ``below(sigma)`` that holds for small sigma: bracketed by
    factors of 4 from ``sigma_init`` (at most 31 evaluations), then ``iterations`` bisections
    in ``log sigma``. The largest sigma found below; inf when every sigma tried is, 0 when
    none is."""
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
    return lo if hi < math.inf else math.inf


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

    start = time.perf_counter()
    # every argument checked before any work (each measure records its own settings)
    checked = _checked(
        rho=(rho, _check_positive),
        adaptive_rho=(adaptive_rho, _check_positive),
        average_rho=(average_rho, _check_positive),
        adaptive_average_rho=(adaptive_average_rho, _check_positive),
        epsilon=(epsilon, _check_positive),
        sigma_threshold=(sigma_threshold, _check_positive),
        eigen_tol=(eigen_tol, _check_positive),
        trace_matvecs=(trace_matvecs, _at_least(3)),
        steps=(steps, _at_least(1)),
        restarts=(restarts, _at_least(1)),
        samples=(samples, _at_least(2)),
        m=(m, _optional(_at_least(1))),
        seed=(seed, _check_seed),
    )
    trace_matvecs = checked["trace_matvecs"]
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
    row = _sharpness_columns(results)
    eig = hessian_eigenvalues(
        model, loss_fn, data, k=1, tol=eigen_tol, seed=seed, progress=progress
    )
    tr = hessian_trace(model, loss_fn, data, matvecs=trace_matvecs, seed=seed, progress=progress)
    row.update(_curvature_columns(eig, tr))
    row.update(_cost_columns(results, eig, tr))
    row["seconds"] = time.perf_counter() - start
    return row


def _sharpness_columns(results: dict[str, SharpnessResult]) -> dict[str, Any]:
    """``loss``, each measure's value (and ``<measure>_stderr`` where it has one), ``sigma``."""
    row: dict[str, Any] = {"loss": results["worst_case"].loss}
    for key, res in results.items():
        row[key] = res.value
        if res.stderr is not None:
            row[f"{key}_stderr"] = res.stderr
    row["sigma"] = results["sigma_flatness"].details["sigma"]
    return row


def _curvature_columns(eig, tr) -> dict[str, float]:
    """``lambda_max`` and its residual, ``hessian_trace`` and its standard error."""
    return {
        "lambda_max": float(eig.values[0]),
        "lambda_max_residual": float(eig.residuals[0]),
        "hessian_trace": float(tr.estimate),
        "hessian_trace_stderr": float(tr.stderr),
    }


def _cost_columns(results: dict[str, SharpnessResult], eig, tr) -> dict[str, int]:
    """The passes of the sharpness measures and the curvature's Hessian-vector products."""
    return {
        "forward_passes": sum(r.forward_passes for r in results.values()),
        "backward_passes": sum(r.backward_passes for r in results.values()),
        "hessian_matvecs": eig.matvecs + tr.matvecs,
    }


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
