"""The Lanczos process on a symmetric :class:`~analysis_lib.curvature.operators.LinearOperator`
and the eigenpairs it gives.

* :func:`lanczos`: extreme eigenpairs by the Lanczos process with full reorthogonalisation,
  with Ritz residual norms ``||A v - theta v||`` that bound each eigenvalue's error, returned as
  an :class:`EigenResult` (also the result of
  :func:`~analysis_lib.curvature.power.power_iteration`).
* :func:`check_symmetry` and :func:`symmetry_tolerance`: the refusal of a non-symmetric operator
  that Lanczos, power iteration and SLQ run before any work.
* :func:`lanczos_process` and :func:`tridiagonal_eigh`: the process itself, step by step, and the
  eigenpairs of its tridiagonal matrix, which :func:`~analysis_lib.curvature.density.slq` also
  stands on.
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

from .. import progress_bar
from .._checks import check_int, check_positive
from .._evaluation import generator
from ._common import (
    check_operator,
    gaussian,
    nonfinite_error,
    start_vector,
)
from .operators import LinearOperator

__all__ = [
    "EigenResult",
    "LanczosState",
    "check_symmetry",
    "default_max_matvecs",
    "lanczos",
    "lanczos_process",
    "symmetry_tolerance",
    "tridiagonal_eigh",
]

WHICH = ("LA", "SA", "LM")


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


def symmetry_tolerance(dtype: torch.dtype) -> float:
    """The asymmetry an operator of ``dtype`` may show and count as symmetric:
    ``sqrt(eps)`` (1.5e-8 in float64, 3.5e-4 in float32), relative to its largest entry (exact
    check) or to ``||u|| ||A v|| + ||v|| ||A u||`` (randomized check).

    Args:
        dtype: a floating-point torch dtype.

    Returns:
        ``sqrt(torch.finfo(dtype).eps)``.

    Example:
        >>> import torch
        >>> symmetry_tolerance(torch.float64)
        1.4901161193847656e-08
    """
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

    Args:
        op: the operator.
        check: None, True or False, as above.
        seed: an int >= 0 or a ``torch.Generator`` (copied, not advanced) for the randomized check.
        what: the algorithm, for the error message (default ``"Lanczos"``).

    Raises:
        ValueError: ``check`` is not None, True or False, or ``op`` is not symmetric (the message
            gives the asymmetry and the tolerance).
        NonFiniteError: a product of the randomized check is not finite.
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
    u, v = gaussian(op, gen), gaussian(op, gen)
    au, av = op.matvec(u), op.matvec(v)
    if not bool(torch.isfinite(au).all() and torch.isfinite(av).all()):
        raise nonfinite_error(op, "a product of the symmetry check")
    gap = abs(float(torch.dot(u, av)) - float(torch.dot(v, au)))
    norm = torch.linalg.vector_norm
    scale = float(norm(u) * norm(av) + norm(v) * norm(au))
    if gap > tol * scale:
        raise ValueError(
            f"Invalid op: {op!r} is not symmetric (for random u, v: |u.Av - v.Au| = {gap:.3g} > "
            f"{tol:.3g} (||u|| ||Av|| + ||v|| ||Au||) = {tol * scale:.3g}); {what} needs a "
            "symmetric operator"
        )


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """``w`` minus its projection on the rows of ``basis`` (orthonormal), twice ("twice is
    enough", Kahan-Parlett), so orthogonality holds to working precision."""
    if basis.shape[0]:
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
    return w


def tridiagonal_eigh(alphas: list[float], betas: list[float]):
    """``(theta, s)``: the eigenvalues (ascending) and eigenvectors (columns) of the symmetric
    tridiagonal matrix with diagonal ``alphas`` and off-diagonal ``betas`` (its first
    ``len(alphas) - 1``).

    Args:
        alphas: the diagonal, length ``m >= 1``.
        betas: the off-diagonal; entries after the first ``m - 1`` are ignored.

    Returns:
        ``theta`` of shape ``(m,)`` and ``s`` of shape ``(m, m)``, float64 NumPy arrays.

    Example:
        >>> theta, s = tridiagonal_eigh([2.0, 2.0], [1.0])
        >>> theta
        array([1., 3.])
    """
    a = np.asarray(alphas, dtype=np.float64)
    if len(a) == 1:
        return a.copy(), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(a, np.asarray(betas[: len(a) - 1], dtype=np.float64))


@dataclass
class LanczosState:
    """The Lanczos decomposition A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T after m steps."""

    basis: Tensor  # (m, n), rows orthonormal
    alphas: list[float]
    betas: list[float]  # off-diagonal of T_m (m - 1 of them)
    beta_next: float  # beta_m: the norm of the part of A q_m outside the basis

    @property
    def steps(self) -> int:
        return len(self.alphas)


def lanczos_process(
    op: LinearOperator, v0: Tensor, max_steps: int, gen: torch.Generator, bar
) -> Iterator[LanczosState]:
    """Run Lanczos with full reorthogonalisation from ``v0`` for up to ``max_steps`` (<= n)
    steps, yielding the decomposition after each product. After an (exact or numerical)
    breakdown it continues from a random vector orthogonal to the basis, with a zero
    off-diagonal, so the Krylov spaces of several invariant subspaces are explored.

    Args:
        op: a symmetric operator.
        v0: the start vector, shape ``(op.size,)``, non-zero (normalised here).
        max_steps: the number of steps (products), at most ``op.size``.
        gen: the generator for the restart vectors.
        bar: a progress bar; ``bar.update(1)`` is called after each product.

    Yields:
        A :class:`LanczosState` after each step; its ``basis`` is a view of a buffer the next
        steps fill, and its lists grow in place.

    Raises:
        NonFiniteError: a product of ``op`` is not finite.
    """
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
            raise nonfinite_error(op, f"Lanczos product {j + 1}")
        alphas.append(alpha)
        scale = max(scale, abs(alpha) + beta + beta_prev)
        breakdown = beta <= tiny * scale
        yield LanczosState(basis[: j + 1], alphas, betas, 0.0 if breakdown else beta)
        if j + 1 == max_steps:
            return
        if breakdown:  # an invariant subspace: restart orthogonally
            for _ in range(3):
                w = _orthogonalize(gaussian(op, gen), basis[: j + 1])
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


def default_max_matvecs(k: int, n: int) -> int:
    """The default product budget of :func:`lanczos`: ``min(n, max(100, 20 k))``.

    Args:
        k: the number of eigenpairs wanted.
        n: the operator's dimension.

    Returns:
        The budget.

    Example:
        >>> default_max_matvecs(1, 1000), default_max_matvecs(10, 1000), default_max_matvecs(1, 50)
        (100, 200, 50)
    """
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
        progress: show a progress bar (None or True; ``TQDM_DISABLE=1`` silences it too).
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

    Returns:
        An :class:`EigenResult`: the ``k`` values ordered as ``which`` asks (largest first for
        ``"LA"`` and ``"LM"``, smallest first for ``"SA"``), their vectors and residuals.

    Raises:
        ValueError: ``op`` not a float32/float64 :class:`LinearOperator` or not symmetric, or an
            invalid ``k``, ``which``, ``tol``, ``max_matvecs``, ``v0`` or ``seed``; the message
            names the argument.
        NonFiniteError: a product of ``op`` is not finite.
    """
    start = time.perf_counter()
    k, tol, budget = _check_lanczos(op, k, which, tol, max_matvecs)
    gen = generator(seed)
    v = start_vector(op, v0, gen)
    check_symmetry(op, check_symmetric, gen, "Lanczos")
    history = []
    state = ritz = None
    converged = False
    with progress_bar(
        total=budget, desc=f"Lanczos ({which}, k={k})", delay=0.5, progress=progress
    ) as bar:
        for state in lanczos_process(op, v, budget, gen, bar):
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
    check_operator(op)
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


def _ritz_pairs(state: LanczosState, k: int, which: str, dtype: torch.dtype) -> _Ritz:
    """The wanted Ritz pairs of the Lanczos state; the residuals are floored at ``eps ||A||``,
    below which rounding lets no product resolve them."""
    theta, s = tridiagonal_eigh(state.alphas, state.betas)
    idx = _select(theta, k, which)
    norm = np.abs(theta).max()
    eps = float(torch.finfo(dtype).eps)
    residuals = np.maximum(np.abs(state.beta_next * s[-1, idx]), eps * norm)
    return _Ritz(theta, s, idx, k, residuals, norm)
