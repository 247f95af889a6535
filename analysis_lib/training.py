"""A small, plain training loop with callbacks, divergence detection and bit-identical resume.

::

    from analysis_lib import training
    from analysis_lib.problems import tasks

    task = tasks.digits()
    run = training.train(task, "adamnx", steps=2000, batch_size=64, lr=1e-3,
                         callbacks=[training.TransitionCallback(every=50),
                                    training.EvaluateCallback(task, every=200)])
    run.history        # one row per step: step, loss, accuracy, grad_norm, update_norm, lr
    run.measurements   # one row per measured step: step + whatever the callbacks returned
    run.diverged       # True when the loss blew up (the run stops; nothing is raised)

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

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import device as default_device
from . import io, progress_disabled
from ._checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    run_identity,
    save_checkpoint,
)
from ._checkpoint import Schedules as _Schedules
from ._checks import check_float, check_int
from ._evaluation import eval_mode
from .optim import make_optimizer, optimizer_spec, transition_measures
from .problems.tasks import Task

__all__ = [
    "Callback",
    "CheckpointError",
    "EvaluateCallback",
    "GradientHistory",
    "LrSweep",
    "Run",
    "StopTraining",
    "TargetLoss",
    "TransitionCallback",
    "choose_lr",
    "cosine_schedule",
    "load_checkpoint",
    "lr_sweep",
    "record_gradients",
    "run_summary",
    "runs_frame",
    "save_checkpoint",
    "tail_statistic",
    "train",
]


# -- callbacks ------------------------------------------------------------------------------------
class Callback:
    """Base class for callbacks (subclassing it is optional: any object with ``every`` and
    ``__call__`` will do). ``name`` labels the callback's cost in ``run.callback_seconds``."""

    every: int = 1

    def __init__(self, every: int = 1) -> None:
        self.every = check_int("every", every, 1)

    @property
    def name(self) -> str:
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
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
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
        """The mean loss of ``model`` over the split, in eval mode."""
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
        return {} if self._previous is None else {"previous": self._previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
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


# -- learning-rate schedules ----------------------------------------------------------------------
@dataclass(frozen=True)
class cosine_schedule:  # lower case: used like a function
    """Learning-rate multiplier for step t = 1..steps: linear warm-up over ``warmup`` steps,
    then a cosine decay from 1 to ``final``. Pass it as ``train(..., lr_schedule=...)``."""

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


# -- the result -----------------------------------------------------------------------------------
@dataclass(eq=False)
class Run:
    """The result of :func:`train`.

    ``history``: one row per step taken (every ``record_every`` steps, and one for the step at
    which divergence was detected):
    ``step``, ``loss`` and ``accuracy`` on the step's batch before the update, ``grad_norm``
    (L2 norm of the whole gradient), ``update_norm`` (L2 norm of the parameter change made by
    the step, weight decay included), ``lr`` (first param group). ``measurements``: one row per
    step at which a callback ran, with ``step`` and the callbacks' numbers. ``steps`` is the
    number of optimizer steps taken. ``stopped_at``: the step at which a callback ended the run
    by raising :class:`StopTraining` (None if none did); ``reason`` says why the run diverged
    or stopped.
    """

    label: str
    config: dict[str, Any]
    history: pd.DataFrame
    measurements: pd.DataFrame
    model: nn.Module = field(repr=False)
    optimizer: torch.optim.Optimizer = field(repr=False)
    task: Task = field(repr=False)
    diverged: bool = False
    diverged_at: int | None = None
    stopped_at: int | None = None
    reason: str | None = None
    steps: int = 0
    seconds: float = 0.0
    callback_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """The training loss of the last step's batch (NaN for a diverged run)."""
        return float("nan") if self.diverged else float(self.history["loss"].iloc[-1])

    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Loss (and accuracy) of the trained model over a split of the task."""
        return self.task.evaluate(self.model, split)


def runs_frame(runs: Iterable[Run], which: str = "history", column: str = "run") -> pd.DataFrame:
    """The ``history`` (or ``measurements``) of several runs in one tidy frame, with the runs'
    labels in ``column``: ready for ``seaborn.lineplot(..., hue=column)``."""
    if which not in ("history", "measurements"):
        raise ValueError(f"Invalid which: {which!r} (expected 'history' or 'measurements')")
    frames = [getattr(r, which).assign(**{column: r.label}) for r in runs]
    if not frames:
        raise ValueError("runs is empty")
    return pd.concat(frames, ignore_index=True)


# -- batches --------------------------------------------------------------------------------------
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


class _Batches:
    """Minibatch t (t = 1, 2, ...) of an epoch-wise reshuffled training set, a function of
    (seed, t) only, so a resumed run sees the same batches. Batches have ``batch_size`` samples
    (the last ``n mod batch_size`` samples of each permutation are left for the next epoch's
    shuffle); ``None`` is the full batch every step."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int | None, seed: int) -> None:
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.per_epoch = 1 if batch_size is None else len(x) // batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> tuple[Tensor, Tensor]:
        if self.batch_size is None:
            return self.x, self.y
        epoch, j = divmod(step - 1, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.x), generator=gen).to(self.x.device)
            self._epoch = epoch
        idx = self._perm[j * self.batch_size : (j + 1) * self.batch_size]
        return self.x[idx], self.y[idx]


