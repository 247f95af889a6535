"""The records of the toy-problem runs and the names of the methods.

Owns what a run and a tuning give back and how methods are named: :class:`Trajectory` (one
optimizer's path on a :class:`~analysis_lib.problems.toy.ToyProblem`: points, losses, gradient
norms, step lengths and, for adaptive methods, effective step sizes) and its tidy frame,
:class:`TuneResult` (every grid point's score and the chosen learning rate), :class:`Method`
with :data:`DEFAULT_METHODS`, the display names (:func:`method_label`), the stop reasons, and the
hyperparameters that an explorer's sliders set (:func:`slider_hparams`). Computing them is
:mod:`.engine`'s and :mod:`.tuning`'s.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..optim import OPTIMIZERS, optimizer_spec
from ..problems.toy import ToyProblem

__all__ = [
    "ADAPTIVE",
    "DEFAULT_METHODS",
    "STOP_REASONS",
    "Method",
    "Trajectory",
    "TuneResult",
    "method_label",
    "slider_hparams",
    "trajectories_frame",
]

#: Optimizers with a per-coordinate effective step size (recorded in :class:`Trajectory`): the
#: registry's adaptive family.
ADAPTIVE = frozenset(name for name, spec in OPTIMIZERS.items() if spec.adaptive)
#: Why a run ended, by code: 0 it ran all its steps, 1 a value became non-finite, 2 it left the
#: region (the plot bounds enlarged ``bounds_factor`` times).
STOP_REASONS = ("completed", "non-finite", "left the region")


def method_label(optimizer: str, hparams: Mapping[str, Any] | None = None) -> str:
    """A display name: ``"Adam"``, ``"SGD+momentum"``, ``"Ada2MS α=0.5"``, ... (the registry's
    display name; a name the registry does not know is shown as it is).

    Args:
        optimizer: the optimizer's name (any case).
        hparams: its hyperparameters; only Ada2MS's ``alpha`` shows in the label.

    Returns:
        The label as a string.

    Example:
        >>> method_label("ada2ms", {"alpha": 0.5}), method_label("sgdm")
        ('Ada2MS α=0.5', 'SGD+momentum')
    """
    key = optimizer.lower() if isinstance(optimizer, str) else optimizer
    name = OPTIMIZERS[key].display if key in OPTIMIZERS else optimizer
    alpha = (hparams or {}).get("alpha")
    if key == "ada2ms" and alpha is not None:
        name += f" α={alpha:g}" if isinstance(alpha, int | float) else f" α={alpha}"
    return name


@dataclass(frozen=True)
class Method:
    """An optimizer name with its fixed hyperparameters (the learning rate is tuned)."""

    optimizer: str
    hparams: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The display name (see :func:`method_label`).

        Returns:
            The label as a string.
        """
        return method_label(self.optimizer, self.hparams)


#: The methods the toy notebook compares: SGD, SGD with momentum, Adam, AdamW, AdamNX and Ada2MS
#: at alpha = 1, 0.5 and 0.
DEFAULT_METHODS: tuple[Method, ...] = (
    Method("sgd"),
    Method("sgdm"),
    Method("adam"),
    Method("adamw"),
    Method("adamnx"),
    Method("ada2ms", {"alpha": 1.0}),
    Method("ada2ms", {"alpha": 0.5}),
    Method("ada2ms", {"alpha": 0.0}),
)


