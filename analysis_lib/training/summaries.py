"""Summaries of training: :func:`tail_statistic` (a statistic of a column over the last part of a
run), :func:`run_summary` (one row that describes a finished run, for a table of runs), and
:func:`record_gradients` with its result :class:`GradientHistory` (a short run that keeps every
gradient, for :func:`analysis_lib.optim.replay`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._checks import check_float, check_int
from .loop import Run

__all__ = ["GradientHistory", "record_gradients", "run_summary", "tail_statistic"]


def tail_statistic(run: Run, column: str, *, last: float = 0.1, statistic: str = "mean") -> float:
    """The ``statistic`` (``"mean"`` or ``"median"``) of ``column`` over the last ``last``
    fraction of ``run``: the rows of ``run.history`` (if it has the column, else of
    ``run.measurements``) whose step ``t`` satisfies ``t > (1 - last) * run.steps``. NaN values
    are skipped; NaN when no value is left.

    Args:
        run: the finished :class:`~analysis_lib.training.loop.Run`.
        column: a column of ``run.history`` or ``run.measurements``.
        last: the fraction of the steps at the end, in (0, 1].
        statistic: ``"mean"`` or ``"median"``.

    Returns:
        The statistic as a float.

    Raises:
        TypeError: ``run`` not a Run.
        ValueError: ``last`` outside (0, 1], an unknown ``statistic``, or ``column`` in neither
            frame.
    """
    if not isinstance(run, Run):
        raise TypeError(f"run must be an analysis_lib Run, got {type(run).__name__}")
    last = check_float("last", last, 0.0, 1.0, low_open=True)
    if statistic not in ("mean", "median"):
        raise ValueError(f"Invalid statistic: {statistic!r} (expected 'mean' or 'median')")
    frame = run.history if column in run.history.columns else run.measurements
    if column not in frame.columns:
        raise ValueError(
            f"Invalid column: {column!r} (neither run.history nor run.measurements has it)"
        )
    values = frame.loc[frame["step"] > (1 - last) * run.steps, column]
    return float(getattr(values, statistic)())  # pandas: NaN skipped, NaN when none is left


def run_summary(
    run: Run,
    late: Mapping[str, str] | None = None,
    *,
    last: float = 0.1,
    splits: Sequence[str] = ("val",),
) -> dict[str, float]:
    """One row that describes a finished run, for a table with one row per run:

    * ``train_loss_late``: the mean minibatch loss over the last ``last`` of the steps
      (:func:`tail_statistic` of ``history["loss"]``);
    * for each split of ``splits``: ``{split}_loss`` and, for a classification task,
      ``{split}_accuracy`` of the final model over the whole split (eval mode; NaN for a
      diverged run);
    * for each ``name: column`` of ``late``: the median of ``measurements[column]`` over the
      last ``last`` of the steps (a median: callbacks' measures are noisy and heavy-tailed);
    * ``seconds``: the wall-clock time of the training loop.

    Args:
        run: the finished :class:`~analysis_lib.training.loop.Run`.
        late: output name -> a column of ``run.measurements`` (or ``run.history``); None: none.
        last: the fraction of the steps at the end, in (0, 1].
        splits: the splits to evaluate the final model on (default: the validation split).

    Returns:
        A dict of name -> float, in the order above.

    Raises:
        TypeError: ``run`` not a Run.
        ValueError: ``splits`` a string or not a sequence, ``last`` out of range, or a column
            of ``late`` in neither frame.
    """
    if isinstance(splits, str) or not isinstance(splits, Iterable):
        raise ValueError(f"Invalid splits: {splits!r} (expected a sequence of split names)")
    late = dict(late or {})
    row = {"train_loss_late": tail_statistic(run, "loss", last=last)}
    for split in splits:
        result = {} if run.diverged else run.evaluate(split)
        row[f"{split}_loss"] = result.get("loss", math.nan)
        if run.task.has_accuracy:
            row[f"{split}_accuracy"] = result.get("accuracy", math.nan)
    for name, column in late.items():
        row[name] = tail_statistic(run, column, last=last, statistic="median")
    row["seconds"] = run.seconds
    return row


@dataclass(eq=False)
class GradientHistory:
    """What :func:`record_gradients` returns: ``gradients``, one list per step with a copy of
    every parameter's gradient (the order of ``model.parameters()``), and ``losses``, the
    minibatch loss of each step before its update."""

    gradients: list[list[Tensor]] = field(repr=False)
    losses: list[float]


def record_gradients(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    steps: int,
    *,
    batch_size: int,
    seed: int = 0,
) -> GradientHistory:
    """Train ``model`` with ``optimizer`` for ``steps`` minibatch steps and keep every gradient:
    the history that :func:`analysis_lib.optim.replay` feeds to other update rules.

    Step t draws ``batch_size`` indices uniformly with replacement
    (``torch.randint(len(targets), (batch_size,), generator=g)``, ``g`` a CPU generator seeded
    with ``seed``), computes ``loss_fn(model(inputs[idx]), targets[idx])``, records the gradients
    and the loss, then steps. ``model`` and ``optimizer`` are trained in place.

    Args:
        model: the module trained.
        optimizer: an optimizer over ``model``'s parameters.
        loss_fn: ``loss_fn(outputs, targets)`` -> a scalar loss.
        inputs: the training inputs, indexed along the first axis.
        targets: the training targets, as many as ``inputs``.
        steps: the number of steps (>= 1).
        batch_size: the minibatch size (>= 1).
        seed: the seed of the minibatch draws (>= 0).

    Returns:
        A :class:`GradientHistory` of ``steps`` gradient lists and losses.

    Raises:
        TypeError: ``model`` not a Module or ``optimizer`` not an Optimizer.
        ValueError: ``steps``, ``batch_size`` or ``seed`` out of range, or ``inputs`` and
            ``targets`` of different lengths or empty.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    steps, batch_size = check_int("steps", steps, 1), check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    if len(inputs) != len(targets) or len(targets) == 0:
        raise ValueError(
            f"Invalid inputs/targets: {len(inputs)} inputs and {len(targets)} targets "
            "(expected as many of each, at least one)"
        )
    params = list(model.parameters())
    draws = torch.Generator(device="cpu").manual_seed(seed)
    history = GradientHistory([], [])
    for _ in range(steps):
        idx = torch.randint(len(targets), (batch_size,), generator=draws).to(inputs.device)
        optimizer.zero_grad()
        loss = loss_fn(model(inputs[idx]), targets[idx])
        loss.backward()
        history.gradients.append([p.grad.detach().clone() for p in params])
        history.losses.append(loss.item())
        optimizer.step()
    return history