# -- the settings ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Settings:
    """:func:`train`'s arguments; :func:`_checked` checks them and gives them their final form
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
        """``run.config``: the settings as JSON-able values."""
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


def _checked(s: _Settings) -> _Settings:
    """``s`` with every argument checked (a ValueError or TypeError naming it) before any work
    starts, in its final form."""
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
    if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"Invalid lr: {lr!r} (expected a finite number >= 0)")
    if s.lr_schedule is not None and not callable(s.lr_schedule):
        raise ValueError(
            f"Invalid lr_schedule: {s.lr_schedule!r} (expected a callable step -> multiplier)"
        )
    seed = check_int("seed", s.seed, 0)
    factor = s.divergence_factor
    if not (isinstance(factor, int | float) and factor > 1):
        raise ValueError(f"Invalid divergence_factor: {factor!r} (expected > 1)")
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


# -- the record -----------------------------------------------------------------------------------
class _Row(NamedTuple):
    """One row of ``run.history`` (see :class:`Run`); a checkpoint stores rows in this order
    (``_checkpoint.RECORD_COLUMNS``)."""

    step: int
    loss: float
    accuracy: float  # NaN for a task without accuracy (the column is then dropped)
    grad_norm: float
    update_norm: float  # NaN when the step was not taken (divergence) or not measured
    lr: float


def _name(cb) -> str:
    return getattr(cb, "name", type(cb).__name__)


class _Recorder:
    """What a run records: the history rows, the callbacks' measurements (one dict per step at
    which some ran), the first step's loss (the divergence reference) and each callback's
    seconds. It is saved in and restored from checkpoints."""

    def __init__(self, callbacks: Sequence[Callback], classify: bool) -> None:
        self.rows: list[_Row] = []
        self.measurements: list[dict[str, float]] = []
        self.first_loss: float | None = None
        self.callback_seconds = {_name(cb): 0.0 for cb in callbacks}
        self.classify = classify

    def measure(self, due, step: int, model, opt, batch) -> StopTraining | None:
        """Call the callbacks ``due`` at ``step`` and record their numbers as one row; the
        first :class:`StopTraining` raised (its numbers recorded too) is returned."""
        row: dict[str, float] = {"step": step}
        stop = None
        for cb in due:
            tc = time.perf_counter()
            try:
                result = cb(step, model, opt, batch)
            except StopTraining as exc:
                result, stop = exc.values, stop or exc
            row.update(_callback_row(cb, result, step, row))
            self.callback_seconds[_name(cb)] += time.perf_counter() - tc
        self.measurements.append(row)
        return stop

    def state(self) -> dict[str, Any]:
        records = torch.tensor(self.rows, dtype=torch.float64)
        return {
            "records": records.reshape(len(self.rows), len(_Row._fields)),
            "measurements": self.measurements,
            "first_loss": self.first_loss,
            "callback_seconds": self.callback_seconds,
        }

    def load(self, ck: dict[str, Any]) -> None:
        self.rows = [_Row(*r) for r in ck["records"].tolist()]
        self.measurements = ck["measurements"]
        self.first_loss = ck["first_loss"]
        self.callback_seconds.update(ck["callback_seconds"])

    def history(self) -> pd.DataFrame:
        columns = list(_Row._fields)
        values = np.asarray(self.rows, dtype=np.float64).reshape(len(self.rows), len(columns))
        history = pd.DataFrame(values, columns=columns)
        history["step"] = history["step"].astype(np.int64)
        return history if self.classify else history.drop(columns="accuracy")

    def measurements_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.measurements)
        if len(frame):
            frame["step"] = frame["step"].astype(np.int64)
        return frame


@dataclass
class _Outcome:
    """Where the run stands: the last step taken and why it ended, if it ended early."""

    taken: int = 0
    diverged_at: int | None = None
    stopped_at: int | None = None
    reason: str | None = None


def _callback_row(cb, result: Any, step: int, row: dict[str, float]) -> dict[str, float]:
    """The numbers a callback returned, checked before anything is recorded: numbers under
    string keys that no other callback of this step (nor ``step``) has taken."""
    name = getattr(cb, "name", type(cb).__name__)
    if not isinstance(result, Mapping):
        raise ValueError(
            f"callback {name} returned a {type(result).__name__} at step {step} (expected a "
            "dict of names -> numbers)"
        )
    for key, value in result.items():
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(key, str) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise ValueError(
                f"callback {name} returned {value!r:.60} for {key!r} at step {step} "
                "(expected string keys and numbers)"
            )
        if key in row and not (
            row[key] == float(value) or (math.isnan(row[key]) and math.isnan(float(value)))
        ):
            raise ValueError(
                f"callback {name} returned {key!r} = {float(value)!r} at step {step}, where "
                f"{'the step column says' if key == 'step' else 'another callback returned'} "
                f"{row[key]!r} (callbacks may share a column only with equal values)"
            )
    return {k: float(v.item() if isinstance(v, Tensor) else v) for k, v in result.items()}


# -- the parts of a step --------------------------------------------------------------------------
def _build(s: _Settings) -> tuple[nn.Module, list[Tensor], torch.optim.Optimizer]:
    """A fresh model of the task (initialised from the seed), its trainable parameters and
    the optimizer over them."""
    model = s.task.make_model(seed=s.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(s.optimizer, str):
        lr = {} if s.lr is None else {"lr": s.lr}
        return model, params, make_optimizer(s.name, params, **lr, **s.hparams)
    opt = s.optimizer(params)
    if not isinstance(opt, torch.optim.Optimizer):
        raise ValueError(
            f"the optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer"
        )
    return model, params, opt


class _LearningRates:
    """Sets every param group's lr to its initial value times ``lr_schedule(t)`` before step t."""

    def __init__(self, opt: torch.optim.Optimizer, lr_schedule) -> None:
        self.opt, self.schedule = opt, lr_schedule
        self.base = [g["lr"] for g in opt.param_groups]

    def set(self, step: int) -> None:
        if self.schedule is None:
            return
        factor = float(self.schedule(step))
        if not (math.isfinite(factor) and factor >= 0):
            raise ValueError(f"lr_schedule({step}) = {factor!r} (expected a finite number >= 0)")
        for g, base in zip(self.opt.param_groups, self.base, strict=True):
            g["lr"] = base * factor


