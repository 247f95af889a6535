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

The package, one unit per module: ``_objective`` (the model as a function of a flat
perturbation, the guard that restores it, :class:`SharpnessResult` and the shared argument
checks), ``worst_case``, ``average`` (average sharpness and sigma flatness), ``epsilon`` and
``report``.
"""

from ._objective import NORMS, SharpnessResult
from .average import average_sharpness, sigma_flatness
from .epsilon import epsilon_sharpness
from .report import sharpness_measurement, sharpness_report
from .worst_case import worst_case_sharpness

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
