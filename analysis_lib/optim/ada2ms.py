"""Ada2MS: exponential interpolation between element-wise and global second moments."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ._backends import LoopOps
from ._base import LOOP, AdamFamily, Bucket, check_unit_interval

SCOPES = ("group", "tensor")
_OPAQUE_SCHEDULE = "callable"  # how a user's own alpha callable appears in a state_dict


@dataclass(frozen=True)
class ExponentialAlpha:
    """An alpha schedule that moves exponentially from 1 (AdamW) towards ``final``:

    alpha(t) = final + (1 - final) * exp(-(t - 1) / tau),   t = 1, 2, ...

    so alpha(1) = 1 and after ``tau`` steps 63% of the way is travelled (``tau * ln 100`` steps
    for 99%). Being plain data, it is saved in and restored from the optimizer's state_dict.
    """

    final: float = 0.0
    tau: float = 1000.0

    def __post_init__(self) -> None:
        check_unit_interval("final", self.final)
        if not isinstance(self.tau, int | float) or not self.tau > 0 or math.isinf(self.tau):
            raise ValueError(f"Invalid tau: {self.tau!r} (expected a finite number > 0)")

    def __call__(self, step: int) -> float:
        return self.final + (1.0 - self.final) * math.exp(-(step - 1) / self.tau)

    @classmethod
    def reaching(cls, final: float, steps: int, within: float = 0.01) -> ExponentialAlpha:
        """The schedule that has travelled all but ``within`` of the way at step ``steps``."""
        if not 0 < within < 1:
            raise ValueError(f"Invalid within: {within!r} (expected a number in (0, 1))")
        if not steps > 1:
            raise ValueError(f"Invalid steps: {steps!r} (expected an integer > 1)")
        return cls(final=final, tau=(steps - 1) / math.log(1 / within))


def ada2ms_moments_(ops, grads, exp_avgs, exp_avg_sqs, *, beta1, beta2) -> list[Tensor]:
    """Update the two moment EMAs (as AdamW) and return the sum of each ``exp_avg_sq``."""
    ops.ema_(exp_avgs, grads, beta1)
    ops.ema_square_(exp_avg_sqs, grads, beta2)
    return ops.sum(exp_avg_sqs)


def ada2ms_sqrt_d_divisor(mean_v_hat: Tensor, alpha: float, bias_correction2: float) -> Tensor:
    """The scalar c with sqrt(d) = v^(alpha/2) / c, where d = v_hat^alpha * s^(1-alpha),
    v_hat = v / bias_correction2 and s = ``mean_v_hat`` (the mean of v_hat over the scope).

    Written as a divisor so that alpha = 1 gives c = sqrt(bias_correction2) and the same
    floating-point operations as torch's AdamW."""
    return mean_v_hat.pow((alpha - 1.0) / 2) * bias_correction2 ** (alpha / 2)


def ada2ms_divisors(sums, numels, bias_corrections2, alphas, scope: str) -> list:
    """For each bucket of tensors, the divisor c of sqrt(d) = v^(alpha/2) / c: one 0-dim tensor
    (scope="group": s is the mean of v_hat over every bucket) or a list with one per tensor
    (scope="tensor"). ``sums`` and ``numels`` hold, per bucket, each tensor's sum of v and size."""
    if scope == "group":
        device = sums[0][0].device
        total = sum(torch.stack(s).sum().to(device) / c
                    for s, c in zip(sums, bias_corrections2, strict=True))
        mean_v_hat = total / sum(n for ns in numels for n in ns)
        return [ada2ms_sqrt_d_divisor(mean_v_hat, a, c)
                for a, c in zip(alphas, bias_corrections2, strict=True)]
    return [[ada2ms_sqrt_d_divisor(si / (c * n), a, c) for si, n in zip(s, ns, strict=True)]
            for s, ns, a, c in zip(sums, numels, alphas, bias_corrections2, strict=True)]


