"""Time learning-rate tuning on a toy problem: one batched run per grid against one run per
learning rate.

What it measures
    For each optimizer, the wall time of evaluating a learning-rate grid on Rosenbrock for
    ``--steps`` steps, (a) as one batched run (``analysis_lib.trajectory.run_batch``: a (G, 2)
    parameter, or for Ada2MS G 2-element tensors with their own global statistic) and (b) as G
    separate runs of the real optimizer (``analysis_lib.trajectory.run``). Nothing is cached.

How to read the table
    batched s   median seconds of the batched run over ``--repeats`` rounds.
    loop s      median seconds of the G separate runs.
    speed-up    loop / batched.
    max diff    the largest difference between the two, over every point of every trajectory
                (they agree to rounding).

Examples::

    python benchmarks/bench_trajectory.py              # 25 learning rates, 300 steps
    python benchmarks/bench_trajectory.py --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from analysis_lib import trajectory
from analysis_lib.problems import toy


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--per-decade", type=int, default=4, help="grid points per decade")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="50 steps, 1 repeat")
    args = parser.parse_args(argv)
    steps, repeats = (50, 1) if args.quick else (args.steps, args.repeats)
    problem = toy.rosenbrock()
    grid = trajectory.lr_grid(1e-5, 10.0, per_decade=args.per_decade)
    print(f"Rosenbrock, {len(grid)} learning rates, {steps} steps, median of {repeats}")
    print(f"{'method':<14} {'batched s':>10} {'loop s':>8} {'speed-up':>9} {'max diff':>9}")
    trajectory.run(problem, "adam", 5, lr=0.1)  # warm up torch
    for m in trajectory.DEFAULT_METHODS:
        t_batch, batch = _time(
            lambda m=m: trajectory.run_batch(problem, m.optimizer, steps, grid, **m.hparams),
            repeats,
        )
        t_loop, loop = _time(
            lambda m=m: [
                trajectory.run(problem, m.optimizer, steps, lr=float(lr), **m.hparams)
                for lr in grid
            ],
            repeats,
        )
        diff = max(
            float(np.max(np.abs(b.points - s.points)))
            if b.points.shape == s.points.shape
            else np.inf
            for b, s in zip(batch, loop, strict=True)
        )
        print(
            f"{m.label:<14} {t_batch:>10.3f} {t_loop:>8.3f} {t_loop / t_batch:>8.1f}x {diff:>9.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
