"""Running an optimizer on a 2-D toy problem: one run (:func:`run`) and a grid of learning
rates evaluated as one batched run (:func:`run_batch`).

Owns the checks of the arguments that every run shares (:func:`settings`), the simulation loop
(:func:`simulate`, which stops a diverging run and flags it, raising nothing) and the turning
of its arrays into :class:`~analysis_lib.trajectory.records.Trajectory` records. Tuning on top of
it is :mod:`.tuning`'s.

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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from .._checks import check_grid, check_int, check_positive
from ..optim import OPTIMIZERS, effective_step_sizes, make_optimizer, optimizer_spec
from ..problems.toy import ToyProblem
from .records import ADAPTIVE, STOP_REASONS, Trajectory

__all__ = [
    "Settings",
    "Simulation",
    "check_problem",
    "run",
    "run_batch",
    "settings",
    "simulate",
]

#: Optimizers whose update mixes coordinates through a statistic over the param group.
_GROUP_STATISTIC = frozenset(
    name for name, spec in OPTIMIZERS.items() if getattr(spec.cls, "couples_coordinates", False)
)
_DTYPE = torch.float64


# -- validation -------------------------------------------------------------------------------
def check_problem(problem: Any) -> None:
    """Refuse anything but a :class:`~analysis_lib.problems.toy.ToyProblem`.

    Args:
        problem: the object to check.

    Returns:
        None.

    Raises:
        ValueError: ``problem`` not a ToyProblem.
    """
    if not isinstance(problem, ToyProblem):
        raise ValueError(f"Invalid problem: {problem!r} (expected a ToyProblem)")


def _check_optimizer(optimizer: Any) -> str:
    return optimizer_spec(optimizer).name


def _start_point(problem: ToyProblem, start: Any) -> tuple[float, float]:
    if start is None:
        return problem.start
    a = np.asarray(start, dtype=np.float64) if not isinstance(start, str) else np.array([])
    if a.shape != (2,) or not np.isfinite(a).all():
        raise ValueError(f"Invalid start: {start!r} (expected two finite numbers)")
    return float(a[0]), float(a[1])


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
class Settings:
    """What every run of one method on one problem shares, checked (see :func:`settings`)."""

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
        """Whether the optimizer has per-coordinate effective step sizes to record.

        Returns:
            True for an adaptive (Adam-family) optimizer.
        """
        return self.optimizer in ADAPTIVE

    def trajectory(self, sim: Simulation, row: int, lr: float) -> Trajectory:
        """Row ``row`` of ``sim`` (run at ``lr``) as a :class:`Trajectory`.

        Args:
            sim: the :class:`Simulation` of a grid of learning rates.
            row: the index of the grid point.
            lr: its learning rate, recorded in the trajectory's ``hparams``.

        Returns:
            The :class:`Trajectory`, cut at the run's last valid point (arrays copied).
        """
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


def settings(problem, optimizer, steps, start, seed, clip, bounds_factor, hparams) -> Settings:
    """Check the arguments that :func:`run`, :func:`run_batch` and :func:`tune_lr` share.

    Args:
        problem: the toy problem.
        optimizer: a registered optimizer name (any case).
        steps: the number of steps (>= 1).
        start: the starting point, or None for the problem's.
        seed: the seed of the gradient noise (>= 0).
        clip: the gradient-norm clip (> 0), or None.
        bounds_factor: the enlargement of the plot bounds beyond which a run diverges (>= 1).
        hparams: the optimizer's other hyperparameters (``weight_decay`` set to 0 if absent).

    Returns:
        The checked :class:`Settings`.

    Raises:
        ValueError: a bad argument, naming it.
    """
    check_problem(problem)
    key = _check_optimizer(optimizer)
    steps = check_int("steps", steps, 1)
    seed = check_int("seed", seed, 0)
    clip = None if clip is None else check_positive("clip", clip)
    bounds_factor = check_positive("bounds_factor", bounds_factor)
    if bounds_factor < 1:
        raise ValueError(f"Invalid bounds_factor: {bounds_factor!r} (expected a number >= 1)")
    start = _start_point(problem, start)
    hparams = dict(hparams)
    hparams.setdefault("weight_decay", 0.0)
    return Settings(problem, key, steps, start, seed, clip, bounds_factor, hparams)


@dataclass(frozen=True)
class Simulation:
    """The arrays of a simulated grid of G learning rates: a step axis (T + 1 points, T steps),
    then the grid axis."""

    points: np.ndarray  # (T + 1, G, 2)
    losses: np.ndarray  # (T + 1, G)
    grad_norms: np.ndarray  # (T + 1, G)
    last: np.ndarray  # (G,): the index of each run's last valid point
    reason: np.ndarray  # (G,): a code into STOP_REASONS
    step_sizes: np.ndarray | None = None  # (T, G, 2), when recorded

    def row(self, i: int) -> Simulation:
        """Grid point ``i`` alone, as a grid of one.

        Args:
            i: the index of the grid point.

        Returns:
            A new :class:`Simulation` whose grid axis has length 1.
        """

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[[i]] if a.ndim == 1 else a[:, [i]]

        return Simulation(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays by field name (``prefix`` prepended), the ones not recorded left out.

        Args:
            prefix: prepended to each key (e.g. ``"best_"``).

        Returns:
            A dict of name -> array (the arrays themselves, not copies).
        """
        named = {f.name: getattr(self, f.name) for f in fields(self)}
        return {prefix + k: a for k, a in named.items() if a is not None}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> Simulation:
        """The inverse of :meth:`arrays`.

        Args:
            arrays: a mapping that holds the arrays under ``prefix + field name``.
            prefix: the prefix given to :meth:`arrays`.

        Returns:
            The :class:`Simulation` (a field missing from ``arrays`` is None).
        """
        return cls(**{f.name: arrays.get(prefix + f.name) for f in fields(cls)})