def ada2ms_step_(ops, params, grads, exp_avgs, exp_avg_sqs, *, beta1, beta2, scope, alpha,
                 bias_correction2, **apply_kw) -> None:
    """A whole Ada2MS step on one bucket: moments, the mean over the scope, the update. Used by
    the compiled path, where it becomes one graph."""
    sums = ada2ms_moments_(ops, grads, exp_avgs, exp_avg_sqs, beta1=beta1, beta2=beta2)
    [divisor] = ada2ms_divisors([sums], [[p.numel() for p in params]], [bias_correction2],
                                [alpha], scope)
    ada2ms_apply_(ops, params, exp_avgs, exp_avg_sqs, divisor=divisor, alpha=alpha, **apply_kw)


def ada2ms_apply_(
    ops, params, exp_avgs, exp_avg_sqs, *, divisor, lr, alpha, eps, weight_decay, bias_correction1
) -> None:
    """theta <- theta (1 - lr wd) - lr m_hat / (sqrt(d) + eps), sqrt(d) = v^(alpha/2) / divisor."""
    ops.mul_(params, 1 - lr * weight_decay)
    denom = ada2ms_denominator(ops, exp_avg_sqs, divisor=divisor, alpha=alpha, eps=eps)
    ops.addcdiv_(params, exp_avgs, denom, -lr / bias_correction1)


def ada2ms_denominator(ops, exp_avg_sqs, *, divisor, alpha, eps) -> list[Tensor]:
    """sqrt(d) + eps = v^(alpha/2) / divisor + eps."""
    denom = ops.pow(exp_avg_sqs, alpha / 2)
    ops.div_(denom, divisor)
    ops.add_(denom, eps)
    return denom


