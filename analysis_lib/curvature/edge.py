"""Edge-of-stability experiments: the squared-error version of a classification task (the
setting in which progressive sharpening is strongest, Cohen et al. 2021) and full-batch
training with the sharpness tracked against the optimizer's stability threshold.

Used as::

    from analysis_lib.curvature.edge import one_hot_mse, sharpness_run

    task = one_hot_mse(tasks.digits(hidden=(32, 32)))
    run = sharpness_run(task, "sgd", lr=2.0, steps=2000, every=10)
    run.measurements[["step", "sharpness", "threshold_gd"]]
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .._checks import check_int
from ..problems.tasks import Task
from ..training import Run, train
from .tracking import SharpnessCallback

__all__ = ["one_hot_mse", "sharpness_run"]


def one_hot_mse(task: Task) -> Task:
    """``task`` with the same splits and model factory, its class labels replaced by one-hot
    float targets and its loss by the mean squared error to them,
    ``mean_{i,c} (f_c(x_i) - [y_i = c])^2``; named ``"<name>-mse"``. The targets take the dtype of
    the inputs and live on their device.

    Args:
        task: a classification task with the cross-entropy loss and ``num_classes``.

    Returns:
        A new :class:`~analysis_lib.problems.tasks.Task` (``task`` is unchanged).

    Raises:
        TypeError: ``task`` is not a ``Task``.
        ValueError: ``task`` is not a cross-entropy classification task with ``num_classes``.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be an analysis_lib Task, got {type(task).__name__}")
    if task.loss != "cross_entropy" or task.num_classes is None:
        raise ValueError(
            f"Invalid task: {task.name!r} has loss {task.loss!r} (expected a classification "
            "task with the cross-entropy loss and num_classes)"
        )

    def one_hot(y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, task.num_classes).to(task.x_train.dtype)

    return dataclasses.replace(
        task,
        name=f"{task.name}-mse",
        loss="mse",
        label_smoothing=0.0,
        y_train=one_hot(task.y_train),
        y_val=one_hot(task.y_val),
        y_test=one_hot(task.y_test),
    )


def sharpness_run(
    task: Task,
    optimizer: str,
    lr: float,
    steps: int,
    *,
    every: int = 10,
    seed: int = 0,
    device=None,
    **hparams,
) -> Run:
    """Full-batch training (:func:`~analysis_lib.training.train` with no ``batch_size``) of
    ``optimizer`` at learning rate ``lr`` for ``steps`` steps, with a
    :class:`~analysis_lib.curvature.SharpnessCallback` on the whole training split every
    ``every`` steps (seeded with ``seed``, as are the model and the run): ``run.measurements``
    holds ``sharpness``, for the Adam family ``preconditioned_sharpness``, and the stability
    thresholds at ``lr``. Labelled ``"<optimizer>, lr=<lr>"``; ``hparams`` go to the optimizer.

    Args:
        task: the task to train on (see :func:`one_hot_mse` for an MSE version).
        optimizer: the optimizer's name, as :func:`~analysis_lib.training.train` takes it.
        lr: the learning rate.
        steps: the number of full-batch steps.
        every: measure every ``every`` steps, an integer >= 1 (default 10).
        seed: seeds the model, the run and the sharpness measurements (default 0).
        device: where to train; None: as :func:`~analysis_lib.training.train` chooses.
        **hparams: further optimizer hyperparameters.

    Returns:
        The :class:`~analysis_lib.training.Run`.

    Raises:
        ValueError: ``every`` is not an integer >= 1, or an argument that
            :func:`~analysis_lib.training.train` refuses.
    """
    every = check_int("every", every, 1)
    tracker = SharpnessCallback(task.loss_fn, task.data("train"), every=every, seed=seed)
    return train(task, optimizer, steps=steps, lr=lr, callbacks=[tracker], seed=seed,
                 device=device, progress=False, label=f"{optimizer}, lr={lr:g}", **hparams)  # fmt: skip
