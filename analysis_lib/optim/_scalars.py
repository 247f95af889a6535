"""How Ada2MS's divisors (the scalar c of sqrt(d) = v^(alpha/2) / c) are handed to the kernels:
one value or a list of per-tensor values, Python floats on the eager paths and tensors on the
compiled one."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def all_positive(c) -> bool:
    """Whether a host-side divisor (a float, or a list of floats) is > 0 everywhere; False for
    tensors (the compiled path), which then take the general branch.

    Args:
        c: a divisor: a float, a list of floats, or a tensor.

    Returns:
        True when every value is a float > 0.

    Example:
        >>> all_positive(2.0), all_positive([1.0, 0.0])
        (True, False)
    """
    if isinstance(c, float):
        return c > 0
    return isinstance(c, list) and all(isinstance(x, float) and x > 0 for x in c)


def eps_one(eps, c):
    """eps * c for one divisor, with 1 where c = 0.

    Args:
        eps: the optimizer's eps.
        c: one divisor (a float or a tensor).

    Returns:
        A float, or a tensor of the shape of ``c``.
    """
    if isinstance(c, Tensor):
        return torch.where(c == 0, torch.ones_like(c), eps * c)
    return 1.0 if c == 0 else eps * c


def eps_term(eps, c):
    """eps * c, with 1 where c = 0 (see ada2ms_apply_): one value, or a list of per-tensor ones.

    Args:
        eps: the optimizer's eps.
        c: a divisor, or a list of per-tensor divisors.

    Returns:
        One value, or a list, as ``c``.
    """
    return [eps_one(eps, ci) for ci in c] if isinstance(c, list) else eps_one(eps, c)


def scalar_arg(divisor: Tensor | float, runner):
    """A divisor as the runner takes scalars: Python numbers for the eager kernels (a 0-dim
    tensor becomes a float, a 1-D one a list), 0-dim tensors or floats (which it makes tensors)
    for the compiled path.

    Args:
        divisor: a float, or a 0-dim or 1-D tensor.
        runner: the runner (its ``name`` is ``"fused"`` for the compiled path).

    Returns:
        A float, a list of floats, a 0-dim tensor or a list of 0-dim tensors.
    """
    if isinstance(divisor, float):
        return divisor
    if runner.name == "fused":
        return list(divisor.unbind()) if divisor.dim() else divisor
    return divisor.tolist()


def rounded(x: Tensor | float, dtype: torch.dtype) -> Tensor | float:
    """``x`` rounded to ``dtype`` (float32 or float64), kept a tensor or a float.

    Args:
        x: a tensor or a float.
        dtype: ``torch.float32`` or ``torch.float64``.

    Returns:
        ``x`` cast (a tensor) or rounded through float32 (a float).
    """
    if isinstance(x, Tensor):
        return x.to(dtype)
    return float(np.float32(x)) if dtype == torch.float32 else x


def times(k, c):
    """k * c for a scalar argument c: one value, or a list of per-tensor values.

    Args:
        k: the factor.
        c: one value, or a list of them.

    Returns:
        ``k * c``, or the list of ``k * ci``.

    Example:
        >>> times(2.0, [1.0, 3.0])
        [2.0, 6.0]
    """
    return [k * ci for ci in c] if isinstance(c, list) else k * c
