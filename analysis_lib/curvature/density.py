"""The spectral density of a symmetric
:class:`~analysis_lib.curvature.operators.LinearOperator` by stochastic Lanczos quadrature:
:func:`slq` and its :class:`DensityResult`, and :func:`gaussian_density`, the smoothing that
turns the quadrature nodes and weights into a density on a grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import progress_bar
from .._checks import check_grid, check_int, check_positive
from .._evaluation import generator
from ._common import check_operator, rademacher
from .krylov import check_symmetry, lanczos_process, tridiagonal_eigh
from .operators import LinearOperator

__all__ = ["DensityResult", "gaussian_density", "slq"]


@dataclass
class DensityResult:
    """A spectral density from stochastic Lanczos quadrature.

    Attributes:
        grid: the points the density is evaluated at, shape ``(g,)``.
        density: the Gaussian-smoothed density at ``grid`` (integrates to about 1).
        nodes: the quadrature nodes (Ritz values), shape ``(runs, steps)``.
        weights: their weights (squared first components), shape ``(runs, steps)``; each row
            sums to 1. Padding after a Lanczos breakdown has weight 0.
        sigma: the standard deviation of the Gaussian smoothing.
        matvecs: the number of matrix-vector products used.
        seconds: the wall time.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    sigma: float
    matvecs: int
    seconds: float

    @property
    def run_means(self) -> np.ndarray:
        """Each run's ``sum_k w_k theta_k = z^T A z / z^T z``, an unbiased estimate of
        ``tr A / n`` for a Rademacher start ``z``."""
        return (self.weights * self.nodes).sum(axis=1)

    @property
    def mean(self) -> float:
        """The mean of the density (estimate of ``tr A / n``)."""
        return float(self.run_means.mean())


def gaussian_density(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float
) -> np.ndarray:
    """``mean_r sum_k w_rk N(grid; nodes_rk, sigma^2)`` for ``(runs, steps)`` nodes/weights.

    Args:
        nodes: the quadrature nodes, shape ``(runs, steps)``.
        weights: their weights, shape ``(runs, steps)``.
        grid: the points to evaluate the density at, shape ``(g,)``.
        sigma: the standard deviation of the Gaussian kernel, > 0.

    Returns:
        The density at ``grid``, shape ``(g,)``.

    Example:
        >>> import numpy as np
        >>> nodes, weights = np.array([[-1.0, 1.0]]), np.array([[0.5, 0.5]])
        >>> gaussian_density(nodes, weights, np.array([-1.0, 0.0, 1.0]), 0.5).round(4)
        array([0.3991, 0.108 , 0.3991])
    """
    z = (np.asarray(grid)[:, None] - nodes.reshape(1, -1)) / sigma
    kernel = np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
    return kernel @ weights.reshape(-1) / nodes.shape[0]


def slq(
    op: LinearOperator,
    lanczos_steps: int = 80,
    runs: int = 10,
    seed: int | torch.Generator = 0,
    sigma: float | None = None,
    grid: np.ndarray | int = 1000,
    progress: bool | None = None,
    check_symmetric: bool | None = None,
) -> DensityResult:
    """The spectral density of ``op`` by stochastic Lanczos quadrature.

    For each of ``runs`` Rademacher starts ``z``, ``lanczos_steps`` (at most ``n``) steps of
    Lanczos give the tridiagonal ``T``; its eigenvalues ``theta_k`` and the squared first
    components ``w_k`` of its eigenvectors form a Gauss quadrature of the spectral measure
    ``sum_i (z . u_i)^2 / n delta(t - lambda_i)``: ``sum_k w_k f(theta_k) = z^T f(A) z / z^T z``
    exactly for polynomials ``f`` of degree ``< 2 * lanczos_steps``. The density is the average
    over starts, smoothed by a Gaussian of standard deviation ``sigma`` (default: 1% of the
    range of the nodes), evaluated on ``grid`` (an array, or a number of points spanning the
    nodes +- 5 sigma). ``check_symmetric``: as for :func:`lanczos`.

    Args:
        op: a symmetric float32 or float64 operator.
        lanczos_steps: Lanczos steps per run (default 80; capped at ``op.size``).
        runs: the number of random starts (default 10).
        seed: an int >= 0 or a ``torch.Generator`` for the starts.
        sigma: the smoothing's standard deviation, > 0; None: 1% of the nodes' range.
        grid: the evaluation points (a finite 1-d array), or how many (>= 2) to space evenly.
        progress: show a progress bar (None or True; ``TQDM_DISABLE=1`` silences it too).
        check_symmetric: None, True or False, as for :func:`lanczos`.

    Returns:
        A :class:`DensityResult`.

    Raises:
        ValueError: ``op`` not a float32/float64 :class:`LinearOperator` or not symmetric, or an
            invalid ``lanczos_steps``, ``runs``, ``seed``, ``sigma`` or ``grid``; the message names
            the argument.
        NonFiniteError: a product of ``op`` is not finite.
    """
    start = time.perf_counter()
    check_operator(op)
    steps = min(check_int("lanczos_steps", lanczos_steps), op.size)
    runs = check_int("runs", runs)
    if sigma is not None:
        sigma = check_positive("sigma", sigma)
    if isinstance(grid, int | np.integer):
        grid = check_int("grid", grid, 2)
    else:
        grid = check_grid("grid", grid)
    gen = generator(seed)
    check_symmetry(op, check_symmetric, gen, "stochastic Lanczos quadrature")
    products_before = op.matvecs
    nodes = np.zeros((runs, steps))
    weights = np.zeros((runs, steps))
    with progress_bar(total=runs * steps, desc="SLQ", delay=0.5, progress=progress) as bar:
        for r in range(runs):
            state = None
            for state in lanczos_process(op, rademacher(op, gen), steps, gen, bar):
                if state.beta_next == 0.0:  # invariant subspace: the quadrature is exact
                    break
            theta, s = tridiagonal_eigh(state.alphas, state.betas)
            nodes[r, :] = theta[0]
            nodes[r, : len(theta)] = theta
            weights[r, : len(theta)] = s[0] ** 2
    matvecs = int(op.matvecs - products_before)
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 0.01 * max(abs(hi), 1e-12)
    if isinstance(grid, int | np.integer):
        grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(grid))
    grid = np.asarray(grid, dtype=np.float64)
    return DensityResult(
        grid=grid,
        density=gaussian_density(nodes, weights, grid, sigma),
        nodes=nodes,
        weights=weights,
        sigma=float(sigma),
        matvecs=matvecs,
        seconds=time.perf_counter() - start,
    )