def _divergence(loss: float, first_loss: float, factor: float) -> str | None:
    """Why a step with this loss counts as divergent (None when it does not): the loss is not
    finite, or exceeds ``factor`` times the first step's loss."""
    if not math.isfinite(loss):
        return "non-finite loss"
    if loss > factor * max(first_loss, 1e-30):
        return f"loss {loss:.3g} > {factor:g} x first loss {first_loss:.3g}"
    return None


def _grads(params: list[Tensor]) -> list[Tensor]:
    return [p.grad for p in params if p.grad is not None]


def _norm(parts) -> float:
    """The L2 norm of a vector given the L2 norms of its parts (floats or 0-dim tensors)."""
    return math.sqrt(sum(float(v) ** 2 for v in parts))


def _unmeasured(task: Task, params, output: Tensor, y: Tensor) -> tuple[float, float]:
    """Accuracy on the step's batch and gradient norm, for a step whose update is not measured
    (the divergent step, not taken; a stop at a step that is not recorded)."""
    with torch.no_grad():
        accuracy = float(task.accuracy(output, y)) if task.has_accuracy else math.nan
        return accuracy, _norm(torch._foreach_norm(_grads(params)))


def _measured_step(opt, params, before, output, y, classify) -> tuple[float, float, float]:
    """Take the optimizer's step and return (accuracy on the batch, gradient norm, update norm):
    one multi-tensor norm over the gradients and the parameter changes, one sync. (The
    gradients are read after the step: optimizers leave .grad alone.)"""
    with torch.no_grad():
        torch._foreach_copy_(before, params)
        opt.step()
        torch._foreach_sub_(before, params)
        grads = _grads(params)
        norms = list(torch._foreach_norm(grads + before))
        if classify:
            norms.append((output.argmax(dim=-1) == y).sum().to(norms[0].dtype))
        values = torch.stack(norms).tolist()
    accuracy = values[-1] / len(y) if classify else math.nan
    n = len(grads)
    return accuracy, _norm(values[:n]), _norm(values[n : n + len(before)])


