"""AdamNX: Adam whose second-moment decay rises towards 1, so that it fades into momentum SGD."""

from __future__ import annotations

import math

import numpy as np

from .._checks import check_float
from ._base import LOOP, AdamFamily, Bucket


def adamnx_betas(beta1: float, beta2: float, step: int) -> tuple[float, float]:
    """The step-dependent decays (beta1_hat_t, beta2_hat_t) of AdamNX at step ``step`` >= 1.

    beta1_hat_t = (beta1 - beta1^t) / (1 - beta1^t)
    beta2_hat_t = (1 - a^(t-1)) / (1 - a^t),  a = beta2^(1 - beta2)

    beta1_hat_1 = beta2_hat_1 = 0, and beta2_hat_t rises to 1: after about 1 / (1 - a) steps the
    second moment is effectively frozen.

    Args:
        beta1: the first-moment decay, in [0, 1).
        beta2: the second-moment decay, in [0, 1) (not checked here).
        step: the step t, counting from 1.

    Returns:
        ``(beta1_hat_t, beta2_hat_t)`` as floats.

    Raises:
        ValueError: ``step`` < 1.

    Example:
        >>> [round(b, 6) for b in adamnx_betas(0.9, 0.99, 2)]
        [0.473684, 0.500025]
    """
    if step < 1:
        raise ValueError(f"Invalid step: {step!r} (steps count from 1)")
    b1t = beta1**step
    beta1_hat = (beta1 - b1t) / (1.0 - b1t)
    if beta2 == 0.0:  # a = 0: v keeps the first squared gradient for ever
        return beta1_hat, (0.0 if step == 1 else 1.0)
    log_a = (1.0 - beta2) * math.log(beta2)
    # 1 - a^k computed as -expm1(k log a): accurate when a is close to 1
    beta2_hat = math.expm1((step - 1) * log_a) / math.expm1(step * log_a)
    return beta1_hat, beta2_hat


def adamnx_horizon(beta2: float) -> float:
    """The number of steps after which AdamNX's second moment is effectively frozen:

    horizon = 1 / (1 - a),  a = beta2^(1 - beta2)

    (about 10^4 steps for beta2 = 0.99, 95 for 0.9). Before it, 1 - beta2_hat_t is about 1/t
    (v_t is a running average of every g^2 so far); after it, 1 - beta2_hat_t shrinks by the
    factor a = 1 - 1/horizon each step, so new gradients stop moving v_t. The first k gradients
    carry the share (1 - a^k) / (1 - a^t) of v_t, which tends to 1 - a^k ~ 1 - exp(-k / horizon):
    63% for one horizon, 95% for three.

    Computed as -1 / expm1((1 - beta2) log beta2), accurate when a is close to 1; beta2 = 0
    (a = 0, v keeps the first g^2 for ever) gives 1.

    Args:
        beta2: the second-moment decay, in [0, 1).

    Returns:
        The horizon in steps, a float >= 1.

    Raises:
        ValueError: ``beta2`` is not a number in [0, 1).

    Example:
        >>> round(adamnx_horizon(0.99), 1), round(adamnx_horizon(0.9), 2)
        (9950.4, 95.41)
    """
    beta2 = check_float("beta2", beta2, 0.0, 1.0, high_open=True)
    if beta2 == 0.0:
        return 1.0
    return -1.0 / math.expm1((1.0 - beta2) * math.log(beta2))


def adamnx_gradient_weights(beta2: float, step: int) -> np.ndarray:
    """The weight of g_i^2 in AdamNX's v_t for i = 1..t: a^(i-1) / sum_j a^(j-1), a = beta2^(1-beta2).

    Older gradients weigh more; compare :func:`adam_gradient_weights`.

    Args:
        beta2: the second-moment decay, in [0, 1) (not checked).
        step: the step t (>= 1): the number of gradients averaged.

    Returns:
        A float64 array of shape (step,), summing to 1, oldest gradient first.

    Example:
        >>> adamnx_gradient_weights(0.5, 3).round(6).tolist()
        [0.453082, 0.320377, 0.226541]
    """
    a = beta2 ** (1.0 - beta2)
    w = a ** np.arange(step, dtype=np.float64)
    return w / w.sum()


def adam_gradient_weights(beta2: float, step: int) -> np.ndarray:
    """The weight of g_i^2 in Adam's bias-corrected v_hat_t for i = 1..t:
    (1 - beta2) beta2^(t-i) / (1 - beta2^t). Recent gradients weigh more.

    Args:
        beta2: Adam's second-moment decay, in [0, 1) (not checked).
        step: the step t (>= 1): the number of gradients averaged.

    Returns:
        A float64 array of shape (step,), summing to 1, oldest gradient first.

    Example:
        >>> adam_gradient_weights(0.5, 3).round(6).tolist()
        [0.142857, 0.285714, 0.571429]
    """
    i = np.arange(1, step + 1, dtype=np.float64)
    return (1.0 - beta2) * beta2 ** (step - i) / (1.0 - beta2**step)


def adamnx_update(
    ops, params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay
) -> None:
    """One AdamNX step on lists of tensors, with ``beta1``/``beta2`` the decays of this step.

    Args:
        ops: the element-wise backend (e.g. ``LoopOps`` or ``ForeachOps``).
        params: the parameter tensors, updated in place.
        grads: their gradients.
        exp_avgs: the first moments m, updated in place.
        exp_avg_sqs: the second moments v, updated in place.
        lr: the learning rate.
        beta1: this step's first-moment decay beta1_hat_t.
        beta2: this step's second-moment decay beta2_hat_t.
        eps: added to sqrt(v).
        weight_decay: the decoupled weight decay (multiplied by ``lr``).

    Returns:
        None.
    """
    ops.mul_(params, 1 - lr * weight_decay)
    ops.ema_(exp_avgs, grads, beta1)
    ops.ema_square_(exp_avg_sqs, grads, beta2)
    ops.addcdiv_(params, exp_avgs, adamnx_denominator(ops, exp_avg_sqs, eps=eps), -lr)


