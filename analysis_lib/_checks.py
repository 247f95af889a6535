"""Argument checks shared by the modules. Each raises a ValueError that names the argument and
its value, before any work starts.

The rules are the same everywhere: an integer argument takes Python's or NumPy's integers (never
a bool, never a float such as ``2.0``); a real argument takes Python's or NumPy's integers and
floats (never a bool, a string or a tensor) and must be finite unless the caller allows
infinity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` as an int when it is an integer (Python's or NumPy's, not a bool) >= ``low``."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ValueError(f"Invalid {name}: {value!r} (expected an integer >= {low})")
    return int(value)


def _bounds_text(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a float when it is a real number (Python's or NumPy's int or float, not a
    bool), not NaN, finite (unless ``allow_inf``), and within ``[low, high]`` (an end excluded
    when ``low_open`` / ``high_open``)."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if ok:
        x = float(value)
        ok = not math.isnan(x) and (allow_inf or math.isfinite(x))
        if ok and low is not None:
            ok = x > low if low_open else x >= low
        if ok and high is not None:
            ok = x < high if high_open else x <= high
    if not ok:
        kind = "a number" if allow_inf else "a finite number"
        bounds = _bounds_text(low, high, low_open, high_open)
        raise ValueError(
            f"Invalid {name}: {value!r} (expected {kind}{' ' + bounds if bounds else ''})"
        )
    return x


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float when it is a finite real number > 0 (see :func:`check_float`)."""
    return check_float(name, value, 0.0, low_open=True)


def check_betas(name: str, value: Any) -> tuple[float, float]:
    """``value`` as a pair of floats when it is a tuple or list of two real numbers, each
    finite, >= 0 and < 1 (the decays of an Adam-family optimizer; see :func:`check_float`)."""
    if isinstance(value, tuple | list) and len(value) == 2:
        try:
            return tuple(check_float(name, b, 0.0, 1.0, high_open=True) for b in value)
        except ValueError:
            pass
    raise ValueError(f"Invalid {name}: {value!r} (expected two finite numbers >= 0 and < 1)")


def check_grid(
    name: str, values: Any, low: float | None = None, *, low_open: bool = False
) -> np.ndarray:
    """``values`` as a float64 array when they are a non-empty 1-D sequence (or array, CPU
    tensor) of real numbers, finite and >= ``low`` (> ``low`` when ``low_open``): the one check
    of a grid of points (loss surfaces, spectral densities, learning rates). Booleans, strings
    and complex numbers are refused."""
    arr = None
    if not isinstance(values, str | bytes):
        try:
            arr = np.asarray(values)
        except (TypeError, ValueError, RuntimeError):
            arr = None
    ok = arr is not None and arr.dtype.kind in "iuf" and arr.ndim == 1 and arr.size > 0
    if ok:
        arr = arr.astype(np.float64)
        ok = bool(np.isfinite(arr).all())
        if ok and low is not None:
            ok = bool((arr > low).all() if low_open else (arr >= low).all())
    if not ok:
        shown = f"an array of shape {arr.shape}" if isinstance(values, np.ndarray) else repr(values)
        bounds = _bounds_text(low, None, low_open, False)
        raise ValueError(
            f"Invalid {name}: {shown} (expected a non-empty 1-D array of finite numbers"
            f"{' ' + bounds if bounds else ''})"
        )
    return arr


# -- non-finite numbers and reduced precision ----------------------------------------------------
class NonFiniteError(ValueError):
    """A number a computation needs is NaN or infinite: an input sample, a parameter, the loss,
    every perturbed loss of a measure, a matrix-vector product. The message says which and, where
    it can be told, why.

    A ``ValueError`` (not an ``ArithmeticError``): the cause is what the caller handed in (a
    model, data or a radius that the computation cannot use), so code that catches bad input
    with ``except ValueError`` catches it too."""


#: The dtypes in which the probes (curvature, sharpness) compute. In bfloat16 (8 significant
#: bits) and float16 (11) the rounding of every forward and backward pass is far larger than
#: the differences the probes measure; such models are refused (evaluate a float32 copy).
COMPUTE_DTYPES = (torch.float32, torch.float64)


def check_compute_dtype(name: str, dtype: torch.dtype, what: str, why: str) -> None:
    """Refuse a dtype other than float32 / float64 for the computation ``what``, saying ``why``
    and what to do instead: the one rule of the probes on reduced precision."""
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"Invalid {name}: dtype {dtype}; {what} is computed in float32 or float64 only "
            f"({why}). Evaluate a float32 copy: "
            "copy.deepcopy(model).float(), with floating-point inputs cast to float32"
        )


def check_representable(name: str, value: float, dtype: torch.dtype, note: str = "") -> float:
    """``value`` (a number > 0) when it is a normal number of ``dtype``: neither overflowing to
    inf nor underflowing to zero (or a subnormal) there; else a ValueError naming ``name``."""
    info = torch.finfo(dtype)
    if not info.tiny <= abs(value) <= info.max:
        raise ValueError(
            f"Invalid {name}: {value!r}{note} (not representable in the model's dtype {dtype}: "
            f"expected a magnitude in [{info.tiny:.3g}, {info.max:.3g}])"
        )
    return value


def _tensors_of(value: Any) -> tuple:
    return value if isinstance(value, tuple | list) else (value,)


def check_finite_batches(batches: Any, name: str = "data") -> None:
    """Refuse ``(inputs, targets, ...)`` batches (e.g. :class:`analysis_lib._evaluation.Batch`)
    whose floating-point tensors hold NaN, with a :class:`NonFiniteError` naming ``name``, the
    batch, inputs or targets, and the first sample. (Infinite values are let through: a mask of
    -inf can be a legitimate input.)"""
    for i, batch in enumerate(batches):
        for what, value in (("inputs", batch[0]), ("targets", batch[1])):
            for t in _tensors_of(value):
                if not (t.is_floating_point() or t.is_complex()):
                    continue
                bad = torch.isnan(t)
                if bool(bad.any()):
                    sample = int(bad.reshape(bad.shape[0], -1).any(dim=1).nonzero()[0, 0])
                    raise NonFiniteError(
                        f"Invalid {name}: the {what} of batch {i} hold NaN "
                        f"(sample {sample} of the batch)"
                    )
