"""Learning rates: :class:`cosine_schedule` (warm-up, then cosine decay: a multiplier for
``train(..., lr_schedule=...)``), and :func:`lr_sweep` (train at every rate of a grid, from every
seed) with its result :class:`LrSweep`. The rate is chosen by :func:`analysis_lib.stats.choose_lr`,
the one selection rule that sweeps, training and notebooks share (re-exported here and by
:mod:`analysis_lib.training`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .._checks import check_grid, check_int
from ..problems.tasks import Task
from ..stats import choose_lr
from .loop import Run, train

__all__ = ["LrSweep", "choose_lr", "cosine_schedule", "lr_sweep"]


# -- learning-rate schedules ----------------------------------------------------------------------
@dataclass(frozen=True)
class cosine_schedule:  # lower case: used like a function
    """Learning-rate multiplier for step t = 1..steps: linear warm-up over ``warmup`` steps,
    then a cosine decay from 1 to ``final``. Pass it as ``train(..., lr_schedule=...)``.

    Args:
        steps: the number of steps of the schedule (>= 1); later steps stay at ``final``.
        warmup: the number of warm-up steps, an integer in [0, ``steps``).
        final: the multiplier reached at ``steps``, in [0, 1].

    Raises:
        ValueError: ``steps`` < 1, ``warmup`` outside [0, ``steps``) or ``final`` outside
            [0, 1], naming the argument.

    Example:
        >>> s = cosine_schedule(10, warmup=2, final=0.1)
        >>> [round(s(t), 4) for t in (1, 2, 6, 10)]
        [0.5, 1.0, 0.55, 0.1]
    """

    steps: int
    warmup: int = 0
    final: float = 0.0

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 1)
        if not isinstance(self.warmup, int) or not 0 <= self.warmup < self.steps:
            raise ValueError(f"Invalid warmup: {self.warmup!r} (expected 0 <= warmup < steps)")
        if not 0.0 <= self.final <= 1.0:
            raise ValueError(f"Invalid final: {self.final!r} (expected a number in [0, 1])")

    def __call__(self, step: int) -> float:
        if step <= self.warmup:
            return step / self.warmup
        progress = min((step - self.warmup) / max(self.steps - self.warmup, 1), 1.0)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))


# Its qualified name is part of a run's identity (a checkpoint's ``lr_schedule``, through
# :func:`analysis_lib.io.describe`): it keeps the name of its public home, which it had before
# ``training`` became a package, so that the checkpoints written then still resume.
cosine_schedule.__module__ = "analysis_lib.training"


# -- sweeps over learning rates -------------------------------------------------------------------
@dataclass(eq=False)
class LrSweep:
    """What :func:`lr_sweep` returns: ``frame``, one row per (lr, seed) with ``lr``, ``seed``,
    ``diverged``, ``steps`` (taken), ``train_loss`` and ``val_loss`` (mean over the whole
    split at the end, eval mode; NaN for a diverged run) and, for a task with accuracy,
    ``train_accuracy`` and ``val_accuracy``; ``lr``, the rate :func:`choose_lr` picks from it
    (NaN when every rate diverged); ``runs``, seed -> :class:`Run` at that rate."""

    frame: pd.DataFrame
    lr: float
    runs: dict[int, Run] = field(repr=False)


def _check_sweep(lrs, seeds, optimizer, train_kwargs) -> tuple[list[float], list[int]]:
    if not isinstance(optimizer, str):
        raise ValueError(f"Invalid optimizer: {optimizer!r} (lr_sweep needs an optimizer name)")
    taken = sorted({"lr", "seed"} & set(train_kwargs))
    if taken:
        raise ValueError(f"Invalid train_kwargs: {taken} are set by lr_sweep (use lrs, seeds)")
    lrs = check_grid("lrs", lrs, 0.0, low_open=True).tolist()
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Iterable):
        raise ValueError(f"Invalid seeds: {seeds!r} (expected a sequence of integers >= 0)")
    seeds = [check_int("seeds", seed, 0) for seed in seeds]
    for name, values in (("lrs", lrs), ("seeds", seeds)):
        if not values or len(set(values)) != len(values):
            raise ValueError(f"Invalid {name}: {values!r} (expected distinct values, at least one)")
    return sorted(lrs), seeds


def _final_row(run: Run, lr: float, seed: int) -> dict[str, Any]:
    row = {"lr": lr, "seed": seed, "diverged": run.diverged, "steps": run.steps}
    for split in ("train", "val"):
        result = {} if run.diverged else run.evaluate(split)
        row[f"{split}_loss"] = result.get("loss", math.nan)
        if run.task.has_accuracy:
            row[f"{split}_accuracy"] = result.get("accuracy", math.nan)
    return row


def lr_sweep(
    task: Task,
    optimizer: str,
    lrs: Sequence[float],
    steps: int,
    *,
    seeds: Sequence[int] = (0,),
    **train_kwargs: Any,
) -> LrSweep:
    """Train ``optimizer`` on ``task`` at every learning rate of ``lrs`` from every seed of
    ``seeds`` (``train(task, optimizer, steps, lr=lr, seed=seed, **train_kwargs)``), measure
    each run's final loss (and accuracy) over the training and validation splits, and choose
    the rate on the validation split with :func:`choose_lr` (lowest mean validation loss over
    the seeds; a rate where any seed diverged counts as the worst; ties to the smaller rate).
    ``lrs`` must be distinct numbers > 0, ``seeds`` distinct integers >= 0.

    Args:
        task: the :class:`~analysis_lib.problems.tasks.Task` to train on.
        optimizer: the optimizer's registered name.
        lrs: the learning rates to try (distinct, > 0; run in increasing order).
        steps: the number of training steps of each run.
        seeds: the seeds to run at each rate (distinct integers >= 0).
        **train_kwargs: further arguments of :func:`train` (not ``lr`` or ``seed``).

    Returns:
        An :class:`LrSweep`: the per-(lr, seed) frame, the chosen rate and its runs.

    Raises:
        TypeError: ``task`` not a Task.
        ValueError: ``optimizer`` not a name, ``lr`` or ``seed`` in ``train_kwargs``, ``lrs`` or
            ``seeds`` empty, repeated or out of range; or any refusal of :func:`train`.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be an analysis_lib Task, got {type(task).__name__}")
    lrs, seeds = _check_sweep(lrs, seeds, optimizer, train_kwargs)
    rows, runs = [], {}
    for lr in lrs:
        for seed in seeds:
            run = train(task, optimizer, steps, lr=lr, seed=seed, **train_kwargs)
            rows.append(_final_row(run, lr, seed))
            runs[lr, seed] = run
    frame = pd.DataFrame(rows)
    chosen = choose_lr(frame)
    return LrSweep(frame, chosen, {seed: run for (lr, seed), run in runs.items() if lr == chosen})
