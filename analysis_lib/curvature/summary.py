"""The curvature of one trained model in one row: the top Hessian eigenvalues, the trace and,
given the optimizer that trained it, its stability thresholds beside the sharpness they bound.

Used as::

    from analysis_lib.curvature.summary import curvature_summary

    c = curvature_summary(run.model, task.loss_fn, task.data("train"), k=5, optimizer=run.optimizer)
    c.row()           # lambda_max, its residual, ..., trace, thresholds: one row of a table
    c.eigen_frame()   # rank, eigenvalue, residual: one row per eigenvalue
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from .._checks import check_int
from .krylov import EigenResult
from .probes import hessian_eigenvalues, hessian_trace
from .trace import TraceResult
from .tracking import stability_thresholds

__all__ = ["CurvatureSummary", "curvature_summary"]


@dataclass(eq=False)
class CurvatureSummary:
    """What :func:`curvature_summary` measured.

    ``top``: the ``k`` largest Hessian eigenvalues (Lanczos); ``trace``: the Hessian trace
    (Hutch++); ``check``: the largest eigenvalue again from an independent start (or None);
    ``thresholds``: :func:`~analysis_lib.curvature.stability_thresholds` of the optimizer (empty
    without one); ``preconditioned``: the largest eigenvalue of ``P^(-1/2) H P^(-1/2)`` with
    ``P`` the Adam-family optimizer's denominator (None for other optimizers or without one).
    """

    top: EigenResult
    trace: TraceResult
    check: EigenResult | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    preconditioned: EigenResult | None = None

    def row(self) -> dict[str, float]:
        """``lambda_max``, ``residual`` (its Lanczos residual ``||H u - lambda u||``),
        ``eig_matvecs``, ``converged``, ``trace``, ``trace_stderr``; with a check,
        ``lambda_max_check`` and ``residual_check``; for an adaptive optimizer
        ``preconditioned_lambda_max`` and ``threshold_adam`` = (2 + 2 beta1) / ((1 - beta1) eta),
        for SGD with momentum ``threshold_momentum`` = (2 + 2 beta) / eta.

        Returns:
            A flat dict of numbers (``converged`` a bool), e.g. one row of a results table.
        """
        row = dict(
            lambda_max=float(self.top.values[0]),
            residual=float(self.top.residuals[0]),
            eig_matvecs=self.top.matvecs,
            converged=self.top.converged,
            trace=float(self.trace.estimate),
            trace_stderr=float(self.trace.stderr),
        )
        if self.check is not None:
            row.update(
                lambda_max_check=float(self.check.values[0]),
                residual_check=float(self.check.residuals[0]),
            )
        if self.preconditioned is not None:
            row.update(
                preconditioned_lambda_max=float(self.preconditioned.values[0]),
                threshold_adam=self.thresholds["threshold_adam"],
            )
        elif "threshold_momentum" in self.thresholds:
            row.update(threshold_momentum=self.thresholds["threshold_momentum"])
        return row

    def eigen_frame(self) -> pd.DataFrame:
        """One row per top eigenvalue: ``rank`` (1 = the largest), ``eigenvalue``, ``residual``.

        Returns:
            A DataFrame of ``k`` rows, columns ``rank``, ``eigenvalue``, ``residual``.
        """
        values = [float(v) for v in self.top.values]
        residuals = [float(r) for r in self.top.residuals]
        return pd.DataFrame(
            {"rank": range(1, len(values) + 1), "eigenvalue": values, "residual": residuals}
        )


def curvature_summary(
    model: torch.nn.Module,
    loss_fn,
    data,
    *,
    k: int = 1,
    trace_matvecs: int = 100,
    seed: int = 0,
    check_seed: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> CurvatureSummary:
    """Measure the curvature of ``model``'s loss over ``data`` (the probes' ``(model, loss_fn,
    data)`` convention):

    * the ``k`` largest eigenvalues of the Hessian ``H`` (Lanczos from a start drawn with
      ``seed``, to a residual below 1e-6 ||H||);
    * ``tr H`` by Hutch++ with ``trace_matvecs`` Hessian-vector products (``seed``);
    * with ``check_seed``: ``lambda_max`` again from a start drawn with it, an independent
      confirmation (the two agree within the sum of their residuals);
    * with ``optimizer``: its stability thresholds at its current learning rate and, for the
      Adam family, the sharpness they bound, ``lambda_max(P^(-1/2) H P^(-1/2))`` with
      ``P = diag(sqrt(d) + eps)`` the optimizer's own denominator.

    Args:
        model, loss_fn, data: see :class:`~analysis_lib.curvature.HessianOperator`.
        k: the number of top eigenvalues, an integer >= 1 (default 1).
        trace_matvecs: the Hutch++ product budget (default 100; at least 4).
        seed: an integer >= 0 for the eigenvalue start and the trace's vectors (default 0).
        check_seed: an integer >= 0 for the independent check, or None (default) for none.
        optimizer: the optimizer training ``model``, or None; an Adam-family one must have taken
            a step.

    Returns:
        A :class:`CurvatureSummary`.

    Raises:
        ValueError: an invalid ``k``, ``trace_matvecs``, ``seed`` or ``check_seed`` (the message
            names it), or anything :func:`~analysis_lib.curvature.hessian_eigenvalues` refuses.
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer`` (or is an Adam-family one the
            preconditioner cannot read).
        NonFiniteError: a Hessian-vector product is not finite.
    """
    k = check_int("k", k, 1)
    trace_matvecs = check_int("trace_matvecs", trace_matvecs, 1)
    seed = check_int("seed", seed, 0)
    if check_seed is not None:
        check_seed = check_int("check_seed", check_seed, 0)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}"
        )
    top = hessian_eigenvalues(model, loss_fn, data, k=k, seed=seed)
    out = CurvatureSummary(
        top, hessian_trace(model, loss_fn, data, matvecs=trace_matvecs, seed=seed)
    )
    if check_seed is not None:
        out.check = hessian_eigenvalues(model, loss_fn, data, k=1, seed=check_seed)
    if optimizer is not None:
        out.thresholds = stability_thresholds(optimizer)
        if "threshold_adam" in out.thresholds:
            out.preconditioned = hessian_eigenvalues(
                model, loss_fn, data, k=1, seed=seed, preconditioner=optimizer
            )
    return out
