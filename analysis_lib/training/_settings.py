"""The arguments of :func:`~analysis_lib.training.train`: :class:`Settings` holds them,
:func:`checked` checks every one (a ValueError or TypeError naming it) before any work starts and
gives them their final form; ``Settings.config`` is what ``run.config`` shows. Private to the
package: the loop's helper.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import device as default_device
from .. import io
from .._checks import check_float, check_int
from ..optim import optimizer_spec
from ..problems.tasks import Task
from .callbacks import Callback

__all__ = ["Settings", "checked"]


def _describe(value: Any) -> Any:
    """A JSON-able description of a hyperparameter, stable across processes."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    if callable(value) and hasattr(value, "__dataclass_fields__"):
        return repr(value)  # e.g. ExponentialAlpha(final=0.0, tau=1000.0)
    if callable(value):
        return f"callable {getattr(value, '__qualname__', type(value).__qualname__)}"
    return repr(value)


@dataclass(frozen=True, eq=False)
class Settings:
    """:func:`train`'s arguments; :func:`checked` checks them and gives them their final form
    (``checkpoint`` a Path, ``device`` a torch.device, ``task`` on it, ``name`` and ``label``
    set)."""

    task: Task
    optimizer: str | Callable[[Iterable[Tensor]], torch.optim.Optimizer]
    steps: int
    batch_size: int | None
    lr: float | None
    lr_schedule: Callable[[int], float] | None
    callbacks: Sequence[Callback]
    seed: int
    device: str | torch.device | None
    label: str | None
    divergence_factor: float
    checkpoint: str | os.PathLike | None
    checkpoint_every: int | None
    record_every: int
    progress: bool
    hparams: dict[str, Any]
    name: str = ""  # the optimizer's name (the default label)

    @property
    def config(self) -> dict[str, Any]:
        """``run.config``: the settings as JSON-able values.

        Returns:
            A dict with the task, optimizer, lr, hyperparameters, batch size, seed, schedule,
            divergence factor and ``record_every``.
        """
        return {
            "task": self.task.name,
            "task_info": _describe(list(self.task.info.items())),
            "optimizer": self.name,
            "lr": self.lr,
            "hparams": _describe(sorted(self.hparams.items())),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "lr_schedule": _describe(self.lr_schedule),
            "divergence_factor": self.divergence_factor,
            "record_every": self.record_every,
        }


def checked(s: Settings) -> Settings:
    """``s`` with every argument checked (a ValueError or TypeError naming it) before any work
    starts, in its final form.

    Args:
        s: the :class:`Settings` as :func:`~analysis_lib.training.train` received them.

    Returns:
        A new :class:`Settings`: the task moved to the device, the optimizer's name, the label,
        the checkpoint path and the callbacks filled in.

    Raises:
        TypeError: ``task`` not a Task.
        ValueError: an argument out of range (e.g. ``batch_size`` larger than the training
            set), a non-callable ``lr_schedule``, or bad checkpoint settings or callbacks.
    """
    if not isinstance(s.task, Task):
        raise TypeError(f"task must be an analysis_lib Task, got {type(s.task).__name__}")
    steps = check_int("steps", s.steps, 1)
    batch_size = s.batch_size
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
        if batch_size > s.task.n_train:
            raise ValueError(
                f"Invalid batch_size: {batch_size} is larger than the training "
                f"set ({s.task.n_train} samples)"
            )
    lr = s.lr
    if lr is not None:
        check_float("lr", lr, 0.0)
    if s.lr_schedule is not None and not callable(s.lr_schedule):
        raise ValueError(
            f"Invalid lr_schedule: {s.lr_schedule!r} (expected a callable step -> multiplier)"
        )
    seed = check_int("seed", s.seed, 0)
    factor = s.divergence_factor
    check_float("divergence_factor", factor, 1.0, low_open=True, allow_inf=True)
    record_every = check_int("record_every", s.record_every, 1)
    path, checkpoint_every = _check_checkpoint(s.checkpoint, s.checkpoint_every)
    callbacks = _check_callbacks(s.callbacks)
    name = _optimizer_name(s.optimizer, lr, s.hparams)
    device = default_device() if s.device is None else torch.device(s.device)
    return replace(
        s,
        task=s.task.to(device),
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        record_every=record_every,
        checkpoint=path,
        checkpoint_every=checkpoint_every,
        callbacks=callbacks,
        name=name,
        label=s.label or name,
        device=device,
        hparams=dict(s.hparams),
    )


def _check_checkpoint(checkpoint, checkpoint_every) -> tuple[Path | None, int | None]:
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
        if checkpoint is None:
            raise ValueError("checkpoint_every was given without a checkpoint path")
    if checkpoint is None:
        return None, checkpoint_every
    if not isinstance(checkpoint, str | os.PathLike):
        raise ValueError(f"Invalid checkpoint: {checkpoint!r} (expected a file path)")
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        raise ValueError(f"Invalid checkpoint: {path} is a folder (expected a file path)")
    io.check_writable(path.parent, f"checkpoint {path}")
    return path, checkpoint_every


def _check_callbacks(callbacks: Iterable[Callback]) -> tuple[Callback, ...]:
    callbacks = tuple(callbacks)
    for i, cb in enumerate(callbacks):
        every = getattr(cb, "every", None)
        if not callable(cb) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"Invalid callbacks[{i}]: {cb!r} (expected a callable with an "
                "integer attribute every >= 1)"
            )
    return callbacks


def _optimizer_name(optimizer, lr, hparams) -> str:
    if isinstance(optimizer, str):
        return optimizer_spec(optimizer).name  # case-insensitive, as make_optimizer
    if callable(optimizer):
        if lr is not None or hparams:
            raise ValueError(
                "lr and hyperparameters go into the optimizer factory itself; "
                "train() passes them on only for an optimizer given by name"
            )
        return getattr(optimizer, "__name__", type(optimizer).__name__)
    raise ValueError(f"Invalid optimizer: {optimizer!r} (expected a name or a factory)")
