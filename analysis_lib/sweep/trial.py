"""One trial: the typed record of its configuration (:class:`Trial`), its key, its row of
``trials.csv``, and running it (:func:`run_trial`), a pure function of the record to the row.

This module owns the trial's fields (defined once, in :class:`Trial`), the columns of
``trials.csv`` (:data:`BASE_COLUMNS`, :data:`TAIL_COLUMNS`), the statuses, and the one place a
row is built from a trial (:meth:`Trial.row`). It also turns a checked configuration's plain
values into the objects a run needs (:func:`make_task`, :func:`resolve_hparams`); the values
themselves are checked once, where they enter (:mod:`analysis_lib.sweep.config`), not here.

A trial trains a fresh model (:func:`analysis_lib.training.train`, seeded by the trial's seed:
initialisation and batch order), evaluates it on the three splits and takes the configured
measurements. It runs on one torch thread wherever it runs (restoring the caller's setting
afterwards), so that its numbers do not depend on the machine's core count or on how many
trials share it: the same trial gives the same row serially, on a LocalCluster or on a remote
cluster with the same library versions and device type. Parallelism comes from running trials
side by side. Nothing a trial does raises: an exception becomes ``status="error"`` with its
message, a divergence ``status="diverged"``.

A trial with a ``target_train_loss`` (a budget with a target, see
:mod:`analysis_lib.sweep.config`) is stopped at the first check (every ``check_every`` steps)
where the mean loss over the whole training split is at most the target
(:class:`~analysis_lib.training.TargetLoss`): its row has ``steps_taken`` (the step at which it
stopped, or the full budget), ``target_train_loss`` and ``target_reached`` (True or False; a
run that never reaches the target is trained, evaluated and measured at the end of its budget
like any other, and says so here).

A budget with ``anneal_steps`` too follows the schedule until the target, then anneals the rate
linearly from where the schedule was over that many steps (fewer when the budget ends first) and
stops (:class:`~analysis_lib.training.AnnealAtTarget`): the row has ``anneal_steps``,
``anneal_started`` (the step at which the target was reached, NaN if never) and ``final_lr``
(the rate of the last step taken).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from .. import __version__
from .. import device as default_device
from ..cluster import one_torch_thread
from ..io import config_key
from ..optim import ExponentialAlpha
from ..problems import tasks as _tasks
from ..training import AnnealAtTarget, TargetLoss, cosine_schedule, train

__all__ = [
    "BASE_COLUMNS",
    "CONFIG_COLUMNS",
    "FINAL_STATUSES",
    "JSON_COLUMNS",
    "STATUSES",
    "TAIL_COLUMNS",
    "Trial",
    "make_task",
    "resolve_hparams",
    "run_trial",
]

#: ``ok``: trained and measured; ``diverged``: stopped by the divergence check (no metrics);
#: ``error``: raised (``message`` says what). ``ok`` and ``diverged`` are final: a resumed
#: sweep skips them and reruns errors (which may have been a lost machine).
STATUSES = ("ok", "diverged", "error")
FINAL_STATUSES = ("ok", "diverged")
#: The columns of a row that are the trial's configuration (the key aside), in order.
CONFIG_COLUMNS = (
    "label",
    "optimizer",
    "hparams",
    "lr",
    "seed",
    "steps",
    "batch_size",
    "schedule",
    "task",
)
#: Configuration columns written as canonical JSON tables.
JSON_COLUMNS = ("hparams", "schedule", "task")
#: The training metrics of a row.
METRICS = tuple(f"{s}_{m}" for s in ("train", "val", "test") for m in ("loss", "accuracy"))
#: Columns before the measurements, in order.
BASE_COLUMNS = ("key", *CONFIG_COLUMNS, "status", "message", "steps_taken", *METRICS)
#: Columns after the measurements: they describe where and how long a trial ran, and are the
#: only ones that may differ between two runs of the same trial.
TAIL_COLUMNS = ("seconds", "worker", "device", "version")


# -- from checked values to the objects of a run --------------------------------------------------
def resolve_hparams(hparams: Mapping, steps: int) -> dict:
    """The keyword arguments for ``make_optimizer``: an ``alpha`` table becomes an
    :class:`~analysis_lib.optim.ExponentialAlpha` (``within`` reaches ``final`` within that
    fraction at the last step), arrays become tuples.

    Args:
        hparams: the checked hyperparameters of a configuration (plain TOML values).
        steps: the trial's step budget, for an ``alpha`` table with ``within``.

    Returns:
        A new dict of keyword arguments.

    Examples:
        >>> resolve_hparams({"betas": [0.9, 0.99], "eps": 1e-8}, 100)
        {'betas': (0.9, 0.99), 'eps': 1e-08}
    """
    out = {}
    for k, v in hparams.items():
        if k == "alpha" and isinstance(v, dict):
            if "within" in v:
                out[k] = ExponentialAlpha.reaching(v["final"], steps, v["within"])
            else:
                out[k] = ExponentialAlpha(final=v["final"], tau=v["tau"])
        elif isinstance(v, list):
            out[k] = tuple(v)
        else:
            out[k] = v
    return out


def make_task(spec: Mapping) -> _tasks.Task:
    """The task of a trial: ``tasks.<spec["name"]>(**spec["args"])`` on the CPU.

    Args:
        spec: a mapping with ``name`` (a factory of :mod:`analysis_lib.problems.tasks`) and
            ``args`` (its keyword arguments).

    Returns:
        The :class:`~analysis_lib.problems.tasks.Task`.

    Raises:
        AttributeError: ``spec["name"]`` is not a task factory.
        KeyError: ``spec`` lacks ``name`` or ``args``.
    """
    return getattr(_tasks, spec["name"])(**spec["args"])


# -- the record -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=True)
class Trial:
    """One trial of a sweep, built once from its checked configuration
    (:meth:`analysis_lib.sweep.SweepConfig.trials`) and carried unchanged to the run and the
    row. ``task``, ``hparams`` and ``schedule`` are the configuration's plain tables;
    ``target_train_loss`` and ``check_every`` are None for a budget without a target."""

    task: dict
    optimizer: str
    label: str
    hparams: dict
    lr: float
    seed: int
    steps: int
    batch_size: int | None
    schedule: dict
    measurements: tuple[str, ...]
    divergence_factor: float
    target_train_loss: float | None = None
    check_every: int | None = None
    anneal_steps: int | None = None

    def __hash__(self) -> int:
        return hash(self.key)

    def spec(self) -> dict[str, Any]:
        """The trial's configuration as plain data: what its key hashes. The target entries are
        there only for a budget with a target, so other sweeps keep their keys.

        Returns:
            A new dict (``task``, ``optimizer``, ``label``, ``hparams``, ``lr``, ``seed``,
            ``steps``, ``batch_size``, ``schedule``, ``measurements``, ``divergence_factor``, and
            ``target_train_loss`` and ``check_every`` with a target).
        """
        spec = {
            "task": self.task,
            "optimizer": self.optimizer,
            "label": self.label,
            "hparams": self.hparams,
            "lr": self.lr,
            "seed": self.seed,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "schedule": self.schedule,
            "measurements": list(self.measurements),
            "divergence_factor": self.divergence_factor,
        }
        if self.target_train_loss is not None:
            spec.update(target_train_loss=self.target_train_loss, check_every=self.check_every)
        if self.anneal_steps is not None:
            spec["anneal_steps"] = self.anneal_steps
        return spec

    @cached_property
    def key(self) -> str:
        """A hash of everything that determines the trial's result (:meth:`spec`).

        Returns:
            16 hex digits (:func:`analysis_lib.io.config_key` of :meth:`spec`).
        """
        return config_key(self.spec())

    def row(self, status: str = "ok", message: str = "") -> dict:
        """The trial's row of ``trials.csv``: its configuration columns, ``status`` and
        ``message``, and empty metrics (what a trial that never reported looks like).

        Args:
            status: one of :data:`STATUSES`.
            message: what happened (empty for ``ok``).

        Returns:
            A dict ``column -> value``: ``key``, the :data:`CONFIG_COLUMNS` (``task``, ``hparams``
            and ``schedule`` as sorted JSON text), ``status``, ``message``, ``steps_taken`` = 0,
            ``target_train_loss`` and ``target_reached`` = False with a target, and NaN
            :data:`METRICS`.

        Examples:
            >>> trial = Trial(task={"name": "digits", "args": {}}, optimizer="sgd", label="sgd",
            ...               hparams={}, lr=0.1, seed=0, steps=10, batch_size=None,
            ...               schedule={"kind": "constant"}, measurements=(), divergence_factor=1000.0)
            >>> row = trial.row("error", "boom")
            >>> row["key"] == trial.key, row["task"], row["status"], row["steps_taken"]
            (True, '{"args": {}, "name": "digits"}', 'error', 0)
        """
        nan = float("nan")
        row: dict[str, Any] = {"key": self.key}
        for column in CONFIG_COLUMNS:
            value = getattr(self, column)
            row[column] = json.dumps(value, sort_keys=True) if column in JSON_COLUMNS else value
        row.update(status=status, message=message, steps_taken=0)
        if self.target_train_loss is not None:
            row.update(target_train_loss=self.target_train_loss, target_reached=False)
        if self.anneal_steps is not None:
            row.update(anneal_steps=self.anneal_steps, anneal_started=nan, final_lr=nan)
        row.update({metric: nan for metric in METRICS})
        return row


# -- running it -----------------------------------------------------------------------------------
_TASK_CACHE: dict[str, object] = {}  # per process: workers build each task once


def _task(spec: Mapping) -> object:
    key = json.dumps(spec, sort_keys=True)
    if key not in _TASK_CACHE:
        if len(_TASK_CACHE) >= 4:
            _TASK_CACHE.clear()
        _TASK_CACHE[key] = make_task(spec)
    return _TASK_CACHE[key]


def _warmup(warmup: int, step: int) -> float:
    return min(1.0, step / warmup)


def _schedule(spec: Mapping, steps: int):
    if spec["kind"] == "constant":
        return partial(_warmup, spec["warmup"]) if spec.get("warmup") else None
    return cosine_schedule(steps, warmup=spec["warmup"], final=spec["final"])


def _train(trial: Trial, device):
    """The training run of ``trial`` and its target callback (None without a target)."""
    task = _task(trial.task)
    callbacks = []
    schedule = _schedule(trial.schedule, trial.steps)
    if trial.anneal_steps is not None:
        watch = AnnealAtTarget(
            task,
            trial.target_train_loss,
            trial.anneal_steps,
            every=trial.check_every,
            schedule=schedule,
            steps=trial.steps,
        )
        callbacks, schedule = [watch], watch.schedule
    elif trial.target_train_loss is not None:
        callbacks = [TargetLoss(task, trial.target_train_loss, every=trial.check_every)]
    run = train(
        task,
        trial.optimizer,
        trial.steps,
        batch_size=trial.batch_size,
        lr=trial.lr,
        lr_schedule=schedule,
        seed=trial.seed,
        device=device,
        divergence_factor=trial.divergence_factor,
        callbacks=callbacks,
        record_every=trial.steps,  # only the last step's row: the loop runs bare
        progress=False,
        **resolve_hparams(trial.hparams, trial.steps),
    )
    return run, (callbacks[0] if callbacks else None)


def _measure(row: dict, run, names, measures: Mapping | None) -> None:
    """The named measurements of ``run``'s model, written into ``row``."""
    for name in names:
        fn = (measures or {}).get(name)
        if fn is None:
            raise KeyError(f"measurement {name!r} was not passed to the trial")
        try:
            values = fn(run.model, run.task)
        except Exception as e:
            raise RuntimeError(f"measurement {name!r} failed: {type(e).__name__}: {e}") from e
        if not isinstance(values, Mapping):
            raise TypeError(f"measurement {name!r} returned {type(values).__name__}")
        for k, v in values.items():
            if str(k) in BASE_COLUMNS or str(k) in TAIL_COLUMNS:
                raise ValueError(f"measurement {name!r} returned a reserved column {k!r}")
            row[str(k)] = float(v)


