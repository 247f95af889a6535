"""Fair learning-rate tuning on the toy problems, and comparisons of methods at their own best
learning rates.

:func:`tune_lr` evaluates a log-spaced grid of learning rates (:func:`lr_grid`) and picks the
best by a stated criterion: **the distance of the final point to the nearest known minimum;
distances within ``tolerance`` of the best count as a tie, broken by the lower mean loss over
the run** (the faster of the runs that got there). Its scores are cached in
:func:`analysis_lib.io.data_dir`. :func:`compare` then shows each method at its own best learning
rate, which is the fair comparison (:class:`Comparison`). Gradient clipping is off unless asked
for (``clip``): clipping silently turns gradient descent into normalised gradient descent. The
runs themselves are :mod:`.engine`'s.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import io, progress_bar
from .._checks import check_float, check_grid, check_int, check_positive
from ..problems.toy import ToyProblem
from .engine import (
    Settings,
    Simulation,
    check_problem,
    run,
    settings,
    simulate,
)
from .records import DEFAULT_METHODS, Method, Trajectory, TuneResult

__all__ = ["Comparison", "compare", "lr_grid", "tune_lr"]

_CACHE_VERSION = 1


def lr_grid(low: float = 1e-5, high: float = 10.0, per_decade: int = 4) -> np.ndarray:
    """A log-spaced learning-rate grid from ``low`` to ``high`` with ``per_decade`` points per
    factor of ten (both ends included).

    Args:
        low: the smallest learning rate (> 0).
        high: the largest (> ``low``).
        per_decade: the number of points per factor of ten (>= 1); the count is rounded, with
            at least the two ends.

    Returns:
        The grid as a float array, increasing.

    Raises:
        ValueError: ``low`` or ``high`` not positive, ``high`` <= ``low``, or ``per_decade`` < 1.

    Example:
        >>> lr_grid(1e-3, 1.0, 1).tolist()
        [0.001, 0.01, 0.1, 1.0]
    """
    low = check_positive("low", low)
    high = check_positive("high", high)
    per_decade = check_int("per_decade", per_decade, 1)
    if not high > low:
        raise ValueError(f"Invalid high: {high!r} (expected a number > low = {low!r})")
    n = round(per_decade * math.log10(high / low)) + 1
    return np.geomspace(low, high, max(n, 2))


# -- tuning -----------------------------------------------------------------------------------
def _scores(problem: ToyProblem, sim: Simulation) -> dict[str, np.ndarray]:
    rows = np.arange(sim.last.shape[0])
    final = sim.points[sim.last, rows]
    diverged = sim.reason != 0
    distance = np.where(diverged, np.inf, problem.distance_to_minimum(final))
    steps = np.arange(sim.losses.shape[0])[:, None]
    kept = steps <= sim.last[None, :]
    mean_loss = np.where(kept, sim.losses, 0.0).sum(0) / kept.sum(0)
    mean_loss = np.where(diverged, np.inf, mean_loss)
    return {
        "final_distance": distance,
        "mean_loss": mean_loss,
        "diverged": diverged,
        "final_points": final,
    }


def _choose(
    lrs: np.ndarray, distance: np.ndarray, mean_loss: np.ndarray, tolerance: float, rtol: float
) -> int | None:
    """The stated rule (see :func:`tune_lr`): the index of the chosen rate, None when every run
    diverged."""
    if not np.isfinite(distance).any():
        return None
    ties = np.flatnonzero(_within(distance, tolerance, rtol))
    near = ties[_within(mean_loss[ties], 0.0, rtol)]
    return int(near[np.argmin(lrs[near])])


def _within(values: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """Which ``values`` lie within ``max(atol, rtol * best)`` of the smallest (finite) one."""
    best = np.nanmin(values)
    return values <= best + max(atol, rtol * abs(best))


def _tune_arrays(
    s: Settings, lrs: np.ndarray, tolerance: float, rtol: float, keep_best: bool
) -> dict[str, np.ndarray]:
    """The grid's scores (:func:`_scores`) and, with ``keep_best``, the chosen run's arrays
    (prefixed ``best_``): what :func:`tune_lr` caches."""
    sim = simulate(s, lrs, batched=True, record_step_sizes=keep_best and s.adaptive)
    scores = _scores(s.problem, sim)
    out = {"lrs": lrs, **scores}
    best = _choose(lrs, scores["final_distance"], scores["mean_loss"], tolerance, rtol)
    if keep_best and best is not None:
        out.update(sim.row(best).arrays("best_"))
    return out


def _tune_config(
    s: Settings, lrs: np.ndarray, tolerance: float, rtol: float, keep_best: bool
) -> dict:
    """The cache key of :func:`tune_lr`'s arrays."""
    config = {
        "version": _CACHE_VERSION,
        "problem": s.problem.config(),
        "optimizer": s.optimizer,
        "hparams": s.hparams,
        "steps": s.steps,
        "grid": lrs.tolist(),
        "start": s.start,
        "seed": s.seed,
        "clip": s.clip,
        "bounds_factor": s.bounds_factor,
    }
    if keep_best:  # the kept run depends on the tie rule
        config.update(keep_best=True, tolerance=tolerance, rtol=rtol)
    return config


