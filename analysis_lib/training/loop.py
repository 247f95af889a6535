"""The training loop: :func:`train` (build a fresh model, resume from a checkpoint when there
is one, take the steps, detect divergence, call the callbacks, save), its result :class:`Run`,
and :func:`runs_frame` (several runs' records in one tidy frame). Its helpers: the batches
(:class:`_Batches`), the parts of a step (the update and its norms) and the checkpoint's glue
(what is saved and restored). The arguments are checked in :mod:`._settings`, the records kept
in :mod:`._record`, the file written by :mod:`.checkpoint`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from .. import progress_bar
from ..optim import make_optimizer
from ..problems.tasks import Task
from ._record import Outcome, Recorder, Row
from ._settings import Settings, checked
from .callbacks import Callback
from .checkpoint import Checkpoint, CheckpointError, Schedules, run_identity

__all__ = ["Run", "runs_frame", "train"]


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
        """The training loss of the last step's batch (NaN for a diverged run).

        Returns:
            The loss as a float.
        """
        return float("nan") if self.diverged else float(self.history["loss"].iloc[-1])

    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Loss (and accuracy) of the trained model over a split of the task.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"`` (see :meth:`Task.evaluate`).

        Returns:
            ``{"loss": ..., "accuracy": ...}`` (no accuracy for a regression task).

        Raises:
            ValueError: an unknown split.
        """
        return self.task.evaluate(self.model, split)


def runs_frame(runs: Iterable[Run], which: str = "history", column: str = "run") -> pd.DataFrame:
    """The ``history`` (or ``measurements``) of several runs in one tidy frame, with the runs'
    labels in ``column``: ready for ``seaborn.lineplot(..., hue=column)``.

    Args:
        runs: the :class:`Run` objects (at least one).
        which: ``"history"`` or ``"measurements"``.
        column: the name of the column that holds each run's ``label``.

    Returns:
        The frames concatenated, with a fresh index.

    Raises:
        ValueError: an unknown ``which``, or no runs.
    """
    if which not in ("history", "measurements"):
        raise ValueError(f"Invalid which: {which!r} (expected 'history' or 'measurements')")
    frames = [getattr(r, which).assign(**{column: r.label}) for r in runs]
    if not frames:
        raise ValueError("runs is empty")
    return pd.concat(frames, ignore_index=True)


# -- batches --------------------------------------------------------------------------------------
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


# -- the parts of a step --------------------------------------------------------------------------
def _build(s: Settings) -> tuple[nn.Module, list[Tensor], torch.optim.Optimizer]:
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
def _checkpoint_of(s: Settings, model, opt) -> Checkpoint | None:
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
    return Checkpoint(s.checkpoint, identity, Schedules(s.lr_schedule, opt))


def _resume(ck: Checkpoint, s: Settings, model, opt, rec: Recorder) -> Outcome:
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
    return Outcome(saved["step"], stopped_at=stopped.get("step"), reason=stopped.get("reason"))


def _save(ck: Checkpoint, step: int, s: Settings, model, opt, rec, out: Outcome) -> None:
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
def _loop(s: Settings, model, params, opt, lrs, rec: Recorder, ck, out: Outcome, bar) -> None:
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
            rec.rows.append(Row(step, loss_v, *_unmeasured(task, params, output, y), nan, lr))
            out.diverged_at, out.reason = step, why
            return
        due = [cb for cb in callbacks if step % cb.every == 0]
        stops = bool(due) and any(getattr(cb, "stops", False) for cb in due)
        measured = not (step % s.record_every and step != s.steps) or stops
        if measured:
            accuracy, grad_norm, update_norm = _measured_step(
                opt, params, before, output, y, classify
            )
            rec.rows.append(Row(step, loss_v, accuracy, grad_norm, update_norm, lr))
        else:
            opt.step()  # not recorded: a non-finite update shows in the next loss
        out.taken = step
        if measured and not math.isfinite(update_norm):
            out.diverged_at, out.reason = step, "non-finite update"
            return
        stop = rec.measure(due, step, model, opt, (x, y)) if due else None
        if stop is not None:
            if not measured:
                rec.rows.append(Row(step, loss_v, *_unmeasured(task, params, output, y), nan, lr))
            out.stopped_at, out.reason = step, stop.reason
            bar.update(1)
            return
        if ck is not None and s.checkpoint_every and step % s.checkpoint_every == 0:
            _save(ck, step, s, model, opt, rec, out)
        bar.update(1)


def _run(s: Settings) -> Run:
    """Build, resume if there is a checkpoint, loop, save, and gather the result."""
    model, params, opt = _build(s)
    lrs = _LearningRates(opt, s.lr_schedule)  # the initial lrs, before a resume changes them
    rec = Recorder(s.callbacks, s.task.has_accuracy)
    ck = _checkpoint_of(s, model, opt)
    out = _resume(ck, s, model, opt, rec) if ck is not None and ck.exists() else Outcome()
    bar = progress_bar(
        total=s.steps, initial=out.taken, desc=s.label, mininterval=0.5, progress=s.progress
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

    Returns:
        The :class:`Run`: its model, optimizer, ``history``, ``measurements`` and outcome.

    Raises:
        TypeError: ``task`` not a Task.
        ValueError: a bad argument, naming it, before the first step; or a checkpoint written
            by another run.
        CheckpointError: a checkpoint file that cannot be read.
    """
    s = checked(
        Settings(
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
