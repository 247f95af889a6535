"""Average-case sharpness under Gaussian noise: the expected loss increase at seeded antithetic
draws ``theta +- delta``.

* :func:`average_sharpness`: ``E[L(theta + delta)] - L(theta)`` with ``delta ~ N(0, rho^2 I)``
  (``N(0, rho^2 diag(theta^2))`` when adaptive), with its standard error.
* :func:`sigma_flatness`: Jiang et al. 2019, the largest ``sigma`` for which that increase at
  ``delta ~ N(0, sigma^2 I)`` stays under a threshold, by bisection over fixed draws; reports
  ``1 / sigma^2``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from .._checks import NonFiniteError, check_positive
from .._evaluation import generator
from ._objective import (
    Guard,
    Objective,
    SharpnessResult,
    at_least,
    check_bool,
    check_seed,
    checked,
    make_result,
)

__all__ = ["average_sharpness", "sigma_flatness"]


# -- average sharpness ---------------------------------------------------------------------------
def _antithetic_increase(obj: Objective, z: Tensor, scale: Tensor, loss: float) -> Tensor:
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
    the pairs. Costs ``2 samples + 1`` forward passes, vectorised over draws.

    Args:
        model, loss_fn, data: as the curvature probes (:class:`analysis_lib.curvature.
            HessianOperator`): ``loss_fn(outputs, targets)`` is a batch's mean loss.
        rho: the standard deviation of the perturbation, > 0 (relative with ``adaptive``).
        adaptive: scale the noise by ``|theta|`` (default False).
        samples: the number of antithetic pairs, >= 2 (default 64).
        seed: an integer >= 0 for the draws (default 0).
        params: restrict to these parameter names or module prefixes (None: all).

    Returns:
        A :class:`SharpnessResult` with ``stderr`` and ``details["increases"]``, each pair's
        mean increase.

    Raises:
        ValueError: an invalid argument (the message names it), a reduced-precision model, a
            ``rho`` the model's dtype cannot represent, or bad ``data``.
        NonFiniteError: the loss at the parameters, a batch, or any pair of perturbed losses is
            not finite.
    """
    start = time.perf_counter()
    settings = checked(
        rho=(rho, check_positive),
        adaptive=(adaptive, check_bool),
        samples=(samples, at_least(2)),
        seed=(seed, check_seed),
    )
    rho, adaptive, samples, seed = settings.values()
    with Guard(model):
        obj = Objective(model, loss_fn, data, params, {"rho": (rho, "")})
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
        return make_result(
            "average", inc.mean(), stderr, loss, settings, obj, start, details=details
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
    ``(sigma, increase)`` evaluated.

    Args:
        model, loss_fn, data: as for :func:`average_sharpness`.
        threshold: the allowed expected loss increase, > 0 (default 0.1).
        adaptive: scale the noise by ``|theta|`` (default False).
        samples: the number of antithetic pairs, >= 1 (default 8).
        sigma_init: the first sigma tried, > 0 (default 0.01).
        iterations: the bisection steps, >= 0 (default 10).
        seed: an integer >= 0 for the draws (default 0).
        params: restrict to these parameter names or module prefixes (None: all).

    Returns:
        A :class:`SharpnessResult` with ``value = 1 / sigma^2`` and ``stderr`` None.

    Raises:
        ValueError: an invalid argument (the message names it), a reduced-precision model, a
            ``sigma_init`` the model's dtype cannot represent, or bad ``data``.
        NonFiniteError: the loss at the parameters or a batch is not finite, or no sigma tried
            gives a finite increase.
    """
    start = time.perf_counter()
    settings = checked(
        threshold=(threshold, check_positive),
        adaptive=(adaptive, check_bool),
        samples=(samples, at_least(1)),
        sigma_init=(sigma_init, check_positive),
        iterations=(iterations, at_least(0)),
        seed=(seed, check_seed),
    )
    threshold, adaptive, samples, sigma_init, iterations, seed = settings.values()
    with Guard(model):
        obj = Objective(model, loss_fn, data, params, {"sigma_init": (sigma_init, "")})
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
        return make_result(
            "sigma_flatness", value, None, loss, settings, obj, start, details=details
        )


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