def adamnx_denominator(ops, exp_avg_sqs, *, eps):
    """sqrt(v) + eps.

    Args:
        ops: the element-wise backend.
        exp_avg_sqs: the second moments v (not modified).
        eps: the constant added.

    Returns:
        New tensors (or a list of them, as the backend gives) holding sqrt(v) + eps.
    """
    denom = ops.sqrt(exp_avg_sqs)
    ops.add_(denom, eps)
    return denom


class AdamNX(AdamFamily):
    r"""AdamNX (Zhu, Xiao and Min, arXiv 2511.13465): Adam whose second-moment decay rises
    towards 1, so that the per-coordinate correction fades and the method becomes momentum SGD
    with a fixed diagonal preconditioner in the stable phase of training.

    At step :math:`t = 1, 2, \dots`, with :math:`a = \beta_2^{1-\beta_2}`:

    .. math::

        \hat\beta_{1,t} &= (\beta_1 - \beta_1^t) / (1 - \beta_1^t), \qquad
        \hat\beta_{2,t} = (1 - a^{t-1}) / (1 - a^t) \\
        \theta &\leftarrow \theta\,(1 - \eta\lambda) \\
        m_t &= \hat\beta_{1,t}\, m_{t-1} + (1 - \hat\beta_{1,t})\, g_t \\
        v_t &= \hat\beta_{2,t}\, v_{t-1} + (1 - \hat\beta_{2,t})\, g_t^2 \\
        \theta &\leftarrow \theta - \eta\, m_t / (\sqrt{v_t} + \epsilon)

    The bias correction is folded into the decays: :math:`m_t` equals Adam's bias-corrected
    :math:`\hat m_t`, and :math:`v_t = \sum_{i \le t} a^{i-1} g_i^2 / \sum_{i \le t} a^{i-1}`, an
    average in which older gradients weigh more. After about :math:`1/(1-a)` steps
    (:math:`\approx 10^4` for :math:`\beta_2 = 0.99`) :math:`v` is effectively frozen.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: learning rate :math:`\eta` (>= 0).
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon` added to :math:`\sqrt{v_t}` (>= 0).
        weight_decay: decoupled weight decay :math:`\lambda` (>= 0).
        foreach: use multi-tensor kernels (default: on CUDA).
        fused: fuse the element-wise update with ``torch.compile`` (compiled on first use).

    Raises:
        ValueError: a hyperparameter out of range (named, with its value), ``foreach`` and
            ``fused`` both True, or float16 parameters; before any state is created.

    Parameters may be float32, float64 or bfloat16 (moments kept in the parameter's dtype, as
    torch's AdamW does). float16 parameters are refused with a ``ValueError``: the default
    ``eps = 1e-8`` rounds to zero in float16 and gradients below about 2e-4 square to zero,
    so ``m / (sqrt(v) + eps)`` divides by zero; keep float32 parameters and use
    ``torch.autocast`` for float16 compute.

    State per parameter, as torch.optim.AdamW names it: ``step``, ``exp_avg`` (:math:`m`),
    ``exp_avg_sq`` (:math:`v`), kept in the parameter's dtype.
    """

    momentum_bias_corrected = True  # m_t = Adam's m_hat_t: the decays fold the correction in

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            foreach=foreach, fused=fused,
        )  # fmt: skip

    def _adapt_groups(self, groups):
        for gi, g in enumerate(groups):
            foreign = (
                "Ada2MS"
                if "alpha" in g or "scope" in g
                else "torch's Adam/AdamW"
                if "amsgrad" in g
                else None
            )
            if foreign:
                raise ValueError(
                    f"Invalid state_dict: param group {gi} is {foreign}'s, not AdamNX's "
                    "(their second moments are different averages of g^2)"
                )
        return groups

    def _update(self, group, buckets: list[Bucket], runner, plan=None) -> None:
        beta1, beta2 = group["betas"]
        for b in buckets:
            beta1_hat, beta2_hat = adamnx_betas(beta1, beta2, b.step)
            runner.run(
                adamnx_update,
                (b.params, b.grads, b.exp_avgs, b.exp_avg_sqs),
                dict(
                    lr=group["lr"],
                    beta1=beta1_hat,
                    beta2=beta2_hat,
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                ),
            )

    def _denominators(self, group, buckets: list[Bucket]):
        return [
            LOOP.run(adamnx_denominator, (b.exp_avg_sqs,), dict(eps=group["eps"])) for b in buckets
        ]

    def beta2_hat(self, step: int | None = None, group: int = 0) -> float:
        """The current (or given step's) second-moment decay of a param group.

        Args:
            step: the step t (>= 1); None: the largest step taken by the group's parameters
                (1 before any step).
            group: the index of the param group.

        Returns:
            beta2_hat_t as a float.

        Raises:
            ValueError: ``step`` < 1.
        """
        if step is None:
            steps = [
                int(self.state[p]["step"])
                for p in self.param_groups[group]["params"]
                if p in self.state
            ]
            step = max(steps, default=0) or 1
        return adamnx_betas(*self.param_groups[group]["betas"], step)[1]

    def step_measures(self) -> dict[str, float]:
        """``beta2_hat``: the second-moment decay of the last step of the first param group.

        Returns:
            ``{"beta2_hat": value}``.
        """
        return {"beta2_hat": self.beta2_hat()}
