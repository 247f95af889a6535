"""The cache of loss-surface grids: their keys and their entries in :func:`analysis_lib.io.data_dir`.

Owns what a grid's cache key covers (a hash of the model's architecture, parameters and buffers,
of the directions and the data, the identity of the loss and accuracy functions, the grid) and
the :class:`Entry` of a grid: read through :func:`analysis_lib.io.load_entry` before any work,
written through :func:`analysis_lib.io.store_entry` after it, and beside it the path of the
partial file that an interrupted computation resumes from (:mod:`.execution`). The flow is one
way: the surface reads the entry, computes what is missing, stores it; nothing here calls back.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import io
from .directions import parameters
from .execution import Job
from .grid import Grid, SurfaceSettings


# -- cache keys ----------------------------------------------------------------------------------
def _hash_tensors(h, tensors: Mapping[str, Tensor]) -> None:
    for k, t in tensors.items():
        t = torch.as_tensor(t).detach().cpu().contiguous().reshape(-1)
        h.update(json.dumps([k, str(t.dtype), list(t.shape)]).encode())
        h.update(t.view(torch.uint8).numpy())  # the buffer itself: no copy


def _digest(fill) -> str:
    h = hashlib.sha256()
    fill(h)
    return h.hexdigest()[:32]


def _fn_identity(fn, what: str):
    """The identity of ``fn`` in a cache key (:func:`analysis_lib.io.callable_identity`: code,
    closure, partial arguments, the object of a bound method); a clear error when it cannot be
    identified."""

    try:
        return io.callable_identity(fn, what)
    except io.UnidentifiableError as exc:
        raise ValueError(
            f"Invalid {what} for a cached grid: {exc}; pass cache_key='...' naming the loss "
            "and accuracy functions in the cache key instead"
        ) from exc


def cache_config(job: Job, grid: Grid, settings: SurfaceSettings) -> dict:
    """What the cache key of a grid covers: everything that changes its numbers (not the
    chunk size, the progress bar or where the chunks run).

    Args:
        job: the checked evaluation job (model, directions, data, loss and accuracy functions).
        grid: the grid of coefficients.
        settings: the surface settings (``cache_key`` and ``cache_extra`` are used).

    Returns:
        A JSON-able dict: digests of the model, directions and data, the functions' identities
        (or ``{"key": cache_key}``), the grid, ``first_layer`` and ``cache_extra``.

    Raises:
        ValueError: the loss or accuracy function cannot be identified and no ``cache_key`` is
            given.
    """
    model, key = job.model, settings.cache_key

    def model_hash(h):
        h.update(repr(model).encode())
        _hash_tensors(h, parameters(model))
        _hash_tensors(h, dict(model.named_buffers()))

    def dirs_hash(h):
        for d in job.directions:
            _hash_tensors(h, d)

    def data_hash(h):
        for i, (x, y) in enumerate(job.batches):
            _hash_tensors(h, {f"x{i}": x, f"y{i}": y})

    return {
        "model": _digest(model_hash),
        "directions": _digest(dirs_hash),
        "data": _digest(data_hash),
        "loss_fn": {"key": key} if key is not None else _fn_identity(job.loss_fn, "loss_fn"),
        "accuracy_fn": (
            None
            if job.accuracy_fn is None or key is not None
            else _fn_identity(job.accuracy_fn, "accuracy_fn")
        ),
        "alphas": grid.alphas.tolist(),
        "betas": None if grid.betas is None else grid.betas.tolist(),
        "first_layer": job.first_layer,
        "extra": settings.cache_extra or {},
    }


@dataclass(frozen=True)
class Entry:
    """The cache entry of a grid: its name and key configuration, its file and the partial file
    of an interrupted computation (both paths checked to be writable as files when the entry is
    made, before any work)."""

    name: str
    config: dict
    path: Path
    partial: tuple[Path, dict]  # (path, the configuration as stored there)

    @classmethod
    def of(cls, job: Job, grid: Grid, settings: SurfaceSettings) -> Entry:
        """The entry of ``grid`` for ``job``: named ``settings.cache`` when it is a string, else
        ``landscape_1d`` / ``landscape_2d``, keyed by :func:`cache_config`.

        Args:
            job: the checked evaluation job.
            grid: the grid of coefficients.
            settings: the checked surface settings.

        Returns:
            The :class:`Entry`.

        Raises:
            ValueError: a bad cache name, a function that cannot be identified without a
                ``cache_key``, or an entry or partial path that is a directory.
        """
        cache = settings.cache
        name = cache if isinstance(cache, str) else f"landscape_{len(grid.shape)}d"
        config = cache_config(job, grid, settings)
        path = io.check_entry_path(io.cache_path(name, config))
        partial = io.check_entry_path(path.with_name(path.stem + ".partial.npz"), "partial file")
        return cls(name, config, path, (partial, json.loads(io.canonical_json(config))))

    def load(self, grid: Grid, refresh: bool) -> dict[str, np.ndarray] | None:
        """The stored arrays of this grid, or None: ``refresh`` (the finished chunks of an
        interrupted run are not trusted either), no intact entry, or one holding the arrays of
        another grid (with a warning). When it returns None, check the folder with
        :meth:`check_writable` before computing.

        Args:
            grid: the grid the arrays must fit.
            refresh: ignore (and delete the partial file of) anything stored.

        Returns:
            Array names -> NumPy arrays, or None.
        """
        if refresh:
            self.partial[0].unlink(missing_ok=True)
            return None
        arrays = io.load_entry(self.name, self.config)
        if arrays is None:
            return None
        if not grid.fits(arrays):  # intact, but not this grid's arrays
            warnings.warn(
                f"cache entry {self.path.name} holds arrays of another grid; recomputed",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        self.partial[0].unlink(missing_ok=True)
        return arrays

    def check_writable(self) -> None:
        """That the entry can be written, before the work, not after it.

        Raises:
            ValueError: the cache folder cannot be created or written to.
        """
        io.check_writable(self.path.parent, "cache folder")

    def store(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Keep the computed ``arrays``; the partial file is no longer needed.

        Args:
            arrays: the grid's arrays (names -> NumPy arrays).

        Returns:
            The arrays as stored (NumPy copies).

        Raises:
            ValueError: the arrays cannot be stored (see :func:`analysis_lib.io.save_arrays`).
        """
        stored = io.store_entry(self.name, self.config, arrays)
        self.partial[0].unlink(missing_ok=True)
        return stored
