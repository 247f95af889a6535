"""Entry points: eigenvalues, trace and spectral density of a model's curvature in one call."""

from __future__ import annotations

import dataclasses
import time

import torch

from .._checks import check_int
from .density import DensityResult, slq
from .krylov import EigenResult, lanczos
from .operators import (
    DiagonalScaledOperator,
    GGNOperator,
    HessianOperator,
    LinearOperator,
    adam_preconditioner,
)
from .power import power_iteration
from .trace import TraceResult, hutchinson, hutchpp

__all__ = ["curvature_operator", "hessian_eigenvalues", "hessian_trace", "spectral_density"]

MATRICES = ("hessian", "ggn")
TRACE_METHODS = ("hutch++", "hutchinson")
EIGEN_METHODS = ("lanczos", "power")


@dataclasses.dataclass(frozen=True)
class _OperatorChoice:
    """Which operator the entry points build: the arguments of :func:`curvature_operator`
    after ``(model, loss_fn, data)``, travelling together."""

    matrix: str = "hessian"
    params: object = None
    preconditioner: torch.optim.Optimizer | None = None
    backend: str | None = None

    def build(self, model: torch.nn.Module, loss_fn, data) -> LinearOperator:
        """The operator for ``model``, ``loss_fn`` and ``data`` (see :func:`curvature_operator`)."""
        if self.matrix not in MATRICES:
            raise ValueError(f"Invalid matrix: {self.matrix!r} (expected one of {MATRICES})")
        if self.matrix == "hessian":
            op = HessianOperator(model, loss_fn, data, params=self.params, backend=self.backend)
        else:
            if self.backend is not None:
                raise ValueError(
                    f"Invalid backend: {self.backend!r} (the GGN has a single backend)"
                )
            op = GGNOperator(model, loss_fn, data, params=self.params)
        if self.preconditioner is not None:
            p = adam_preconditioner(self.preconditioner, model, self.params).to(op.dtype)
            op = DiagonalScaledOperator(op, p.rsqrt())
        return op


def curvature_operator(
    model: torch.nn.Module,
    loss_fn,
    data,
    *,
    matrix: str = "hessian",
    params=None,
    preconditioner: torch.optim.Optimizer | None = None,
    backend: str | None = None,
) -> LinearOperator:
    """The curvature of the mean loss over ``data`` as an operator on flat parameter vectors.

    Args:
        model, loss_fn, data: see :class:`~analysis_lib.curvature.HessianOperator`.
        matrix: ``"hessian"`` or ``"ggn"`` (generalised Gauss-Newton).
        params: parameter names or module prefixes to restrict to (None: all).
        preconditioner: an Adam-family optimizer (AdamW, Adam, AdamNX, Ada2MS) that has taken a
            step: the operator becomes ``P^(-1/2) M P^(-1/2)`` with ``P = sqrt(d) + eps`` its
            denominator (:func:`~analysis_lib.curvature.adam_preconditioner`).
        backend: the Hessian-vector-product backend (Hessian only).

    Returns:
        The operator (a :class:`~analysis_lib.curvature.HessianOperator`, a GGN operator, or one
        of them scaled by the preconditioner).

    Raises:
        ValueError: an unknown ``matrix`` or ``backend``, unknown ``params``, a bfloat16/float16
            model, bad ``data``, or a ``preconditioner`` without state for every parameter.
        TypeError: ``preconditioner`` is not an Adam-family optimizer.
    """
    choice = _OperatorChoice(matrix, params, preconditioner, backend)
    return choice.build(model, loss_fn, data)


def _timed(result, start: float):
    return dataclasses.replace(result, seconds=time.perf_counter() - start)


def hessian_eigenvalues(
    model: torch.nn.Module,
    loss_fn,
    data,
    k: int = 1,
    which: str = "LA",
    tol: float = 1e-6,
    max_matvecs: int | None = None,
    seed: int | torch.Generator = 0,
    *,
    method: str = "lanczos",
    v0: torch.Tensor | None = None,
    matrix: str = "hessian",
    params=None,
    preconditioner: torch.optim.Optimizer | None = None,
    backend: str | None = None,
    progress: bool | None = None,
) -> EigenResult:
    """``k`` extreme eigenvalues (and eigenvectors, residuals, cost) of the Hessian of the mean
    loss over ``data``.

    ``which`` is ``"LA"`` (largest), ``"SA"`` (smallest) or ``"LM"`` (largest magnitude);
    ``method="lanczos"`` (:func:`~analysis_lib.curvature.lanczos`) or ``"power"`` (power
    iteration, ``k=1``, largest magnitude). The eigenvectors are flat, in the order of
    ``model.named_parameters()``. ``matrix``, ``params``, ``preconditioner`` and ``backend``
    choose the operator (:func:`curvature_operator`). ``seconds`` includes building it.

    The model's parameters must be float32 or float64 (a bfloat16 or float16 model is refused:
    evaluate a float32 copy). A product that is not finite raises
    :class:`~analysis_lib.curvature.NonFiniteError`, which names the cause.

    Args:
        model, loss_fn, data: see :class:`~analysis_lib.curvature.HessianOperator`.
        k: the number of eigenvalues, ``1 <= k <= n`` (1 for ``"power"``).
        which: ``"LA"``, ``"SA"`` or ``"LM"`` (``"LM"`` for ``"power"``).
        tol: the relative residual tolerance, > 0 (see :func:`~analysis_lib.curvature.lanczos`).
        max_matvecs: the product budget; None: Lanczos' default, or 1000 for power iteration.
        seed: an int >= 0 or a ``torch.Generator`` for the start vector.
        method: ``"lanczos"`` (default) or ``"power"``.
        v0: a start vector of shape ``(n,)`` (a warm start), else drawn from ``seed``.
        matrix, params, preconditioner, backend: the operator, as for :func:`curvature_operator`.
        progress: show a progress bar (None or True; ``TQDM_DISABLE=1`` silences it too).

    Returns:
        An :class:`~analysis_lib.curvature.EigenResult`.

    Raises:
        ValueError: an unknown ``method``; ``k != 1`` or ``which != "LM"`` with ``"power"``; an
            invalid solver argument or operator option (see :func:`curvature_operator`).
        NonFiniteError: a product is not finite.
    """
    start = time.perf_counter()
    if method not in EIGEN_METHODS:
        raise ValueError(f"Invalid method: {method!r} (expected one of {EIGEN_METHODS})")
    op = _OperatorChoice(matrix, params, preconditioner, backend).build(model, loss_fn, data)
    if method == "power":
        if check_int("k", k) != 1 or which != "LM":
            raise ValueError(
                f"Invalid k/which for method='power': k={k!r}, which={which!r} "
                "(power iteration finds one eigenvalue, the largest in magnitude: "
                "k=1, which='LM')"
            )
        res = power_iteration(
            op,
            tol=tol,
            max_matvecs=1000 if max_matvecs is None else max_matvecs,
            v0=v0,
            seed=seed,
            progress=progress,
        )
    else:
        res = lanczos(
            op,
            k=k,
            which=which,
            tol=tol,
            max_matvecs=max_matvecs,
            v0=v0,
            seed=seed,
            progress=progress,
        )
    return _timed(res, start)