# -- checkpoints ----------------------------------------------------------------------------------
def _checkpoint_of(s: _Settings, model, opt) -> Checkpoint | None:
    """The run's checkpoint file with its identity (None without a path)."""
    if s.checkpoint is None:
        return None
    identity = run_identity(
        s.task,
        model,
        opt,
        name=s.name,
        lr=s.lr,
        hparams=s.hparams,
        lr_schedule=s.lr_schedule,
        batch_size=s.batch_size,
        seed=s.seed,
        extra={"divergence_factor": s.divergence_factor, "record_every": s.record_every},
    )
    return Checkpoint(s.checkpoint, identity, _Schedules(s.lr_schedule, opt))


def _resume(ck: Checkpoint, s: _Settings, model, opt, rec: _Recorder) -> _Outcome:
    """Restore the model, optimizer, callbacks, generators and records from the checkpoint
    (a checkpoint of another configuration is refused) and say where the run stands."""
    saved = ck.load(s.steps, map_location=s.device)
    callbacks = s.callbacks
    if len(saved["callbacks"]) != len(callbacks):  # they measure: their state is not the run's
        warnings.warn(
            f"checkpoint {ck.path.name} was written with {len(saved['callbacks'])} "
            f"callbacks, this run has {len(callbacks)}: theirs start afresh",
            RuntimeWarning,
            stacklevel=4,  # the caller of train
        )
    try:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        states = saved["callbacks"] if len(saved["callbacks"]) == len(callbacks) else []
        for cb, state in zip(callbacks, states, strict=False):
            if hasattr(cb, "load_state_dict"):
                cb.load_state_dict(state)
        torch.set_rng_state(saved["rng"].cpu())
        if s.device.type == "cuda" and isinstance(saved.get("cuda_rng"), Tensor):
            torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), s.device)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(
            f"checkpoint {ck.path}: its state does not fit this run ({type(exc).__name__}: {exc})"
        ) from exc
    rec.load(saved)
    stopped = saved.get("stopped") or {}  # a stopped run stays stopped: no step is taken
    return _Outcome(saved["step"], stopped_at=stopped.get("step"), reason=stopped.get("reason"))