class Ada2MS(AdamFamily):
    r"""Ada2MS (Zhu, Xiao and Min, arXiv 2605.20533): AdamW whose second moment is an exponential
    interpolation between the element-wise estimate and a global one, so that ``alpha`` moves the
    method from AdamW (``alpha = 1``) to momentum SGD (``alpha = 0``).

    **This is a reconstruction from the paper's abstract**: the authors' code is not released, so
    the details below (the scope of the global estimate, where epsilon enters, bias correction)
    are this library's reading of it, not the authors' implementation.

    With :math:`\hat m_t, \hat v_t` the bias-corrected EMAs of :math:`g` and :math:`g^2` (as AdamW):

    .. math::

        s_t &= \operatorname{mean}_{\text{scope}}(\hat v_t) \\
        d_t &= \hat v_t^{\,\alpha}\, s_t^{\,1-\alpha}
             = \exp(\alpha \log \hat v_t + (1-\alpha) \log s_t) \\
        \theta &\leftarrow \theta\,(1 - \eta\lambda) - \eta\, \hat m_t / (\sqrt{d_t} + \epsilon)

    The scope is every element of every parameter of the param group that takes part in the step
    (``scope="group"``, a global estimate) or each tensor separately (``scope="tensor"``).
    ``alpha = 1`` is exactly AdamW; ``alpha = 0`` is momentum SGD (the bias-corrected momentum)
    scaled by one global :math:`1/\sqrt{s_t}`. With :math:`\epsilon = 0` the update is invariant to
    multiplying the loss by a constant, for every alpha.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: learning rate :math:`\eta` (>= 0).
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon` added to :math:`\sqrt{d_t}` (>= 0).
        weight_decay: decoupled weight decay :math:`\lambda` (>= 0).
        alpha: a number in [0, 1], or a callable ``step -> alpha`` evaluated at the step being
            taken (t = 1 for the first), e.g. :class:`ExponentialAlpha`.
        scope: ``"group"`` or ``"tensor"``, the set over which :math:`s_t` is averaged.
        foreach: use multi-tensor kernels (default: on CUDA).
        fused: fuse the element-wise update with ``torch.compile`` (compiled on first use).

    Under data parallelism the gradients are equal on every rank and nothing changes; where
    parameters are sharded (FSDP / DTensor) the sum of :math:`v` and the element count behind
    :math:`s_t` would have to be all-reduced, which this implementation does not do.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        alpha: float | Callable[[int], float] = 0.5,
        scope: str = "group",
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, alpha=alpha, scope=scope)
        super().__init__(params, defaults, foreach=foreach, fused=fused)

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        super()._check_group(group, where)
        if not callable(group["alpha"]):
            check_unit_interval("alpha", group["alpha"], where)
        if group["scope"] not in SCOPES:
            raise ValueError(f"Invalid scope{where}: {group['scope']!r} (expected one of {SCOPES})")

    def _check_step(self, group: dict[str, Any], step: int, where: str) -> None:
        check_unit_interval(f"alpha (schedule value at step {step})", self.alpha_at(step, group),
                            where)

    @staticmethod
    def alpha_at(step: int, group: dict[str, Any]) -> float:
        """alpha of ``group`` at step ``step`` (the schedule evaluated, or the constant)."""
        alpha = group["alpha"]
        return float(alpha(step)) if callable(alpha) else float(alpha)

    def _update(self, group, buckets: list[Bucket], runner) -> None:
        beta1, beta2 = group["betas"]
        static = () if callable(group["alpha"]) else ("alpha",)
        if runner.name == "fused" and len(buckets) == 1:  # the usual case: one compiled graph
            b = buckets[0]
            runner.run(
                ada2ms_step_,
                (b.params, b.grads, b.exp_avgs, b.exp_avg_sqs),
                dict(beta1=beta1, beta2=beta2, scope=group["scope"],
                     alpha=self.alpha_at(b.step, group), bias_correction2=1.0 - beta2**b.step,
                     lr=group["lr"], eps=group["eps"], weight_decay=group["weight_decay"],
                     bias_correction1=1.0 - beta1**b.step),
                static=static,
            )
            return
        moments = dict(beta1=beta1, beta2=beta2)
        sums = [runner.run(ada2ms_moments_, (b.grads, b.exp_avgs, b.exp_avg_sqs), moments)
                for b in buckets]
        for b, divisor in zip(buckets, self._divisors(group, buckets, sums), strict=True):
            runner.run(
                ada2ms_apply_,
                (b.params, b.exp_avgs, b.exp_avg_sqs),
                dict(divisor=divisor, lr=group["lr"], alpha=self.alpha_at(b.step, group),
                     eps=group["eps"], weight_decay=group["weight_decay"],
                     bias_correction1=1.0 - beta1**b.step),
                static=static,
            )

    def _divisors(self, group, buckets: list[Bucket], sums: list[list[Tensor]]) -> list:
        beta2 = group["betas"][1]
        return ada2ms_divisors(
            sums, [[p.numel() for p in b.params] for b in buckets],
            [1.0 - beta2**b.step for b in buckets],
            [self.alpha_at(b.step, group) for b in buckets], group["scope"],
        )

    def _denominators(self, group, buckets: list[Bucket]):
        sums = [LoopOps.sum(b.exp_avg_sqs) for b in buckets]
        return [
            LOOP.run(ada2ms_denominator, (b.exp_avg_sqs,),
                      dict(divisor=div, alpha=self.alpha_at(b.step, group), eps=group["eps"]))
            for b, div in zip(buckets, self._divisors(group, buckets, sums), strict=True)
        ]

    # -- a callable alpha in state_dict ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """As torch's, with an alpha schedule stored as data: an :class:`ExponentialAlpha` as a
        dict of its fields, any other callable as the marker ``"callable"`` (the optimizer that
        loads the state must then be constructed with that callable itself)."""
        sd = super().state_dict()
        for g in sd["param_groups"]:
            alpha = g["alpha"]
            if isinstance(alpha, ExponentialAlpha):
                g["alpha"] = {"schedule": "exponential", **asdict(alpha)}
            elif callable(alpha):
                g["alpha"] = _OPAQUE_SCHEDULE
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        live = [g["alpha"] for g in self.param_groups]
        saved = [g["alpha"] for g in state_dict["param_groups"]]
        for gi, (now, then) in enumerate(zip(live, saved, strict=False)):
            if then == _OPAQUE_SCHEDULE and not callable(now):
                raise ValueError(
                    f"state_dict param group {gi} was saved with a callable alpha; construct the "
                    "optimizer with the same alpha callable before loading it"
                )
        super().load_state_dict(state_dict)
        for g, now, then in zip(self.param_groups, live, saved, strict=False):
            if isinstance(then, dict) and then.get("schedule") == "exponential":
                g["alpha"] = ExponentialAlpha(final=then["final"], tau=then["tau"])
            elif then == _OPAQUE_SCHEDULE:
                g["alpha"] = now
