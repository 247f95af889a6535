"""Power iteration: the largest-magnitude eigenpair of a symmetric
:class:`~analysis_lib.curvature.operators.LinearOperator`, kept for teaching comparisons with
:func:`~analysis_lib.curvature.krylov.lanczos` (it converges at the rate ``|lambda_2 / lambda_1|``
per product).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from .. import progress_bar
from .._checks import check_int, check_positive
from .._evaluation import generator
from ._common import check_operator, nonfinite_error, start_vector
from .krylov import EigenResult, check_symmetry
from .operators import LinearOperator

__all__ = ["power_iteration"]


def power_iteration(
    op: LinearOperator,
    tol: float = 1e-6,
    max_matvecs: int = 1000,
    v0: Tensor | None = None,
    seed: int | torch.Generator = 0,
    criterion: str = "residual",
    progress: bool | None = None,
    check_symmetric: bool | None = None,
) -> EigenResult:
    """The largest-magnitude eigenpair by power iteration (for comparisons with Lanczos).

    Each product ``w = A v`` gives the Rayleigh quotient ``theta = v . w`` of the current unit
    vector and its residual ``||w - theta v||``. It stops when ``criterion`` is met:
    ``"residual"``: ``||w - theta v|| <= tol |theta|`` (a bound on the error, as for
    :func:`lanczos`); ``"relative_change"``: ``|theta - theta_prev| <= tol |theta|`` (the usual
    stopping rule of power-iteration tools, which says little about the error when the top two
    eigenvalues are close). Returns an :class:`EigenResult` with ``k = 1``.
    ``check_symmetric``: as for :func:`lanczos`.

    Args:
        op: a symmetric float32 or float64 operator.
        tol: the tolerance of ``criterion``, > 0 (default 1e-6).
        max_matvecs: the product budget, an integer >= 1 (default 1000).
        v0: the start vector, shape ``(op.size,)``, finite and non-zero; None: a Gaussian vector
            drawn from ``seed``.
        seed: an int >= 0 or a ``torch.Generator`` for the start.
        criterion: ``"residual"`` (default) or ``"relative_change"``.
        progress: show a progress bar (None or True; ``TQDM_DISABLE=1`` silences it too).
        check_symmetric: None, True or False, as for :func:`lanczos`.

    Returns:
        An :class:`EigenResult` with one value (``converged`` False when the budget ran out).

    Raises:
        ValueError: ``op`` not a float32/float64 :class:`LinearOperator` or not symmetric, or an
            invalid ``tol``, ``max_matvecs``, ``v0``, ``seed`` or ``criterion``; the message names
            the argument.
        NonFiniteError: a product of ``op`` is not finite.
    """
    start = time.perf_counter()
    check_operator(op)
    if criterion not in ("residual", "relative_change"):
        raise ValueError(
            f"Invalid criterion: {criterion!r} (expected 'residual' or 'relative_change')"
        )
    tol = check_positive("tol", tol)
    budget = check_int("max_matvecs", max_matvecs)
    gen = generator(seed)
    v = start_vector(op, v0, gen)
    check_symmetry(op, check_symmetric, gen, "power iteration")
    v = v / torch.linalg.vector_norm(v)
    history, previous, converged = [], None, False
    theta = residual = math.nan
    with progress_bar(total=budget, desc="power iteration", delay=0.5, progress=progress) as bar:
        for _ in range(budget):
            w = op.matvec(v)
            bar.update(1)
            theta = float(torch.dot(v, w))
            residual = float(torch.linalg.vector_norm(w - theta * v))
            if not (math.isfinite(theta) and math.isfinite(residual)):
                raise nonfinite_error(op, f"power-iteration product {len(history) + 1}")
            history.append([theta])
            if criterion == "residual":
                converged = residual <= tol * abs(theta)
            else:
                converged = previous is not None and abs(theta - previous) <= tol * abs(theta)
            previous = theta
            norm = torch.linalg.vector_norm(w)
            if converged or float(norm) == 0.0:
                break
            v = w / norm
    return EigenResult(
        values=np.array([theta]),
        vectors=v[:, None],
        residuals=np.array([residual]),
        matvecs=len(history),
        seconds=time.perf_counter() - start,
        converged=converged,
        history=np.array(history),
    )
