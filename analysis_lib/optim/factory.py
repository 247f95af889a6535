"""``make_optimizer``: every optimizer of the project under one name (see :mod:`.registry`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .registry import OPTIMIZERS, optimizer_spec

__all__ = ["OPTIMIZERS", "make_optimizer"]


def make_optimizer(name: str, params: Iterable, **hparams) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` (case-insensitive) over ``params``.

    ``"sgd"``, ``"adam"`` and ``"adamw"`` are torch's own; ``"sgdm"`` is torch's SGD with
    ``momentum=0.9`` unless given; ``"adamnx"`` and ``"ada2ms"`` are this library's. ``hparams``
    are passed on (``lr``, ``betas``, ``weight_decay``, ``alpha``, ...).

    Args:
        name: the optimizer's registered name (any case).
        params: parameters or param groups, as for any torch optimizer.
        **hparams: the optimizer's keyword arguments.

    Returns:
        The new optimizer.

    Raises:
        ValueError: an unknown name (:func:`~analysis_lib.optim.optimizer_spec`), or a
            hyperparameter the optimizer refuses.
    """
    return optimizer_spec(name).build(params, **hparams)
