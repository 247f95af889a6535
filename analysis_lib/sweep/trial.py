"""One trial: a pure function of its configuration to a row of ``trials.csv``.

A trial trains a fresh model (:func:`analysis_lib.training.train`, seeded by the trial's seed:
initialisation and batch order), evaluates it on the three splits and takes the configured
measurements. It runs on one torch thread wherever it runs (restoring the caller's setting
afterwards), so that its numbers do not depend on the machine's core count or on how many
trials share it: the same trial gives the same row serially, on a LocalCluster or on a remote
cluster with the same library versions and device type. Parallelism comes from running trials
side by side. Nothing a trial does raises: an exception becomes ``status="error"`` with its
message, a divergence ``status="diverged"``.

A trial whose configuration carries ``target_train_loss`` (a budget with a target, see
:mod:`analysis_lib.sweep.config`) is stopped at the first check (every ``check_every`` steps)
where the mean loss over the whole training split is at most the target
(:class:`~analysis_lib.training.TargetLoss`): its row has ``steps_taken`` (the step at which it
stopped, or the full budget), ``target_train_loss`` and ``target_reached`` (True or False; a
run that never reaches the target is trained, evaluated and measured at the end of its budget
like any other, and says so here).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping

import torch

from .. import __version__
from .. import device as default_device
from ..training import TargetLoss, cosine_schedule, train
from .config import make_task, resolve_hparams

__all__ = [
    "BASE_COLUMNS",
    "FINAL_STATUSES",
    "STATUSES",
    "TAIL_COLUMNS",
    "base_row",
    "run_trial",
]

#: ``ok``: trained and measured; ``diverged``: stopped by the divergence check (no metrics);
#: ``error``: raised (``message`` says what). ``ok`` and ``diverged`` are final: a resumed
#: sweep skips them and reruns errors (which may have been a lost machine).
STATUSES = ("ok", "diverged", "error")
FINAL_STATUSES = ("ok", "diverged")
#: Columns before the measurements, in order.
BASE_COLUMNS = (
    "key",
    "label",
    "optimizer",
    "hparams",
    "lr",
    "seed",
    "steps",
    "batch_size",
    "schedule",
    "task",
    "status",
    "message",
    "steps_taken",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
)
#: Columns after the measurements: they describe where and how long a trial ran, and are the
#: only ones that may differ between two runs of the same trial.
TAIL_COLUMNS = ("seconds", "worker", "device", "version")

_TASK_CACHE: dict[str, object] = {}  # per process: workers build each task once


def _task(spec: Mapping) -> object:
    key = json.dumps(spec, sort_keys=True)
    if key not in _TASK_CACHE:
        if len(_TASK_CACHE) >= 4:
            _TASK_CACHE.clear()
        _TASK_CACHE[key] = make_task(spec)
    return _TASK_CACHE[key]


def _schedule(spec: Mapping, steps: int):
    if spec["kind"] == "constant":
        return None
    return cosine_schedule(steps, warmup=spec["warmup"], final=spec["final"])


def _target_callbacks(trial: Mapping, task) -> list:
    """``[TargetLoss(...)]`` for a trial with a target training loss, else ``[]``."""
    if "target_train_loss" not in trial:
        return []
    return [TargetLoss(task, trial["target_train_loss"], every=trial["check_every"])]


def base_row(trial: Mapping, status: str = "ok", message: str = "") -> dict:
    """The configuration columns of a trial's row, with ``status`` and ``message`` and empty
    metrics (what a trial that never reported looks like)."""
    nan = float("nan")
    return {
        "key": trial["key"],
        "label": trial["label"],
        "optimizer": trial["optimizer"],
        "hparams": json.dumps(trial["hparams"], sort_keys=True),
        "lr": trial["lr"],
        "seed": trial["seed"],
        "steps": trial["steps"],
        "batch_size": trial["batch_size"],
        "schedule": json.dumps(trial["schedule"], sort_keys=True),
        "task": json.dumps(trial["task"], sort_keys=True),
        "status": status,
        "message": message,
        "steps_taken": 0,
        **(
            {"target_train_loss": trial["target_train_loss"], "target_reached": False}
            if "target_train_loss" in trial
            else {}
        ),
        **{f"{s}_{m}": nan for s in ("train", "val", "test") for m in ("loss", "accuracy")},
    }


def run_trial(trial: Mapping, measures: Mapping | None = None, worker: str = "serial") -> dict:
    """Run one trial (a dict from :meth:`SweepConfig.trials`) and return its row.

    ``measures`` maps the trial's measurement names to their callables (the runner looks them
    up in :data:`~analysis_lib.sweep.MEASUREMENTS`); ``worker`` is written to the row.
    """
    start = time.perf_counter()
    device = default_device()
    row = base_row(trial)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        task = _task(trial["task"])
        callbacks = _target_callbacks(trial, task)
        run = train(
            task,
            trial["optimizer"],
            trial["steps"],
            batch_size=trial["batch_size"],
            lr=trial["lr"],
            lr_schedule=_schedule(trial["schedule"], trial["steps"]),
            seed=trial["seed"],
            device=device,
            divergence_factor=trial["divergence_factor"],
            callbacks=callbacks,
            record_every=trial["steps"],  # only the last step's row: the loop runs bare
            progress=False,
            **resolve_hparams(trial["hparams"], trial["steps"]),
        )
        row["steps_taken"] = run.steps
        if callbacks:
            row["target_reached"] = run.stopped_at is not None
        if run.diverged:
            row["status"], row["message"] = "diverged", f"at step {run.diverged_at}: {run.reason}"
        else:
            for split in ("train", "val", "test"):
                for metric, value in run.evaluate(split).items():
                    row[f"{split}_{metric}"] = float(value)
            for name in trial["measurements"]:
                fn = (measures or {}).get(name)
                if fn is None:
                    raise KeyError(f"measurement {name!r} was not passed to the trial")
                try:
                    values = fn(run.model, run.task)
                except Exception as e:
                    raise RuntimeError(
                        f"measurement {name!r} failed: {type(e).__name__}: {e}"
                    ) from e
                if not isinstance(values, Mapping):
                    raise TypeError(f"measurement {name!r} returned {type(values).__name__}")
                for k, v in values.items():
                    if str(k) in BASE_COLUMNS or str(k) in TAIL_COLUMNS:
                        raise ValueError(f"measurement {name!r} returned a reserved column {k!r}")
                    row[str(k)] = float(v)
            if not all(math.isfinite(row[f"{s}_loss"]) for s in ("train", "val", "test")):
                row["status"], row["message"] = "diverged", "non-finite loss at evaluation"
    except Exception as e:
        row["status"] = "error"
        row["message"] = f"{type(e).__name__}: {e}"
    finally:
        torch.set_num_threads(threads)
    row["seconds"] = time.perf_counter() - start
    row["worker"] = worker
    row["device"] = device.type
    row["version"] = __version__
    return row
