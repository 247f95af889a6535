"""``make_optimizer``: every optimizer of the project under one name."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .ada2ms import Ada2MS
from .adamnx import AdamNX


def _sgdm(params, **hp):
    hp.setdefault("momentum", 0.9)
    return torch.optim.SGD(params, **hp)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "sgdm": _sgdm,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamnx": AdamNX,
    "ada2ms": Ada2MS,
}


def make_optimizer(name: str, params: Iterable, **hparams) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` (case-insensitive) over ``params``.

    ``"sgd"``, ``"adam"`` and ``"adamw"`` are torch's own; ``"sgdm"`` is torch's SGD with
    ``momentum=0.9`` unless given; ``"adamnx"`` and ``"ada2ms"`` are this library's. ``hparams``
    are passed on (``lr``, ``betas``, ``weight_decay``, ``alpha``, ...).
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer name: {name!r} (known: {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[key](params, **hparams)
