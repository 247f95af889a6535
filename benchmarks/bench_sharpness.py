"""Cost of ``analysis_lib.sharpness`` on a trained digits MLP, against the naive way.

What it measures
    The digits MLP (61-64-64-10 tanh, 8,778 parameters; ``--quick``: 61-24-24-10) trained
    briefly with AdamW, its 1,347 training images as one batch (float32):

    1. ``sharpness_report`` at its default settings (the notebook's full settings): seconds
       per measure (each run alone) and for the whole row; target: under 30 s on 2 CPU cores.
    2. The worst-case ascent (l2, ``steps`` x ``restarts``) as the library runs it (all
       restarts advance together: one vectorised forward/backward over the data per step,
       perturbed parameters through ``functional_call``) against the naive way: each restart
       on its own, every step copies ``theta + delta`` into the module, runs a full forward and
       backward pass over all the data through the module and reads ``.grad``. Both are
       checked to reach the same maximum, then timed in interleaved rounds.
    3. m-sharpness (m = 128): all disjoint batches in one ``vmap`` per step against the naive
       per-batch loop (the same ascent through the module, one batch at a time).
    4. Average sharpness (64 antithetic pairs): perturbations evaluated through ``vmap`` in
       chunks, against copying each perturbation into the module and one forward.

How to read it
    Every line prints seconds and the ratio naive / library (above 1: the library is faster).
    Times are wall clock on whatever else the machine is doing; compare ratios.

Examples::

    python benchmarks/bench_sharpness.py             # full size (about a minute on 2 cores)
    python benchmarks/bench_sharpness.py --quick     # small smoke run
    python benchmarks/bench_sharpness.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from analysis_lib.problems import tasks
from analysis_lib.sharpness import (
    average_sharpness,
    epsilon_sharpness,
    sharpness_report,
    sigma_flatness,
    worst_case_sharpness,
)
from analysis_lib.training import train

TARGET_SECONDS = 30.0


def naive_worst_case(model, loss_fn, batches, rho, steps, restarts, seed=0):
    """Projected (normalised) gradient ascent in the l2 ball, one restart at a time, every
    step through the module on each batch given (their mean, or per batch for m-sharpness)."""
    params = [p for p in model.parameters()]
    theta = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed)
    n = sum(p.numel() for p in params)
    was_training = model.training
    model.eval()
    maxima = []
    try:
        with torch.no_grad():
            bases = [float(loss_fn(model(x), y)) for x, y in batches]
        for (x, y), base in zip(batches, bases, strict=True):
            best = -float("inf")
            for _ in range(restarts):
                z = torch.randn(n, generator=gen, dtype=torch.float64).to(theta[0].dtype)
                delta = z * (0.5 * rho / z.norm())
                for t in range(steps + 1):
                    with torch.no_grad():
                        offset = 0
                        for p, t0 in zip(params, theta, strict=True):
                            k = p.numel()
                            p.copy_(t0 + delta[offset : offset + k].view_as(p))
                            offset += k
                    model.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x), y)
                    best = max(best, float(loss.detach()))
                    if t == steps:
                        break
                    loss.backward()
                    g = torch.cat([p.grad.reshape(-1) for p in params])
                    delta = delta + 2 * rho * g / g.norm()
                    delta = delta * min(1.0, rho / float(delta.norm()))
            maxima.append(best - base)
    finally:
        with torch.no_grad():
            for p, t0 in zip(params, theta, strict=True):
                p.copy_(t0)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return sum(maxima) / len(maxima)


def naive_average(model, loss_fn, x, y, rho, samples, seed=0):
    params = [p for p in model.parameters()]
    theta = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    try:
        with torch.no_grad():
            base = float(loss_fn(model(x), y))
            for _ in range(samples):
                zs = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
                for sign in (1, -1):
                    for p, t0, z in zip(params, theta, zs, strict=True):
                        p.copy_(t0 + sign * rho * z.to(p.dtype))
                    total += float(loss_fn(model(x), y))
    finally:
        with torch.no_grad():
            for p, t0 in zip(params, theta, strict=True):
                p.copy_(t0)
    return total / (2 * samples) - base


def timed(fn, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small network, few rounds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--report-only", action="store_true", help="only part 1")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden = (24, 24) if args.quick else (64, 64)
    task = tasks.digits(model="mlp", hidden=hidden)
    run = train(task, "adamw", steps=100 if args.quick else 300, lr=3e-3, progress=False)
    model, loss_fn = run.model.eval(), task.loss_fn
    data = task.data("train")
    x, y = data[0]
    n = sum(p.numel() for p in model.parameters())
    print(
        f"digits MLP {hidden}, {n} parameters, {len(x)} training images, "
        f"{torch.get_num_threads()} threads, train loss {run.final_loss:.4f}"
    )

    # 1. the report at its defaults
    start, cpu = time.perf_counter(), time.process_time()
    row = sharpness_report(model, loss_fn, data)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    print("\nsharpness_report (defaults):")
    for key in (
        "loss",
        "worst_case",
        "worst_case_adaptive",
        "average",
        "average_adaptive",
        "epsilon",
        "sigma_flatness",
        "lambda_max",
        "hessian_trace",
    ):
        print(f"  {key:<22} {row[key]:.6g}")
    print(
        f"  passes: {row['forward_passes']} forward, {row['backward_passes']} backward, "
        f"{row['hessian_matvecs']} Hessian-vector products"
    )
    parts = {
        "worst_case": lambda: worst_case_sharpness(model, loss_fn, data, 0.05),
        "worst_case_adaptive": lambda: worst_case_sharpness(
            model, loss_fn, data, 0.5, adaptive=True
        ),
        "average (x2)": lambda: average_sharpness(model, loss_fn, data, 0.01),
        "epsilon": lambda: epsilon_sharpness(model, loss_fn, data, 1e-3),
        "sigma_flatness": lambda: sigma_flatness(model, loss_fn, data, 0.1),
    }
    for key, fn in parts.items():
        cpu_part = time.process_time()
        seconds = fn().seconds
        print(f"  {key:<22} {seconds:7.2f} s  ({time.process_time() - cpu_part:.2f} s CPU)")
    verdict = "PASS" if total < TARGET_SECONDS else "FAIL"
    print(f"  whole report           {total:7.2f} s  (target < {TARGET_SECONDS:.0f} s): {verdict}")
    print(
        f"  whole report, CPU time {cpu:7.2f} s  (all threads; on a busy machine the wall time "
        "is the CPU time over the share of the cores it got)"
    )
    if args.report_only:
        return

    # 2. worst-case ascent: library vs naive
    rho, steps, restarts = 0.05, 20, 2
    lib = worst_case_sharpness(model, loss_fn, data, rho, steps=steps, restarts=restarts)
    ref = naive_worst_case(model, loss_fn, [(x, y)], rho, steps, restarts)
    print(
        f"\nworst case l2 rho={rho}, {steps} steps x {restarts} restarts: "
        f"library {lib.value:.6g}, naive {ref:.6g}"
    )
    t_lib = timed(
        lambda: worst_case_sharpness(model, loss_fn, data, rho, steps=steps, restarts=restarts),
        args.rounds,
    )
    t_naive = timed(
        lambda: naive_worst_case(model, loss_fn, [(x, y)], rho, steps, restarts), args.rounds
    )
    print(
        f"  library {t_lib[0]:.3f} s, naive {t_naive[0]:.3f} s (median): "
        f"ratio naive/library {t_naive[0] / t_lib[0]:.2f} (fastest rounds "
        f"{t_naive[1] / t_lib[1]:.2f})"
    )

    # 3. m-sharpness: vmap over the disjoint batches vs a loop
    m = 128
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    k = len(x) // m
    groups = [(x[perm[i * m : (i + 1) * m]], y[perm[i * m : (i + 1) * m]]) for i in range(k)]
    lib = worst_case_sharpness(model, loss_fn, data, rho, m=m, steps=steps, restarts=restarts)
    ref = naive_worst_case(model, loss_fn, groups, rho, steps, restarts)
    print(f"\nm-sharpness m={m} ({k} batches): library {lib.value:.6g}, naive {ref:.6g}")
    t_lib = timed(
        lambda: worst_case_sharpness(
            model, loss_fn, data, rho, m=m, steps=steps, restarts=restarts
        ),
        args.rounds,
    )
    t_naive = timed(
        lambda: naive_worst_case(model, loss_fn, groups, rho, steps, restarts), args.rounds
    )
    print(
        f"  library {t_lib[0]:.3f} s, naive {t_naive[0]:.3f} s (median): "
        f"ratio naive/library {t_naive[0] / t_lib[0]:.2f} (fastest rounds "
        f"{t_naive[1] / t_lib[1]:.2f})"
    )

    # 4. average sharpness
    samples = 64
    lib = average_sharpness(model, loss_fn, data, 0.01, samples=samples)
    ref = naive_average(model, loss_fn, x, y, 0.01, samples)
    print(
        f"\naverage rho=0.01, {samples} pairs: library {lib.value:.6g} +- {lib.stderr:.2g}, "
        f"naive {ref:.6g} (other draws)"
    )
    t_lib = timed(
        lambda: average_sharpness(model, loss_fn, data, 0.01, samples=samples), args.rounds
    )
    t_naive = timed(lambda: naive_average(model, loss_fn, x, y, 0.01, samples), args.rounds)
    print(
        f"  library {t_lib[0]:.3f} s, naive {t_naive[0]:.3f} s (median): "
        f"ratio naive/library {t_naive[0] / t_lib[0]:.2f} (fastest rounds "
        f"{t_naive[1] / t_lib[1]:.2f})"
    )


if __name__ == "__main__":
    main()
