"""The loss barrier along a linear interpolation between two solutions.

With ``L(alpha)`` the loss at ``theta(alpha) = (1 - alpha) theta_a + alpha theta_b`` (e.g.
``landscape.interpolate``), two definitions are in use:

* ``"max"``: ``max_{alpha in [0, 1]} L(alpha) - max(L(0), L(1))``, how far the path climbs above
  the higher of its two ends;
* ``"linear"`` (Frankle et al., 2020, "Linear mode connectivity and the lottery ticket
  hypothesis"): ``max_{alpha in [0, 1]} L(alpha) - ((1 - alpha) L(0) + alpha L(1))``, the largest
  excess over the straight line between the two end losses.

Both are 0 for a path that never rises above its reference, and both use only the sampled points
with ``0 <= alpha <= 1`` (extrapolated points are ignored), so the barrier is the one on the grid
the loss was evaluated on, a lower bound of the continuous one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["REFERENCES", "LossBarrier", "loss_barrier"]

#: The barrier's reference: the higher end loss, or the straight line between the end losses.
REFERENCES = ("max", "linear")


@dataclass(frozen=True)
class LossBarrier:
    """A loss barrier along an interpolation.

    Attributes:
        height: the barrier, ``max over alpha in [0, 1]`` of the loss minus its reference (>= 0).
        alpha: where on the grid the maximum is reached.
        loss_a: the loss at ``alpha = 0``.
        loss_b: the loss at ``alpha = 1``.
        reference: ``"max"`` or ``"linear"`` (see the module's docstring).
    """

    height: float
    alpha: float
    loss_a: float
    loss_b: float
    reference: str


def _end_index(alphas: np.ndarray, value: float) -> int:
    hits = np.flatnonzero(np.isclose(alphas, value, rtol=0.0, atol=1e-9))
    if len(hits) != 1:
        raise ValueError(f"Invalid alphas: alpha = {value:g} must occur exactly once on the grid")
    return int(hits[0])


def loss_barrier(alphas, loss, *, reference: str = "max") -> LossBarrier:
    """The loss barrier of the curve ``loss[i] = L(alphas[i])`` (e.g. ``grid.alphas`` and
    ``grid.loss`` of ``landscape.interpolate``).

    Args:
        alphas: the interpolation coefficients, 1-D, finite, including 0 and 1 (each once).
        loss: the loss at each of them, same shape, finite where ``0 <= alpha <= 1``.
        reference: ``"max"`` (the higher end loss) or ``"linear"`` (the straight line between
            the end losses, Frankle et al.).

    Returns:
        A :class:`LossBarrier`.

    Example:
        >>> loss_barrier([0.0, 0.5, 1.0], [1.0, 3.0, 2.0])
        LossBarrier(height=1.0, alpha=0.5, loss_a=1.0, loss_b=2.0, reference='max')
        >>> loss_barrier([0.0, 0.5, 1.0], [1.0, 3.0, 2.0], reference="linear").height
        1.5

    Raises:
        ValueError: mismatched or non-1-D arrays, non-finite values, a grid without 0 or 1, or
            an unknown reference.
    """
    if reference not in REFERENCES:
        raise ValueError(f"Invalid reference: {reference!r} (expected one of {REFERENCES})")
    alphas = np.asarray(alphas, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if alphas.ndim != 1 or loss.shape != alphas.shape:
        raise ValueError(
            f"Invalid loss: shape {loss.shape} (expected the shape of alphas, {alphas.shape}, 1-D)"
        )
    if not np.isfinite(alphas).all():
        raise ValueError("Invalid alphas: not all finite")
    ia, ib = _end_index(alphas, 0.0), _end_index(alphas, 1.0)
    inside = (alphas >= alphas[ia]) & (alphas <= alphas[ib])
    if not np.isfinite(loss[inside]).all():
        raise ValueError("Invalid loss: not all finite for 0 <= alpha <= 1")
    la, lb = float(loss[ia]), float(loss[ib])
    a = alphas[inside]
    base = np.full_like(a, max(la, lb)) if reference == "max" else (1 - a) * la + a * lb
    excess = loss[inside] - base
    k = int(np.argmax(excess))
    return LossBarrier(max(float(excess[k]), 0.0), float(a[k]), la, lb, reference)
