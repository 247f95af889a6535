"""Measurements a sweep takes on each trial's final model, by name.

A measurement is a callable ``(model, task) -> dict[str, float]``; its numbers become columns
of ``trials.csv`` (a diverged run is not measured: its columns are empty). Register your own with
:func:`register_measurement` in the process that runs the sweep: the callables travel to the
workers with the trials, so a cluster needs nothing registered on its side (only the library).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

from ..curvature import hessian_eigenvalues
from ..curvature import hessian_trace as _trace
from ..sharpness import sharpness_measurement

__all__ = [
    "MEASUREMENTS",
    "SHARPNESS_SAMPLES",
    "SHARPNESS_SETTINGS",
    "Measurement",
    "register_measurement",
    "sharpness_subset",
    "sharpness_train",
]

Measurement = Callable[[nn.Module, object], dict]

_PROBE_BATCH = 1024  # the probes see the whole training split, in batches of this size


def lambda_max(model: nn.Module, task) -> dict[str, float]:
    """The largest Hessian eigenvalue of the training loss (Lanczos, seeded), with its
    residual (some true eigenvalue lies within it).

    Args:
        model: the trained model.
        task: its task (``loss_fn``, ``data``).

    Returns:
        ``{"lambda_max": ..., "lambda_max_residual": ...}``.
    """
    res = hessian_eigenvalues(
        model, task.loss_fn, task.data("train", _PROBE_BATCH), k=1, tol=1e-4, max_matvecs=100,
        seed=0, progress=False,
    )  # fmt: skip
    return {"lambda_max": float(res.values[0]), "lambda_max_residual": float(res.residuals[0])}


def hessian_trace(model: nn.Module, task) -> dict[str, float]:
    """The trace of the Hessian of the training loss (Hutch++, 60 products, seeded) and its
    standard error.

    Args:
        model: the trained model.
        task: its task (``loss_fn``, ``data``).

    Returns:
        ``{"hessian_trace": ..., "hessian_trace_stderr": ...}``.
    """
    res = _trace(
        model, task.loss_fn, task.data("train", _PROBE_BATCH), matvecs=60, seed=0, progress=False
    )
    return {"hessian_trace": float(res.estimate), "hessian_trace_stderr": float(res.stderr)}


#: Samples of the training split that ``sharpness_subset`` sees, and its settings: lighter
#: than a notebook's single report (fewer ascent steps, restarts, noise draws and Hutch++
#: products), so that a sweep can measure every one of its minima.
SHARPNESS_SAMPLES = 256
SHARPNESS_SETTINGS = dict(steps=10, restarts=1, samples=16, trace_matvecs=30, seed=0)


def sharpness_subset(model: nn.Module, task) -> dict[str, float]:
    """:func:`analysis_lib.sharpness.sharpness_report` (through
    :class:`~analysis_lib.sharpness.sharpness_measurement`, with :data:`SHARPNESS_SETTINGS`) on
    a fixed subset of the training split, its first :data:`SHARPNESS_SAMPLES` samples (the
    split is already a seeded shuffle of the data), in one batch: worst-case, adaptive
    worst-case, average, adaptive average, epsilon and sigma sharpness, lambda_max and the
    Hessian's trace, all of the loss on that subset (its ``loss`` column), and the report's
    wall time as ``sharpness_seconds``.

    Args:
        model: the trained model.
        task: its task, a dataclass with ``x_train``, ``y_train`` and ``n_train``.

    Returns:
        The report's row as a dict ``column -> number``, with ``sharpness_seconds`` in place of
        ``seconds``.
    """
    n = min(SHARPNESS_SAMPLES, task.n_train)
    subset = replace(task, x_train=task.x_train[:n], y_train=task.y_train[:n])
    row = sharpness_measurement(**SHARPNESS_SETTINGS)(model, subset)
    row["sharpness_seconds"] = row.pop("seconds")  # "seconds" is the trial's own column
    return row


def sharpness_train(model: nn.Module, task) -> dict[str, float]:
    """As :func:`sharpness_subset` (the same settings, :data:`SHARPNESS_SETTINGS`), but on the
    whole training split in one batch: no sampling error from a subset, at the cost of a pass
    over every training sample per probe (about 2 s for MNIST-1D's MLP, 17 s for its CNN, on
    one CPU thread).

    Args:
        model: the trained model.
        task: its task (``x_train``, ``y_train``).

    Returns:
        The report's row as a dict ``column -> number``, with ``sharpness_seconds`` in place of
        ``seconds``.
    """
    row = sharpness_measurement(**SHARPNESS_SETTINGS)(model, task)
    row["sharpness_seconds"] = row.pop("seconds")
    return row


#: The measurements a config may name.
MEASUREMENTS: dict[str, Measurement] = {
    "lambda_max": lambda_max,
    "hessian_trace": hessian_trace,
    "sharpness_subset": sharpness_subset,
    "sharpness_train": sharpness_train,
}


def register_measurement(name: str, fn: Measurement, *, replace: bool = False) -> None:
    """Make ``fn`` available to configs as ``name`` (``replace=True`` to redefine one).

    Args:
        name: the name configs use, a Python identifier.
        fn: a callable ``(model, task) -> dict[str, float]``.
        replace: allow redefining a registered name.

    Raises:
        ValueError: ``name`` is not an identifier or is already registered without ``replace``,
            or ``fn`` is not callable.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"Invalid name: {name!r} (expected an identifier)")
    if not callable(fn):
        raise ValueError(f"Invalid fn: {fn!r} (expected a callable (model, task) -> dict)")
    if name in MEASUREMENTS and not replace:
        raise ValueError(f"Invalid name: {name!r} is already registered (pass replace=True)")
    MEASUREMENTS[name] = fn
