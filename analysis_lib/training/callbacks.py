"""Callbacks of the training loop: :class:`Callback` (the base class), :class:`StopTraining`
(how a callback ends a run cleanly), and the library's callbacks: :class:`TargetLoss`,
:class:`TransitionCallback`, :class:`EvaluateCallback`.

A callback is any object with an integer attribute ``every`` and a method
``__call__(step, model, optimizer, batch) -> dict[str, float]``. It is called after the
optimizer's step ``step`` (counting from 1) whenever ``step % every == 0``, with the
(inputs, targets) batch of that step; the numbers it returns go into ``run.measurements``.
Callbacks that keep state between calls (e.g. the last preconditioner, for the drift) expose
``state_dict()`` / ``load_state_dict()`` so that a resumed run measures the same numbers.
A callback that returns anything but a dict of numbers (Python or NumPy numbers, one-element
tensors) stops the run with a ValueError that names it, before anything of that step is recorded.

A callback may also end the run cleanly by raising :class:`StopTraining` (with a reason and,
optionally, the numbers it measured): the run ends at that step, which is recorded in full
(history row, measurements of every callback due at it, a checkpoint), with
``run.stopped_at`` and ``run.reason`` set. :class:`TargetLoss` does this when the loss over a
whole split reaches a target (e.g. to compare optimizers at matched training loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_float, check_int
from .._evaluation import eval_mode
from ..optim import transition_measures
from ..problems.tasks import Task

__all__ = ["Callback", "EvaluateCallback", "StopTraining", "TargetLoss", "TransitionCallback"]


class Callback:
    """Base class for callbacks (subclassing it is optional: any object with ``every`` and
    ``__call__`` will do). ``name`` labels the callback's cost in ``run.callback_seconds``."""

    every: int = 1

    def __init__(self, every: int = 1) -> None:
        self.every = check_int("every", every, 1)

    @property
    def name(self) -> str:
        """The callback's name: the key of its time in ``run.callback_seconds``.

        Returns:
            The class name.
        """
        return type(self).__name__

    def __call__(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch: tuple[Tensor, Tensor],
    ) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint saves of the callback (nothing by default).

        Returns:
            A dict of tensors and plain data.
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (nothing by default).

        Args:
            state: a dict from :meth:`state_dict`.

        Returns:
            None.
        """
        pass


class StopTraining(Exception):
    """Raised by a callback to end the run cleanly after the current step.

    ``reason`` becomes ``run.reason``; ``values`` (names -> numbers) are recorded in
    ``run.measurements`` at that step, like a callback's returned dict. A callback that declares
    ``stops = True`` gets the step's history row recorded in full (update norm included) even
    when ``record_every`` would skip it; for any other, the row of a stop at an unrecorded step
    has ``update_norm`` NaN.
    """

    def __init__(self, reason: str, values: Mapping[str, float] | None = None) -> None:
        super().__init__(reason)
        self.reason = str(reason)
        self.values = dict(values or {})


class TargetLoss(Callback):
    """Stop the run at the first checked step where the mean loss over the whole ``split``
    of ``task`` is at most ``target``:

        L_split(θ_t) = (1/n) Σ_i loss(f(x_i; θ_t), y_i) <= target,   t = every, 2 every, ...

    evaluated in eval mode (every submodule's own mode restored afterwards), without gradients,
    in batches of ``batch_size`` (None: one batch) weighted by their size. The value at every
    check is recorded in ``run.measurements`` as ``target_<split>_loss``. Costs one forward pass
    over the split every ``every`` steps.
    """

    stops = True

    def __init__(
        self,
        task: Task,
        target: float,
        every: int = 10,
        split: str = "train",
        batch_size: int | None = 4096,
    ) -> None:
        super().__init__(every)
        if not isinstance(task, Task):
            raise TypeError(
                f"Invalid task: expected an analysis_lib Task, got {type(task).__name__}"
            )
        self.target = check_float("target", target)
        if not isinstance(split, str):
            raise ValueError(f"Invalid split: {split!r} (expected 'train', 'val' or 'test')")
        task.split(split)  # validates the name
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size, 1)
        self.task, self.split, self.batch_size = task, split, batch_size
        self.column = f"target_{split}_loss"

    def loss(self, model: nn.Module) -> float:
        """The mean loss of ``model`` over the split, in eval mode.

        Args:
            model: the model measured (the task's data is moved to its device).

        Returns:
            The loss as a float.
        """
        device = next(model.parameters()).device
        if self.task.device != device:  # moved once, not at every call
            self.task = self.task.to(device)
        total, n = 0.0, 0
        with eval_mode(model), torch.no_grad():
            for x, y in self.task.data(self.split, self.batch_size):
                total += float(self.task.loss_fn(model(x), y)) * len(x)
                n += len(x)
        return total / n

    def __call__(self, step, model, optimizer, batch) -> dict[str, float]:
        value = self.loss(model)
        if value <= self.target:
            raise StopTraining(
                f"{self.split} loss {value:.4g} <= target {self.target:g} at step {step}",
                {self.column: value},
            )
        return {self.column: value}


class AnnealAtTarget(TargetLoss):
    """Follow a base schedule until the loss over the whole ``split`` reaches ``target``, then
    anneal the rate linearly and stop: a run that ends at a matched loss *and* at the end of its
    learning-rate schedule, so that runs of different optimizers compared at that loss are not
    caught at different phases of their schedules.

    Use one object as both the callback and the schedule
    (``train(..., lr_schedule=cb.schedule, callbacks=[cb])``). Its factor on the initial rate,
    before step t, with b(t) the base ``schedule`` (None: 1 at every step):

        before the target:          b(t)
        after it was reached at s:  b(s) (K - (t - s) + 1) / K,   t = s+1 .. s+K

    where K = ``anneal_steps``, cut to ``steps - s`` when the budget ``steps`` ends first, so
    the last step (s + K, where the run stops) takes ``b(s) / K`` of the initial rate. The check
    runs every ``every`` steps (``anneal_steps`` and ``steps`` are multiples of it, so the stop
    falls on a check). ``annealed`` says whether the anneal ran to its end; a run that never
    reaches the target follows the base schedule to the end of its budget. Records
    ``target_<split>_loss`` at every check before the target, and ``anneal_started`` (the step s)
    at the stop.

    The schedule has state (the step s): a checkpointed run resumed with a fresh object would
    not know s, so do not combine it with ``checkpoint=``.

    Args:
        task: the task whose split is measured.
        target: the loss that starts the anneal.
        anneal_steps: the length of the linear anneal (>= 1, a multiple of ``every``).
        every: steps between checks.
        schedule: the base schedule, a callable ``t -> factor`` (None: constant 1).
        steps: the run's budget, which the anneal is cut to (None: no cut; else a multiple of
            ``every``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: the evaluation's batch size (None: one batch).

    Raises:
        ValueError: an argument out of range, naming it.
    """

    def __init__(
        self,
        task: Task,
        target: float,
        anneal_steps: int,
        every: int = 10,
        schedule=None,
        steps: int | None = None,
        split: str = "train",
        batch_size: int | None = 4096,
    ) -> None:
        super().__init__(task, target, every, split, batch_size)
        self.anneal_steps = check_int("anneal_steps", anneal_steps, 1)
        if self.anneal_steps % self.every:
            raise ValueError(
                f"Invalid anneal_steps: {anneal_steps} (expected a multiple of every = {every})"
            )
        if schedule is not None and not callable(schedule):
            raise ValueError(f"Invalid schedule: {schedule!r} (expected a callable t -> factor)")
        if steps is not None:
            steps = check_int("steps", steps, 1)
            if steps % self.every:
                raise ValueError(f"Invalid steps: {steps} (expected a multiple of every = {every})")
        self.base, self.steps = schedule, steps
        self.started: int | None = None  # the step at which the target was reached
        self.length = self.anneal_steps  # the anneal's length, once cut to the budget
        self.annealed = False  # whether the anneal ran to its end (the run stopped there)
        self._start_factor = 1.0

    def _base(self, step: int) -> float:
        return 1.0 if self.base is None else float(self.base(step))

    def schedule(self, step: int) -> float:
        """The factor on the initial learning rate before ``step`` (see the class).

        Args:
            step: the step about to be taken (1-based).

        Returns:
            The factor (>= 0).
        """
        if self.started is None:
            return self._base(step)
        left = max(self.length - (step - self.started) + 1, 1)
        return self._start_factor * left / self.length

    def __call__(self, step, model, optimizer, batch) -> dict[str, float]:
        if self.started is None:
            value = self.loss(model)
            if value <= self.target:
                self.started, self._start_factor = step, self._base(step)
                if self.steps is not None:
                    self.length = min(self.anneal_steps, self.steps - step)
            return {self.column: value}  # reached at the budget's last step: no anneal left
        if step >= self.started + self.length:
            self.annealed = True
            raise StopTraining(
                f"annealed over {self.length} steps after the {self.split} loss reached "
                f"{self.target:g} at step {self.started}",
                {"anneal_started": float(self.started)},
            )
        return {}


class TransitionCallback(Callback):
    """How SGD-like an Adam-family optimizer (AdamW, Adam, AdamNX, Ada2MS; torch's SGD as the
    reference) is at the measured steps: the spread of its per-coordinate effective step sizes,
    the cosine of its update to the momentum-SGD direction, the drift of its preconditioner since
    the previous measurement, AdamNX's beta2_hat and Ada2MS's alpha, and the learning rate.
    See :func:`analysis_lib.optim.transition_measures` for the definitions.

    Its cost is one pass over the optimizer state and a sort of the step sizes (for the
    quantiles): about as much as an optimizer step, every ``every`` steps.
    """

    def __init__(self, every: int = 10) -> None:
        super().__init__(every)
        self._previous: Tensor | None = None

    def __call__(self, step, model, optimizer, batch) -> dict[str, float]:
        measures, self._previous = transition_measures(optimizer, self._previous)
        measures["lr"] = float(optimizer.param_groups[0]["lr"])
        return measures

    def state_dict(self) -> dict[str, Any]:
        """The previous preconditioner, so that a resumed run measures the same drift.

        Returns:
            ``{"previous": tensor}``, or ``{}`` before the first measurement.
        """
        return {} if self._previous is None else {"previous": self._previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Args:
            state: a dict from :meth:`state_dict`.

        Returns:
            None.
        """
        self._previous = state.get("previous")


class EvaluateCallback(Callback):
    """Loss (and accuracy) of the model on a split of ``task``, in eval mode: columns
    ``<split>_loss`` and ``<split>_accuracy``. Costs one forward pass over the split."""

    def __init__(
        self, task: Task, split: str = "val", every: int = 100, batch_size: int | None = 4096
    ) -> None:
        super().__init__(every)
        task.split(split)  # validates the name
        self.task, self.split, self.batch_size = task, split, batch_size

    def __call__(self, step, model, optimizer, batch) -> dict[str, float]:
        device = next(model.parameters()).device
        if self.task.device != device:  # moved once, not at every call
            self.task = self.task.to(device)
        result = self.task.evaluate(model, self.split, self.batch_size)
        return {f"{self.split}_{k}": v for k, v in result.items()}