def simulate(s: Settings, lrs: np.ndarray, *, batched: bool, record_step_sizes: bool) -> Simulation:
    """Run ``s.optimizer`` at each of the G learning rates ``lrs`` from ``s.start`` for
    ``s.steps`` steps, as one batched run (``batched``) or, for G = 1, the real optimizer.

    Args:
        s: the checked :class:`Settings`.
        lrs: the learning rates, a 1-D float64 array of length G.
        batched: simulate the grid as one batched run; False runs the optimizer itself.
        record_step_sizes: record the per-coordinate effective step sizes.

    Returns:
        The :class:`Simulation`; each run stops at its first non-finite value or exit from the
        enlarged bounds.
    """
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
    return Simulation(
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
    s = settings(problem, optimizer, steps, start, seed, clip, bounds_factor, hparams)
    if lr is None:  # the optimizer's own default
        params = [torch.zeros(2, requires_grad=True)]
        lr = make_optimizer(s.optimizer, params, **s.hparams).defaults["lr"]
    lrs = np.array([lr], dtype=np.float64)
    sim = simulate(s, lrs, batched=False, record_step_sizes=s.adaptive)
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
    ``hparams`` must not contain ``lr``.

    Args:
        lrs: the learning rates (> 0).
        record_step_sizes: record the effective step sizes (adaptive optimizers only).
        problem, optimizer, steps, start, seed, clip, bounds_factor: as for :func:`run`.
        **hparams: as for :func:`run`, without ``lr``.

    Returns:
        One :class:`Trajectory` per learning rate, in the order of ``lrs``.

    Raises:
        ValueError: ``lr`` in ``hparams``, bad ``lrs``, or a bad argument of :func:`run`.
    """
    if "lr" in hparams:
        raise ValueError("Invalid hparams: 'lr' (give the learning rates as lrs)")
    s = settings(problem, optimizer, steps, start, seed, clip, bounds_factor, hparams)
    lrs = check_grid("lrs", lrs, 0.0, low_open=True)
    sim = simulate(s, lrs, batched=True, record_step_sizes=record_step_sizes and s.adaptive)
    return [s.trajectory(sim, i, float(lr)) for i, lr in enumerate(lrs)]
