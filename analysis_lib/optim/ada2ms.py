"""Ada2MS: exponential interpolation between element-wise and global second moments."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer

from .._checks import check_float, check_int, check_positive
from . import _native
from ._backends import accumulation_dtype
from ._base import LOOP, AdamFamily, Bucket, as_plain
from ._scalars import all_positive, eps_term, rounded, scalar_arg, times

SCOPES = ("global", "group", "tensor")
_OPAQUE_SCHEDULE = "callable"  # how a user's own alpha callable appears in a state_dict
SUM_KEY = "exp_avg_sq_sum"  # per-parameter state: the sum of exp_avg_sq, kept in float64


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
        final = check_float("final", self.final, 0.0, 1.0)
        tau = check_positive("tau", self.tau)
        object.__setattr__(self, "final", as_plain(self.final, final))
        object.__setattr__(self, "tau", as_plain(self.tau, tau))

    def __call__(self, step: int) -> float:
        return self.final + (1.0 - self.final) * math.exp(-(step - 1) / self.tau)

    @classmethod
    def reaching(cls, final: float, steps: int, within: float = 0.01) -> ExponentialAlpha:
        """The schedule that has travelled all but ``within`` of the way at step ``steps``.

        Args:
            final: the alpha approached, in [0, 1].
            steps: the step (>= 2) at which all but ``within`` of the way is travelled.
            within: the fraction of the way left at ``steps``, in (0, 1).

        Returns:
            The :class:`ExponentialAlpha` with ``tau = (steps - 1) / ln(1 / within)``.

        Raises:
            ValueError: an argument out of range, naming it.

        Example:
            >>> s = ExponentialAlpha.reaching(0.5, 101)
            >>> round(s.tau, 4), round(s(101), 6)
            (21.7147, 0.505)
        """
        within = check_float("within", within, 0.0, 1.0, low_open=True, high_open=True)
        steps = check_int("steps", steps, 2)
        return cls(final=final, tau=(steps - 1) / math.log(1 / within))


def ada2ms_square_sums_(ops, grads, sums, *, beta2) -> None:
    """Phase 1 of a step, which reads the gradients only: each tensor's sum of v, advanced by the
    linearity of the EMA, sum(v_t) = beta2 sum(v_{t-1}) + (1 - beta2) sum(g_t^2).

    Args:
        ops: the element-wise backend.
        grads: the gradient tensors of a bucket.
        sums: the running sums of v (a 1-D tensor per bucket, one entry per tensor), updated in
            place.
        beta2: the second-moment decay.

    Returns:
        None.
    """
    ops.ema_(sums, ops.sum_squares(grads), beta2)


def ada2ms_sqrt_d_divisor(mean_v_hat: Tensor, alpha: float, bias_correction2: float) -> Tensor:
    """The scalar c with sqrt(d) = v^(alpha/2) / c, where d = v_hat^alpha * s^(1-alpha),
    v_hat = v / bias_correction2 and s = ``mean_v_hat`` (the mean of v_hat over the scope).

    Written as a divisor so that alpha = 1 gives c = sqrt(bias_correction2) and the same
    floating-point operations as torch's AdamW. ``mean_v_hat`` is a float64 tensor or a float.

    A mean of zero (every gradient of the scope zero so far) gives c = 0, the mark of d = 0:
    :func:`ada2ms_apply_` then makes no adaptive step (as AdamW with zero moments), whatever
    alpha; a NaN mean stays NaN, so a diverging run shows.

    Args:
        mean_v_hat: s, the mean of v_hat over the scope (>= 0; a float or float64 tensor).
        alpha: the interpolation, in [0, 1].
        bias_correction2: 1 - beta2^t.

    Returns:
        c, of the type of ``mean_v_hat`` (0 where the mean is 0).

    Example:
        >>> round(ada2ms_sqrt_d_divisor(4.0, 0.5, 1.0), 6), ada2ms_sqrt_d_divisor(0.0, 0.5, 1.0)
        (0.707107, 0.0)
    """
    if isinstance(mean_v_hat, Tensor):
        c = mean_v_hat ** ((alpha - 1.0) / 2) * bias_correction2 ** (alpha / 2)
        return torch.where(mean_v_hat == 0, torch.zeros_like(c), c)
    if mean_v_hat == 0:
        return 0.0
    return mean_v_hat ** ((alpha - 1.0) / 2) * bias_correction2 ** (alpha / 2)


def ada2ms_divisors(sums, numels, bias_corrections2, alphas, scope: str) -> list[Tensor | float]:
    """For each bucket of tensors, the divisor c of sqrt(d) = v^(alpha/2) / c, in float64: one
    value (scope="global" or "group": s is the mean of v_hat over every bucket given) or a 1-D
    tensor with one divisor per tensor (scope="tensor"). ``sums`` holds per bucket a 1-D tensor
    of each tensor's sum of v, ``numels`` the tensors' sizes. A group's value is a Python float when the sums are
    on the CPU (a handful of scalar tensor operations cost more than the rest of a small step),
    a 0-dim tensor elsewhere (no synchronisation with the device).

    Args:
        sums: per bucket, a 1-D tensor of each tensor's sum of v.
        numels: per bucket, the sizes of its tensors.
        bias_corrections2: per bucket, 1 - beta2^t.
        alphas: per bucket, the interpolation alpha.
        scope: ``"global"``, ``"group"`` or ``"tensor"``: what s is the mean over.

    Returns:
        One divisor per bucket (see above).
    """
    if scope in ("global", "group"):
        device = sums[0].device
        if all(s.is_cpu for s in sums):
            total = sum(s.sum().item() / c for s, c in zip(sums, bias_corrections2, strict=True))
        else:
            total = sum(
                s.sum().to(device) / c for s, c in zip(sums, bias_corrections2, strict=True)
            )
        mean_v_hat = total / sum(n for ns in numels for n in ns)
        return [
            ada2ms_sqrt_d_divisor(mean_v_hat, a, c)
            for a, c in zip(alphas, bias_corrections2, strict=True)
        ]
    return [
        ada2ms_sqrt_d_divisor(s / (c * torch.tensor(ns, dtype=s.dtype, device=s.device)), a, c)
        for s, ns, a, c in zip(sums, numels, alphas, bias_corrections2, strict=True)
    ]


def ada2ms_update_(ops, params, grads, exp_avgs, exp_avg_sqs, *, beta1, beta2, **apply_kw) -> None:
    """Phase 2 of a step, one pass over memory: the moment EMAs (as AdamW), then the update.

    Args:
        ops: the element-wise backend.
        params: the parameter tensors, updated in place.
        grads: their gradients.
        exp_avgs: the first moments m, updated in place.
        exp_avg_sqs: the second moments v, updated in place.
        beta1: the first-moment decay.
        beta2: the second-moment decay.
        **apply_kw: the keyword arguments of :func:`ada2ms_apply_`.

    Returns:
        None.
    """
    ops.ema_(exp_avgs, grads, beta1)
    ops.ema_square_(exp_avg_sqs, grads, beta2)
    ada2ms_apply_(ops, params, exp_avgs, exp_avg_sqs, **apply_kw)


def ada2ms_apply_(
    ops, params, exp_avgs, exp_avg_sqs, *, divisor, lr, alpha, eps, weight_decay, bias_correction1
) -> None:
    """theta <- theta (1 - lr wd) - lr m_hat / (sqrt(d) + eps), sqrt(d) = v^(alpha/2) / divisor.

    A divisor of 0 marks d = 0 (a scope whose mean second moment is zero): that tensor's
    adaptive step is zero, and only the weight decay moves it. With eps = 0 an element with
    v = 0 (and so m = 0) inside a scope of positive mean also makes a zero step, not 0 / 0.

    Args:
        ops: the element-wise backend.
        params: the parameter tensors, updated in place.
        exp_avgs: the first moments m (raw EMA).
        exp_avg_sqs: the second moments v (raw EMA).
        divisor: c of :func:`ada2ms_divisors` for this bucket.
        lr: the learning rate.
        alpha: the interpolation, in [0, 1].
        eps: added to sqrt(d).
        weight_decay: the decoupled weight decay (multiplied by ``lr``).
        bias_correction1: 1 - beta1^t.

    Returns:
        None.
    """
    ops.mul_(params, 1 - lr * weight_decay)
    if isinstance(alpha, float) and alpha == 1.0 and all_positive(divisor) and eps > 0:
        # AdamW's own floating-point operations: sqrt(v) / sqrt(bias_correction2) + eps
        denom = ada2ms_denominator(ops, exp_avg_sqs, divisor=divisor, alpha=alpha, eps=eps)
        ops.addcdiv_(params, exp_avgs, denom, -lr / bias_correction1)
    else:
        # the same update with the divisor c folded into the scalars, one pass less:
        # m / (v^(alpha/2) / c + eps) = c m / (v^(alpha/2) + eps c); c = 0 (d = 0): the
        # multiplier is 0 and the added term 1, so 0 * m / (v^(alpha/2) + 1) = 0, for every eps
        denom = ops.pow(exp_avg_sqs, alpha / 2)
        ops.add_(denom, eps_term(eps, divisor))
        if not (isinstance(eps, float) and eps > 0):
            # eps = 0 (on the compiled path, always: fused, it costs nothing): an element whose
            # v is 0 has m = 0 too, and 0 / tiny = 0 where 0 / 0 would be NaN
            ops.clamp_min_(denom, torch.finfo(denom[0].dtype).tiny)
        ops.addcdiv_(params, exp_avgs, denom, times(-lr / bias_correction1, divisor))


def ada2ms_denominator(ops, exp_avg_sqs, *, divisor, alpha, eps) -> list[Tensor]:
    """sqrt(d) + eps = v^(alpha/2) / divisor + eps (eps where the divisor is 0: d = 0).
    Host-side divisors only (floats).

    Args:
        ops: the element-wise backend.
        exp_avg_sqs: the second moments v (not modified).
        divisor: c of :func:`ada2ms_divisors` (a float, or a list of floats per tensor).
        alpha: the interpolation, in [0, 1].
        eps: the constant added.

    Returns:
        New tensors holding sqrt(d) + eps.
    """
    denom = ops.pow(exp_avg_sqs, alpha / 2)
    if isinstance(divisor, list):
        divisor = [c if c != 0 else math.inf for c in divisor]
    elif divisor == 0:
        divisor = math.inf
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

    The scope is the set of elements over which :math:`s_t` is averaged; only parameters that
    take part in the step (``grad`` not None) count:

    - ``"global"`` (the default): every element of every parameter the optimizer steps, across
      all param groups whose scope is ``"global"``: one estimate for the whole model. This is
      the literal reading of the paper's "global second-moment estimate", hence the default.
    - ``"group"``: one estimate per param group. With the usual split into a decay and a
      no-decay group this is two estimates, not one global one.
    - ``"tensor"``: one estimate per parameter tensor.

    With a single param group ``"global"`` and ``"group"`` are the same. A scope whose mean is
    zero (all its gradients zero so far: an unused head, dead units) has :math:`d_t = 0` and, as
    AdamW with zero moments, makes no adaptive step: only the weight decay moves it, on every
    execution path. ``alpha = 1`` is exactly AdamW; ``alpha = 0`` is momentum SGD (the
    bias-corrected momentum) scaled by one :math:`1/\sqrt{s_t}`. With :math:`\epsilon = 0` the
    update is invariant to multiplying the loss by a constant, for every alpha.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: learning rate :math:`\eta` (>= 0).
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon` added to :math:`\sqrt{d_t}` (>= 0).
        weight_decay: decoupled weight decay :math:`\lambda` (>= 0).
        alpha: a number in [0, 1], or a callable ``step -> alpha`` evaluated once per step at
            the step being taken (t = 1 for the first), e.g. :class:`ExponentialAlpha`; its
            value is checked at every step, before anything changes.
        scope: ``"global"``, ``"group"`` or ``"tensor"``, the set over which :math:`s_t` is
            averaged (see above).
        foreach: use multi-tensor kernels (default: on CUDA).
        fused: fuse the element-wise update with ``torch.compile`` (compiled on first use).

    Raises:
        ValueError: a hyperparameter out of range (named, with its value), an unknown
            ``scope``, ``foreach`` and ``fused`` both True, or float16 parameters; before any
            state is created. A scheduled ``alpha`` is checked by :meth:`step`.

    Parameters may be float32, float64 or bfloat16 (moments in the parameter's dtype, the
    running sums behind :math:`s_t` in float64); float16 parameters are refused with a
    ``ValueError`` (``eps = 1e-8`` and small squared gradients underflow to zero in float16):
    keep float32 parameters and use ``torch.autocast``.

    Under data parallelism the gradients are equal on every rank and nothing changes; where
    parameters are sharded (FSDP / DTensor) the sum of :math:`v` and the element count behind
    :math:`s_t` would have to be all-reduced, which this implementation does not do.
    """

    # The fused path's phase 1 on the CPU goes through the native kernel of _native.py; False
    # keeps the compiled reduction (the benchmark and the tests compare the two).
    _native_reduction = True
    couples_coordinates = True  # through s_t, the mean of v_hat over the scope
    OPTIONAL_STATE_KEYS = (SUM_KEY,)

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        alpha: float | Callable[[int], float] = 0.5,
        scope: str = "global",
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            alpha=alpha, scope=scope, foreach=foreach, fused=fused,
        )  # fmt: skip

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        super()._check_group(group, where)
        if not callable(group["alpha"]):
            alpha = check_float(f"alpha{where}", group["alpha"], 0.0, 1.0)
            group["alpha"] = as_plain(group["alpha"], alpha)
        if not isinstance(group["scope"], str) or group["scope"] not in SCOPES:
            raise ValueError(f"Invalid scope{where}: {group['scope']!r} (expected one of {SCOPES})")

    def _check_step(self, group: dict[str, Any], params: list[Tensor], where: str) -> dict:
        """alpha at each step count about to be taken in this group, {step: alpha}: a schedule
        is called here, once per step, and its value checked before anything changes. The
        group's parameters must lie on one device (checked here too, before any state moves:
        the mean behind s_t is reduced over the group's tensors on one device)."""
        devices = list(dict.fromkeys(p.device for p in params))
        if len(devices) > 1:
            first = {
                d: next(i for i, p in enumerate(group["params"]) if p.device == d) for d in devices
            }
            found = ", ".join(f"{d} (params[{i}])" for d, i in first.items())
            raise ValueError(
                f"Invalid params{where}: Ada2MS needs the parameters of a param group on one "
                f"device; got {found}. Put them on one device, or in param groups of their own"
            )
        alpha = group["alpha"]
        if not callable(alpha):  # a constant was checked with the group
            return {}
        steps = {t + 1 for t in self._steps(params)}
        return {t: _schedule_value(alpha, t, where) for t in steps}

    def step_measures(self) -> dict[str, float]:
        """``alpha``: the interpolation of the last step of the first param group.

        Returns:
            ``{"alpha": value}``.
        """
        group = self.param_groups[0]
        steps = [int(self.state[p]["step"]) for p in group["params"] if self.state.get(p)]
        return {"alpha": self.alpha_at(max(steps, default=1), group)}

    @staticmethod
    def alpha_at(step: int, group: dict[str, Any]) -> float:
        """alpha of ``group`` at step ``step`` (the schedule evaluated and checked, or the
        constant).

        Args:
            step: the step t (from 1).
            group: a param group with its ``"alpha"`` (a number or a callable of the step).

        Returns:
            alpha as a float.

        Raises:
            ValueError: a schedule whose value at ``step`` is not in [0, 1].
        """
        alpha = group["alpha"]
        return _schedule_value(alpha, step, "") if callable(alpha) else float(alpha)

    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        super()._init_state(p, state)
        # shape (1,), not 0-dim: torch.compile (2.13, CPU) drops in-place updates of 0-dim inputs
        state[SUM_KEY] = torch.zeros(1, dtype=torch.float64, device=p.device)

    # -- the step ---------------------------------------------------------------------------
    def _apply(self, work) -> None:
        # Groups of scope "global" share one s_t: phase 1 of all of them comes first. The
        # others do both phases group by group (see _update).
        shared = [w for w in work if w[0]["scope"] == "global"]
        for group, params, plan in work:
            if group["scope"] != "global":
                self._update(group, self._buckets(params), self._runner(group, params), plan)
        if not shared:
            return
        jobs = [
            (group, self._buckets(params), self._runner(group, params), plan)
            for group, params, plan in shared
        ]
        sums = [self._phase1(group, buckets, runner) for group, buckets, runner, _ in jobs]
        divisors = self._divisors([(g, b, plan) for g, b, _, plan in jobs], sums)
        for (group, buckets, runner, plan), divs in zip(jobs, divisors, strict=True):
            self._phase2(group, buckets, runner, plan, divs)

    def _update(self, group, buckets: list[Bucket], runner, plan) -> None:
        sums = self._phase1(group, buckets, runner)
        (divisors,) = self._divisors([(group, buckets, plan)], [sums])
        self._phase2(group, buckets, runner, plan, divisors)

    def _phase1(self, group, buckets: list[Bucket], runner) -> list[list[Tensor]]:
        # Phase 1: s needs sum(v) over the scope before any parameter moves. Kept per tensor in
        # float64 state and advanced by linearity, it costs one read of the gradients instead of
        # a pass over g and v.
        # It walks the tensors last to first, so that phase 2, walking first to last, finds the
        # gradients it starts with still in the CPU's last-level cache (measured 4% faster a step).
        # On the CPU the fused path does this reduction with a native kernel that reads the
        # whole bucket in one parallel pass (_native.py), the compiled reduction elsewhere.
        beta2 = group["betas"][1]
        native = runner.name == "fused" and self._native_reduction
        square_sums = [self._square_sums(b) for b in buckets]
        for b, sums in zip(reversed(buckets), reversed(square_sums), strict=True):
            grads, sums = b.grads[::-1], sums[::-1]
            if not (native and _native.square_sums_ema_(grads, sums, beta2)):
                runner.run(ada2ms_square_sums_, (grads, sums), dict(beta2=beta2))
        return square_sums

    def _phase2(self, group, buckets: list[Bucket], runner, plan, divisors) -> None:
        # Phase 2: moments and update in one pass.
        beta1, beta2 = group["betas"]
        static = () if callable(group["alpha"]) else ("alpha",)  # a constant alpha compiles in
        for b, divisor in zip(buckets, divisors, strict=True):
            runner.run(
                ada2ms_update_,
                (b.params, b.grads, b.exp_avgs, b.exp_avg_sqs),
                dict(
                    beta1=beta1,
                    beta2=beta2,
                    divisor=scalar_arg(divisor, runner),
                    lr=group["lr"],
                    alpha=self._alpha(group, b.step, plan),
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    bias_correction1=1.0 - beta1**b.step,
                ),
                static=static,
            )

    def _alpha(self, group, step: int, plan: dict | None) -> float:
        if not callable(group["alpha"]):
            return float(group["alpha"])
        if plan is not None and step in plan:
            return plan[step]
        return self.alpha_at(step, group)

    def _square_sums(self, b: Bucket) -> list[Tensor]:
        return [self.state[p][SUM_KEY] for p in b.params]

    def _divisors(
        self, entries: list[tuple[dict, list[Bucket], dict | None]], square_sums=None
    ) -> list[list[Tensor | float]]:
        """The divisors of each bucket of each (group, buckets, plan) entry. Groups of scope
        "global" among the entries share one mean; the others have their own."""
        if square_sums is None:
            square_sums = [[self._square_sums(b) for b in buckets] for _, buckets, _ in entries]
        out: list[list[Tensor | float] | None] = [None] * len(entries)
        shared = [k for k, (group, _, _) in enumerate(entries) if group["scope"] == "global"]
        parts = [[k] for k in range(len(entries)) if k not in shared]
        if shared:
            parts.append(shared)
        for part in parts:
            flat = [
                (k, b, s) for k in part for b, s in zip(entries[k][1], square_sums[k], strict=True)
            ]
            if not flat:
                for k in part:
                    out[k] = []
                continue
            divisors = ada2ms_divisors(
                [torch.cat(s) for _, _, s in flat],
                [[p.numel() for p in b.params] for _, b, _ in flat],
                [1.0 - entries[k][0]["betas"][1] ** b.step for k, b, _ in flat],
                [self._alpha(entries[k][0], b.step, entries[k][2]) for k, b, _ in flat],
                entries[part[0]][0]["scope"],
            )
            for k in part:
                out[k] = []
            for (k, b, _), d in zip(flat, divisors, strict=True):
                # computed in float64; used in the parameters' arithmetic precision and device
                d = rounded(d, accumulation_dtype(b.params[0].dtype))
                if isinstance(d, Tensor) and d.device != b.params[0].device:
                    d = d.to(b.params[0].device)
                out[k].append(d)
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def effective_step_sizes(self) -> dict[Tensor, Tensor]:
        """The per-coordinate effective step size lr / (sqrt(d) + eps) of the last step, for each
        parameter that has state (empty before the first step); where d = 0, lr / eps.

        Returns:
            parameter -> a tensor of its shape.
        """
        entries = []
        for group in self.param_groups:
            params = [p for p in group["params"] if self.state.get(p)]
            if params:
                entries.append((group, self._group_state(params), None))
        out: dict[Tensor, Tensor] = {}
        for (group, buckets, _), divisors in zip(entries, self._divisors(entries), strict=True):
            for b, div in zip(buckets, divisors, strict=True):
                denoms = LOOP.run(
                    ada2ms_denominator,
                    (b.exp_avg_sqs,),
                    dict(
                        divisor=scalar_arg(div, LOOP),
                        alpha=self.alpha_at(b.step, group),
                        eps=group["eps"],
                    ),
                )
                for p, d in zip(b.params, denoms, strict=True):
                    out[p] = group["lr"] / d
        return out

    # -- a callable alpha in state_dict ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """As torch's, with an alpha schedule stored as data: an :class:`ExponentialAlpha` as a
        dict of its fields, any other callable as the marker ``"callable"`` (the optimizer that
        loads the state must then be constructed with that callable itself).

        Returns:
            The state dict (``state`` and ``param_groups``).
        """
        sd = super().state_dict()
        for g in sd["param_groups"]:
            alpha = g["alpha"]
            if isinstance(alpha, ExponentialAlpha):
                g["alpha"] = {"schedule": "exponential", **asdict(alpha)}
            elif callable(alpha):
                g["alpha"] = _OPAQUE_SCHEDULE
        return sd

    def _check_state_dict(self, state_dict):
        groups = super()._check_state_dict(state_dict)
        for k, entry in state_dict["state"].items():
            total = entry.get(SUM_KEY) if isinstance(entry, dict) else None
            if total is not None and not (
                isinstance(total, Tensor) and total.numel() == 1 and total.is_floating_point()
            ):
                raise ValueError(
                    f"Invalid state_dict: state of parameter {k!r}: {SUM_KEY} is not a "
                    "one-element floating-point tensor"
                )
        return groups

    def _adapt_groups(self, groups):
        for gi, (g, now) in enumerate(zip(groups, self.param_groups, strict=True)):
            own = "alpha" in g or "scope" in g
            if own and not ("alpha" in g and "scope" in g):
                missing = "scope" if "alpha" in g else "alpha"
                raise ValueError(f"Invalid state_dict: param group {gi} lacks {missing!r}")
            if not own:  # only torch's AdamW (alpha = 1) has the same moments
                if "amsgrad" not in g:
                    raise ValueError(
                        f"Invalid state_dict: param group {gi} lacks 'alpha' and 'scope': "
                        "neither Ada2MS's state nor torch's AdamW's (an AdamNX state_dict? its "
                        "second moment is another average of g^2)"
                    )
                if g.get("amsgrad") or g.get("maximize"):
                    raise ValueError(
                        f"Invalid state_dict: param group {gi} is AdamW's with amsgrad or "
                        "maximize, which Ada2MS does not do"
                    )
                if g.get("decoupled_weight_decay") is False and g["weight_decay"] != 0:
                    raise ValueError(
                        f"Invalid state_dict: param group {gi} is torch Adam's, whose weight "
                        "decay is an L2 term in the gradient, not Ada2MS's decoupled decay"
                    )
                g["alpha"], g["scope"] = now["alpha"], now["scope"]
                continue
            then = g["alpha"]
            if then == _OPAQUE_SCHEDULE:
                if not callable(now["alpha"]):
                    raise ValueError(
                        f"state_dict param group {gi} was saved with a callable alpha; construct "
                        "the optimizer with the same alpha callable before loading it"
                    )
                g["alpha"] = now["alpha"]
            elif isinstance(then, dict):
                if then.get("schedule") != "exponential" or not {"final", "tau"} <= set(then):
                    raise ValueError(
                        f"Invalid state_dict: param group {gi} has an unknown alpha {then!r}"
                    )
                g["alpha"] = ExponentialAlpha(final=then["final"], tau=then["tau"])
        return groups

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, after checking that ``state_dict`` is Ada2MS's state and fits the
        parameters (a refused one changes nothing). Also loads the state of torch's AdamW
        (same moment names): the hyperparameters AdamW lacks (alpha, scope) keep this
        optimizer's values.

        Args:
            state_dict: a dict from :meth:`state_dict` (or torch AdamW's).

        Returns:
            None.

        Raises:
            ValueError: a state dict that is not Ada2MS's nor AdamW's (e.g. amsgrad, torch
                Adam's coupled weight decay, an unknown alpha), that does not fit the
                parameters, or whose hyperparameters are out of range.
        """
        groups = self._check_state_dict(state_dict)
        for gi, g in enumerate(groups):
            self._check_group({**self.defaults, **g}, f" in state_dict param group {gi}")
        saved_sums = {k: v[SUM_KEY] for k, v in state_dict["state"].items() if SUM_KEY in v}
        live = [dict(g) for g in self.param_groups]
        Optimizer.load_state_dict(self, state_dict)  # torch's: the checks are done
        for g, now, checked in zip(self.param_groups, live, groups, strict=True):
            for key, value in now.items():
                g.setdefault(key, value)
            g["alpha"], g["scope"] = checked["alpha"], checked["scope"]
        # torch casts every state tensor to its parameter's dtype: the sums go back to float64
        params = [p for g in self.param_groups for p in g["params"]]
        for k, p in enumerate(params):
            state = self.state.get(p)
            if state:
                total = saved_sums.get(k, state["exp_avg_sq"].sum(dtype=torch.float64))
                state[SUM_KEY] = total.to(device=p.device, dtype=torch.float64, copy=True).reshape(
                    1
                )


def _schedule_value(alpha: Callable[[int], Any], step: int, where: str) -> float:
    """alpha(step) from a schedule, checked: a real number in [0, 1], else a ValueError that
    names alpha, the step and the value."""
    value = alpha(step)
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        value = float(value)  # e.g. a Fraction; the rule refuses a bool, NaN and inf
    return check_float(f"alpha (schedule value at step {step}){where}", value, 0.0, 1.0)
