"""Curvature probes: the Hessian, the Gauss-Newton matrix and the preconditioned Hessian of a
model as linear operators, and generic algorithms on them (Lanczos, power iteration,
Hutchinson / Hutch++ trace, stochastic Lanczos quadrature).

Quick use::

    from analysis_lib.curvature import hessian_eigenvalues, hessian_trace, spectral_density

    top = hessian_eigenvalues(model, loss_fn, data, k=5)        # values, residuals, matvecs
    tr = hessian_trace(model, loss_fn, data, matvecs=100)       # estimate +- stderr
    dens = spectral_density(model, loss_fn, data)               # grid, density

``data`` is an iterable of ``(inputs, targets)`` batches (a list or a DataLoader; tensors or
tuples of tensors: the one rule of :mod:`analysis_lib._evaluation`); the loss is the
sample-weighted mean over all of them, so a ragged last batch counts right. Models must have
float32 or float64 parameters (a bfloat16 or float16 model is refused: evaluate a float32 copy).
A product that is not finite raises :class:`NonFiniteError`, which says why (a parameter, a
batch, the loss or its gradient). Lanczos, power iteration and SLQ need a symmetric operator: a
:class:`DenseOperator` is checked exactly, any operator with ``check_symmetric=True``
(:func:`check_symmetry`).

Modules: ``operators`` (the linear operators); the algorithms on any operator, ``krylov``
(the Lanczos process, :func:`lanczos`, :class:`EigenResult`, the symmetry check), ``power``
(:func:`power_iteration`), ``trace`` (:func:`hutchinson`, :func:`hutchpp`) and ``density``
(:func:`slq`), with what they share in ``_common``; ``probes`` (the one-call entry points),
``summary``, ``tracking`` (sharpness during training) and ``edge`` (the edge of stability).
Every random draw comes from a ``torch.Generator`` on the CPU, in float64, then cast to the
operator's dtype and device: the same seed gives the same vectors on every device.
"""

from .._checks import NonFiniteError
from .density import DensityResult, gaussian_density, slq
from .edge import one_hot_mse, sharpness_run
from .krylov import EigenResult, check_symmetry, default_max_matvecs, lanczos
from .operators import (
    BACKENDS,
    DEFAULT_BACKEND,
    DenseOperator,
    DiagonalScaledOperator,
    GGNOperator,
    HessianOperator,
    LinearOperator,
    ParameterSpace,
    adam_preconditioner,
    dense_hessian,
    eval_mode,
    preconditioned_hessian,
    select_parameters,
)
from .power import power_iteration
from .probes import curvature_operator, hessian_eigenvalues, hessian_trace, spectral_density
from .summary import CurvatureSummary, curvature_summary
from .trace import TraceResult, hutchinson, hutchpp
from .tracking import SharpnessCallback, stability_thresholds

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "CurvatureSummary",
    "DenseOperator",
    "DensityResult",
    "DiagonalScaledOperator",
    "EigenResult",
    "GGNOperator",
    "HessianOperator",
    "LinearOperator",
    "NonFiniteError",
    "ParameterSpace",
    "SharpnessCallback",
    "TraceResult",
    "adam_preconditioner",
    "check_symmetry",
    "curvature_operator",
    "curvature_summary",
    "default_max_matvecs",
    "dense_hessian",
    "eval_mode",
    "gaussian_density",
    "hessian_eigenvalues",
    "hessian_trace",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "one_hot_mse",
    "power_iteration",
    "preconditioned_hessian",
    "select_parameters",
    "sharpness_run",
    "slq",
    "spectral_density",
    "stability_thresholds",
]
