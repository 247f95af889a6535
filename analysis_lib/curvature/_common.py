"""What the curvature algorithms share (private to :mod:`analysis_lib.curvature`): the check of
the operator they are given, the random vectors they draw, the start vector of the eigensolvers,
the progress bar and the error that names a product which is not finite.

Every random draw comes from a ``torch.Generator`` on the CPU, in float64, and is then cast to
the operator's dtype and device, so the same seed gives the same vectors on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import NonFiniteError
from .operators import LinearOperator, check_dtype

__all__ = [
    "check_operator",
    "gaussian",
    "nonfinite_error",
    "rademacher",
    "start_vector",
]


def nonfinite_error(op: LinearOperator, where: str) -> NonFiniteError:
    """The error for a product of ``op`` (``where``: which one) that is not finite, with the
    operator's own explanation when it has one (:meth:`LinearOperator.nonfinite_cause`)."""
    cause = op.nonfinite_cause()
    return NonFiniteError(
        f"{where} of {op!r} is not finite (NaN or inf)" + (f": {cause}" if cause else "")
    )


def check_operator(op) -> None:
    """Refuse anything but a :class:`LinearOperator` of float32 or float64."""
    if not isinstance(op, LinearOperator):
        raise ValueError(f"Invalid op: {type(op).__name__} (expected a LinearOperator)")
    check_dtype("op", op.dtype)


def rademacher(op: LinearOperator, gen: torch.Generator) -> Tensor:
    """A vector of random signs (+-1) for ``op``, drawn from ``gen``."""
    z = torch.randint(0, 2, (op.size,), generator=gen, dtype=torch.float64).mul_(2).sub_(1)
    return z.to(device=op.device, dtype=op.dtype)


def gaussian(op: LinearOperator, gen: torch.Generator) -> Tensor:
    """A standard Gaussian vector for ``op``, drawn from ``gen``."""
    return torch.randn(op.size, generator=gen, dtype=torch.float64).to(op.device, op.dtype)


def start_vector(op: LinearOperator, v0: Tensor | None, gen: torch.Generator) -> Tensor:
    """The eigensolvers' start: ``v0`` checked (a finite, non-zero tensor of shape
    ``(op.size,)``) and cast to the operator, or a Gaussian vector from ``gen``."""
    if v0 is None:
        return gaussian(op, gen)
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
