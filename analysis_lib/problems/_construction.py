"""What the task constructors and the model builders share: the argument checks (hidden widths,
activations, dtypes), the seeded train / validation / test split and the record of the arguments
a constructor was called with (:func:`recorded`, part of a training checkpoint's identity).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .._checks import check_float, check_int

__all__ = [
    "ACTIVATIONS",
    "check_activation",
    "check_dtype",
    "check_hidden",
    "recorded",
    "split_indices",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def split_indices(n: int, fractions: tuple[float, float], seed: int):
    """Seeded (train, val, test) index arrays with val/test the given fractions of n.

    Args:
        n: the number of samples.
        fractions: ``(val_fraction, test_fraction)``, each in [0, 1), summing to < 1.
        seed: the seed of the permutation (numpy's ``default_rng``).

    Returns:
        Three disjoint integer arrays covering ``range(n)``; val and test sizes are rounded.

    Raises:
        ValueError: a fraction out of range, or the two summing to 1 or more.

    Example:
        >>> [len(a) for a in split_indices(10, (0.2, 0.1), seed=0)]
        [7, 2, 1]
    """
    val_fraction = check_float("val_fraction", fractions[0], 0.0, 1.0, high_open=True)
    test_fraction = check_float("test_fraction", fractions[1], 0.0, 1.0, high_open=True)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves "
            "no training data (expected < 1)"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def check_hidden(name: str, hidden) -> tuple[int, ...]:
    """Hidden-layer widths: a sequence (possibly empty) of integers >= 1.

    Args:
        name: the argument's name, for the error.
        hidden: the value to check.

    Returns:
        The widths as a tuple of ints.

    Raises:
        ValueError: not a sequence (a string is refused), or a width not an integer >= 1.

    Example:
        >>> check_hidden("hidden", [64, 32])
        (64, 32)
    """
    if isinstance(hidden, str) or not isinstance(hidden, Sequence | np.ndarray):
        raise ValueError(f"Invalid {name}: {hidden!r} (expected a sequence of integers >= 1)")
    return tuple(check_int(f"{name}[{i}]", h) for i, h in enumerate(hidden))


def check_dtype(dtype) -> None:
    """Refuse anything but a real floating-point ``torch.dtype``.

    Args:
        dtype: the value to check.

    Returns:
        None.

    Raises:
        ValueError: ``dtype`` not a real floating-point ``torch.dtype``.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.is_complex:
        raise ValueError(f"Invalid dtype: {dtype!r} (expected a real floating-point torch.dtype)")


def check_activation(activation) -> None:
    """Refuse an activation name that :data:`ACTIVATIONS` does not know.

    Args:
        activation: the value to check.

    Returns:
        None.

    Raises:
        ValueError: ``activation`` not a key of :data:`ACTIVATIONS`.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Invalid activation: {activation!r} (expected one of {sorted(ACTIVATIONS)})"
        )


def recorded(constructor):
    """Record in ``task.arguments`` the arguments (defaults included, ``device`` left out) that
    the task constructor was called with.

    Args:
        constructor: a task constructor (a function returning a :class:`Task`).

    Returns:
        The wrapped constructor, with the same signature and docstring.
    """
    signature = inspect.signature(constructor)

    @functools.wraps(constructor)
    def construct(*args, **kwargs):
        task = constructor(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if k != "device"}
        task.arguments = {"constructor": constructor.__name__, **arguments}
        return task

    return construct
