"""Optimizers on 2-D toy problems: trajectories, fair learning-rate tuning, comparisons.

:func:`run` drives one optimizer (a name known to :func:`~analysis_lib.optim.make_optimizer`) on a
:class:`~analysis_lib.problems.toy.ToyProblem` and returns a :class:`Trajectory`: the points, the
losses, the gradient norms, the step lengths and, for adaptive methods, the per-coordinate
effective step size η/(√d + ε) of every step. A run that diverges (a non-finite value or a point
far outside the plot bounds) ends early and is flagged (``diverged``, ``stop_reason``); nothing is
raised.

:func:`tune_lr` evaluates a log-spaced grid of learning rates and picks the best by a stated
criterion: **the distance of the final point to the nearest known minimum; distances within
``tolerance`` of the best count as a tie, broken by the lower mean loss over the run** (the
faster of the runs that got there). Each optimizer is then shown at its own best learning rate,
which is the fair comparison. Gradient clipping is off unless asked for (``clip``): clipping
silently turns gradient descent into normalised gradient descent.

How a grid is evaluated in one batched run
------------------------------------------
Every optimizer here updates its parameter by an amount *linear in the learning rate*:
θ ← θ − η U, where U and the optimizer's state depend on the gradients and on θ but not on η
(for SGD with momentum U is the momentum buffer; for Adam, AdamW, AdamNX and Ada2MS, decoupled
weight decay included, U = λθ + m̂/(√d + ε)). So G learning rates run as *one* optimizer with
η = 1 on a ``(G, 2)`` parameter (one row per grid point), and after each step the row's move is
multiplied by its own η. Each coordinate's state is independent of the others' for SGD, Adam,
AdamW and AdamNX, so the rows do not interact. Ada2MS is different: its global statistic s (the
mean of v̂ over the param group) would mix the rows; here each grid point is its own 2-element
tensor in one param group with ``scope="tensor"``, which for a single 2-D parameter is exactly
the default ``scope="global"``. The tests check every optimizer's batched rows against the real
optimizer run at each learning rate separately.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import io, progress_disabled
from ._checks import check_int
from .optim import OPTIMIZERS, effective_step_sizes, make_optimizer, optimizer_spec
from .problems.toy import ToyProblem

__all__ = [
    "ADAPTIVE",
    "DEFAULT_METHODS",
    "STOP_REASONS",
    "Comparison",
    "Method",
    "Trajectory",
    "TuneResult",
    "compare",
    "lr_grid",
    "method_label",
    "run",
    "run_batch",
    "slider_hparams",
    "trajectories_frame",
    "tune_lr",
]

#: Optimizers with a per-coordinate effective step size (recorded in :class:`Trajectory`): the
#: registry's adaptive family.
ADAPTIVE = frozenset(name for name, spec in OPTIMIZERS.items() if spec.adaptive)
#: Optimizers whose update mixes coordinates through a statistic over the param group.
_GROUP_STATISTIC = frozenset(
    name for name, spec in OPTIMIZERS.items() if getattr(spec.cls, "couples_coordinates", False)
)
#: Why a run ended, by code: 0 it ran all its steps, 1 a value became non-finite, 2 it left the
#: region (the plot bounds enlarged ``bounds_factor`` times).
STOP_REASONS = ("completed", "non-finite", "left the region")
_DTYPE = torch.float64
_CACHE_VERSION = 1


def method_label(optimizer: str, hparams: Mapping[str, Any] | None = None) -> str:
    """A display name: ``"Adam"``, ``"SGD+momentum"``, ``"Ada2MS α=0.5"``, ... (the registry's
    display name; a name the registry does not know is shown as it is)."""
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
        """The display name (see :func:`method_label`)."""
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
        """The display name of the method (see :func:`method_label`)."""
        return method_label(self.optimizer, self.hparams)

    @property
    def lr(self) -> float:
        """The learning rate."""
        return float(self.hparams["lr"])

    @property
    def steps(self) -> int:
        """The number of steps taken (fewer than asked for when the run diverged)."""
        return len(self.points) - 1

    @property
    def final_point(self) -> np.ndarray:
        """The last point."""
        return self.points[-1]

    @property
    def final_distance(self) -> float:
        """Distance of the final point to the nearest minimum (inf when the run diverged, NaN
        when the problem has no minima)."""
        if not self.problem.minima:
            return math.nan
        return (
            math.inf if self.diverged else float(self.problem.distance_to_minimum(self.final_point))
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per point: method, optimizer, lr, step, x, y, loss, grad_norm, step_length
        (of the step that led there; NaN at the start), and the effective step sizes
        ``step_size_x``, ``step_size_y`` when recorded."""
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
    :meth:`Trajectory.to_frame`)."""
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
        tolerance: distances within ``tolerance`` of the best were ties.
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
    best: Trajectory | None = None

    CRITERION = (
        "distance of the final point to the nearest minimum; distances within the "
        "tolerance of the best are ties, broken by the lower mean loss over the run"
    )

    @property
    def label(self) -> str:
        """The display name of the method."""
        return method_label(self.optimizer, self.hparams)

    @property
    def best_lr(self) -> float:
        """The chosen learning rate (NaN when every run diverged)."""
        return math.nan if self.best_index is None else float(self.lrs[self.best_index])

    def to_frame(self) -> pd.DataFrame:
        """One row per learning rate: method, lr, final_distance, mean_loss, diverged, best."""
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


# -- validation -------------------------------------------------------------------------------
def _check_problem(problem: Any) -> None:
    if not isinstance(problem, ToyProblem):
        raise ValueError(f"Invalid problem: {problem!r} (expected a ToyProblem)")


def _check_optimizer(optimizer: Any) -> str:
    return optimizer_spec(optimizer).name


def _check_positive(name: str, value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not float(value) > 0:
        raise ValueError(f"Invalid {name}: {value!r} (expected a finite number > 0)")
    return float(value)


def _start_point(problem: ToyProblem, start: Any) -> tuple[float, float]:
    if start is None:
        return problem.start
    a = np.asarray(start, dtype=np.float64) if not isinstance(start, str) else np.array([])
    if a.shape != (2,) or not np.isfinite(a).all():
        raise ValueError(f"Invalid start: {start!r} (expected two finite numbers)")
    return float(a[0]), float(a[1])


def lr_grid(low: float = 1e-5, high: float = 10.0, per_decade: int = 4) -> np.ndarray:
    """A log-spaced learning-rate grid from ``low`` to ``high`` with ``per_decade`` points per
    factor of ten (both ends included)."""
    low = _check_positive("low", low)
    high = _check_positive("high", high)
    per_decade = check_int("per_decade", per_decade, 1)
    if not high > low:
        raise ValueError(f"Invalid high: {high!r} (expected a number > low = {low!r})")
    n = round(per_decade * math.log10(high / low)) + 1
    return np.geomspace(low, high, max(n, 2))


def _check_grid(grid: Any) -> np.ndarray:
    try:
        lrs = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError):
        lrs = np.array([np.nan])
    if lrs.ndim != 1 or lrs.size == 0 or not np.isfinite(lrs).all() or not (lrs > 0).all():
        raise ValueError(
            f"Invalid grid: {grid!r} (expected a non-empty sequence of finite learning rates > 0)"
        )
    return lrs


# -- the engine -------------------------------------------------------------------------------
class _Layout:
    """How G points are held as optimizer parameters (see the module docstring)."""

    def __init__(self, optimizer: str, start, lrs: np.ndarray, batched: bool, hparams: dict):
        self.g = len(lrs)
        point = torch.tensor(start, dtype=_DTYPE)
        self.lrs = torch.as_tensor(lrs, dtype=_DTYPE)[:, None]
        self.lr_list = [float(lr) for lr in lrs]
        self.batched = batched
        if not batched:  # the real optimizer at the real learning rate on one 2-D parameter
            self.params = [point.clone().requires_grad_(True)]
            self.opt = make_optimizer(optimizer, self.params, lr=float(lrs[0]), **hparams)
            self.rows = False
        elif optimizer in _GROUP_STATISTIC:  # one 2-element tensor per grid point
            self.params = [point.clone().requires_grad_(True) for _ in range(self.g)]
            hp = {**hparams, "scope": "tensor", "foreach": True}
            self.opt = make_optimizer(optimizer, self.params, lr=1.0, **hp)
            self.rows = False
        else:  # one (G, 2) tensor, one row per grid point
            self.params = [point.repeat(self.g, 1).requires_grad_(True)]
            self.opt = make_optimizer(optimizer, self.params, lr=1.0, **hparams)
            self.rows = True

    def points(self) -> torch.Tensor:
        if self.rows:
            return self.params[0].detach().clone()
        return torch.stack([p.detach() for p in self.params])

    def set_grads(self, g: torch.Tensor) -> None:
        if self.rows:
            self.params[0].grad = g
        else:
            for p, gi in zip(self.params, g.unbind(), strict=True):
                p.grad = gi

    @torch.no_grad()
    def step(self, before: torch.Tensor) -> None:
        self.opt.step()
        if not self.batched:
            return
        # the optimizer moved each point by -1 * U; the grid point's move is -lr * U
        if self.rows:
            p = self.params[0]
            p.copy_(before.lerp_(p, self.lrs))  # before + lr * (p - before)
        else:
            for p, b, lr in zip(self.params, before.unbind(), self.lr_list, strict=True):
                p.copy_(b.lerp_(p, lr))

    @torch.no_grad()
    def kill(self, rows: torch.Tensor) -> None:
        """Set the points of diverged rows to NaN (they stay NaN, touching no other row)."""
        if self.rows:
            self.params[0][rows] = math.nan
        else:
            for i in torch.nonzero(rows).flatten().tolist():
                self.params[i].fill_(math.nan)

    def step_sizes(self) -> torch.Tensor:
        sizes = effective_step_sizes(self.opt)
        s = sizes[self.params[0]] if self.rows else torch.stack([sizes[p] for p in self.params])
        return s * self.lrs if self.batched else s


@dataclass(frozen=True)
class _Settings:
    """What every run of one method on one problem shares, checked (see :func:`_settings`)."""

    problem: ToyProblem
    optimizer: str  # the registry's key
    steps: int
    start: tuple[float, float]
    seed: int
    clip: float | None
    bounds_factor: float
    hparams: dict[str, Any]  # without lr; weight_decay 0 unless given

    @property
    def adaptive(self) -> bool:
        """Whether the optimizer has per-coordinate effective step sizes to record."""
        return self.optimizer in ADAPTIVE

    def trajectory(self, sim: _Simulation, row: int, lr: float) -> Trajectory:
        """Row ``row`` of ``sim`` (run at ``lr``) as a :class:`Trajectory`."""
        n = int(sim.last[row])
        points = sim.points[: n + 1, row].copy()
        return Trajectory(
            problem=self.problem,
            optimizer=self.optimizer,
            hparams={"lr": lr, **self.hparams},
            points=points,
            losses=sim.losses[: n + 1, row].copy(),
            grad_norms=sim.grad_norms[: n + 1, row].copy(),
            step_lengths=np.hypot(*np.diff(points, axis=0).T),  # no overflow warning
            step_sizes=None if sim.step_sizes is None else sim.step_sizes[:n, row].copy(),
            diverged=bool(sim.reason[row] != 0),
            stop_reason=STOP_REASONS[int(sim.reason[row])],
            seed=self.seed,
        )


def _settings(problem, optimizer, steps, start, seed, clip, bounds_factor, hparams) -> _Settings:
    """Check the arguments that :func:`run`, :func:`run_batch` and :func:`tune_lr` share."""
    _check_problem(problem)
    key = _check_optimizer(optimizer)
    steps = check_int("steps", steps, 1)
    seed = check_int("seed", seed, 0)
    clip = _check_positive("clip", clip, allow_none=True)
    bounds_factor = _check_positive("bounds_factor", bounds_factor)
    if bounds_factor < 1:
        raise ValueError(f"Invalid bounds_factor: {bounds_factor!r} (expected a number >= 1)")
    start = _start_point(problem, start)
    hparams = dict(hparams)
    hparams.setdefault("weight_decay", 0.0)
    return _Settings(problem, key, steps, start, seed, clip, bounds_factor, hparams)


@dataclass(frozen=True)
class _Simulation:
    """The arrays of a simulated grid of G learning rates: a step axis (T + 1 points, T steps),
    then the grid axis."""

    points: np.ndarray  # (T + 1, G, 2)
    losses: np.ndarray  # (T + 1, G)
    grad_norms: np.ndarray  # (T + 1, G)
    last: np.ndarray  # (G,): the index of each run's last valid point
    reason: np.ndarray  # (G,): a code into STOP_REASONS
    step_sizes: np.ndarray | None = None  # (T, G, 2), when recorded

    def row(self, i: int) -> _Simulation:
        """Grid point ``i`` alone, as a grid of one."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[[i]] if a.ndim == 1 else a[:, [i]]

        return _Simulation(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays by field name (``prefix`` prepended), the ones not recorded left out."""
        named = {f.name: getattr(self, f.name) for f in fields(self)}
        return {prefix + k: a for k, a in named.items() if a is not None}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> _Simulation:
        """The inverse of :meth:`arrays`."""
        return cls(**{f.name: arrays.get(prefix + f.name) for f in fields(cls)})


def _simulate(
    s: _Settings, lrs: np.ndarray, *, batched: bool, record_step_sizes: bool
) -> _Simulation:
    """Run ``s.optimizer`` at each of the G learning rates ``lrs`` from ``s.start`` for
    ``s.steps`` steps, as one batched run (``batched``) or, for G = 1, the real optimizer."""
    steps, problem = s.steps, s.problem
    layout = _Layout(s.optimizer, s.start, lrs, batched, s.hparams)
    g_count = layout.g
    pts = torch.full((steps + 1, g_count, 2), math.nan, dtype=_DTYPE)
    losses = torch.full((steps + 1, g_count), math.nan, dtype=_DTYPE)
    gnorms = torch.full((steps + 1, g_count), math.nan, dtype=_DTYPE)
    sizes = torch.full((steps, g_count, 2), math.nan, dtype=_DTYPE) if record_step_sizes else None
    last = torch.full((g_count,), steps, dtype=torch.long)
    reason = torch.zeros(g_count, dtype=torch.long)
    alive = torch.ones(g_count, dtype=torch.bool)
    (x0, x1), (y0, y1) = problem.bounds
    centre = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2], dtype=_DTYPE)
    half = s.bounds_factor * torch.tensor([(x1 - x0) / 2, (y1 - y0) / 2], dtype=_DTYPE)
    generator = torch.Generator().manual_seed(s.seed)

    p = layout.points()
    for k in range(steps + 1):
        f, g = problem.value_and_grad(p)
        pts[k], losses[k] = p, f
        gnorm = torch.hypot(g[..., 0], g[..., 1])  # no overflow before the result does
        gnorms[k] = gnorm
        # a non-finite point, loss or gradient makes f + |g| non-finite, and a non-finite
        # point is not inside the region: one check, one sync per step while all is well
        ok = torch.isfinite(f + gnorm) & ((p - centre).abs() <= half).all(-1)
        if not bool((ok | ~alive).all()):
            point_ok = torch.isfinite(p).all(-1)
            finite = point_ok & torch.isfinite(f) & torch.isfinite(g).all(-1)
            ended = alive & ~ok
            # a non-finite point is dropped; a finite one (with a non-finite loss or gradient,
            # or outside the region) is kept as the last point
            last[ended] = torch.where(point_ok[ended], k, k - 1)
            reason[ended] = torch.where(finite[ended], 2, 1)
            alive &= ~ended
            layout.kill(ended)
            if not alive.any():
                break
        if k == steps:
            break
        g = problem.noisy_gradient(g, generator)
        if s.clip is not None:
            g = g * torch.clamp(s.clip / torch.hypot(g[..., :1], g[..., 1:]), max=1.0)
        layout.set_grads(g)
        layout.step(p)
        if sizes is not None:
            sizes[k] = layout.step_sizes()
        p = layout.points()
    return _Simulation(
        points=pts.numpy(),
        losses=losses.numpy(),
        grad_norms=gnorms.numpy(),
        last=last.numpy(),
        reason=reason.numpy(),
        step_sizes=None if sizes is None else sizes.numpy(),
    )


def run(
    problem: ToyProblem,
    optimizer: str,
    steps: int,
    start=None,
    seed: int = 0,
    *,
    clip: float | None = None,
    bounds_factor: float = 10.0,
    **hparams,
) -> Trajectory:
    """Run ``optimizer`` (a name known to ``make_optimizer``) for ``steps`` steps on ``problem``.

    Args:
        problem: the toy problem.
        optimizer: ``"sgd"``, ``"sgdm"``, ``"adam"``, ``"adamw"``, ``"adamnx"`` or ``"ada2ms"``
            (any case).
        steps: the number of steps (>= 1).
        start: the starting point (default: the problem's suggested start).
        seed: seeds the gradient noise of a stochastic problem (unused otherwise).
        clip: clip each gradient to this norm (off by default).
        bounds_factor: the run ends, flagged as diverged, when a point leaves the plot bounds
            enlarged this many times about their centre (or becomes non-finite).
        **hparams: passed to the optimizer (``lr``, ``betas``, ``momentum``, ``alpha``, ...).
            ``weight_decay`` is 0 unless given: it would move the known minima.

    Returns:
        The :class:`Trajectory`, with effective step sizes for the adaptive optimizers.

    Raises:
        ValueError: a bad argument (named in the message), before any step is taken.
    """
    lr = hparams.pop("lr", None)
    s = _settings(problem, optimizer, steps, start, seed, clip, bounds_factor, hparams)
    if lr is None:  # the optimizer's own default
        params = [torch.zeros(2, requires_grad=True)]
        lr = make_optimizer(s.optimizer, params, **s.hparams).defaults["lr"]
    lrs = np.array([lr], dtype=np.float64)
    sim = _simulate(s, lrs, batched=False, record_step_sizes=s.adaptive)
    return s.trajectory(sim, 0, lr)


def run_batch(
    problem: ToyProblem,
    optimizer: str,
    steps: int,
    lrs: Sequence[float],
    start=None,
    seed: int = 0,
    *,
    clip: float | None = None,
    bounds_factor: float = 10.0,
    record_step_sizes: bool = False,
    **hparams,
) -> list[Trajectory]:
    """:func:`run` at each learning rate of ``lrs``, evaluated as one batched run (see the
    module docstring); the result equals running each learning rate on its own, to rounding.
    ``hparams`` must not contain ``lr``."""
    if "lr" in hparams:
        raise ValueError("Invalid hparams: 'lr' (give the learning rates as lrs)")
    s = _settings(problem, optimizer, steps, start, seed, clip, bounds_factor, hparams)
    lrs = _check_grid(lrs)
    sim = _simulate(s, lrs, batched=True, record_step_sizes=record_step_sizes and s.adaptive)
    return [s.trajectory(sim, i, float(lr)) for i, lr in enumerate(lrs)]


# -- tuning -----------------------------------------------------------------------------------
def _scores(problem: ToyProblem, sim: _Simulation) -> dict[str, np.ndarray]:
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


def _choose(distance: np.ndarray, mean_loss: np.ndarray, tolerance: float) -> int | None:
    if not np.isfinite(distance).any():
        return None
    ties = np.flatnonzero(distance <= np.nanmin(distance) + tolerance)
    return int(ties[np.argmin(mean_loss[ties])])


def _check_tolerance(tolerance: Any) -> float:
    value = float(tolerance) if isinstance(tolerance, int | float) else math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"Invalid tolerance: {tolerance!r} (expected a finite number >= 0)")
    return value


def _tune_arrays(
    s: _Settings, lrs: np.ndarray, tolerance: float, keep_best: bool
) -> dict[str, np.ndarray]:
    """The grid's scores (:func:`_scores`) and, with ``keep_best``, the chosen run's arrays
    (prefixed ``best_``): what :func:`tune_lr` caches."""
    sim = _simulate(s, lrs, batched=True, record_step_sizes=keep_best and s.adaptive)
    scores = _scores(s.problem, sim)
    out = {"lrs": lrs, **scores}
    best = _choose(scores["final_distance"], scores["mean_loss"], tolerance)
    if keep_best and best is not None:
        out.update(sim.row(best).arrays("best_"))
    return out


def _tune_config(s: _Settings, lrs: np.ndarray, tolerance: float, keep_best: bool) -> dict:
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
    if keep_best:  # the kept run depends on the tie tolerance
        config.update(keep_best=True, tolerance=tolerance)
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
    bounds_factor: float = 10.0,
    keep_best: bool = False,
    cache: bool = True,
    **hparams,
) -> TuneResult:
    """Grid-search the learning rate of ``optimizer`` on ``problem``.

    Criterion: the distance of each run's final point to the nearest known minimum, smallest
    first; distances within ``tolerance`` of the best are ties, broken by the lower mean loss
    over the run. A diverged run scores inf. The whole grid is evaluated as one batched run
    (:func:`run_batch`), and the scores are cached in :func:`analysis_lib.io.data_dir`, keyed by
    the problem, the optimizer and its hyperparameters, the steps, the grid, the start and the
    seed (``cache=False`` skips the cache).

    Args:
        grid: the learning rates (default :func:`lr_grid`: 1e-5 to 10, four per decade).
        tolerance: distances within this of the best count as equal.
        keep_best: also keep the chosen run's whole :class:`Trajectory` (with effective step
            sizes for adaptive methods) as ``best``, taken from the batched run, which equals
            :func:`run` at that learning rate to rounding.
        Other arguments as for :func:`run`.

    Raises:
        ValueError: a bad argument, or a problem without known minima (nothing to tune
            against).
    """
    if "lr" in hparams:
        raise ValueError("Invalid hparams: 'lr' (it is what tune_lr searches; give grid)")
    s = _settings(problem, optimizer, steps, start, seed, clip, bounds_factor, hparams)
    if not problem.minima:
        raise ValueError(f"Invalid problem: {problem.name!r} has no minima to tune against")
    lrs = _check_grid(lr_grid() if grid is None else grid)
    tolerance = _check_tolerance(tolerance)
    keep_best = bool(keep_best)

    def compute() -> dict[str, np.ndarray]:
        return _tune_arrays(s, lrs, tolerance, keep_best)

    if cache:
        arrays = io.cached("tune_lr", _tune_config(s, lrs, tolerance, keep_best), compute)
    else:
        arrays = compute()
    best_index = _choose(arrays["final_distance"], arrays["mean_loss"], tolerance)
    best = None
    if keep_best and best_index is not None:
        best = s.trajectory(_Simulation.from_arrays(arrays, "best_"), 0, float(lrs[best_index]))
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
        """One row per method: lr, tuned (bool), steps run, final loss, final distance to the
        nearest minimum, diverged."""
        rows = []
        for label, t in self.trajectories.items():
            rows.append(
                {
                    "method": label,
                    "lr": t.lr,
                    "tuned": label in self.tuning,
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
    progress bar over the methods (``tqdm.auto``), silenced by ``TQDM_DISABLE=1``."""
    _check_problem(problem)
    methods = [_as_method(m) for m in methods]
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Invalid methods: duplicate labels in {labels}")
    if lr is not None:
        lr = _check_positive("lr", lr)
    grid = _check_grid(lr_grid() if grid is None else grid)
    trajectories, tuning = {}, {}
    bar = tqdm(
        methods,
        desc=problem.title,
        unit="method",
        leave=False,
        disable=not progress or progress_disabled(),
    )
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


def slider_hparams(optimizer: str, beta1: float, beta2: float, alpha: float) -> dict[str, Any]:
    """The hyperparameters of ``optimizer`` that an explorer's momentum / second-moment / alpha
    sliders set, read from the optimizer registry (the learning rate is not among them):

    * the ``momentum`` family (``"sgdm"``): ``momentum = beta1``;
    * the ``adaptive`` family: ``betas = (beta1, beta2)``, and ``alpha`` where the constructor
      takes one (Ada2MS);
    * ``plain`` SGD: none.

    ``run(problem, optimizer, steps, lr=lr, **slider_hparams(optimizer, b1, b2, a))`` then runs
    it. Unknown names raise ``ValueError``; the values are checked by the optimizer itself.
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
