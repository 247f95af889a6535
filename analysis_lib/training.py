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

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import device as default_device
from . import io, progress_disabled
from ._checks import check_float, check_int
from ._evaluation import eval_mode
from .optim import OPTIMIZERS, make_optimizer, transition_measures
from .problems.tasks import Task

__all__ = [
    "Callback",
    "CheckpointError",
    "EvaluateCallback",
    "Run",
    "StopTraining",
    "TargetLoss",
    "TransitionCallback",
    "cosine_schedule",
    "load_checkpoint",
    "runs_frame",
    "save_checkpoint",
    "train",
]

_CHECKPOINT_FORMAT = "analysis_lib.training/2"


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


# -- the loop -------------------------------------------------------------------------------------
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


def _grads(params: list[Tensor]) -> list[Tensor]:
    return [p.grad for p in params if p.grad is not None]


def _norm(parts) -> float:
    """The L2 norm of a vector given the L2 norms of its parts (floats or 0-dim tensors)."""
    return math.sqrt(sum(float(v) ** 2 for v in parts))


# -- checkpoints ----------------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, truncated or corrupted (its checksum
    does not match), not a training checkpoint of this library (or of another version of it),
    or missing parts. The message names the file and what is wrong."""


_CHECKPOINT_MAGIC = b"analysis_lib.training checkpoint\n"
_CHECKPOINT_PARTS = {  # key -> (accepted types, what it is)
    "format": (str, "a format string"),
    "identity": (str, "the run's identity as JSON"),
    "step": (int, "a step number"),
    "model": (dict, "the model's state"),
    "optimizer": (dict, "the optimizer's state"),
    "records": (Tensor, "the history records"),
    "measurements": (list, "the measurements"),
    "first_loss": ((float, type(None)), "the first loss"),
    "callback_seconds": (dict, "the callbacks' timings"),
    "callbacks": (list, "the callbacks' state"),
    "rng": (Tensor, "the random generator's state"),
    "schedules": (dict, "the schedules' values"),
}


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` (a dict :func:`torch.save` can store) to ``path`` atomically (through
    :func:`analysis_lib.io.write_atomically`: synced, then renamed), behind a header with the
    SHA-256 of its bytes, so that :func:`load_checkpoint` detects truncation and corruption."""
    buf = BytesIO()
    torch.save(checkpoint, buf)
    body = buf.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode("ascii")
    io.write_atomically(path, _CHECKPOINT_MAGIC + digest + b"\n" + body)


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict[str, Any]:
    """The checkpoint :func:`train` wrote to ``path``, checked against its checksum and read with
    ``torch.load(weights_only=True)`` (nothing is unpickled).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is unreadable, truncated, corrupted, of another format or
            version, or lacks a part; the message names the file and what is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")

    def fail(what: str, exc: BaseException | None = None) -> CheckpointError:
        detail = "" if exc is None else f" ({type(exc).__name__}: {exc})"
        return CheckpointError(f"checkpoint {path}: {what}{detail}")

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise fail("cannot be read", exc) from exc
    if not raw:
        raise fail("is empty (0 bytes): truncated")
    if _CHECKPOINT_MAGIC.startswith(raw):
        raise fail(f"is truncated (only {len(raw)} bytes)")
    if not raw.startswith(_CHECKPOINT_MAGIC):
        raise fail(
            "is not a training checkpoint of this version of the library (no header; written "
            "by another program or an older version)"
        )
    header_end = len(_CHECKPOINT_MAGIC) + 65
    digest, body = raw[len(_CHECKPOINT_MAGIC) : header_end], raw[header_end:]
    if len(digest) < 65 or digest[64:] != b"\n":
        raise fail(f"is truncated (only {len(raw)} bytes)")
    if hashlib.sha256(body).hexdigest().encode("ascii") != digest[:64]:
        raise fail(
            f"is truncated or corrupted: its content ({len(body)} bytes) does not match its "
            "checksum"
        )
    try:
        ck = torch.load(BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as exc:  # checksum right, content unreadable: another writer's bytes
        raise fail("cannot be decoded", exc) from exc
    if not isinstance(ck, dict):
        raise fail(f"holds a {type(ck).__name__}, not a checkpoint")
    if ck.get("format") != _CHECKPOINT_FORMAT:
        raise fail(f"has format {ck.get('format')!r}, expected {_CHECKPOINT_FORMAT!r}")
    for key, (types_, what) in _CHECKPOINT_PARTS.items():
        if key not in ck:
            raise fail(f"lacks {what} ({key!r})")
        if not isinstance(ck[key], types_):
            raise fail(f"holds a {type(ck[key]).__name__} as {what} ({key!r})")
    try:
        ck["identity"] = json.loads(ck["identity"])
    except ValueError as exc:
        raise fail("holds an unreadable identity", exc) from exc
    records = ck["records"]
    if records.ndim != 2 or records.shape[1] != 6:
        raise fail(f"holds history records of shape {tuple(records.shape)}, expected (n, 6)")
    stopped = ck.get("stopped")  # optional: present when a callback stopped the run
    if stopped is not None and not (
        isinstance(stopped, dict)
        and isinstance(stopped.get("step"), int)
        and isinstance(stopped.get("reason"), str)
    ):
        raise fail(f"holds an unreadable stop record ({stopped!r:.60})")
    return ck


def _identified(value: Any, where: str) -> Any:
    """``io.describe(value)``, or a note that it could not be identified (then it is compared
    through what it produces)."""
    try:
        return io.describe(value, where)
    except io.UnidentifiableError:
        name = getattr(value, "__qualname__", type(value).__qualname__)
        return {"unidentified": name}


def _task_identity(task: Task) -> dict[str, Any]:
    names = [f.name for f in dataclass_fields(task)]
    names.sort(key=lambda n: n != "arguments")  # the constructor's arguments say it best
    return {n: _identified(getattr(task, n), f"task.{n}") for n in names}


def _run_identity(task, model, opt, *, name, lr, hparams, lr_schedule, batch_size, seed, extra):
    groups = []
    for i, g in enumerate(opt.param_groups):
        desc = {k: _identified(v, f"param_groups[{i}][{k!r}]") for k, v in g.items()}
        desc["params"] = [list(p.shape) for p in g["params"]]
        groups.append(desc)
    return {
        "task": _task_identity(task),
        "model": {
            "architecture": repr(model),
            "initial": io.describe(model.state_dict()),
            "dtype": str(next(model.parameters()).dtype),
        },
        "optimizer": {
            "name": name,
            "class": f"{type(opt).__module__}.{type(opt).__qualname__}",
            "param_groups": groups,
        },
        "lr": lr,
        "hparams": {k: _identified(v, k) for k, v in sorted(hparams.items())},
        "lr_schedule": None if lr_schedule is None else _identified(lr_schedule, "lr_schedule"),
        "batch_size": batch_size,
        "seed": seed,
        **extra,
    }


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and "sha256" in value:  # a tensor: one entry
        value = f"{value.get('tensor')} {value.get('shape')} sha256 {value['sha256'][:12]}"
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and not all(isinstance(v, int | float) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value
    return out


def _identity_differences(saved: dict, now: dict) -> list[str]:
    a, b = _flatten(saved, "", {}), _flatten(now, "", {})
    diffs = []
    for key in [*b, *(k for k in a if k not in b)]:  # in the order of the identity
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            then, current = (repr(v)[:60] for v in (a.get(key, "<absent>"), b.get(key, "<absent>")))
            diffs.append(f"'{key}' (checkpoint {then}, now {current})")
    return diffs


class _Schedules:
    """The values of the run's step schedules (``lr_schedule`` and callable hyperparameters of
    the param groups, e.g. Ada2MS's alpha) at steps 1..t: what a checkpoint compares, since two
    callables cannot always be told apart by their code."""

    def __init__(self, lr_schedule, opt) -> None:
        self.fns: dict[str, Callable[[int], Any]] = {}
        if lr_schedule is not None:
            self.fns["lr_schedule"] = lr_schedule
        for i, g in enumerate(opt.param_groups):
            for k, v in g.items():
                if k != "params" and callable(v):
                    self.fns[f"param_groups[{i}][{k!r}]"] = v
        self.values: dict[str, list[float]] = {k: [] for k in self.fns}

    def upto(self, step: int) -> dict[str, Tensor]:
        for key, fn in self.fns.items():
            values = self.values[key]
            for t in range(len(values) + 1, step + 1):
                try:
                    values.append(float(fn(t)))
                except Exception as exc:
                    raise ValueError(
                        f"{key}({t}) failed ({type(exc).__name__}: {exc}); a checkpointed run "
                        "compares its schedules by their values at every step"
                    ) from exc
        return {k: torch.tensor(v[:step], dtype=torch.float64) for k, v in self.values.items()}

    def check(self, saved: dict[str, Tensor], step: int, path: Path) -> None:
        now = self.upto(step)
        for key in sorted(saved.keys() | now.keys()):
            if key not in saved or key not in now:
                where = "the checkpoint's run" if key in saved else "this run"
                raise ValueError(
                    f"checkpoint {path.name} was written by a different configuration: only "
                    f"{where} has a schedule '{key}'; remove it or pass another path"
                )
            a, b = saved[key].to(torch.float64).cpu(), now[key]
            if a.shape != b.shape or not torch.equal(a, b):
                bad = next((t for t in range(min(len(a), len(b))) if a[t].item() != b[t].item()), 0)
                raise ValueError(
                    f"checkpoint {path.name} was written by a different configuration: "
                    f"'{key}' differs at step {bad + 1} (the checkpoint's run used "
                    f"{a[bad].item() if len(a) > bad else None!r}, this one gives "
                    f"{b[bad].item() if len(b) > bad else None!r}); remove it or pass "
                    "another path"
                )


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
        optimizer: a name known to :func:`~analysis_lib.optim.make_optimizer` (``lr`` and
            ``hparams`` are passed on), or a factory ``params -> Optimizer``.
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
    # -- validate everything before any work -----------------------------------------------------
    if not isinstance(task, Task):
        raise TypeError(f"task must be an analysis_lib Task, got {type(task).__name__}")
    steps = check_int("steps", steps, 1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
        if batch_size > task.n_train:
            raise ValueError(
                f"Invalid batch_size: {batch_size} is larger than the training "
                f"set ({task.n_train} samples)"
            )
    if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"Invalid lr: {lr!r} (expected a finite number >= 0)")
    if lr_schedule is not None and not callable(lr_schedule):
        raise ValueError(
            f"Invalid lr_schedule: {lr_schedule!r} (expected a callable step -> multiplier)"
        )
    seed = check_int("seed", seed, 0)
    if not (isinstance(divergence_factor, int | float) and divergence_factor > 1):
        raise ValueError(f"Invalid divergence_factor: {divergence_factor!r} (expected > 1)")
    record_every = check_int("record_every", record_every, 1)
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
        if checkpoint is None:
            raise ValueError("checkpoint_every was given without a checkpoint path")
    path = None
    if checkpoint is not None:
        if not isinstance(checkpoint, str | os.PathLike):
            raise ValueError(f"Invalid checkpoint: {checkpoint!r} (expected a file path)")
        path = Path(checkpoint).expanduser()
        if path.is_dir():
            raise ValueError(f"Invalid checkpoint: {path} is a folder (expected a file path)")
        io.check_writable(path.parent, f"checkpoint {path}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        every = getattr(cb, "every", None)
        if not callable(cb) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"Invalid callbacks[{i}]: {cb!r} (expected a callable with an "
                "integer attribute every >= 1)"
            )
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer: {optimizer!r} (known: {sorted(OPTIMIZERS)})")
        name = optimizer
    elif callable(optimizer):
        if lr is not None or hparams:
            raise ValueError(
                "lr and hyperparameters go into the optimizer factory itself; "
                "train() passes them on only for an optimizer given by name"
            )
        name = getattr(optimizer, "__name__", type(optimizer).__name__)
    else:
        raise ValueError(f"Invalid optimizer: {optimizer!r} (expected a name or a factory)")

    config = {
        "task": task.name,
        "task_info": _describe(list(task.info.items())),
        "optimizer": name,
        "lr": lr,
        "hparams": _describe(sorted(hparams.items())),
        "batch_size": batch_size,
        "seed": seed,
        "lr_schedule": _describe(lr_schedule),
        "divergence_factor": divergence_factor,
        "record_every": record_every,
    }
    device = default_device() if device is None else torch.device(device)
    task = task.to(device)

    def _build_and_run() -> Run:
        # -- build ------------------------------------------------------------------------------------
        model = task.make_model(seed=seed)
        params = [p for p in model.parameters() if p.requires_grad]
        if isinstance(optimizer, str):
            opt = make_optimizer(optimizer, params, **({} if lr is None else {"lr": lr}), **hparams)
        else:
            opt = optimizer(params)
            if not isinstance(opt, torch.optim.Optimizer):
                raise ValueError(
                    f"the optimizer factory returned {type(opt).__name__}, not a "
                    "torch.optim.Optimizer"
                )
        base_lrs = [g["lr"] for g in opt.param_groups]
        batches = _Batches(task.x_train, task.y_train, batch_size, seed)
        classify = task.has_accuracy

        records: list[list[float]] = []
        measurements: list[dict[str, float]] = []
        callback_seconds = {getattr(cb, "name", type(cb).__name__): 0.0 for cb in callbacks}
        first_loss: float | None = None
        start = taken = 0
        stopped_at: int | None = None
        reason: str | None = None
        if path is not None:
            # The run's identity: what the task, the model, the optimizer as constructed (its
            # class and every param group's hyperparameters) and the schedules' values are.
            identity = json.loads(
                json.dumps(
                    _run_identity(
                        task,
                        model,
                        opt,
                        name=name,
                        lr=lr,
                        hparams=hparams,
                        lr_schedule=lr_schedule,
                        batch_size=batch_size,
                        seed=seed,
                        extra={
                            "divergence_factor": divergence_factor,
                            "record_every": record_every,
                        },
                    )
                )
            )
            schedules = _Schedules(lr_schedule, opt)
        if path is not None and path.exists():
            ck = load_checkpoint(path, map_location=device)
            diffs = _identity_differences(ck["identity"], identity)
            if diffs:
                raise ValueError(
                    f"checkpoint {path.name} was written by a different configuration; it "
                    f"differs in {'; '.join(diffs[:8])}"
                    f"{f' and {len(diffs) - 8} more' if len(diffs) > 8 else ''}; "
                    "remove it or pass another path"
                )
            start = taken = ck["step"]
            if start > steps:
                raise ValueError(f"checkpoint {path.name} is at step {start}, beyond steps={steps}")
            schedules.check(ck["schedules"], start, path)
            if len(ck["callbacks"]) != len(callbacks):  # they measure; they do not steer
                warnings.warn(
                    f"checkpoint {path.name} was written with {len(ck['callbacks'])} "
                    f"callbacks, this run has {len(callbacks)}: theirs start afresh",
                    RuntimeWarning,
                    stacklevel=3,
                )
            try:
                model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                states = ck["callbacks"] if len(ck["callbacks"]) == len(callbacks) else []
                for cb, state in zip(callbacks, states, strict=False):
                    if hasattr(cb, "load_state_dict"):
                        cb.load_state_dict(state)
                torch.set_rng_state(ck["rng"].cpu())
                if device.type == "cuda" and isinstance(ck.get("cuda_rng"), Tensor):
                    torch.cuda.set_rng_state(ck["cuda_rng"].cpu(), device)
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
                raise CheckpointError(
                    f"checkpoint {path}: its state does not fit this run "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            records = ck["records"].tolist()
            measurements = ck["measurements"]
            if ck.get("stopped") is not None:  # a stopped run stays stopped: no step is taken
                stopped_at, reason = ck["stopped"]["step"], ck["stopped"]["reason"]
            first_loss = ck["first_loss"]
            callback_seconds.update(ck["callback_seconds"])

        def save(step: int) -> None:
            save_checkpoint(
                path,
                {
                    "format": _CHECKPOINT_FORMAT,
                    "identity": json.dumps(identity),
                    "schedules": schedules.upto(step),
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "records": torch.tensor(records, dtype=torch.float64).reshape(len(records), 6),
                    "measurements": measurements,
                    "first_loss": first_loss,
                    "callback_seconds": callback_seconds,
                    "callbacks": [
                        cb.state_dict() if hasattr(cb, "state_dict") else {} for cb in callbacks
                    ],
                    "rng": torch.get_rng_state(),
                    **(
                        {"stopped": {"step": stopped_at, "reason": reason}}
                        if stopped_at is not None
                        else {}
                    ),
                    **(
                        {"cuda_rng": torch.cuda.get_rng_state(device)}
                        if device.type == "cuda"
                        else {}
                    ),
                },
            )

        # -- run --------------------------------------------------------------------------------------
        before = [torch.empty_like(p) for p in params]
        diverged, diverged_at = False, None
        last = start if stopped_at is not None else steps
        nan = float("nan")
        bar = tqdm(
            total=steps,
            initial=start,
            desc=label or name,
            leave=False,
            mininterval=0.5,
            disable=not progress or progress_disabled(),
        )
        t0 = time.perf_counter()
        model.train()
        step = start
        try:
            for step in range(start + 1, last + 1):
                if lr_schedule is not None:
                    factor = float(lr_schedule(step))
                    if not (math.isfinite(factor) and factor >= 0):
                        raise ValueError(
                            f"lr_schedule({step}) = {factor!r} (expected a finite number >= 0)"
                        )
                    for g, base in zip(opt.param_groups, base_lrs, strict=True):
                        g["lr"] = base * factor
                x, y = batches(step)
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = task.loss_fn(out, y)
                loss.backward()
                loss_v = loss.item()
                lr_now = float(opt.param_groups[0]["lr"])
                if first_loss is None:
                    first_loss = loss_v
                if not math.isfinite(loss_v) or loss_v > divergence_factor * max(first_loss, 1e-30):
                    with torch.no_grad():
                        acc_v = float(task.accuracy(out, y)) if classify else nan
                        gnorm_v = _norm(torch._foreach_norm(_grads(params)))
                    records.append([step, loss_v, acc_v, gnorm_v, nan, lr_now])
                    diverged, diverged_at = True, step
                    reason = (
                        "non-finite loss"
                        if not math.isfinite(loss_v)
                        else f"loss {loss_v:.3g} > {divergence_factor:g} x first loss "
                        f"{first_loss:.3g}"
                    )
                    break
                due = [cb for cb in callbacks if step % cb.every == 0]
                stops = any(getattr(cb, "stops", False) for cb in due)
                if step % record_every and step != steps and not stops:
                    opt.step()  # not recorded: a non-finite update shows in the next loss
                    recorded = False
                else:
                    with torch.no_grad():
                        torch._foreach_copy_(before, params)
                        opt.step()
                        # One multi-tensor norm over the gradients and the parameter changes, one
                        # sync. (The gradients are read after the step: optimizers leave .grad alone.)
                        torch._foreach_sub_(before, params)
                        grads = _grads(params)
                        norms = list(torch._foreach_norm(grads + before))
                        if classify:
                            norms.append((out.argmax(dim=-1) == y).sum().to(norms[0].dtype))
                        values = torch.stack(norms).tolist()
                    acc_v = values[-1] / len(y) if classify else nan
                    gnorm_v = _norm(values[: len(grads)])
                    unorm_v = _norm(values[len(grads) : len(grads) + len(before)])
                    records.append([step, loss_v, acc_v, gnorm_v, unorm_v, lr_now])
                    recorded = True
                    if not math.isfinite(unorm_v):
                        taken = step
                        diverged, diverged_at, reason = True, step, "non-finite update"
                        break
                taken = step
                if due:
                    row: dict[str, float] = {"step": step}
                    for cb in due:
                        tc = time.perf_counter()
                        try:
                            result = cb(step, model, opt, (x, y))
                        except StopTraining as stop:
                            result = stop.values
                            if stopped_at is None:
                                stopped_at, reason = step, stop.reason
                        row.update(_callback_row(cb, result, step, row))
                        callback_seconds[getattr(cb, "name", type(cb).__name__)] += (
                            time.perf_counter() - tc
                        )
                    measurements.append(row)
                if stopped_at is not None:
                    if not recorded:  # a stop at a step that was not recorded
                        with torch.no_grad():
                            acc_v = float(task.accuracy(out, y)) if classify else nan
                            gnorm_v = _norm(torch._foreach_norm(_grads(params)))
                        records.append([step, loss_v, acc_v, gnorm_v, nan, lr_now])
                    bar.update(1)
                    break
                if path is not None and checkpoint_every and step % checkpoint_every == 0:
                    save(step)
                bar.update(1)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        if path is not None and not diverged:
            save(step)

        columns = ["step", "loss", "accuracy", "grad_norm", "update_norm", "lr"]
        history = pd.DataFrame(
            np.asarray(records, dtype=np.float64).reshape(-1, 6), columns=columns
        )
        history["step"] = history["step"].astype(np.int64)
        if not classify:
            history = history.drop(columns="accuracy")
        meas = pd.DataFrame(measurements)
        if len(meas):
            meas["step"] = meas["step"].astype(np.int64)
        return Run(
            label=label or name,
            config=config,
            history=history,
            measurements=meas,
            model=model,
            optimizer=opt,
            task=task,
            diverged=diverged,
            diverged_at=diverged_at,
            stopped_at=stopped_at,
            reason=reason,
            steps=taken,
            seconds=seconds,
            callback_seconds=callback_seconds,
        )

    # The run draws from torch's global generator only through the model (e.g. dropout): it
    # gets its own, seeded from ``seed`` and saved in checkpoints; the caller's is left alone.
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _build_and_run()