def tune_lr(
    problem: ToyProblem,
    optimizer: str,
    steps: int,
    grid: Sequence[float] | None = None,
    *,
    start=None,
    seed: int = 0,
    clip: float | None = None,
    tolerance: float = 1e-6,
    rtol: float = 1e-3,
    bounds_factor: float = 10.0,
    keep_best: bool = False,
    cache: bool = True,
    **hparams,
) -> TuneResult:
    """Grid-search the learning rate of ``optimizer`` on ``problem``.

    Criterion, a stated rule so that the same rate is chosen on any machine: the distance of
    each run's final point to the nearest known minimum, smallest first; distances within
    ``max(tolerance, rtol * best)`` of the best are ties, broken by the lower mean loss over
    the run (the faster way there); mean losses within ``rtol`` of the lowest are ties again,
    broken by the smaller learning rate. A diverged run scores inf. Without the relative
    tolerance, runs that all stall in the same local minimum (SGD on Rastrigin: 1.40702 against
    1.40708) were told apart by the last digits of floating point. :attr:`TuneResult.on_edge`
    says when the chosen rate is an end of the grid, :attr:`TuneResult.knife_edge` when a
    perturbation ten times the tolerances could change the choice. The whole grid is evaluated as one batched run
    (:func:`run_batch`), and the scores are cached in :func:`analysis_lib.io.data_dir`, keyed by
    the problem, the optimizer and its hyperparameters, the steps, the grid, the start and the
    seed (``cache=False`` skips the cache).

    Args:
        grid: the learning rates (default :func:`lr_grid`: 1e-5 to 10, four per decade).
        tolerance: distances within this of the best count as equal (absolute, >= 0).
        rtol: distances within ``rtol`` times the best, and mean losses within ``rtol`` times
            the lowest, count as equal (relative, >= 0; default 1e-3).
        keep_best: also keep the chosen run's whole :class:`Trajectory` (with effective step
            sizes for adaptive methods) as ``best``, taken from the batched run, which equals
            :func:`run` at that learning rate to rounding.
        cache: read and write the scores in the cache (``False`` skips it).
        problem, optimizer, steps, start, seed, clip, bounds_factor: as for :func:`run`.
        **hparams: as for :func:`run`, without ``lr``.

    Returns:
        A :class:`TuneResult`: each rate's final distance, mean loss, divergence and final
        point, the chosen index (None when every rate diverged) and, with ``keep_best``, ``best``.

    Raises:
        ValueError: a bad argument, or a problem without known minima (nothing to tune
            against).
    """
    if "lr" in hparams:
        raise ValueError("Invalid hparams: 'lr' (it is what tune_lr searches; give grid)")
    s = settings(problem, optimizer, steps, start, seed, clip, bounds_factor, hparams)
    if not problem.minima:
        raise ValueError(f"Invalid problem: {problem.name!r} has no minima to tune against")
    lrs = check_grid("grid", lr_grid() if grid is None else grid, 0.0, low_open=True)
    tolerance = check_float("tolerance", tolerance, 0.0)
    rtol = check_float("rtol", rtol, 0.0)
    keep_best = bool(keep_best)

    def compute() -> dict[str, np.ndarray]:
        return _tune_arrays(s, lrs, tolerance, rtol, keep_best)

    if cache:
        arrays = io.cached("tune_lr", _tune_config(s, lrs, tolerance, rtol, keep_best), compute)
    else:
        arrays = compute()
    best_index = _choose(lrs, arrays["final_distance"], arrays["mean_loss"], tolerance, rtol)
    best = None
    if keep_best and best_index is not None:
        best = s.trajectory(Simulation.from_arrays(arrays, "best_"), 0, float(lrs[best_index]))
    return TuneResult(
        optimizer=s.optimizer,
        hparams=s.hparams,
        lrs=arrays["lrs"],
        final_distance=arrays["final_distance"],
        mean_loss=arrays["mean_loss"],
        diverged=arrays["diverged"].astype(bool),
        final_points=arrays["final_points"],
        best_index=best_index,
        tolerance=tolerance,
        rtol=rtol,
        best=best,
    )


