"""What an Adam-family optimizer does to the step, read from its state."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .registry import OptimizerFacts, spec_of


def _facts(optimizer: torch.optim.Optimizer, what: str, adaptive: bool) -> OptimizerFacts:
    """The registry's view of ``optimizer`` for diagnostics; a TypeError when the registry does
    not know it, or (``adaptive``) it has no diagonal preconditioner."""
    spec = spec_of(optimizer)
    if spec is None or (adaptive and not spec.adaptive):
        needs = (
            "an Adam-family optimizer (AdamNX, Ada2MS, Adam, AdamW)"
            if adaptive
            else "AdamNX, Ada2MS, Adam, AdamW or SGD"
        )
        raise TypeError(f"{what} needs {needs}, got {type(optimizer).__name__}")
    return spec.facts(optimizer)


@torch.no_grad()
def effective_step_sizes(optimizer: torch.optim.Optimizer) -> dict[Tensor, Tensor]:
    """Per-coordinate effective step sizes eta / (sqrt(d) + eps) of the last step, keyed by
    parameter (only parameters that have optimizer state).

    ``d`` is the optimizer's second-moment estimate as it enters the update: ``v`` for AdamNX,
    ``v_hat^alpha * s^(1-alpha)`` for Ada2MS, the bias-corrected ``v_hat`` for torch's Adam and
    AdamW (``max_exp_avg_sq`` with ``amsgrad``). The update is then -step_size * momentum.

    Args:
        optimizer: an Adam-family optimizer (AdamNX, Ada2MS, torch's Adam or AdamW).

    Returns:
        parameter -> a tensor of its shape holding the step sizes (empty before the first step).

    Raises:
        TypeError: ``optimizer`` not of the Adam family.
    """
    return _facts(optimizer, "effective_step_sizes", adaptive=True).effective_step_sizes()


@torch.no_grad()
def momentum_directions(optimizer: torch.optim.Optimizer) -> dict[Tensor, Tensor]:
    """The bias-corrected momentum m_hat of each parameter with state: the direction momentum
    SGD would move in (as -m_hat).

    AdamNX's m_t is already bias-corrected (its decay folds the correction in); AdamW, Adam and
    Ada2MS keep the raw EMA, divided here by 1 - beta1^t; torch's SGD keeps an uncorrected
    momentum buffer that starts at the first gradient (the gradient itself without momentum).

    Args:
        optimizer: AdamNX, Ada2MS, or torch's Adam, AdamW or SGD.

    Returns:
        parameter -> a tensor of its shape holding m_hat (empty before the first step).

    Raises:
        TypeError: an optimizer the registry does not know.
    """
    return _facts(optimizer, "momentum_directions", adaptive=False).momentum_directions()


@torch.no_grad()
def transition_measures(
    optimizer: torch.optim.Optimizer, previous: Tensor | None = None
) -> tuple[dict[str, float], Tensor]:
    """How much like momentum SGD the last step of ``optimizer`` was.

    Returns ``(measures, preconditioner)``; pass ``preconditioner`` back as ``previous`` at the
    next measurement to get the drift. With s the per-coordinate effective step sizes
    lr / (sqrt(d) + eps) (:func:`effective_step_sizes`; lr for SGD) and m_hat the bias-corrected
    momentum (:func:`momentum_directions`), over all parameters with state:

    - ``step_size_median``, ``step_size_q25``, ``step_size_q75``: quantiles of s;
      ``step_size_log10_iqr`` = log10(q75 / q25), the spread on a log scale (0 for SGD);
      ``step_size_cv``: the coefficient of variation std(s) / mean(s).
    - ``cosine_to_momentum``: cos(s * m_hat, m_hat), the cosine between the update the
      optimizer makes from its momentum and momentum SGD's direction. Decoupled weight decay is
      left out of both: it is the same shrinkage for every method. 1 means parallel.
    - ``preconditioner_drift``: ||P - P_prev|| / ||P_prev|| with P = s / lr = 1 / (sqrt(d) + eps)
      (so a learning-rate schedule is not counted as drift); NaN without ``previous``.
      0 means a fixed diagonal preconditioner: momentum SGD in a fixed metric.
    - ``beta2_hat`` (AdamNX) and ``alpha`` (Ada2MS): the decay and interpolation of the last
      step, for the first param group.

    Args:
        optimizer: AdamNX, Ada2MS, or torch's Adam, AdamW or SGD, after at least one step.
        previous: the preconditioner returned by the previous call (a flat float64 tensor), or
            None.

    Returns:
        ``(measures, preconditioner)``: the dict of floats above and P, a flat float64 tensor
        over all coordinates with state.

    Raises:
        TypeError: an optimizer the registry does not know.
        ValueError: the optimizer has not stepped yet, or ``previous`` has another number of
            entries than the coordinates with state.
    """
    facts = _facts(optimizer, "transition_measures", adaptive=False)
    directions = facts.momentum_directions()
    sizes = facts.effective_step_sizes()
    if not sizes:
        raise ValueError("the optimizer has not taken a step yet: there is nothing to measure")
    lrs = {p: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = list(sizes)
    s = torch.cat([sizes[p].detach().flatten().double() for p in params])
    m = torch.cat([directions[p].detach().flatten().double() for p in params])
    precond = torch.cat(
        [
            (sizes[p].flatten().double() / lrs[p]) if lrs[p] > 0 else sizes[p].flatten().double()
            for p in params
        ]
    )
    q25, median, q75 = np.percentile(s.cpu().numpy(), [25, 50, 75])
    su = s * m
    norm = (su.norm() * m.norm()).item()
    measures = {
        "step_size_median": float(median),
        "step_size_q25": float(q25),
        "step_size_q75": float(q75),
        "step_size_log10_iqr": float(np.log10(q75 / q25)) if q25 > 0 else float("nan"),
        "step_size_cv": (s.std(correction=0) / s.mean()).item() if s.numel() > 1 else 0.0,
        "cosine_to_momentum": (su @ m).item() / norm if norm > 0 else float("nan"),
        "preconditioner_drift": float("nan"),
    }
    if previous is not None:
        if previous.shape != precond.shape:
            raise ValueError(
                f"previous has {previous.numel()} entries but the optimizer "
                f"now has {precond.numel()} coordinates with state"
            )
        measures["preconditioner_drift"] = (
            (precond - previous.to(precond.device)).norm() / previous.norm()
        ).item()
    measures.update(facts.step_measures())
    return measures, precond
