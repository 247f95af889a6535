"""What every sharpness measure stands on: the model as a function of a flat perturbation.

:class:`Objective` evaluates ``u -> L(theta + scale * u)`` for many perturbations at once (vmap
over the rows of ``u``, counting passes) and names the cause when a loss is not finite;
:class:`Guard` puts the model in eval mode and afterwards restores its parameters, buffers and
modes exactly; :class:`SharpnessResult` is what every measure returns (:func:`make_result` fills
it in); and the argument checks the measures share (:func:`checked` with :func:`check_positive`,
:func:`check_norm`, :func:`check_bool`, :func:`check_seed`, :func:`at_least`, :func:`optional`).
Private to the package: the measures import from here; users import from
:mod:`analysis_lib.sharpness`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from .._checks import (
    NonFiniteError,
    check_compute_dtype,
    check_finite_batches,
    check_int,
    check_representable,
)
from .._evaluation import FunctionalModel, eval_mode, select_parameters, warn_batchnorm

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
MAX_SAMPLES = 1 << 16


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
        forward_passes: forward passes through the model over all the data (see
            :mod:`analysis_lib.sharpness`).
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


def make_result(measure, value, stderr, loss, settings, obj, start, **extra) -> SharpnessResult:
    """The :class:`SharpnessResult` of a measure: its passes counted by the :class:`Objective`
    ``obj``, its wall time since ``start`` (a ``time.perf_counter()``)."""
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


# -- argument checks ---------------------------------------------------------------------------
def check_norm(name: str, norm: Any) -> str:
    """One of :data:`NORMS`."""
    if norm not in NORMS:
        raise ValueError(f"Invalid {name}: {norm!r} (expected one of {NORMS})")
    return norm


def check_bool(name: str, value: Any) -> bool:
    """True or False (NumPy's bool too)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"Invalid {name}: {value!r} (expected True or False)")
    return bool(value)


def check_seed(name: str, seed: Any) -> int:
    """An integer >= 0 (a seed that can be recorded; a torch.Generator cannot)."""
    if isinstance(seed, torch.Generator):
        raise ValueError(f"Invalid {name}: a torch.Generator (expected an integer >= 0, recorded)")
    return check_int(name, seed, 0)


#: ``check(name, value)``: the value to record, or a ValueError naming the argument.
_Check = Callable[[str, Any], Any]


def at_least(low: int) -> _Check:
    """The check of an integer ``>= low``."""
    return lambda name, value: check_int(name, value, low)


def optional(check: _Check) -> _Check:
    """``check``, or None for None."""
    return lambda name, value: None if value is None else check(name, value)


def checked(**arguments: tuple[Any, _Check]) -> dict[str, Any]:
    """The settings of a measure: each argument ``name=(value, check)`` checked in the order
    given, ``check(name, value)`` returning the value to record (``5`` -> ``5.0`` for a
    radius) or raising a ValueError that names the argument."""
    return {name: check(name, value) for name, (value, check) in arguments.items()}


# -- the model as a function of a flat perturbation ----------------------------------------------
class Guard:
    """Eval mode for the block, and afterwards every parameter, buffer and module flag exactly
    as before, also when the block raises."""

    def __init__(self, model: torch.nn.Module) -> None:
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"Invalid model: {type(model).__name__} (expected a torch.nn.Module)")
        self.model = model

    def __enter__(self) -> Guard:
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


class Objective:
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

    def sample_loss(self, u: Tensor, scale: Tensor, x: Any, y: Any) -> Tensor:
        """``loss_fn`` of the model at ``theta + scale * u`` on one batch ``(x, y)``: the
        function that vmap maps over perturbations (and over the batches of m-sharpness)."""
        p = self.space.unflatten(self.theta + scale * u)
        return self.loss_fn(self.function.outputs(p, x), y)

    def _chunk(self, count: int, batch: int) -> int:
        return max(1, min(count, MAX_SAMPLES // max(batch, 1)))

    def values(self, u: Tensor, scale: Tensor) -> Tensor:
        """``L(theta + scale * u_r)`` over all the data for each row of ``u`` (shape (R, n))."""
        total = torch.zeros(u.shape[0], dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for b in self.batches:
                step = self._chunk(u.shape[0], b.size)
                f = vmap(self.sample_loss, in_dims=(0, None, None, None))
                for i in range(0, u.shape[0], step):
                    total[i : i + step] += b.weight * f(u[i : i + step], scale, b.inputs, b.targets)
        self.forward_passes += u.shape[0]
        return total

    def values_and_grads(self, u: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """Values as :meth:`values` and their gradients with respect to ``u`` (shape (R, n))."""
        total = torch.zeros(u.shape[0], dtype=self.dtype, device=self.device)
        grads = torch.zeros_like(u)
        f = vmap(grad_and_value(self.sample_loss), in_dims=(0, None, None, None))
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
        value = float(self.values(torch.zeros(1, self.size, **self.like()), self.scale(False))[0])
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

    def like(self) -> dict[str, Any]:
        """``dtype`` and ``device`` of the model, as keywords for a new tensor."""
        return {"dtype": self.dtype, "device": self.device}

    def randn(self, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(**self.like())

    def rand(self, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
        return torch.rand(shape, generator=gen, dtype=torch.float64).to(**self.like())
