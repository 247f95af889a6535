"""What a run records: :class:`Row`, one row of ``run.history`` (its fields, in order, are the
history's columns and the columns of a checkpoint's records: the one definition of both);
:class:`Recorder`, the rows, the callbacks' measurements (checked before anything of a step is
recorded), the first loss and the callbacks' seconds, saved in and restored from checkpoints;
:class:`Outcome`, where a run stands. Private to the package: the loop's helper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .callbacks import Callback, StopTraining

__all__ = ["Outcome", "Recorder", "Row"]


class Row(NamedTuple):
    """One row of ``run.history`` (see :class:`~analysis_lib.training.Run`); a checkpoint
    stores rows in this order (:data:`analysis_lib.training.checkpoint.RECORD_COLUMNS`)."""

    step: int
    loss: float
    accuracy: float  # NaN for a task without accuracy (the column is then dropped)
    grad_norm: float
    update_norm: float  # NaN when the step was not taken (divergence) or not measured
    lr: float


def _name(cb) -> str:
    return getattr(cb, "name", type(cb).__name__)


class Recorder:
    """What a run records: the history rows, the callbacks' measurements (one dict per step at
    which some ran), the first step's loss (the divergence reference) and each callback's
    seconds. It is saved in and restored from checkpoints."""

    def __init__(self, callbacks: Sequence[Callback], classify: bool) -> None:
        self.rows: list[Row] = []
        self.measurements: list[dict[str, float]] = []
        self.first_loss: float | None = None
        self.callback_seconds = {_name(cb): 0.0 for cb in callbacks}
        self.classify = classify

    def measure(self, due, step: int, model, opt, batch) -> StopTraining | None:
        """Call the callbacks ``due`` at ``step`` and record their numbers as one row; the
        first :class:`StopTraining` raised (its numbers recorded too) is returned.

        Args:
            due: the callbacks to call, in order.
            step: the step just taken.
            model: the model trained.
            opt: its optimizer.
            batch: the step's ``(inputs, targets)``.

        Returns:
            The first :class:`StopTraining` raised, or None.

        Raises:
            ValueError: a callback returned something other than a dict of names -> numbers,
                or a value that another callback of this step gave differently for its key.
        """
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
        """What a checkpoint saves of the records.

        Returns:
            A dict with ``records`` (a float64 tensor, one row per history row),
            ``measurements``, ``first_loss`` and ``callback_seconds``.
        """
        records = torch.tensor(self.rows, dtype=torch.float64)
        return {
            "records": records.reshape(len(self.rows), len(Row._fields)),
            "measurements": self.measurements,
            "first_loss": self.first_loss,
            "callback_seconds": self.callback_seconds,
        }

    def load(self, ck: dict[str, Any]) -> None:
        """Restore the records from a checkpoint's :meth:`state`.

        Args:
            ck: a dict with the keys of :meth:`state`.

        Returns:
            None.
        """
        self.rows = [Row(*r) for r in ck["records"].tolist()]
        self.measurements = ck["measurements"]
        self.first_loss = ck["first_loss"]
        self.callback_seconds.update(ck["callback_seconds"])

    def history(self) -> pd.DataFrame:
        """``run.history``: one row per recorded step.

        Returns:
            A DataFrame with the columns of ``Row`` (``accuracy`` dropped for a regression task),
            ``step`` as int64.
        """
        columns = list(Row._fields)
        values = np.asarray(self.rows, dtype=np.float64).reshape(len(self.rows), len(columns))
        history = pd.DataFrame(values, columns=columns)
        history["step"] = history["step"].astype(np.int64)
        return history if self.classify else history.drop(columns="accuracy")

    def measurements_frame(self) -> pd.DataFrame:
        """``run.measurements``: one row per step at which some callback ran.

        Returns:
            A DataFrame with ``step`` (int64) and the callbacks' columns (empty if none ran).
        """
        frame = pd.DataFrame(self.measurements)
        if len(frame):
            frame["step"] = frame["step"].astype(np.int64)
        return frame


@dataclass
class Outcome:
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
