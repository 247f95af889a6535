"""Feed a recorded gradient history through an optimizer: the same gradients, other update rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from .registry import optimizer_spec

__all__ = ["replay"]


def _check_history(history: Iterable, params: list[Tensor]) -> list[Sequence[Tensor]]:
    if isinstance(history, Tensor | str) or not isinstance(history, Iterable):
        raise TypeError(
            f"Invalid history: {type(history).__name__} (expected a sequence of steps, each a "
            "sequence of gradients, one per parameter)"
        )
    steps = list(history)
    for t, grads in enumerate(steps):
        if not isinstance(grads, Sequence) or len(grads) != len(params):
            got = len(grads) if isinstance(grads, Sequence) else type(grads).__name__
            raise ValueError(
                f"Invalid history[{t}]: {got} (expected {len(params)} gradients, one per parameter)"
            )
        for i, (g, p) in enumerate(zip(grads, params, strict=True)):
            if not isinstance(g, Tensor) or g.shape != p.shape or g.dtype != p.dtype:
                got = (g.shape, g.dtype) if isinstance(g, Tensor) else type(g).__name__
                raise ValueError(
                    f"Invalid history[{t}][{i}]: {got} (expected a tensor of the parameter's "
                    f"shape {tuple(p.shape)} and dtype {p.dtype})"
                )
    return steps


def replay(
    optimizer: str | Callable[[list[Tensor]], torch.optim.Optimizer],
    params: Iterable[Tensor],
    history: Iterable[Sequence[Tensor]],
    **hparams,
) -> torch.optim.Optimizer:
    """Run an optimizer on copies of ``params`` with the recorded gradients ``history`` instead
    of fresh ones: at step t = 1, 2, ... each copy's gradient is ``history[t - 1][i]``, then the
    optimizer steps. The same gradients through different update rules isolate what the rules
    do (e.g. Ada2MS's effective step sizes at several alpha on one AdamW gradient history).

    Args:
        optimizer: a registry name (any case; built with ``hparams``, see
            :func:`~analysis_lib.optim.make_optimizer`), or a callable ``params -> optimizer``.
        params: the starting values (tensors, e.g. ``model.parameters()``); they are copied,
            never changed.
        history: a sequence of steps, each a sequence of gradients with one tensor per parameter,
            of its shape and dtype (e.g. ``[p.grad.detach().clone() for p in params]`` recorded
            at each step of a run). Copied to the parameters' device; never changed.
        **hparams: the optimizer's hyperparameters (with a name only).

    Returns:
        The optimizer after the last step; its parameters (``param_groups[0]["params"]``) are
        the replayed copies, and its state is what the diagnostics read
        (:func:`~analysis_lib.optim.effective_step_sizes`, ...).

    Raises:
        ValueError: an unknown name, hyperparameters with a callable, or a step of ``history``
            with the wrong number, shapes or dtypes of gradients (all checked before any step).
        TypeError: ``history`` is not a sequence of steps.
    """
    if not isinstance(optimizer, str) and not callable(optimizer):
        raise TypeError(
            f"Invalid optimizer: {optimizer!r} (expected a name or a callable params -> optimizer)"
        )
    if not isinstance(optimizer, str) and hparams:
        raise ValueError(
            f"Invalid hparams: {sorted(hparams)} (they go into the optimizer callable itself)"
        )
    build = optimizer_spec(optimizer).build if isinstance(optimizer, str) else optimizer
    copies = [p.detach().clone().requires_grad_(True) for p in params]
    if not copies:
        raise ValueError("Invalid params: empty (expected at least one tensor)")
    steps = _check_history(history, copies)
    opt = build(copies, **hparams)
    for grads in steps:
        for p, g in zip(copies, grads, strict=True):
            p.grad = g.detach().to(p.device, copy=True)
        opt.step()
    return opt
