"""The generalisation gaps of a table of trained models: the error gap (test error minus
training error, the literature's "generalisation gap") and the loss gap, side by side.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["generalization_gaps"]


def generalization_gaps(
    frame: pd.DataFrame, train: str = "train", test: str = "test"
) -> pd.DataFrame:
    """``frame`` with two columns added: ``error_gap``, the test error minus the training error
    (``(1 - test_accuracy) - (1 - train_accuracy)``, the literature's generalisation gap), and
    ``loss_gap``, the test loss minus the training loss. Read from the columns
    ``{train}_accuracy``, ``{test}_accuracy``, ``{train}_loss`` and ``{test}_loss`` (a sweep's
    trials table has them); ``test="val"`` measures against the validation split.

    Args:
        frame: a DataFrame with the four columns named above; it is not modified.
        train: the prefix of the training columns (default ``"train"``).
        test: the prefix of the columns measured against (default ``"test"``).

    Returns:
        A copy of ``frame`` with the columns ``error_gap`` and ``loss_gap`` added.

    Raises:
        ValueError: ``frame`` not a DataFrame, or lacking one of the four columns.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame(dict(train_accuracy=[1.0], test_accuracy=[0.9],
        ...                       train_loss=[0.01], test_loss=[0.31]))
        >>> generalization_gaps(f)[["error_gap", "loss_gap"]].round(6).to_dict("records")
        [{'error_gap': 0.1, 'loss_gap': 0.3}]
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"Invalid frame: {type(frame).__name__} (expected a DataFrame)")
    columns = [f"{train}_accuracy", f"{test}_accuracy", f"{train}_loss", f"{test}_loss"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"Invalid frame: no columns {missing} (needed for the gaps)")
    out = frame.copy()
    out["error_gap"] = frame[f"{train}_accuracy"] - frame[f"{test}_accuracy"]
    out["loss_gap"] = frame[f"{test}_loss"] - frame[f"{train}_loss"]
    return out
