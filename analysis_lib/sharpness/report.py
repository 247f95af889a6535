"""The report that gathers the measures: :func:`sharpness_report`, every sharpness measure of a
model and the Hessian's largest eigenvalue and trace as one tidy row, and
:class:`sharpness_measurement`, that report as a ``(model, task) -> dict`` measurement for
sweeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .._checks import check_int, check_positive
from ..curvature import hessian_eigenvalues, hessian_trace
from ._objective import SharpnessResult, at_least, check_seed, checked, optional
from .average import average_sharpness, sigma_flatness
from .epsilon import epsilon_sharpness
from .worst_case import worst_case_sharpness

__all__ = ["sharpness_measurement", "sharpness_report"]


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

    Args:
        model, loss_fn, data: as for :func:`~analysis_lib.sharpness.worst_case_sharpness`
            (``data`` is read once, into a list).
        rho, adaptive_rho: the radii of the worst-case measures, > 0.
        average_rho, adaptive_average_rho: the radii of the average measures, > 0.
        epsilon: the box of :func:`~analysis_lib.sharpness.epsilon_sharpness`, > 0.
        sigma_threshold: the threshold of :func:`~analysis_lib.sharpness.sigma_flatness`, > 0.
        m: the batch size of m-sharpness for the worst-case measures, or None (whole data).
        steps, restarts: ascent steps (>= 1) and random starts (>= 1) of the worst-case measures.
        samples: antithetic pairs of the average measures, >= 2.
        eigen_tol: the Lanczos tolerance of ``lambda_max``, > 0.
        trace_matvecs: the Hutch++ product budget (at least 4).
        seed: an integer >= 0 seeding every measure.
        progress: show the curvature probes' progress bars.

    Returns:
        The row, a dict with the keys above.

    Raises:
        ValueError: an invalid argument (checked before any work; the message names it), or
            what a measure refuses (a reduced-precision model, bad ``data``).
        NonFiniteError: a measure meets a loss or product that is not finite.
    """

    start = time.perf_counter()
    # every argument checked before any work (each measure records its own settings)
    valid = checked(
        rho=(rho, check_positive),
        adaptive_rho=(adaptive_rho, check_positive),
        average_rho=(average_rho, check_positive),
        adaptive_average_rho=(adaptive_average_rho, check_positive),
        epsilon=(epsilon, check_positive),
        sigma_threshold=(sigma_threshold, check_positive),
        eigen_tol=(eigen_tol, check_positive),
        trace_matvecs=(trace_matvecs, at_least(3)),
        steps=(steps, at_least(1)),
        restarts=(restarts, at_least(1)),
        samples=(samples, at_least(2)),
        m=(m, optional(at_least(1))),
        seed=(seed, check_seed),
    )
    trace_matvecs = valid["trace_matvecs"]
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
