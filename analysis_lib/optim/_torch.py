"""What diagnostics read from torch's own optimizers, through the interface that AdamNX and Ada2MS
implement as methods (:class:`~analysis_lib.optim._base.AdamFamily`):

``effective_step_sizes()``
    per-coordinate lr / P of the last step, keyed by parameter, where the update is
    -lr * m_hat / P (P = sqrt(d) + eps for the Adam family, 1 for SGD).
``momentum_directions()``
    the bias-corrected momentum m_hat of each parameter.
``step_measures()``
    scalars that describe the last step's schedule ({} for torch's optimizers).

The registry (:mod:`analysis_lib.optim.registry`) says which view belongs to which optimizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


def with_state(optimizer: torch.optim.Optimizer) -> Iterator[tuple[dict[str, Any], Tensor, dict]]:
    """(group, parameter, state) for every parameter that has optimizer state.

    Args:
        optimizer: any torch optimizer.

    Yields:
        ``(group, parameter, state)`` in the order of the param groups.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state:
                yield group, p, state


class TorchAdamFacts:
    """torch's Adam and AdamW: d is the bias-corrected v_hat = v / (1 - beta2^t)
    (``max_exp_avg_sq`` with ``amsgrad``); m_hat = m / (1 - beta1^t)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @torch.no_grad()
    def effective_step_sizes(self) -> dict[Tensor, Tensor]:
        """lr / (sqrt(v_hat) + eps) of the last step, per coordinate.

        Returns:
            parameter -> a tensor of its shape (parameters with state only).
        """
        out = {}
        for group, p, state in with_state(self.optimizer):
            v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
            bc2 = 1.0 - group["betas"][1] ** float(state["step"])
            out[p] = group["lr"] / ((v / bc2).sqrt() + group["eps"])
        return out

    @torch.no_grad()
    def momentum_directions(self) -> dict[Tensor, Tensor]:
        """m_hat = m / (1 - beta1^t) of each parameter with state.

        Returns:
            parameter -> a tensor of its shape.
        """
        return {
            p: state["exp_avg"] / (1.0 - group["betas"][0] ** float(state["step"]))
            for group, p, state in with_state(self.optimizer)
        }

    def step_measures(self) -> dict[str, float]:
        """None for torch's Adam and AdamW.

        Returns:
            An empty dict.
        """
        return {}


class TorchSGDFacts:
    """torch's SGD: the step is -lr * buf, with the uncorrected momentum buffer that starts at
    the first gradient (the gradient itself without momentum); every coordinate's step size is
    lr."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @torch.no_grad()
    def momentum_directions(self) -> dict[Tensor, Tensor]:
        """The momentum buffer of each parameter, or its gradient where there is none.

        Returns:
            parameter -> a tensor of its shape (parameters with neither are left out).
        """
        out: dict[Tensor, Tensor] = {}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    out[p] = buf
                elif p.grad is not None:
                    out[p] = p.grad
        return out

    @torch.no_grad()
    def effective_step_sizes(self) -> dict[Tensor, Tensor]:
        """lr at every coordinate of each parameter of :meth:`momentum_directions`.

        Returns:
            parameter -> a tensor of its shape filled with its group's lr.
        """
        lrs = {p: g["lr"] for g in self.optimizer.param_groups for p in g["params"]}
        return {p: torch.full_like(m, lrs[p]) for p, m in self.momentum_directions().items()}

    def step_measures(self) -> dict[str, float]:
        """None for SGD.

        Returns:
            An empty dict.
        """
        return {}