# -- results ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trajectory:
    """One optimizer's path on a toy problem.

    Attributes:
        problem: the problem.
        optimizer: the optimizer's name.
        hparams: the hyperparameters it ran with (``lr`` included).
        points: ``(n + 1, 2)``, the start and the point after each of the ``n`` steps taken.
        losses: ``(n + 1,)``, the loss at each point (without gradient noise).
        grad_norms: ``(n + 1,)``, the norm of the exact gradient at each point.
        step_lengths: ``(n,)``, the Euclidean length of each step.
        step_sizes: ``(n, 2)``, the per-coordinate effective step size η/(√d + ε) of each step
            for adaptive methods (``ADAPTIVE``), else None.
        diverged: True when the run ended early (a non-finite value, or far out of bounds).
        stop_reason: one of :data:`STOP_REASONS`.
        seed: the seed of the gradient noise.
    """

    problem: ToyProblem
    optimizer: str
    hparams: dict[str, Any]
    points: np.ndarray
    losses: np.ndarray
    grad_norms: np.ndarray
    step_lengths: np.ndarray
    step_sizes: np.ndarray | None
    diverged: bool
    stop_reason: str
    seed: int = 0

    @property
    def label(self) -> str:
        """The display name of the method (see :func:`method_label`).

        Returns:
            The label as a string.
        """
        return method_label(self.optimizer, self.hparams)

    @property
    def lr(self) -> float:
        """The learning rate.

        Returns:
            ``hparams["lr"]`` as a float.
        """
        return float(self.hparams["lr"])

    @property
    def steps(self) -> int:
        """The number of steps taken (fewer than asked for when the run diverged).

        Returns:
            The number of points minus one.
        """
        return len(self.points) - 1

    @property
    def final_point(self) -> np.ndarray:
        """The last point.

        Returns:
            An array of shape ``(2,)`` (a view into ``points``).
        """
        return self.points[-1]

    @property
    def final_distance(self) -> float:
        """Distance of the final point to the nearest minimum (inf when the run diverged, NaN
        when the problem has no minima).

        Returns:
            The distance as a float.
        """
        if not self.problem.minima:
            return math.nan
        return (
            math.inf if self.diverged else float(self.problem.distance_to_minimum(self.final_point))
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per point: method, optimizer, lr, step, x, y, loss, grad_norm, step_length
        (of the step that led there; NaN at the start), and the effective step sizes
        ``step_size_x``, ``step_size_y`` when recorded.

        Returns:
            A DataFrame of ``steps + 1`` rows.
        """
        n = len(self.points)
        data = {
            "method": self.label,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "step": np.arange(n),
            "x": self.points[:, 0],
            "y": self.points[:, 1],
            "loss": self.losses,
            "grad_norm": self.grad_norms,
            "step_length": np.concatenate([[np.nan], self.step_lengths]),
        }
        if self.step_sizes is not None:
            for i, axis in enumerate("xy"):
                data[f"step_size_{axis}"] = np.concatenate([[np.nan], self.step_sizes[:, i]])
        return pd.DataFrame(data)


def trajectories_frame(trajectories: Iterable[Trajectory]) -> pd.DataFrame:
    """The tidy frame of several trajectories (one row per point; see
    :meth:`Trajectory.to_frame`).

    Args:
        trajectories: the :class:`Trajectory` objects (at least one).

    Returns:
        Their frames concatenated, with a fresh index.

    Raises:
        ValueError: no trajectories (pandas has nothing to concatenate).
    """
    return pd.concat([t.to_frame() for t in trajectories], ignore_index=True)


@dataclass(frozen=True)
class TuneResult:
    """The outcome of :func:`tune_lr`: every grid point's score and the chosen learning rate.

    Attributes:
        optimizer, hparams: the method (``hparams`` without ``lr``).
        lrs: the grid.
        final_distance: distance of each run's final point to the nearest minimum (inf when the
            run diverged).
        mean_loss: each run's loss averaged over its points (inf when it diverged).
        diverged: whether each run diverged.
        final_points: ``(G, 2)``, each run's last point.
        best_index: the index of the chosen learning rate, or None when every run diverged.
        tolerance, rtol: the absolute and relative tolerances of the tie rule (distances within
            ``max(tolerance, rtol * best)`` of the best were ties; mean losses within ``rtol``
            of the lowest too, then the smaller learning rate won).
        best: the chosen run's trajectory (``tune_lr(..., keep_best=True)``), else None.
    """

    optimizer: str
    hparams: dict[str, Any]
    lrs: np.ndarray
    final_distance: np.ndarray
    mean_loss: np.ndarray
    diverged: np.ndarray
    final_points: np.ndarray
    best_index: int | None
    tolerance: float
    rtol: float = 0.0
    best: Trajectory | None = None

    CRITERION = (
        "distance of the final point to the nearest minimum; distances within the "
        "tolerance of the best are ties, broken by the lower mean loss over the run, and "
        "mean losses within the relative tolerance by the smaller learning rate"
    )

    @property
    def on_edge(self) -> bool:
        """Whether the chosen rate is the smallest or the largest of the grid (a wider grid
        might choose another).

        Returns:
            True at either end of a grid of two or more rates; False otherwise or when every
            run diverged.
        """
        if self.best_index is None or len(self.lrs) < 2:
            return False
        return bool(self.lrs[self.best_index] in (self.lrs.min(), self.lrs.max()))

    @property
    def knife_edge(self) -> bool:
        """Whether the choice could change under perturbations ten times the tie rule's
        tolerances: a rate outside the ties lies within ten tie bands of the best distance, or
        a rate among them has a mean loss within ``10 * rtol`` (but not ``rtol``) of their
        lowest.

        Returns:
            True when the choice is that close; False otherwise or when every run diverged.
        """
        if self.best_index is None:
            return False
        d, loss = self.final_distance, self.mean_loss
        best = np.nanmin(d)
        band = max(self.tolerance, self.rtol * abs(best))
        outside = (d > best + band) & (d <= best + 10 * band)
        ties = d <= best + band
        lowest = loss[ties].min()
        above = loss - lowest
        close = ties & (above > self.rtol * abs(lowest)) & (above <= 10 * self.rtol * abs(lowest))
        return bool(outside.any() or close.any())

    @property
    def label(self) -> str:
        """The display name of the method.

        Returns:
            The label as a string (see :func:`method_label`).
        """
        return method_label(self.optimizer, self.hparams)

    @property
    def best_lr(self) -> float:
        """The chosen learning rate (NaN when every run diverged).

        Returns:
            The learning rate as a float.
        """
        return math.nan if self.best_index is None else float(self.lrs[self.best_index])

    def to_frame(self) -> pd.DataFrame:
        """One row per learning rate: method, lr, final_distance, mean_loss, diverged, best.

        Returns:
            A DataFrame with one row per grid point, ``best`` True at the chosen one only.
        """
        best = np.zeros(len(self.lrs), dtype=bool)
        if self.best_index is not None:
            best[self.best_index] = True
        return pd.DataFrame(
            {
                "method": self.label,
                "lr": self.lrs,
                "final_distance": self.final_distance,
                "mean_loss": self.mean_loss,
                "diverged": self.diverged,
                "best": best,
            }
        )


def slider_hparams(optimizer: str, beta1: float, beta2: float, alpha: float) -> dict[str, Any]:
    """The hyperparameters of ``optimizer`` that an explorer's momentum / second-moment / alpha
    sliders set, read from the optimizer registry (the learning rate is not among them):

    * the ``momentum`` family (``"sgdm"``): ``momentum = beta1``;
    * the ``adaptive`` family: ``betas = (beta1, beta2)``, and ``alpha`` where the constructor
      takes one (Ada2MS);
    * ``plain`` SGD: none.

    ``run(problem, optimizer, steps, lr=lr, **slider_hparams(optimizer, b1, b2, a))`` then runs
    it. Unknown names raise ``ValueError``; the values are checked by the optimizer itself.

    Args:
        optimizer: a registered optimizer name (any case).
        beta1: the momentum slider's value.
        beta2: the second-moment slider's value.
        alpha: the alpha slider's value.

    Returns:
        A dict of hyperparameters (floats; empty for plain SGD).

    Raises:
        ValueError: an unknown optimizer name.

    Example:
        >>> slider_hparams("ada2ms", 0.9, 0.999, 0.5)
        {'betas': (0.9, 0.999), 'alpha': 0.5}
    """
    spec = optimizer_spec(optimizer)
    if spec.family == "momentum":
        return {"momentum": float(beta1)}
    if spec.family != "adaptive":
        return {}
    hparams: dict[str, Any] = {"betas": (float(beta1), float(beta2))}
    if "alpha" in inspect.signature(spec.build).parameters:
        hparams["alpha"] = float(alpha)
    return hparams
