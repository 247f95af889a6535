"""Three ways to execute one update rule.

An update rule (see ``adamnx.py`` and ``ada2ms.py``) is written once, against the handful of
primitives below. Every primitive takes lists of tensors; a scalar argument is either one value
for the whole list or a list with one value per tensor. The backends differ only in how a
primitive is executed:

* :class:`LoopOps` -- eager ``torch.Tensor`` methods, one tensor at a time. The reference path.
* :class:`ForeachOps` -- ``torch._foreach_*`` multi-tensor kernels.
* :class:`CompiledOps` -- the same tensor methods as ``LoopOps`` but with scalars that may be
  0-dim tensors, traced by ``torch.compile`` into fused kernels (the ``fused=True`` path).

The runners at the bottom call a rule through a backend: per tensor, per list, or compiled once.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

Scalar = float | Tensor
ScalarArg = Scalar | Sequence[Scalar]


def _at(c: ScalarArg, i: int) -> Scalar:
    """The value of scalar argument ``c`` for the ``i``-th tensor."""
    return c[i] if isinstance(c, list | tuple) else c


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Reductions accumulate in at least float32 (bfloat16 sums would lose most of their digits).

    Args:
        dtype: the dtype of the tensors reduced.

    Returns:
        ``dtype`` promoted with float32.

    Example:
        >>> accumulation_dtype(torch.bfloat16), accumulation_dtype(torch.float64)
        (torch.float32, torch.float64)
    """
    return torch.promote_types(dtype, torch.float32)


def _pow_fast(x: Tensor, e: float) -> Tensor:
    """``x ** e`` for a Python float exponent, with exact shortcuts for the common exponents."""
    if e == 0.0:
        return torch.ones_like(x)
    if e == 0.5:
        return x.sqrt()
    if e == 0.25:
        # (x^(-1/2))^(-1/2): as exact as sqrt(sqrt(x)) (0 -> 0, inf -> inf) and, on CPU, measured
        # about twice as fast, because torch's eager sqrt is slower than its rsqrt there
        return x.rsqrt().rsqrt_()
    if e == 1.0:
        return x.clone()
    return x.pow(e)


def _sum_squares(x: Tensor) -> Tensor:
    """sum(x^2) as a float64 0-dim tensor. A dot product for float32 and float64 (BLAS, about
    twice as fast as vector_norm on CPU); lower precisions accumulate in float32."""
    if x.dtype in (torch.float32, torch.float64):
        flat = x.reshape(-1)
        return torch.dot(flat, flat).double()
    return torch.linalg.vector_norm(x, dtype=accumulation_dtype(x.dtype)).double().square()


class LoopOps:
    """Eager per-tensor primitives (floats or 0-dim tensors as scalars)."""

    @staticmethod
    def mul_(xs: list[Tensor], c: ScalarArg) -> None:
        for i, x in enumerate(xs):
            x.mul_(_at(c, i))

    @staticmethod
    def div_(xs: list[Tensor], c: ScalarArg) -> None:
        for i, x in enumerate(xs):
            x.div_(_at(c, i))

    @staticmethod
    def add_(xs: list[Tensor], c: ScalarArg) -> None:
        for i, x in enumerate(xs):
            x.add_(_at(c, i))

    @staticmethod
    def clamp_min_(xs: list[Tensor], c: float) -> None:
        for x in xs:
            x.clamp_min_(c)

    @staticmethod
    def ema_(avgs: list[Tensor], xs: list[Tensor], beta: Scalar) -> None:
        """avg <- beta * avg + (1 - beta) * x."""
        for a, x in zip(avgs, xs, strict=True):
            a.lerp_(x, 1 - beta)

    @staticmethod
    def ema_square_(avgs: list[Tensor], xs: list[Tensor], beta: float) -> None:
        """avg <- beta * avg + (1 - beta) * x**2."""
        for a, x in zip(avgs, xs, strict=True):
            a.mul_(beta).addcmul_(x, x, value=1 - beta)

    @staticmethod
    def sqrt(xs: list[Tensor]) -> list[Tensor]:
        return [x.sqrt() for x in xs]

    @staticmethod
    def pow(xs: list[Tensor], e: Scalar) -> list[Tensor]:
        if isinstance(e, Tensor):
            return [x.pow(e) for x in xs]
        return [_pow_fast(x, e) for x in xs]

    @staticmethod
    def addcdiv_(ps: list[Tensor], ns: list[Tensor], ds: list[Tensor], c: ScalarArg) -> None:
        """p <- p + c * n / d."""
        for i, (p, n, d) in enumerate(zip(ps, ns, ds, strict=True)):
            p.addcdiv_(n, d, value=_at(c, i))

    @staticmethod
    def sum_squares(xs: list[Tensor]) -> list[Tensor]:
        """Sum of the squares of each tensor (accumulated in at least float32), as float64 0-dim
        tensors."""
        return [_sum_squares(x) for x in xs]