def run_trial(trial: Trial, measures: Mapping | None = None, worker: str = "serial") -> dict:
    """Run one trial (a :class:`Trial` from :meth:`SweepConfig.trials`) and return its row.

    ``measures`` maps the trial's measurement names to their callables (the runner looks them
    up in :data:`~analysis_lib.sweep.MEASUREMENTS`); ``worker`` is written to the row.

    Args:
        trial: the trial.
        measures: a mapping ``measurement name -> callable`` (None: none; a trial that names a
            measurement missing here ends with status ``error``).
        worker: the ``worker`` column's value.

    Returns:
        The row (:meth:`Trial.row`) filled in: ``status`` ``ok``, ``diverged`` or ``error`` (an
        exception in training or a measurement is caught and its message written, never raised),
        the metrics, the measurement columns, ``seconds``, ``worker``, ``device`` and
        ``version``.
    """
    start = time.perf_counter()
    device = default_device()
    row = trial.row()
    with one_torch_thread():
        try:
            run, watch = _train(trial, device)
            row["steps_taken"] = run.steps
            if isinstance(watch, AnnealAtTarget):
                row["target_reached"] = watch.started is not None
                if watch.started is not None:
                    row["anneal_started"] = float(watch.started)
                row["final_lr"] = float(run.history["lr"].iloc[-1])
            elif watch is not None:
                row["target_reached"] = run.stopped_at is not None
            if run.diverged:
                row["status"] = "diverged"
                row["message"] = f"at step {run.diverged_at}: {run.reason}"
            else:
                for split in ("train", "val", "test"):
                    for metric, value in run.evaluate(split).items():
                        row[f"{split}_{metric}"] = float(value)
                _measure(row, run, trial.measurements, measures)
                if not all(math.isfinite(row[f"{s}_loss"]) for s in ("train", "val", "test")):
                    row["status"], row["message"] = "diverged", "non-finite loss at evaluation"
        except Exception as e:
            row["status"] = "error"
            row["message"] = f"{type(e).__name__}: {e}"
    row["seconds"] = time.perf_counter() - start
    row["worker"] = worker
    row["device"] = device.type
    row["version"] = __version__
    return row