def _save(ck: Checkpoint, step: int, s: _Settings, model, opt, rec, out: _Outcome) -> None:
    stopped = out.stopped_at is not None
    ck.save(
        step,
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            **rec.state(),
            "callbacks": [
                cb.state_dict() if hasattr(cb, "state_dict") else {} for cb in s.callbacks
            ],
            "rng": torch.get_rng_state(),
            **({"stopped": {"step": out.stopped_at, "reason": out.reason}} if stopped else {}),
            **({"cuda_rng": torch.cuda.get_rng_state(s.device)} if s.device.type == "cuda" else {}),
        },
    )


# -- the loop -------------------------------------------------------------------------------------
def _loop(s: _Settings, model, params, opt, lrs, rec: _Recorder, ck, out: _Outcome, bar) -> None:
    """Steps ``out.taken + 1 .. s.steps``; ``out`` says where the run ended and why."""
    task, callbacks, classify, nan = s.task, s.callbacks, s.task.has_accuracy, math.nan
    batches = _Batches(task.x_train, task.y_train, s.batch_size, s.seed)
    before = [torch.empty_like(p) for p in params]
    last = out.taken if out.stopped_at is not None else s.steps
    model.train()
    for step in range(out.taken + 1, last + 1):
        lrs.set(step)
        x, y = batches(step)
        opt.zero_grad(set_to_none=True)
        output = model(x)
        loss = task.loss_fn(output, y)
        loss.backward()
        loss_v, lr = loss.item(), float(opt.param_groups[0]["lr"])
        if rec.first_loss is None:
            rec.first_loss = loss_v
        if (why := _divergence(loss_v, rec.first_loss, s.divergence_factor)) is not None:
            rec.rows.append(_Row(step, loss_v, *_unmeasured(task, params, output, y), nan, lr))
            out.diverged_at, out.reason = step, why
            return
        due = [cb for cb in callbacks if step % cb.every == 0]
        stops = bool(due) and any(getattr(cb, "stops", False) for cb in due)
        measured = not (step % s.record_every and step != s.steps) or stops
        if measured:
            accuracy, grad_norm, update_norm = _measured_step(
                opt, params, before, output, y, classify
            )
            rec.rows.append(_Row(step, loss_v, accuracy, grad_norm, update_norm, lr))
        else:
            opt.step()  # not recorded: a non-finite update shows in the next loss
        out.taken = step
        if measured and not math.isfinite(update_norm):
            out.diverged_at, out.reason = step, "non-finite update"
            return
        stop = rec.measure(due, step, model, opt, (x, y)) if due else None
        if stop is not None:
            if not measured:
                rec.rows.append(_Row(step, loss_v, *_unmeasured(task, params, output, y), nan, lr))
            out.stopped_at, out.reason = step, stop.reason
            bar.update(1)
            return
        if ck is not None and s.checkpoint_every and step % s.checkpoint_every == 0:
            _save(ck, step, s, model, opt, rec, out)
        bar.update(1)


def _run(s: _Settings) -> Run:
    """Build, resume if there is a checkpoint, loop, save, and gather the result."""
    model, params, opt = _build(s)
    lrs = _LearningRates(opt, s.lr_schedule)  # the initial lrs, before a resume changes them
    rec = _Recorder(s.callbacks, s.task.has_accuracy)
    ck = _checkpoint_of(s, model, opt)
    out = _resume(ck, s, model, opt, rec) if ck is not None and ck.exists() else _Outcome()
    show = s.progress and not progress_disabled()
    bar = tqdm(
        total=s.steps,
        initial=out.taken,
        desc=s.label,
        leave=False,
        mininterval=0.5,
        disable=not show,
    )
    t0 = time.perf_counter()
    with bar:
        _loop(s, model, params, opt, lrs, rec, ck, out, bar)
    seconds = time.perf_counter() - t0
    if ck is not None and out.diverged_at is None:
        _save(ck, out.taken, s, model, opt, rec, out)
    return Run(
        label=s.label,
        config=s.config,
        history=rec.history(),
        measurements=rec.measurements_frame(),
        model=model,
        optimizer=opt,
        task=s.task,
        diverged=out.diverged_at is not None,
        diverged_at=out.diverged_at,
        stopped_at=out.stopped_at,
        reason=out.reason,
        steps=out.taken,
        seconds=seconds,
        callback_seconds=rec.callback_seconds,
    )