class CompiledOps(LoopOps):
    """LoopOps whose scalars may all be 0-dim tensors, so that traced code never specialises on
    a hyperparameter's value (changing lr or a scheduled alpha does not recompile)."""

    @staticmethod
    def ema_square_(avgs: list[Tensor], xs: list[Tensor], beta: Scalar) -> None:
        for a, x in zip(avgs, xs, strict=True):
            a.mul_(beta).add_(x * x * (1 - beta))

    @staticmethod
    def pow(xs: list[Tensor], e: Scalar) -> list[Tensor]:
        if isinstance(e, Tensor):
            # A run-time exponent (a scheduled alpha): inductor's pow with a tensor exponent does
            # not vectorise, exp(e log x) does (measured 2.5x faster), at a relative error of
            # about 5e-7 in float32 instead of 6e-8. x = 0 gives 0 (and 1 when e = 0, as pow).
            return [
                torch.where(x == 0, (e == 0).to(x.dtype), torch.exp(torch.log(x) * e)) for x in xs
            ]
        if e == 0.25:  # compiled, rsqrt is a sqrt and a division
            return [x.sqrt().sqrt() for x in xs]
        return LoopOps.pow(xs, e)

    @staticmethod
    def addcdiv_(ps: list[Tensor], ns: list[Tensor], ds: list[Tensor], c: ScalarArg) -> None:
        for i, (p, n, d) in enumerate(zip(ps, ns, ds, strict=True)):
            p.add_(n / d * _at(c, i))


class ForeachOps:
    """Multi-tensor ``torch._foreach_*`` primitives."""

    @staticmethod
    def mul_(xs: list[Tensor], c: ScalarArg) -> None:
        torch._foreach_mul_(xs, c)

    @staticmethod
    def div_(xs: list[Tensor], c: ScalarArg) -> None:
        if isinstance(c, list | tuple) and c and isinstance(c[0], Tensor):
            for x, ci in zip(xs, c, strict=True):  # per-tensor 0-dim divisors: one by one
                x.div_(ci)
        else:
            torch._foreach_div_(xs, c)

    @staticmethod
    def add_(xs: list[Tensor], c: ScalarArg) -> None:
        torch._foreach_add_(xs, c)

    @staticmethod
    def clamp_min_(xs: list[Tensor], c: float) -> None:
        torch._foreach_clamp_min_(xs, c)

    @staticmethod
    def ema_(avgs: list[Tensor], xs: list[Tensor], beta: float) -> None:
        torch._foreach_lerp_(avgs, xs, 1 - beta)

    @staticmethod
    def ema_square_(avgs: list[Tensor], xs: list[Tensor], beta: float) -> None:
        torch._foreach_mul_(avgs, beta)
        torch._foreach_addcmul_(avgs, xs, xs, 1 - beta)

    @staticmethod
    def sqrt(xs: list[Tensor]) -> list[Tensor]:
        return list(torch._foreach_sqrt(xs))

    @staticmethod
    def pow(xs: list[Tensor], e: float) -> list[Tensor]:
        if e == 0.0:
            return [torch.ones_like(x) for x in xs]
        if e == 0.5:
            return list(torch._foreach_sqrt(xs))
        if e == 0.25:
            out = list(torch._foreach_sqrt(xs))
            torch._foreach_sqrt_(out)
            return out
        return list(torch._foreach_pow(xs, e))

    @staticmethod
    def addcdiv_(ps: list[Tensor], ns: list[Tensor], ds: list[Tensor], c: ScalarArg) -> None:
        torch._foreach_addcdiv_(ps, ns, ds, c)

    @staticmethod
    def sum_squares(xs: list[Tensor]) -> list[Tensor]:
        norms = torch._foreach_norm(xs, 2, dtype=accumulation_dtype(xs[0].dtype))
        return list(torch.stack(norms).double().square().unbind())


Rule = Callable[..., Any]
Lists = Sequence[list[Tensor]]
Scalars = dict[str, ScalarArg]


