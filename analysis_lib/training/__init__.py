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

The package, one unit per module (everything public is importable from here):

* :mod:`.loop`: :func:`train`, its result :class:`Run`, :func:`runs_frame`;
* :mod:`.callbacks`: :class:`Callback` (the contract a callback follows), :class:`StopTraining`,
  :class:`TargetLoss`, :class:`AnnealAtTarget`, :class:`TransitionCallback`,
  :class:`EvaluateCallback`;
* :mod:`.lr`: :class:`cosine_schedule`, :func:`lr_sweep` and :class:`LrSweep`; the rule that
  chooses the rate, :func:`choose_lr`, lives in :mod:`analysis_lib.stats`;
* :mod:`.summaries`: :func:`tail_statistic`, :func:`run_summary`, :func:`record_gradients` and
  :class:`GradientHistory`;
* :mod:`.checkpoint`: the checkpoint file (:func:`save_checkpoint`, :func:`load_checkpoint`,
  :class:`CheckpointError`), the run's identity and the checks of a file's consistency;
* private to the loop: ``_settings`` (the arguments of :func:`train`, checked) and ``_record``
  (the history rows and measurements a run records).
"""

from __future__ import annotations

from .callbacks import (
    AnnealAtTarget,
    Callback,
    EvaluateCallback,
    StopTraining,
    TargetLoss,
    TransitionCallback,
)
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .loop import Run, runs_frame, train
from .lr import LrSweep, choose_lr, cosine_schedule, lr_sweep
from .summaries import GradientHistory, record_gradients, run_summary, tail_statistic

__all__ = [
    "AnnealAtTarget",
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