def train(
    task: Task,
    optimizer: str | Callable[[Iterable[Tensor]], torch.optim.Optimizer],
    steps: int,
    batch_size: int | None = None,
    lr: float | None = None,
    lr_schedule: Callable[[int], float] | None = None,
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    label: str | None = None,
    divergence_factor: float = 1000.0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    record_every: int = 1,
    progress: bool = True,
    **hparams: Any,
) -> Run:
    """Train a fresh model of ``task`` (initialised from ``seed``) for ``steps`` steps.

    Args:
        task: a :class:`~analysis_lib.problems.tasks.Task`.
        optimizer: a name of the optimizer registry, in any case
            (:func:`~analysis_lib.optim.optimizer_spec`; ``lr`` and ``hparams`` are passed on;
            the run is named by the registry's lower-case key), or a factory
            ``params -> Optimizer``.
        steps: number of optimizer steps (a resumed run continues up to this number).
        batch_size: minibatch size, drawn by an epoch-wise shuffle from ``seed``; None is the
            full training set every step (gradient descent).
        lr: learning rate (None: the optimizer's default).
        lr_schedule: a multiplier ``t -> factor`` applied to every param group's initial lr
            before step t (t = 1..steps), e.g. :class:`cosine_schedule`.
        callbacks: objects called every ``callback.every`` steps (see the module docstring).
        seed: model initialisation and batch order; the same seed gives the same run.
        device: where to train (default :func:`analysis_lib.device`, CUDA when present).
        label: the run's name in :func:`runs_frame` (default: the optimizer's name).
        divergence_factor: the run ends, with ``run.diverged = True``, at the first step whose
            loss is not finite or exceeds ``divergence_factor`` times the first step's loss
            (or whose update is not finite).
        checkpoint: a file to save the run to every ``checkpoint_every`` steps and at the end
            (see :func:`save_checkpoint`: synced, renamed into place, with a checksum). Its
            folder is created if missing and must be writable: checked before the first step.
            When the file exists, the run resumes from it and continues bit-identically, as if
            it had been run with these arguments from the start (``steps`` may differ: a
            finished run is extended). It must have been written by the same run: the same
            task (constructor arguments, data, loss, model factory), the same model, the same
            optimizer as constructed (class and every param group's hyperparameters; a
            factory is identified by the optimizer it builds), the same ``lr``, ``hparams``,
            ``batch_size``, ``seed``, dtype, ``divergence_factor`` and ``record_every``, and
            schedules (``lr_schedule``, a callable alpha) giving the same values at every step
            taken; else a ValueError says what differs. A file that cannot be read raises
            :class:`CheckpointError`.
            A run that a callback stopped (:class:`StopTraining`) is saved at the stop step
            and stays stopped: resumed with any ``steps`` >= that step and any callbacks, it
            takes no step and returns the same ``stopped_at``, ``reason`` and records (remove
            the file to train further).
        checkpoint_every: steps between checkpoints (default: only at the end).
        record_every: ``history`` gets a row every ``record_every`` steps (and at the last
            step and a divergent one); the loss is still checked for divergence at every step.
            Recording costs a few small tensor operations per step: on a model as small as the
            digits MLP, ``record_every=10`` makes the loop as fast as a bare one.
        progress: show a progress bar (``TQDM_DISABLE=1`` silences it too).
        **hparams: further optimizer hyperparameters (``betas``, ``alpha``, ``momentum``...).
    """
    s = _checked(
        _Settings(
            task=task,
            optimizer=optimizer,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            callbacks=callbacks,
            seed=seed,
            device=device,
            label=label,
            divergence_factor=divergence_factor,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            record_every=record_every,
            progress=progress,
            hparams=hparams,
        )
    )
    # The run draws from torch's global generator only through the model (e.g. dropout): it
    # gets its own, seeded from ``seed`` and saved in checkpoints; the caller's is left alone.
    devices = [s.device.index or 0] if s.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(s.seed)
        return _run(s)


