"""Optimizers on 2-D toy problems: trajectories, fair learning-rate tuning, comparisons.

:func:`run` drives one optimizer (a name known to :func:`~analysis_lib.optim.make_optimizer`) on a
:class:`~analysis_lib.problems.toy.ToyProblem` and returns a :class:`Trajectory`: the points, the
losses, the gradient norms, the step lengths and, for adaptive methods, the per-coordinate
effective step size η/(√d + ε) of every step. A run that diverges (a non-finite value or a point
far outside the plot bounds) ends early and is flagged (``diverged``, ``stop_reason``); nothing is
raised. :func:`run_batch` evaluates a grid of learning rates as one batched run, and
:func:`tune_lr` picks the best of a grid by a stated criterion, so that :func:`compare` shows each
optimizer at its own best learning rate, which is the fair comparison.

A package by unit, each re-exported here:

* :mod:`.records`: what runs give back and how methods are named (:class:`Trajectory`,
  :class:`TuneResult`, :class:`Method`, :data:`DEFAULT_METHODS`, :func:`method_label`,
  :func:`slider_hparams`);
* :mod:`.engine`: one run and the batched grid (:func:`run`, :func:`run_batch`), with how a grid
  of learning rates runs as one optimizer;
* :mod:`.tuning`: the learning-rate grid, tuning and comparisons (:func:`lr_grid`,
  :func:`tune_lr`, :func:`compare`, :class:`Comparison`).
"""

from __future__ import annotations

from .engine import run, run_batch
from .records import (
    ADAPTIVE,
    DEFAULT_METHODS,
    STOP_REASONS,
    Method,
    Trajectory,
    TuneResult,
    method_label,
    slider_hparams,
    trajectories_frame,
)
from .tuning import Comparison, compare, lr_grid, tune_lr

__all__ = [
    "ADAPTIVE",
    "DEFAULT_METHODS",
    "STOP_REASONS",
    "Comparison",
    "Method",
    "Trajectory",
    "TuneResult",
    "compare",
    "lr_grid",
    "method_label",
    "run",
    "run_batch",
    "slider_hparams",
    "trajectories_frame",
    "tune_lr",
]
