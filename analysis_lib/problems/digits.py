"""scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn: nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits


def digits_tensors(
    test_fraction: float = 0.25, seed: int = 0, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of the digits, split by ``seed``.

    Pixels that are constant over the training split (the always-blank corners) are dropped, and
    the rest standardised with the training split's mean and standard deviation, so no input
    coordinate has a gradient that is identically zero.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"Invalid test_fraction: {test_fraction!r} (expected a number in (0, 1))")
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(test_fraction * len(y))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0)
    keep = std > 0
    x = (x[:, keep] - mean[keep]) / std[keep]

    def as_tensor(a, dt):
        return torch.as_tensor(a, dtype=dt, device=device)

    return (as_tensor(x[train], dtype), as_tensor(y[train], torch.long),
            as_tensor(x[test], dtype), as_tensor(y[test], torch.long))
