"""Loss landscapes: directions in parameter space and batched 1-D / 2-D surface evaluation.

Quick use::

    from analysis_lib import landscape

    dirs = landscape.random_directions(model, seed=0)           # filter-normalised (Li et al.)
    grid = landscape.surface_2d(model, task.loss_fn, task.data("train"), dirs.d1, dirs.d2,
                                alphas=np.linspace(-1, 1, 41), betas=np.linspace(-1, 1, 41))
    grid.loss, grid.accuracy                                    # (41, 41): [alpha, beta]

    snaps = landscape.SnapshotCallback(every=20)                # pass to training.train
    plane = landscape.pca_directions(snaps)                     # centred PCA, + variance, path
    line = landscape.interpolate(model_a, model_b, task.loss_fn, data, np.linspace(-0.5, 1.5, 41))

Directions (:mod:`.directions`) are dicts keyed like ``model.named_parameters()``. The
surfaces (:mod:`.surface`, the public API) stand on one unit per module: the evaluator of chunks
of parameter points (:mod:`.evaluator`), the grid and its settings (:mod:`.grid`), local and Dask
execution with resumable partial files (:mod:`.execution`), the cache (:mod:`.cache`) and the
interpolation between two models (:mod:`.interpolation`).
"""

from .barrier import LossBarrier, loss_barrier
from .directions import (
    NORMALIZATIONS,
    ONE_D_OPTIONS,
    Directions,
    SnapshotCallback,
    difference,
    dot,
    eigenvector_directions,
    flatten,
    normalize,
    orthogonalize,
    parameters,
    pca_directions,
    random_direction,
    random_directions,
    unflatten,
)
from .evaluator import FIRST_LAYER_OPTIONS, auto_chunk_size, evaluate_points
from .grid import LandscapeGrid, SurfaceSettings
from .interpolation import interpolate
from .surface import surface_1d, surface_2d

__all__ = [
    "FIRST_LAYER_OPTIONS",
    "NORMALIZATIONS",
    "ONE_D_OPTIONS",
    "Directions",
    "LandscapeGrid",
    "LossBarrier",
    "SnapshotCallback",
    "SurfaceSettings",
    "auto_chunk_size",
    "difference",
    "dot",
    "eigenvector_directions",
    "evaluate_points",
    "flatten",
    "interpolate",
    "loss_barrier",
    "normalize",
    "orthogonalize",
    "parameters",
    "pca_directions",
    "random_direction",
    "random_directions",
    "surface_1d",
    "surface_2d",
    "unflatten",
]
