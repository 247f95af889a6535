"""What an Adam-family optimizer does to the step, read from its state."""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import AdamFamily


@torch.no_grad()
def effective_step_sizes(optimizer: torch.optim.Optimizer) -> dict[Tensor, Tensor]:
    """Per-coordinate effective step sizes eta / (sqrt(d) + eps) of the last step, keyed by
    parameter (only parameters that have optimizer state).

    ``d`` is the optimizer's second-moment estimate as it enters the update: ``v`` for AdamNX,
    ``v_hat^alpha * s^(1-alpha)`` for Ada2MS, the bias-corrected ``v_hat`` for torch's Adam and
    AdamW (``max_exp_avg_sq`` with ``amsgrad``). The update is then -step_size * momentum.
    """
    if isinstance(optimizer, AdamFamily):
        return optimizer.effective_step_sizes()
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        out = {}
        for group in optimizer.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                state = optimizer.state.get(p)
                if not state:
                    continue
                v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
                bc2 = 1.0 - beta2 ** float(state["step"])
                out[p] = group["lr"] / ((v / bc2).sqrt() + group["eps"])
        return out
    raise TypeError(
        f"effective_step_sizes needs an Adam-family optimizer (AdamNX, Ada2MS, Adam, AdamW), "
        f"got {type(optimizer).__name__}"
    )
