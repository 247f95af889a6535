"""scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn: nothing is downloaded)."""

from __future__ import annotations

import torch


def digits_tensors(
    test_fraction: float = 0.25, seed: int = 0, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of the digits, split by ``seed``: the train and test
    splits of :func:`analysis_lib.problems.tasks.digits` with no validation split (constant
    pixels dropped, the rest standardised with the training split's statistics)."""
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