class Runner(Protocol):
    """How a rule is executed: ``run(rule, lists, scalars, static)`` calls
    ``rule(ops, *lists, **scalars)`` with the runner's primitives ``ops`` and returns what the
    rule returns (a list of tensors, or None). ``lists`` are parallel lists of tensors (params,
    grads, ...); ``scalars`` are the rule's keyword arguments, each one value or one per tensor;
    ``static`` names scalars that a compiling runner may bake in as constants."""

    name: str

    def run(self, rule: Rule, lists: Lists, scalars: Scalars, static: Sequence[str] = ()):
        """Execute ``rule``.

        Args:
            rule: ``rule(ops, *lists, **scalars)``, an update or a computation on lists.
            lists: parallel lists of tensors.
            scalars: the rule's keyword arguments, each one value or one per tensor.
            static: names of scalars a compiling runner may bake in as constants.

        Returns:
            What the rule returns: a list of tensors, or None.
        """
        ...


class LoopRunner:
    """Calls a rule once per tensor (single-element lists), like torch's for-loop optimizers."""

    name = "loop"

    def run(self, rule: Rule, lists: Lists, scalars: Scalars, static: Sequence[str] = ()):
        """Execute ``rule`` tensor by tensor (see :class:`Runner`; ``static`` is ignored).

        Returns:
            The per-tensor results concatenated, or None when the rule returns nothing.
        """
        out: list[Tensor] = []
        for i in range(len(lists[0])):
            kw = {k: ([v[i]] if isinstance(v, list | tuple) else v) for k, v in scalars.items()}
            res = rule(LoopOps, *[[lst[i]] for lst in lists], **kw)
            if res is not None:
                out.extend(res)
        return out or None


class ForeachRunner:
    """Calls a rule once on whole lists with the multi-tensor kernels."""

    name = "foreach"

    def run(self, rule: Rule, lists: Lists, scalars: Scalars, static: Sequence[str] = ()):
        """Execute ``rule`` on the whole lists (see :class:`Runner`; ``static`` is ignored).

        Returns:
            What the rule returns.
        """
        return rule(ForeachOps, *lists, **scalars)


def _fresh_function(fn: Callable) -> Callable:
    """A copy of ``fn`` with its own code object: torch.compile keeps its cache (and its
    recompilation limit) per code object, so each optimizer gets a cache of its own."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__)


def _compiled_entry(rule, lists, scalars):
    return rule(CompiledOps, *lists, **scalars)


class CompiledRunner:
    """Calls a rule through ``torch.compile``: the element-wise work of a whole list is fused.

    Hyperparameters enter as 0-dim tensors on the parameters' device, so the compiled graph does
    not depend on their values; one graph per (rule, device, dtype, list of shapes) is compiled the
    first time it is needed and reused from then on. Scalars named in ``static`` are instead
    compiled in as constants (a constant Ada2MS alpha, so that v^(1/4) becomes two square roots
    rather than a general power); a new value of one of them compiles a new graph.
    """

    name = "fused"

    def __init__(self) -> None:
        # Horizontal fusion of many same-shaped tensors into one CPU loop streams dozens of arrays
        # at once and was measured 1.3-1.6x slower than one loop per tensor (bench_optimizers.py).
        # Inductor's size asserts re-check in Python every input's shape and strides, which
        # dynamo's guards have just checked: about 100 us a step for 74 tensors, so they are off.
        self._entry = torch.compile(
            _fresh_function(_compiled_entry),
            fullgraph=True,
            dynamic=False,
            options={"cpp.max_horizontal_fusion_size": 1, "size_asserts": False},
        )

    def run(self, rule: Rule, lists: Lists, scalars: Scalars, static: Sequence[str] = ()):
        """Execute ``rule`` compiled (see :class:`Runner`); Python-number scalars not in
        ``static`` become 0-dim tensors (float64 when a list is float64, else float32).

        Returns:
            What the rule returns.
        """
        ref = lists[0][0]
        wide = any(lst[0].dtype == torch.float64 for lst in lists)  # e.g. float64 running sums
        sdtype = torch.float64 if wide else torch.float32
        floats = {
            k: float(v)
            for k, v in scalars.items()
            if isinstance(v, int | float) and k not in static
        }
        as_tensors = dict(
            zip(
                floats,
                torch.tensor(list(floats.values()), dtype=sdtype).to(ref.device).unbind(),
                strict=True,
            )
        )
        rest = {k: v for k, v in scalars.items() if k not in floats}
        return self._entry(rule, [list(lst) for lst in lists], {**as_tensors, **rest})