# -- choosing the learning rate -------------------------------------------------------------------
def choose_lr(
    frame: pd.DataFrame,
    selection: str = "val_loss",
    *,
    failed: str = "diverged",
    seeds: int | None = None,
) -> float:
    """The learning rate chosen on the validation split from ``frame``, one row per (lr, seed)
    with columns ``lr``, ``selection`` and the boolean ``failed`` (e.g. :func:`lr_sweep`'s).

    The rule (the sweep's, :func:`analysis_lib.sweep.summarize`): for each lr, the score is
    the mean of ``selection`` over its seeds, lower is better for ``"val_loss"`` and higher
    for ``"val_accuracy"``. An lr where any seed failed (diverged), or with fewer than
    ``seeds`` rows, or whose mean is not finite, counts as the worst, so a rate that works
    only for lucky seeds is never chosen. Ties go to the smaller lr. NaN when every lr failed.
    """
    if selection not in ("val_loss", "val_accuracy"):
        raise ValueError(
            f"Invalid selection: {selection!r} (expected 'val_loss' or 'val_accuracy')"
        )
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"Invalid frame: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("lr", selection, failed) if c not in frame.columns]
    if missing:
        raise ValueError(f"Invalid frame: it lacks the column(s) {missing}")
    if seeds is not None:
        seeds = check_int("seeds", seeds, 1)
    sign = 1.0 if selection == "val_loss" else -1.0  # lower score is better
    best, best_score = math.nan, math.inf
    for lr, at in sorted(frame.groupby("lr"), key=lambda kv: kv[0]):
        ok = at[~at[failed].astype(bool)]
        complete = len(ok) == len(at) and (seeds is None or len(ok) >= seeds)
        score = sign * float(ok[selection].mean()) if complete and len(ok) else math.inf
        if not math.isfinite(score):
            score = math.inf
        if score < best_score:
            best, best_score = float(lr), score
    return best


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


def _check_grid(lrs, seeds, optimizer, train_kwargs) -> tuple[list[float], list[int]]:
    if not isinstance(optimizer, str):
        raise ValueError(f"Invalid optimizer: {optimizer!r} (lr_sweep needs an optimizer name)")
    taken = sorted({"lr", "seed"} & set(train_kwargs))
    if taken:
        raise ValueError(f"Invalid train_kwargs: {taken} are set by lr_sweep (use lrs, seeds)")
    if isinstance(lrs, str | bytes) or not isinstance(lrs, Iterable):
        raise ValueError(f"Invalid lrs: {lrs!r} (expected a sequence of learning rates)")
    lrs = [check_float("lrs", lr, 0.0, low_open=True) for lr in lrs]
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
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be an analysis_lib Task, got {type(task).__name__}")
    lrs, seeds = _check_grid(lrs, seeds, optimizer, train_kwargs)
    rows, runs = [], {}
    for lr in lrs:
        for seed in seeds:
            run = train(task, optimizer, steps, lr=lr, seed=seed, **train_kwargs)
            rows.append(_final_row(run, lr, seed))
            runs[lr, seed] = run
    frame = pd.DataFrame(rows)
    chosen = choose_lr(frame)
    return LrSweep(frame, chosen, {seed: run for (lr, seed), run in runs.items() if lr == chosen})


# -- summaries of finished runs -------------------------------------------------------------------
def tail_statistic(run: Run, column: str, *, last: float = 0.1, statistic: str = "mean") -> float:
    """The ``statistic`` (``"mean"`` or ``"median"``) of ``column`` over the last ``last``
    fraction of ``run``: the rows of ``run.history`` (if it has the column, else of
    ``run.measurements``) whose step ``t`` satisfies ``t > (1 - last) * run.steps``. NaN values
    are skipped; NaN when no value is left.
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
