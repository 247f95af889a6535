"""Trace estimation on any :class:`~analysis_lib.curvature.operators.LinearOperator`:
:func:`hutchinson` and :func:`hutchpp`, unbiased estimates with standard errors, returned as a
:class:`TraceResult`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import progress_bar
from .._checks import check_int
from .._evaluation import generator
from ._common import check_operator, nonfinite_error, rademacher
from .operators import LinearOperator

__all__ = ["TraceResult", "hutchinson", "hutchpp"]


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


def hutchinson(
    op: LinearOperator,
    matvecs: int = 100,
    seed: int | torch.Generator = 0,
    progress: bool | None = None,
) -> TraceResult:
    """Hutchinson's estimate ``tr A ~ mean_i z_i^T A z_i`` over ``matvecs`` Rademacher vectors,
    with standard error ``std(z^T A z) / sqrt(matvecs)`` (``matvecs >= 2``).

    Args:
        op: a square float32 or float64 operator (symmetry is not needed).
        matvecs: the number of products (and samples), an integer >= 2 (default 100).
        seed: an int >= 0 or a ``torch.Generator`` for the Rademacher vectors.
        progress: show a progress bar (None or True; ``TQDM_DISABLE=1`` silences it too).

    Returns:
        A :class:`TraceResult` with ``method="hutchinson"`` and the ``matvecs`` samples.

    Raises:
        ValueError: ``op`` not a float32/float64 :class:`LinearOperator`, or an invalid
            ``matvecs`` or ``seed``; the message names the argument.
        NonFiniteError: a product of ``op`` is not finite.
    """
    start = time.perf_counter()
    check_operator(op)
    m = check_int("matvecs", matvecs, 2)
    gen = generator(seed)
    samples = np.empty(m)
    with progress_bar(total=m, desc="Hutchinson", delay=0.5, progress=progress) as bar:
        for i in range(m):
            z = rademacher(op, gen)
            samples[i] = float(torch.dot(z, op.matvec(z)))
            if not math.isfinite(samples[i]):
                raise nonfinite_error(op, f"Hutchinson product {i + 1}")
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

    Args:
        op: a square float32 or float64 operator (symmetry is not needed).
        matvecs: the product budget, an integer >= 4 (default 100).
        seed: an int >= 0 or a ``torch.Generator`` for the Rademacher vectors.
        progress: show a progress bar (None or True; ``TQDM_DISABLE=1`` silences it too).

    Returns:
        A :class:`TraceResult` with ``method="hutch++"``, the deflated samples and
        ``sketch_trace = tr(Q^T A Q)``.

    Raises:
        ValueError: ``op`` not a float32/float64 :class:`LinearOperator`, or an invalid
            ``matvecs`` or ``seed``; the message names the argument.
        NonFiniteError: a product of ``op`` is not finite.
    """
    start = time.perf_counter()
    check_operator(op)
    m = check_int("matvecs", matvecs, 4)
    gen = generator(seed)
    s = m // 3
    with progress_bar(total=m, desc="Hutch++", delay=0.5, progress=progress) as bar:
        sketch = torch.stack([rademacher(op, gen) for _ in range(s)], dim=1)
        ys = []
        for col in sketch.T:
            ys.append(op.matvec(col))
            if not bool(torch.isfinite(ys[-1]).all()):
                raise nonfinite_error(op, f"Hutch++ sketch product {len(ys)}")
            bar.update(1)
        q = torch.linalg.qr(torch.stack(ys, dim=1), mode="reduced").Q  # (n, min(n, s))
        sketch_trace = 0.0
        for col in q.T:
            sketch_trace += float(torch.dot(col, op.matvec(col)))
            if not math.isfinite(sketch_trace):
                raise nonfinite_error(op, "a Hutch++ product")
            bar.update(1)
        rest = m - s - q.shape[1]
        samples = np.empty(rest)
        for i in range(rest):
            g = rademacher(op, gen)
            g = g - q @ (q.T @ g)
            samples[i] = float(torch.dot(g, op.matvec(g)))
            if not math.isfinite(samples[i]):
                raise nonfinite_error(op, "a Hutch++ product")
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
