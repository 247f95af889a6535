"""Reference optimizers (AdamNX, Ada2MS) and loss-landscape / curvature / sharpness probes.

Submodules are imported on first use (``analysis_lib.optim``, ``analysis_lib.plots``, ...), so
``import analysis_lib`` stays cheap.
"""

from __future__ import annotations

import importlib
import os
import random

import numpy as np
import torch

from ._checks import NonFiniteError, check_int

__version__ = "0.1.0"
__all__ = [
    "NonFiniteError",
    "__version__",
    "cluster",
    "curvature",
    "device",
    "io",
    "landscape",
    "optim",
    "plots",
    "problems",
    "progress_bar",
    "progress_disabled",
    "quick_mode",
    "rescaling",
    "seed_everything",
    "sharpness",
    "stats",
    "sweep",
    "training",
    "trajectory",
]

_SUBMODULES = {
    "cluster",
    "curvature",
    "io",
    "landscape",
    "optim",
    "plots",
    "problems",
    "rescaling",
    "sharpness",
    "stats",
    "sweep",
    "training",
    "trajectory",
}


def device() -> torch.device:
    """CUDA when it is available, else the CPU.

    Returns:
        ``torch.device("cuda")`` when ``torch.cuda.is_available()``, else ``torch.device("cpu")``.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators (CPU and CUDA) with ``seed`` and
    return a fresh ``torch.Generator`` seeded with it, for code that takes one explicitly.

    Args:
        seed: the seed, an integer >= 0 (NumPy gets it modulo ``2**32``).

    Returns:
        A new CPU ``torch.Generator`` seeded with ``seed``.

    Raises:
        ValueError: ``seed`` is not an integer >= 0; the message names ``seed``.

    Example:
        >>> import torch
        >>> g = seed_everything(0)
        >>> torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=seed_everything(0)))
        True
    """
    seed = check_int("seed", seed, 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global generator is the point)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def quick_mode() -> bool:
    """True when the environment asks for the small, fast settings (``QUICK=1``).

    Returns:
        False when ``QUICK`` is unset, empty, ``0``, ``false`` or ``no`` (any case), else True.
    """
    return os.environ.get("QUICK", "0").strip().lower() not in ("", "0", "false", "no")


def progress_disabled() -> bool:
    """True when ``TQDM_DISABLE`` asks for no progress bars. (tqdm's own reading of the variable
    does not reach its notebook widgets, so the library's bars pass it on explicitly.)

    Returns:
        False when ``TQDM_DISABLE`` is unset, empty, ``0``, ``false`` or ``no`` (any case), else
        True.
    """
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def progress_bar(iterable=None, *, progress: bool | None = True, **kwargs):
    """The library's progress bar: ``tqdm.auto.tqdm(iterable, **kwargs)``, not left on screen
    when done (``leave=False`` unless given), silenced by ``progress=False`` and by
    ``TQDM_DISABLE`` (see :func:`progress_disabled`); ``progress=None`` or ``True`` shows it
    otherwise.

    Args:
        iterable: what to iterate over, or None for a bar updated by hand.
        progress: False hides the bar; True or None show it (unless ``TQDM_DISABLE`` is set).
        **kwargs: passed on to ``tqdm`` (``total``, ``desc``, ``leave``, ...).

    Returns:
        The ``tqdm`` bar (a disabled one when hidden), iterable like ``iterable``.
    """
    from tqdm.auto import tqdm

    disable = progress_disabled() or (progress is not None and not progress)
    return tqdm(iterable, **{"leave": False, **kwargs}, disable=disable)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
