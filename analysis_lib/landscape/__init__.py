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

Directions (:mod:`.directions`) are dicts keyed like ``model.named_parameters()``; the
evaluation (:mod:`.surface`) stacks many parameter points and runs them through
``torch.func.vmap`` over ``torch.func.functional_call`` in memory-sized chunks.
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
from .surface import (
    FIRST_LAYER_OPTIONS,
    LandscapeGrid,
    SurfaceSettings,
    auto_chunk_size,
    evaluate_points,
    interpolate,
    surface_1d,
    surface_2d,
)

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
