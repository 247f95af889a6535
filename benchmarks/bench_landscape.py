"""Speed of analysis_lib.landscape.surface_2d against a per-point loop.

What it measures
    A 41x41 grid (``--grid``) of filter-normalised random directions around the digits MLP
    (61-64-64-10, tanh, ~8.8k parameters), each point evaluated on all 1797 of scikit-learn's
    digits (train, validation and test splits together, as one batch):

    loop         the per-point loop anyone writes first: copy theta + a d1 + b d2 into the
                 model's parameters, forward, loss and accuracy; one point at a time.
    generic      ``surface_2d(..., first_layer="off")``, the path for any model: chunks of points
                 through torch.func.vmap over functional_call on a GPU, one point at a time
                 through functional_call on the CPU.
    vmap         the generic path with vmap forced on the CPU too (a private switch), to show
                 what batching points does there.
    first-layer  ``surface_2d(..., first_layer="auto")``: the first affine layer computed once per
                 grid (X (W0 + a D1 + b D2)^T = X W0^T + a X D1^T + b X D2^T) and the rest on a
                 chunk of points at once.
    loss-landscapes  the ``loss_landscapes`` package's ``random_plane``, when it is installed
                 (it is not a dependency; the row is skipped otherwise). It draws its own
                 directions and computes the loss only, no accuracy.

    Every variant is checked against the loop's values before it is timed.

How it is measured
    The variants run in interleaved rounds (``--repeats``); the table shows points/s of the
    median and of the fastest round and the ratio to the loop (fastest rounds: on a shared
    machine the least disturbed). The target is checked on surface_2d's default path for this
    model (first-layer): on the CPU no slower than the loop, on a GPU (``--device cuda``) at
    least 10x the loop.

Examples::

    python benchmarks/bench_landscape.py
    python benchmarks/bench_landscape.py --quick
    python benchmarks/bench_landscape.py --device cuda --threads 0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from analysis_lib import landscape
from analysis_lib.landscape import evaluator as surface  # its _VMAP_ON_CPU switch
from analysis_lib.problems import tasks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loop(model, loss_fn, x, y, d1, d2, alphas, betas) -> np.ndarray:
    """Per point: write the weights into the model, forward, loss and accuracy (what the
    evaluator returns too, and what Li et al.'s code records)."""
    theta = {k: p.detach().clone() for k, p in model.named_parameters()}
    out = torch.empty(len(alphas), len(betas), dtype=torch.float64, device=x.device)
    acc = torch.empty_like(out)
    model.eval()
    with torch.no_grad():
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                for k, p in model.named_parameters():
                    p.copy_(theta[k] + float(a) * d1[k] + float(b) * d2[k])
                logits = model(x)
                out[i, j] = loss_fn(logits, y)
                acc[i, j] = (logits.argmax(dim=-1) == y).to(logits.dtype).mean()
        for k, p in model.named_parameters():
            p.copy_(theta[k])
    return out.cpu().numpy()


def loss_landscapes_plane(model, loss_fn, x, y, steps: int, distance: float):
    """The loss-landscapes package's random plane (its own directions), or None."""
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except ImportError:
        return None
    metric = loss_landscapes.metrics.Loss(loss_fn, x, y)
    return lambda: loss_landscapes.random_plane(
        model, metric, distance, steps, normalization="filter", deepcopy_model=True
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", type=int, default=41, help="points per axis (default 41)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads on the CPU (default 1; 0 leaves torch's)",
    )
    ap.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="points per vectorised call (default: automatic)",
    )
    ap.add_argument("--quick", action="store_true", help="a 9x9 grid, one round: a smoke run")
    ap.add_argument(
        "--check", action="store_true", help="exit with status 1 when the target is not met"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.grid, args.repeats = 9, 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    task = tasks.digits(device=device)
    x = torch.cat([task.x_train, task.x_val, task.x_test])
    y = torch.cat([task.y_train, task.y_val, task.y_test])
    data = [(x, y)]
    model = task.make_model(seed=0)
    dirs = landscape.random_directions(model, seed=0, norm="filter")
    alphas = betas = np.linspace(-1.0, 1.0, args.grid)
    points = len(alphas) * len(betas)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"digits MLP, {n_params:,} parameters; {len(x)} samples; {args.grid}x{args.grid} = "
        f"{points:,} points; device {device}; threads {torch.get_num_threads()}"
    )

    def ours(first_layer: str, force_vmap: bool = False):
        def run():
            saved = surface._VMAP_ON_CPU
            surface._VMAP_ON_CPU = force_vmap or saved
            try:
                return landscape.surface_2d(
                    model,
                    task.loss_fn,
                    data,
                    dirs.d1,
                    dirs.d2,
                    alphas,
                    betas,
                    first_layer=first_layer,
                    progress=False,
                    chunk_size=args.chunk_size,
                ).loss
            finally:
                surface._VMAP_ON_CPU = saved

        return run

    variants = {
        "loop": lambda: loop(model, task.loss_fn, x, y, dirs.d1, dirs.d2, alphas, betas),
        "generic": ours("off"),
        "first-layer": ours("auto"),
    }
    if device.type == "cpu":
        variants["vmap"] = ours("off", force_vmap=True)
    ll = loss_landscapes_plane(model, task.loss_fn, x, y, args.grid, 1.0)
    if ll is not None:
        variants["loss-landscapes"] = ll
    else:
        print("loss-landscapes: not installed, skipped")

    reference = variants["loop"]()
    for name in [n for n in variants if n in ("generic", "first-layer", "vmap")]:  # checked first
        err = np.abs(variants[name]() - reference).max()
        print(f"{name}: max |difference| to the loop {err:.2e}")
        if not err < 1e-4:
            print(f"FAIL: {name} disagrees with the loop")
            return 1
    chunk = (
        landscape.auto_chunk_size(model, data, points)
        if args.chunk_size is None
        else args.chunk_size
    )
    print(f"chunk size {chunk} points")

    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)

    base_med, base_min = statistics.median(times["loop"]), min(times["loop"])
    print(
        f"\n{'variant':<16} {'points/s (median)':>18} {'points/s (best)':>16} "
        f"{'x loop (median)':>16} {'x loop (best)':>14}"
    )
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        print(
            f"{name:<16} {points / med:>18,.0f} {points / best:>16,.0f} "
            f"{base_med / med:>16.2f} {base_min / best:>14.2f}"
        )
    target = 10.0 if device.type == "cuda" else 1.0
    ratio = base_min / min(times["first-layer"])
    print(
        f"\ntarget: surface_2d's default path for this model (first-layer) >= {target:g}x the "
        f"loop on {device.type}: {'met' if ratio >= target else 'NOT met'} ({ratio:.2f}x, "
        "fastest rounds)"
    )
    if device.type == "cpu":
        print(
            "(the generic path is a per-point loop on the CPU: parity with the loop is what "
            "it can reach there)"
        )
    return 1 if args.check and ratio < target else 0


if __name__ == "__main__":
    sys.exit(main())
