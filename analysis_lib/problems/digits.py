"""scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn: nothing is downloaded): the
data of the digits task (:func:`digits_arrays`, split and standardised for an MLP or a CNN) and
its train / test tensors without a validation split (:func:`digits_tensors`)."""

from __future__ import annotations

import numpy as np
import torch

from ._construction import split_indices

__all__ = ["digits_arrays", "digits_tensors"]


def digits_arrays(
    model: str, fractions: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(inputs, labels, (train, val, test) indices) of the digits, split by ``seed`` with the
    validation and test ``fractions`` (:func:`~._construction.split_indices`), standardised with
    the training split's statistics: for ``model="mlp"`` per pixel, the pixels constant over
    the training split dropped, as (n, pixels); for ``"cnn"`` with the pixel mean and standard
    deviation, as (n, 1, 8, 8).

    Args:
        model: ``"mlp"`` (per-pixel standardisation, flat) or anything else (``"cnn"``).
        fractions: ``(val_fraction, test_fraction)``, each in [0, 1), summing to < 1.
        seed: the seed of the split.

    Returns:
        ``(x, y, (train, val, test))``: float64 inputs, int labels and index arrays.

    Raises:
        ValueError: ``fractions`` out of range.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    train, val, test = split_indices(len(y), fractions, seed)
    if model == "mlp":
        mean, std = x[train].mean(0), x[train].std(0)
        keep = std > 0
        x = (x[:, keep] - mean[keep]) / std[keep]
    else:
        x = ((x - x[train].mean()) / x[train].std()).reshape(-1, 1, 8, 8)
    return x, y, (train, val, test)


def digits_tensors(
    test_fraction: float = 0.25, seed: int = 0, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of the digits, split by ``seed``: the train and test
    splits of :func:`analysis_lib.problems.tasks.digits` with no validation split (constant
    pixels dropped, the rest standardised with the training split's statistics).

    Args:
        test_fraction: the fraction of the samples in the test split, in [0, 1).
        seed: the seed of the split (>= 0).
        device: where the tensors are put (default: the CPU).
        dtype: the inputs' floating dtype.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: inputs of shape (n, pixels), int64 labels.

    Raises:
        ValueError: an argument out of range, naming it.
    """
    from .tasks import digits

    task = digits(
        model="mlp",
        val_fraction=0.0,
        test_fraction=test_fraction,
        seed=seed,
        device=device,
        dtype=dtype,
    )
    return task.x_train, task.y_train, task.x_test, task.y_test