# -- comparisons ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """Several methods on one problem, each at its own (tuned or given) learning rate."""

    problem: ToyProblem
    trajectories: dict[str, Trajectory]
    tuning: dict[str, TuneResult]

    def table(self) -> pd.DataFrame:
        """One row per method: lr, tuned (bool), whether the tuned rate is an end of the grid
        (``on_edge``) or a knife-edge choice (``knife_edge``, see :class:`TuneResult`), steps
        run, final loss, final distance to the nearest minimum, diverged.

        Returns:
            A DataFrame with the columns ``method``, ``lr``, ``tuned``, ``on_edge``,
            ``knife_edge``, ``steps``, ``final_loss``, ``final_distance`` and ``diverged``.
        """
        rows = []
        for label, t in self.trajectories.items():
            tuned = self.tuning.get(label)
            rows.append(
                {
                    "method": label,
                    "lr": t.lr,
                    "tuned": tuned is not None,
                    "on_edge": tuned is not None and tuned.on_edge,
                    "knife_edge": tuned is not None and tuned.knife_edge,
                    "steps": t.steps,
                    "final_loss": float(t.losses[-1]),
                    "final_distance": t.final_distance,
                    "diverged": t.diverged,
                }
            )
        return pd.DataFrame(rows)


def _as_method(m: Any) -> Method:
    if isinstance(m, Method):
        return m
    if isinstance(m, str):
        return Method(m)
    raise ValueError(f"Invalid methods entry: {m!r} (expected a Method or an optimizer name)")


def compare(
    problem: ToyProblem,
    methods: Iterable[Method | str] = DEFAULT_METHODS,
    steps: int = 500,
    *,
    grid: Sequence[float] | None = None,
    lr: float | None = None,
    start=None,
    seed: int = 0,
    cache: bool = True,
    progress: bool = True,
) -> Comparison:
    """Run each method on ``problem`` at its own best learning rate (:func:`tune_lr` on
    ``grid``; the trajectory is the chosen row of the batched tuning run, which equals
    :func:`run` at that learning rate to rounding), or at the common learning rate ``lr`` when
    it is given (e.g. for a problem without minima). A method whose every grid point diverged
    runs at the smallest learning rate of the grid, with a warning. ``progress`` shows a
    progress bar over the methods (``tqdm.auto``), silenced by ``TQDM_DISABLE=1``.

    Args:
        problem: the :class:`~analysis_lib.problems.toy.ToyProblem` to run on.
        methods: :class:`Method` entries or optimizer names (their labels distinct).
        steps: the number of steps of each run.
        grid: the learning rates to tune over (default :func:`lr_grid`).
        lr: one learning rate (> 0) for every method instead of tuning; None tunes.
        start: the starting point (default: the problem's).
        seed: the seed of the gradient noise.
        cache: use the on-disk cache of the tuning scores.
        progress: show a progress bar.

    Returns:
        A :class:`Comparison`: the problem, each method's trajectory and, for tuned methods,
        its :class:`TuneResult`.

    Raises:
        ValueError: a bad ``problem``, a ``methods`` entry neither a Method nor a name,
            duplicate labels, ``lr`` not positive, a bad ``grid``, or any refusal of
            :func:`tune_lr` or :func:`run`.
    """
    check_problem(problem)
    methods = [_as_method(m) for m in methods]
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Invalid methods: duplicate labels in {labels}")
    if lr is not None:
        lr = check_positive("lr", lr)
    grid = check_grid("grid", lr_grid() if grid is None else grid, 0.0, low_open=True)
    trajectories, tuning = {}, {}
    bar = progress_bar(methods, desc=problem.title, unit="method", progress=progress)
    for m in bar:
        bar.set_postfix_str(m.label)
        rate = lr
        if rate is None:
            result = tune_lr(
                problem,
                m.optimizer,
                steps,
                grid,
                start=start,
                seed=seed,
                keep_best=True,
                cache=cache,
                **m.hparams,
            )
            tuning[m.label] = result
            if result.best is not None:
                trajectories[m.label] = result.best
                continue
            rate = float(grid.min())
            warnings.warn(
                f"{m.label} diverged at every learning rate of the grid on "
                f"{problem.title}; shown at lr = {rate:g}",
                RuntimeWarning,
                stacklevel=2,
            )
        trajectories[m.label] = run(
            problem, m.optimizer, steps, start=start, seed=seed, lr=rate, **m.hparams
        )
    return Comparison(problem, trajectories, tuning)
