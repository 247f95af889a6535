"""Loss surfaces, the public API: 1-D and 2-D slices of the loss around a model.

:func:`surface_1d` and :func:`surface_2d` take a model, a loss, data, directions and a grid; the
work is done by the package's units, each in its own module:

* :mod:`.evaluator`: the loss and accuracy of chunks of points (the first-layer and generic
  paths), the automatic chunk size, :func:`evaluate_points`;
* :mod:`.grid`: the grid's coordinates, the settings (:class:`SurfaceSettings`) and the result
  (:class:`LandscapeGrid`);
* :mod:`.execution`: the chunks run in this process or on a Dask client's workers, resumable
  from a partial file;
* :mod:`.cache`: the grid's cache key and entry in :func:`analysis_lib.io.data_dir`;
* :mod:`.interpolation`: the line between two models, batch norm recomputed.

The flow is one way. Everything a grid needs is checked once, here, where it enters: the grid,
the settings, then the model, the directions and the data (read once, moved to the model's
device) and the loss (:meth:`.execution.Job.checked`); the checked values are passed down and not
checked again. With a cache, the entry is read (keyed by a hash of the model, the directions, the
data, the loss and the grid), the folder checked before any work, the missing chunks computed
(resuming an interrupted computation from its partial file) and the result stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from torch import Tensor, nn

from .cache import Entry
from .directions import Directions
from .evaluator import FIRST_LAYER_OPTIONS, auto_chunk_size, evaluate_points
from .execution import Job, compute
from .grid import Grid, LandscapeGrid, SurfaceSettings

__all__ = [
    "FIRST_LAYER_OPTIONS",
    "LandscapeGrid",
    "SurfaceSettings",
    "auto_chunk_size",
    "evaluate_points",
    "surface_1d",
    "surface_2d",
]


def _surface(model, loss_fn, data, directions, alphas, betas, settings) -> LandscapeGrid:
    """A grid of ``directions`` (one or two) around ``model``: checked before any work, then
    read from the cache, computed here or computed on the Dask client of ``settings``."""
    grid = Grid.of(alphas, betas)
    settings = settings.checked()
    job = Job.checked(model, loss_fn, data, directions, settings)
    if settings.cache:
        entry = Entry.of(job, grid, settings)
        arrays, run = entry.load(grid, settings.refresh), {}
        if arrays is None:
            entry.check_writable()
            arrays, run = compute(job, grid, settings, entry.partial)
            arrays = entry.store(arrays)
    else:
        arrays, run = compute(job, grid, settings)
    return LandscapeGrid(
        alphas=grid.alphas,
        betas=grid.betas,
        loss=np.asarray(arrays["loss"]),
        accuracy=np.asarray(arrays["accuracy"]),
        seconds=run.get("seconds", 0.0),
        chunk_size=run.get("chunk_size", 0),
        method=run.get("method", "cached"),
        from_cache=not run,
    )


def surface_1d(
    model: nn.Module,
    loss_fn: Callable,
    data,
    direction: Mapping[str, Tensor],
    alphas,
    *,
    settings: SurfaceSettings | None = None,
    **options,
) -> LandscapeGrid:
    """Loss and accuracy at ``theta + alpha * direction`` for each of ``alphas``; see
    :func:`surface_2d` for the arguments. ``betas`` of the result is None.

    Args:
        model, loss_fn, data: as for :func:`surface_2d`.
        direction: the direction, keyed like ``model.named_parameters()``.
        alphas: the grid coordinates along ``direction`` (1-D, non-empty, finite).
        settings: as for :func:`surface_2d`.
        **options: as for :func:`surface_2d`.

    Returns:
        A 1-D :class:`LandscapeGrid` (``loss`` of shape ``(len(alphas),)``).

    Raises:
        ValueError: as for :func:`surface_2d`.
        TypeError: an unknown keyword argument.
    """
    settings = SurfaceSettings.of(settings, options)
    return _surface(model, loss_fn, data, [direction], alphas, None, settings)


def surface_2d(
    model: nn.Module,
    loss_fn: Callable,
    data,
    d1: Mapping[str, Tensor] | Directions,
    d2: Mapping[str, Tensor] | None = None,
    alphas=None,
    betas=None,
    *,
    settings: SurfaceSettings | None = None,
    **options,
) -> LandscapeGrid:
    """Loss and accuracy at ``theta + alpha d1 + beta d2`` over the grid ``alphas x betas``.

    Args:
        model: the network; its parameters are ``theta`` (it is not modified). Evaluated in
            eval mode (batch norm uses its running statistics), its modes restored afterwards.
        loss_fn: ``loss_fn(outputs, targets)``, the mean over a batch.
        data: an iterable of ``(inputs, targets)`` batches; the result is the sample-weighted
            mean over all of them.
        d1, d2: directions keyed like ``model.named_parameters()`` (or a :class:`Directions`
            as ``d1`` and no ``d2``).
        alphas, betas: the grid coordinates along ``d1`` and ``d2`` (1-D, non-empty, finite).
        settings: a :class:`SurfaceSettings` holding the keyword arguments below (default:
            their defaults); those given as keywords replace its fields.
        chunk_size: points per vectorised call (default :func:`auto_chunk_size`).
        accuracy_fn: ``(outputs, targets) -> mean accuracy``; default the arg-max accuracy for
            integer targets, none (NaN) otherwise.
        first_layer: ``"auto"`` computes the first affine layer of a Sequential once per grid
            (see :mod:`.evaluator`); ``"off"`` always uses the generic path.
        progress: a progress bar over the chunks (also silenced by ``TQDM_DISABLE``).
        cache: ``True`` or an entry name: keep the grid in :func:`analysis_lib.io.data_dir`,
            keyed by a hash of the model, directions, data, loss and grid, and resume an
            interrupted computation. ``refresh`` recomputes, discarding the finished chunks of
            an interrupted computation too; ``cache_extra`` (JSON-able) enters the key, for
            anything else that changes the result. The loss and accuracy functions enter by
            their identity (:func:`analysis_lib.io.callable_identity`: code, closure values,
            partial arguments, a bound method's object); a function that cannot be identified
            is refused unless ``cache_key`` names it (then it replaces both identities). The
            cache folder must be writable; that is checked before any work.
        memory: bytes of working memory for the automatic chunk size.
        client: a ``dask.distributed.Client``: the chunks run as tasks on its workers (the
            way Li et al.'s code spreads a grid over GPUs with MPI). The model, loss, data
            and directions are sent to every worker once (scattered), each task carries its
            chunk's coefficients and runs on one torch thread; chunks are recorded as they
            finish (with ``cache``, in the partial file too, so that an interrupted grid
            resumes, with or without a client). The chunk size is chosen here, as without a
            client, so each point goes through the same arithmetic: the grid is bit-identical
            to one computed in this process on one torch thread, on the same device type and
            library versions (the workers evaluate on the device the model is on, so they
            need one of that type). Loss and accuracy functions must be picklable
            (cloudpickle: lambdas and closures are).

    Returns:
        A 2-D :class:`LandscapeGrid`: ``loss[i, j]`` at ``(alphas[i], betas[j])``, shape
        ``(len(alphas), len(betas))``; ``from_cache`` True when read from the cache.

    Raises:
        ValueError: a direction whose keys or shapes do not match the model, an empty or
            non-finite grid, empty data, a bad chunk size, a ``client`` that is not a running
            ``distributed.Client``; before any work starts.
        TypeError: a keyword argument that is none of the above.
    """
    if isinstance(d1, Directions):
        if d2 is not None and not isinstance(d2, Mapping) and betas is None:
            alphas, betas, d2 = d2, alphas, None  # surface_2d(model, loss, data, dirs, a, b)
        if d2 is not None:
            raise ValueError("Invalid d2: pass either a Directions as d1 or two directions")
        d1, d2 = d1.pair
    if d2 is None:
        raise ValueError("Invalid d2: None (a 2-D surface needs two directions)")
    if alphas is None or betas is None:
        raise ValueError("Invalid alphas/betas: both grids are required")
    settings = SurfaceSettings.of(settings, options)
    return _surface(model, loss_fn, data, [d1, d2], alphas, betas, settings)