def hessian_trace(
    model: torch.nn.Module,
    loss_fn,
    data,
    matvecs: int = 100,
    method: str = "hutch++",
    seed: int | torch.Generator = 0,
    *,
    matrix: str = "hessian",
    params=None,
    preconditioner: torch.optim.Optimizer | None = None,
    backend: str | None = None,
    progress: bool | None = None,
) -> TraceResult:
    """The trace of the Hessian of the mean loss over ``data`` with ``matvecs`` products, by
    ``method="hutch++"`` (:func:`~analysis_lib.curvature.hutchpp`) or ``"hutchinson"``, with its
    standard error. Operator options as :func:`curvature_operator`.

    Args:
        model, loss_fn, data: see :class:`~analysis_lib.curvature.HessianOperator`.
        matvecs: the product budget (default 100; at least 4 for Hutch++, 2 for Hutchinson).
        method: ``"hutch++"`` (default) or ``"hutchinson"``.
        seed: an int >= 0 or a ``torch.Generator`` for the random vectors.
        matrix, params, preconditioner, backend: the operator, as for :func:`curvature_operator`.
        progress: show a progress bar (None or True; ``TQDM_DISABLE=1`` silences it too).

    Returns:
        A :class:`~analysis_lib.curvature.TraceResult`; ``seconds`` includes building the
        operator.

    Raises:
        ValueError: an unknown ``method``, an invalid ``matvecs`` or ``seed``, or an invalid
            operator option (see :func:`curvature_operator`).
        NonFiniteError: a product is not finite.
    """
    start = time.perf_counter()
    if method not in TRACE_METHODS:
        raise ValueError(f"Invalid method: {method!r} (expected one of {TRACE_METHODS})")
    op = _OperatorChoice(matrix, params, preconditioner, backend).build(model, loss_fn, data)
    estimator = hutchpp if method == "hutch++" else hutchinson
    return _timed(estimator(op, matvecs=matvecs, seed=seed, progress=progress), start)


def spectral_density(
    model: torch.nn.Module,
    loss_fn,
    data,
    lanczos_steps: int = 80,
    runs: int = 10,
    seed: int | torch.Generator = 0,
    *,
    sigma: float | None = None,
    grid=1000,
    matrix: str = "hessian",
    params=None,
    preconditioner: torch.optim.Optimizer | None = None,
    backend: str | None = None,
    progress: bool | None = None,
) -> DensityResult:
    """The spectral density of the Hessian of the mean loss over ``data`` by stochastic Lanczos
    quadrature (:func:`~analysis_lib.curvature.slq`): ``runs`` starts of ``lanczos_steps``
    products each. Operator options as :func:`curvature_operator`.

    Args:
        model, loss_fn, data: see :class:`~analysis_lib.curvature.HessianOperator`.
        lanczos_steps: Lanczos steps per run (default 80; capped at ``n``).
        runs: the number of random starts (default 10).
        seed: an int >= 0 or a ``torch.Generator`` for the starts.
        sigma: the smoothing's standard deviation; None: 1% of the nodes' range.
        grid: the evaluation points, or how many to space over the nodes +- 5 sigma.
        matrix, params, preconditioner, backend: the operator, as for :func:`curvature_operator`.
        progress: show a progress bar (None or True; ``TQDM_DISABLE=1`` silences it too).

    Returns:
        A :class:`~analysis_lib.curvature.DensityResult`; ``seconds`` includes building the
        operator.

    Raises:
        ValueError: an invalid argument of :func:`~analysis_lib.curvature.slq` or operator
            option (see :func:`curvature_operator`).
        NonFiniteError: a product is not finite.
    """
    start = time.perf_counter()
    op = _OperatorChoice(matrix, params, preconditioner, backend).build(model, loss_fn, data)
    res = slq(
        op,
        lanczos_steps=lanczos_steps,
        runs=runs,
        seed=seed,
        sigma=sigma,
        grid=grid,
        progress=progress,
    )
    return _timed(res, start)
