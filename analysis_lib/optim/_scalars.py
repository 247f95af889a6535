"""How Ada2MS's divisors (the scalar c of sqrt(d) = v^(alpha/2) / c) are handed to the kernels:
one value or a list of per-tensor values, Python floats on the eager paths and tensors on the
compiled one."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def all_positive(c) -> bool:
    """Whether a host-side divisor (a float, or a list of floats) is > 0 everywhere; False for
    tensors (the compiled path), which then take the general branch."""
    if isinstance(c, float):
        return c > 0
    return isinstance(c, list) and all(isinstance(x, float) and x > 0 for x in c)


def eps_one(eps, c):
    if isinstance(c, Tensor):
        return torch.where(c == 0, torch.ones_like(c), eps * c)
    return 1.0 if c == 0 else eps * c


def eps_term(eps, c):
    """eps * c, with 1 where c = 0 (see ada2ms_apply_): one value, or a list of per-tensor ones."""
    return [eps_one(eps, ci) for ci in c] if isinstance(c, list) else eps_one(eps, c)


def scalar_arg(divisor: Tensor | float, runner):
    """A divisor as the runner takes scalars: Python numbers for the eager kernels (a 0-dim
    tensor becomes a float, a 1-D one a list), 0-dim tensors or floats (which it makes tensors)
    for the compiled path."""
    if isinstance(divisor, float):
        return divisor
    if runner.name == "fused":
        return list(divisor.unbind()) if divisor.dim() else divisor
    return divisor.tolist()


def rounded(x: Tensor | float, dtype: torch.dtype) -> Tensor | float:
    """``x`` rounded to ``dtype`` (float32 or float64), kept a tensor or a float."""
    if isinstance(x, Tensor):
        return x.to(dtype)
    return float(np.float32(x)) if dtype == torch.float32 else x


def times(k, c):
    """k * c for a scalar argument c: one value, or a list of per-tensor values."""
    return [k * ci for ci in c] if isinstance(c, list) else k * c
