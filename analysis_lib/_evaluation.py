"""The evaluation core that the probes, the tasks and the landscapes share.

It sits below every other module of the library and imports none of them.

* :func:`eval_mode`: evaluate a model in eval mode (dropout off, batch norm with its running
  statistics) and give every submodule back its own train/eval flag afterwards, also when the
  block raises. ``model.train(flag)`` would not do: it sets one flag on every submodule, so a
  submodule that was deliberately left in the other mode (a frozen batch-norm layer in a
  training model, a dropout layer kept active in an evaluated one) would be changed.
* :func:`generator`: the ``torch.Generator`` of a ``seed`` argument (an integer >= 0, Python's or
  NumPy's, or a generator used as it is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["eval_mode", "generator"]


def generator(seed: int | torch.Generator, name: str = "seed") -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``, or ``seed`` itself when it is one."""
    if isinstance(seed, torch.Generator):
        return seed
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(
            f"Invalid {name}: {seed!r} (expected an integer >= 0 or a torch.Generator)"
        )
    return torch.Generator().manual_seed(int(seed))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` and all its submodules in eval mode for the block; on exit (normal or by
    an exception) restore each module's own ``training`` flag as it was on entry."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"Invalid model: {type(model).__name__} (expected a torch.nn.Module)")
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
