"""Algorithms on any symmetric :class:`~analysis_lib.curvature.operators.LinearOperator`.

* :func:`lanczos`: extreme eigenpairs by the Lanczos process with full reorthogonalisation,
  with Ritz residual norms ``||A v - theta v||`` that bound each eigenvalue's error.
* :func:`power_iteration`: the largest-magnitude eigenpair, kept for teaching comparisons
  (it converges at the rate ``|lambda_2 / lambda_1|`` per product).
* :func:`hutchinson` and :func:`hutchpp`: unbiased trace estimates with standard errors.
* :func:`slq`: the spectral density by stochastic Lanczos quadrature.

Every random draw comes from a ``torch.Generator`` (``seed`` may be an int or a generator) on
the CPU, in float64, and is then cast to the operator's dtype and device, so the same seed gives
the same vectors on every device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import progress_disabled
from .._checks import NonFiniteError, check_int, check_positive
from .._evaluation import generator
from .operators import LinearOperator, check_dtype

__all__ = [
    "DensityResult",
    "EigenResult",
    "NonFiniteError",
    "TraceResult",
    "check_symmetry",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "power_iteration",
    "slq",
    "symmetry_tolerance",
]

WHICH = ("LA", "SA", "LM")


def _nonfinite(op: LinearOperator, where: str) -> NonFiniteError:
    cause = op.nonfinite_cause()
    return NonFiniteError(
        f"{where} of {op!r} is not finite (NaN or inf)" + (f": {cause}" if cause else "")
    )


@dataclass
class EigenResult:
    """Eigenpairs of a symmetric operator and what they cost.

    Attributes:
        values: the eigenvalue estimates (Ritz values), shape ``(k,)``, float64, in the order
            asked for (``"LA"``: descending, ``"SA"``: ascending, ``"LM"``: by descending
            magnitude).
        vectors: the unit eigenvector estimates as the columns of an ``(n, k)`` tensor.
        residuals: ``||A v_i - values_i v_i||``, shape ``(k,)``. For a symmetric ``A`` some true
            eigenvalue lies within ``residuals_i`` of ``values_i``.
        matvecs: the number of matrix-vector products used.
        seconds: the wall time.
        converged: whether every residual reached the tolerance.
        history: the estimates after each product, shape ``(matvecs, k)`` (NaN where fewer
            than ``k`` were available yet).
    """

    values: np.ndarray
    vectors: Tensor
    residuals: np.ndarray
    matvecs: int
    seconds: float
    converged: bool
    history: np.ndarray = field(repr=False)


@dataclass
class TraceResult:
    """A trace estimate with its standard error and cost.

    Attributes:
        estimate: the estimate of ``tr A``.
        stderr: its standard error (from the spread of the random quadratic forms).
        matvecs: the number of matrix-vector products used.
        seconds: the wall time.
        method: ``"hutchinson"`` or ``"hutch++"``.
        samples: the random quadratic forms ``z^T A z`` the estimate averages (for Hutch++,
            those of the deflated part; ``estimate = sketch_trace + samples.mean()``).
        sketch_trace: Hutch++'s exact trace of the sketched part ``tr(Q^T A Q)`` (0 for
            Hutchinson).
    """

    estimate: float
    stderr: float
    matvecs: int
    seconds: float
    method: str
    samples: np.ndarray = field(repr=False)
    sketch_trace: float = 0.0


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


# -- helpers -----------------------------------------------------------------------------------
def _check_operator(op) -> None:
    if not isinstance(op, LinearOperator):
        raise ValueError(f"Invalid op: {type(op).__name__} (expected a LinearOperator)")
    check_dtype("op", op.dtype)


def symmetry_tolerance(dtype: torch.dtype) -> float:
    """The asymmetry an operator of ``dtype`` may show and count as symmetric:
    ``sqrt(eps)`` (1.5e-8 in float64, 3.5e-4 in float32), relative to its largest entry (exact
    check) or to ``||u|| ||A v|| + ||v|| ||A u||`` (randomized check)."""
    return math.sqrt(float(torch.finfo(dtype).eps))


def check_symmetry(
    op: LinearOperator,
    check: bool | None = None,
    seed: int | torch.Generator = 0,
    what: str = "Lanczos",
) -> None:
    """Refuse an operator that is not symmetric, before ``what`` runs on it.

    ``check=None`` (the default of the algorithms): the exact check where it costs no products
    (:meth:`LinearOperator.asymmetry`, e.g. a :class:`DenseOperator`), nothing else.
    ``check=True``: that, or for any other operator a randomized check with two products
    (``u . A v`` against ``v . A u`` for Gaussian ``u``, ``v`` drawn from a copy of ``seed``, so
    the algorithm's own draws are unchanged; counted in ``op.matvecs``). ``check=False``: none.
    """
    if check not in (None, True, False):
        raise ValueError(f"Invalid check_symmetric: {check!r} (expected None, True or False)")
    if check is False:
        return
    tol = symmetry_tolerance(op.dtype)
    exact = op.asymmetry()
    if exact is not None:
        if exact > tol:
            raise ValueError(
                f"Invalid op: {op!r} is not symmetric (max |A - A^T| / max |A| = {exact:.3g} > "
                f"{tol:.3g}, the tolerance of {op.dtype}); {what} needs a symmetric operator "
                "(symmetrize a matrix M as (M + M.T) / 2)"
            )
        return
    if check is not True:
        return
    if isinstance(seed, torch.Generator):
        gen = torch.Generator()
        gen.set_state(seed.get_state())
    else:
        gen = generator(seed)
    u, v = _gaussian(op, gen), _gaussian(op, gen)
    au, av = op.matvec(u), op.matvec(v)
    if not bool(torch.isfinite(au).all() and torch.isfinite(av).all()):
        raise _nonfinite(op, "a product of the symmetry check")
    gap = abs(float(torch.dot(u, av)) - float(torch.dot(v, au)))
    norm = torch.linalg.vector_norm
    scale = float(norm(u) * norm(av) + norm(v) * norm(au))
    if gap > tol * scale:
        raise ValueError(
            f"Invalid op: {op!r} is not symmetric (for random u, v: |u.Av - v.Au| = {gap:.3g} > "
            f"{tol:.3g} (||u|| ||Av|| + ||v|| ||Au||) = {tol * scale:.3g}); {what} needs a "
            "symmetric operator"
        )


def _rademacher(op: LinearOperator, gen: torch.Generator) -> Tensor:
    z = torch.randint(0, 2, (op.size,), generator=gen, dtype=torch.float64).mul_(2).sub_(1)
    return z.to(device=op.device, dtype=op.dtype)


def _gaussian(op: LinearOperator, gen: torch.Generator) -> Tensor:
    return torch.randn(op.size, generator=gen, dtype=torch.float64).to(op.device, op.dtype)


def _bar(total: int, desc: str, progress: bool | None):
    """A progress bar that appears after half a second. ``progress=None`` shows it unless
    ``TQDM_DISABLE`` is set (read here: tqdm's notebook bar ignores the variable)."""
    disable = progress_disabled() if progress is None else not progress
    return tqdm(total=total, desc=desc, leave=False, delay=0.5, disable=disable)


def _check_grid(grid) -> np.ndarray:
    try:
        arr = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid grid: {grid!r} (expected a number of points >= 2 or a 1-D array of numbers)"
        ) from None
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(
            f"Invalid grid: an array of shape {arr.shape} (expected a non-empty 1-D array of "
            "finite numbers, or a number of points >= 2)"
        )
    return arr


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """``w`` minus its projection on the rows of ``basis`` (orthonormal), twice ("twice is
    enough", Kahan-Parlett), so orthogonality holds to working precision."""
    if basis.shape[0]:
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
    return w


def _tridiagonal_eigh(alphas: list[float], betas: list[float]):
    a = np.asarray(alphas, dtype=np.float64)
    if len(a) == 1:
        return a.copy(), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(a, np.asarray(betas[: len(a) - 1], dtype=np.float64))


@dataclass
class _State:
    """The Lanczos decomposition A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T after m steps."""

    basis: Tensor  # (m, n), rows orthonormal
    alphas: list[float]
    betas: list[float]  # off-diagonal of T_m (m - 1 of them)
    beta_next: float  # beta_m: the norm of the part of A q_m outside the basis

    @property
    def steps(self) -> int:
        return len(self.alphas)


def _lanczos_process(
    op: LinearOperator, v0: Tensor, max_steps: int, gen: torch.Generator, bar
) -> Iterator[_State]:
    """Run Lanczos with full reorthogonalisation from ``v0`` for up to ``max_steps`` (<= n)
    steps, yielding the decomposition after each product. After an (exact or numerical)
    breakdown it continues from a random vector orthogonal to the basis, with a zero
    off-diagonal, so the Krylov spaces of several invariant subspaces are explored."""
    n = op.size
    basis = torch.empty((max_steps, n), dtype=op.dtype, device=op.device)
    alphas: list[float] = []
    betas: list[float] = []
    q = v0 / torch.linalg.vector_norm(v0)
    beta_prev = 0.0
    scale = 0.0
    tiny = 100.0 * torch.finfo(op.dtype).eps
    for j in range(max_steps):
        basis[j] = q
        w = op.matvec(q)
        bar.update(1)
        alpha = float(torch.dot(w, q))
        w = w - alpha * q
        if j > 0:
            w = w - beta_prev * basis[j - 1]
        w = _orthogonalize(w, basis[: j + 1])
        beta = float(torch.linalg.vector_norm(w))
        if not (math.isfinite(alpha) and math.isfinite(beta)):
            raise _nonfinite(op, f"Lanczos product {j + 1}")
        alphas.append(alpha)
        scale = max(scale, abs(alpha) + beta + beta_prev)
        breakdown = beta <= tiny * scale
        yield _State(basis[: j + 1], alphas, betas, 0.0 if breakdown else beta)
        if j + 1 == max_steps:
            return
        if breakdown:  # an invariant subspace: restart orthogonally
            for _ in range(3):
                w = _orthogonalize(_gaussian(op, gen), basis[: j + 1])
                norm = float(torch.linalg.vector_norm(w))
                if norm > tiny:
                    break
            else:
                return
            q, beta = w / norm, 0.0
        else:
            q = w / beta
        betas.append(beta)
        beta_prev = beta


def _select(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    if which == "LA":
        order = np.argsort(-theta, kind="stable")
    elif which == "SA":
        order = np.argsort(theta, kind="stable")
    else:
        order = np.argsort(-np.abs(theta), kind="stable")
    return order[:k]


def _start_vector(op: LinearOperator, v0: Tensor | None, gen: torch.Generator) -> Tensor:
    if v0 is None:
        return _gaussian(op, gen)
    if not isinstance(v0, Tensor):
        raise ValueError(
            f"Invalid v0: {type(v0).__name__} (expected a tensor of shape ({op.size},))"
        )
    if v0.shape != (op.size,):
        raise ValueError(f"Invalid v0: shape {tuple(v0.shape)} (expected ({op.size},))")
    v0 = v0.detach().to(device=op.device, dtype=op.dtype)
    if not bool(torch.isfinite(v0).all()) or float(torch.linalg.vector_norm(v0)) == 0.0:
        raise ValueError("Invalid v0: it must be finite and non-zero")
    return v0


def default_max_matvecs(k: int, n: int) -> int:
    """The default product budget of :func:`lanczos`: ``min(n, max(100, 20 k))``."""
    return min(n, max(100, 20 * k))


# -- eigenvalues -------------------------------------------------------------------------------
def lanczos(
    op: LinearOperator,
    k: int = 1,
    which: str = "LA",
    tol: float = 1e-6,
    max_matvecs: int | None = None,
    v0: Tensor | None = None,
    seed: int | torch.Generator = 0,
    progress: bool | None = None,
    check_symmetric: bool | None = None,
) -> EigenResult:
    """``k`` extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

    Args:
        op: the operator.
        k: the number of eigenpairs (``1 <= k <= op.size``).
        which: ``"LA"`` the largest (algebraic), ``"SA"`` the smallest, ``"LM"`` the largest in
            magnitude.
        tol: stop once every wanted Ritz pair has a residual ``||A v - theta v||`` at most
            ``tol * ||A||``, with ``||A||`` estimated by the largest Ritz value in magnitude.
            The eigenvalue error is at most the residual (and usually about its square over the
            gap to the next eigenvalue).
        max_matvecs: the product budget (default :func:`default_max_matvecs`; capped at
            ``op.size``, where the Krylov space is the whole space and the result is exact).
        v0: the starting vector (e.g. the eigenvector of a previous call: a warm start), else a
            Gaussian vector drawn from ``seed``.
        seed: an int or a ``torch.Generator`` for the start (and restarts after a breakdown).
        progress: show a progress bar (None: tqdm's default, silenced by ``TQDM_DISABLE=1``).
        check_symmetric: the operator must be symmetric (Lanczos on a non-symmetric one
            returns wrong values that look converged). None: checked exactly where that costs
            no products (a :class:`DenseOperator`: ``max |M - M^T| <= sqrt(eps) max |M|``);
            True: also a randomized check of any other operator (two products, in
            ``op.matvecs`` but not in the result's ``matvecs``); False: not checked. See
            :func:`check_symmetry`; a ValueError names the asymmetry found.

    The residuals come from the Lanczos relation, ``|beta_m s_{m,i}|``, at no extra cost; with
    full reorthogonalisation they equal the explicit ``||A v - theta v||`` to working precision
    (they are floored at ``eps * ||A||``, below which a product cannot resolve them).
    Lanczos finds one copy of a repeated eigenvalue per start (in exact arithmetic), like every
    single-vector Krylov method.
    """
    start = time.perf_counter()
    k, tol, budget = _check_lanczos(op, k, which, tol, max_matvecs)
    gen = generator(seed)
    v = _start_vector(op, v0, gen)
    check_symmetry(op, check_symmetric, gen, "Lanczos")
    history = []
    state = ritz = None
    converged = False
    with _bar(budget, f"Lanczos ({which}, k={k})", progress) as bar:
        for state in _lanczos_process(op, v, budget, gen, bar):
            ritz = _ritz_pairs(state, k, which, op.dtype)
            history.append(ritz.row)
            if ritz.converged(tol):
                converged = True
                break
    converged = converged or state.steps == op.size
    return EigenResult(
        values=ritz.values,
        vectors=ritz.vectors(state.basis, op),
        residuals=ritz.residuals,
        matvecs=state.steps,
        seconds=time.perf_counter() - start,
        converged=converged,
        history=np.array(history),
    )


def _check_lanczos(
    op: LinearOperator, k: int, which: str, tol: float, max_matvecs: int | None
) -> tuple[int, float, int]:
    """Lanczos' arguments checked: ``k``, ``tol`` and the product budget (capped at the
    dimension)."""
    _check_operator(op)
    n = op.size
    k = check_int("k", k)
    if k > n:
        raise ValueError(f"Invalid k: {k} (larger than the operator's dimension {n})")
    if which not in WHICH:
        raise ValueError(f"Invalid which: {which!r} (expected one of {WHICH})")
    tol = check_positive("tol", tol)
    budget = (
        default_max_matvecs(k, n)
        if max_matvecs is None
        else check_int("max_matvecs", max_matvecs, k)
    )
    return k, tol, min(budget, n)


@dataclass
class _Ritz:
    """The wanted Ritz pairs after ``m`` Lanczos steps: the eigenpairs ``(theta_i, s_i)`` of
    the tridiagonal ``T_m`` picked by ``which``, and their residuals ``|beta_m s_{m,i}|``."""

    theta: np.ndarray
    s: np.ndarray
    idx: np.ndarray
    k: int
    residuals: np.ndarray
    norm: float

    @property
    def values(self) -> np.ndarray:
        return self.theta[self.idx].copy()

    @property
    def row(self) -> np.ndarray:
        """The ``k`` wanted values, NaN-padded while fewer than ``k`` exist (for the history)."""
        row = np.full(self.k, np.nan)
        row[: len(self.idx)] = self.theta[self.idx]
        return row

    def converged(self, tol: float) -> bool:
        """All ``k`` pairs exist and have residuals at most ``tol * ||A||`` (``||A||`` the
        largest Ritz value in magnitude)."""
        return len(self.idx) == self.k and bool(np.all(self.residuals <= tol * self.norm))

    def vectors(self, basis: Tensor, op: LinearOperator) -> Tensor:
        """The Ritz vectors ``Q s_i`` (columns), normalised."""
        ritz = torch.as_tensor(self.s[:, self.idx], dtype=op.dtype, device=op.device)
        vectors = basis.T @ ritz
        return vectors / torch.linalg.vector_norm(vectors, dim=0, keepdim=True)


def _ritz_pairs(state: _State, k: int, which: str, dtype: torch.dtype) -> _Ritz:
    """The wanted Ritz pairs of the Lanczos state; the residuals are floored at ``eps ||A||``,
    below which rounding lets no product resolve them."""
    theta, s = _tridiagonal_eigh(state.alphas, state.betas)
    idx = _select(theta, k, which)
    norm = np.abs(theta).max()
    eps = float(torch.finfo(dtype).eps)
    residuals = np.maximum(np.abs(state.beta_next * s[-1, idx]), eps * norm)
    return _Ritz(theta, s, idx, k, residuals, norm)


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
    """
    start = time.perf_counter()
    _check_operator(op)
    if criterion not in ("residual", "relative_change"):
        raise ValueError(
            f"Invalid criterion: {criterion!r} (expected 'residual' or 'relative_change')"
        )
    tol = check_positive("tol", tol)
    budget = check_int("max_matvecs", max_matvecs)
    gen = generator(seed)
    v = _start_vector(op, v0, gen)
    check_symmetry(op, check_symmetric, gen, "power iteration")
    v = v / torch.linalg.vector_norm(v)
    history, previous, converged = [], None, False
    theta = residual = math.nan
    with _bar(budget, "power iteration", progress) as bar:
        for _ in range(budget):
            w = op.matvec(v)
            bar.update(1)
            theta = float(torch.dot(v, w))
            residual = float(torch.linalg.vector_norm(w - theta * v))
            if not (math.isfinite(theta) and math.isfinite(residual)):
                raise _nonfinite(op, f"power-iteration product {len(history) + 1}")
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


# -- trace -------------------------------------------------------------------------------------
def hutchinson(
    op: LinearOperator,
    matvecs: int = 100,
    seed: int | torch.Generator = 0,
    progress: bool | None = None,
) -> TraceResult:
    """Hutchinson's estimate ``tr A ~ mean_i z_i^T A z_i`` over ``matvecs`` Rademacher vectors,
    with standard error ``std(z^T A z) / sqrt(matvecs)`` (``matvecs >= 2``)."""
    start = time.perf_counter()
    _check_operator(op)
    m = check_int("matvecs", matvecs, 2)
    gen = generator(seed)
    samples = np.empty(m)
    with _bar(m, "Hutchinson", progress) as bar:
        for i in range(m):
            z = _rademacher(op, gen)
            samples[i] = float(torch.dot(z, op.matvec(z)))
            if not math.isfinite(samples[i]):
                raise _nonfinite(op, f"Hutchinson product {i + 1}")
            bar.update(1)
    return TraceResult(
        estimate=float(samples.mean()),
        stderr=float(samples.std(ddof=1) / m**0.5),
        matvecs=m,
        seconds=time.perf_counter() - start,
        method="hutchinson",
        samples=samples,
    )


def hutchpp(
    op: LinearOperator,
    matvecs: int = 100,
    seed: int | torch.Generator = 0,
    progress: bool | None = None,
) -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): with ``s = matvecs // 3`` Rademacher
    sketch vectors ``S``, ``Q = orth(A S)`` and

        ``tr A ~ tr(Q^T A Q) + mean_g g^T (I - Q Q^T) A (I - Q Q^T) g``

    over the remaining ``matvecs - 2 s`` Rademacher vectors ``g``. Unbiased like Hutchinson,
    with much smaller variance when a few eigenvalues dominate. The standard error is that of
    the deflated part's mean (``matvecs >= 4``, so at least two samples are left).
    """
    start = time.perf_counter()
    _check_operator(op)
    m = check_int("matvecs", matvecs, 4)
    gen = generator(seed)
    s = m // 3
    with _bar(m, "Hutch++", progress) as bar:
        sketch = torch.stack([_rademacher(op, gen) for _ in range(s)], dim=1)
        ys = []
        for col in sketch.T:
            ys.append(op.matvec(col))
            if not bool(torch.isfinite(ys[-1]).all()):
                raise _nonfinite(op, f"Hutch++ sketch product {len(ys)}")
            bar.update(1)
        q = torch.linalg.qr(torch.stack(ys, dim=1), mode="reduced").Q  # (n, min(n, s))
        sketch_trace = 0.0
        for col in q.T:
            sketch_trace += float(torch.dot(col, op.matvec(col)))
            if not math.isfinite(sketch_trace):
                raise _nonfinite(op, "a Hutch++ product")
            bar.update(1)
        rest = m - s - q.shape[1]
        samples = np.empty(rest)
        for i in range(rest):
            g = _rademacher(op, gen)
            g = g - q @ (q.T @ g)
            samples[i] = float(torch.dot(g, op.matvec(g)))
            if not math.isfinite(samples[i]):
                raise _nonfinite(op, "a Hutch++ product")
            bar.update(1)
    return TraceResult(
        estimate=sketch_trace + float(samples.mean()),
        stderr=float(samples.std(ddof=1) / rest**0.5),
        matvecs=m,
        seconds=time.perf_counter() - start,
        method="hutch++",
        samples=samples,
        sketch_trace=sketch_trace,
    )


# -- spectral density --------------------------------------------------------------------------
def gaussian_density(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float
) -> np.ndarray:
    """``mean_r sum_k w_rk N(grid; nodes_rk, sigma^2)`` for ``(runs, steps)`` nodes/weights."""
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
    """
    start = time.perf_counter()
    _check_operator(op)
    steps = min(check_int("lanczos_steps", lanczos_steps), op.size)
    runs = check_int("runs", runs)
    if sigma is not None:
        sigma = check_positive("sigma", sigma)
    if isinstance(grid, int | np.integer):
        grid = check_int("grid", grid, 2)
    else:
        grid = _check_grid(grid)
    gen = generator(seed)
    check_symmetry(op, check_symmetric, gen, "stochastic Lanczos quadrature")
    products_before = op.matvecs
    nodes = np.zeros((runs, steps))
    weights = np.zeros((runs, steps))
    with _bar(runs * steps, "SLQ", progress) as bar:
        for r in range(runs):
            state = None
            for state in _lanczos_process(op, _rademacher(op, gen), steps, gen, bar):
                if state.beta_next == 0.0:  # invariant subspace: the quadrature is exact
                    break
            theta, s = _tridiagonal_eigh(state.alphas, state.betas)
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
