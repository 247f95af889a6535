"""Time one optimizer step of AdamNX and Ada2MS against torch's AdamW and SGD.

What it measures
    The wall time of ``optimizer.step()`` on a fixed, transformer-like set of float32 parameters
    (~11.6M elements in 74 tensors: 36 of 512x512, 36 of 512, 2 of 2048x512). Gradients are set
    once to seeded random tensors and never change, so only the optimizer's own work is timed
    (no forward or backward pass, no ``zero_grad``).

How it is measured
    Every variant is built and warmed up first (the ``fused=True`` paths of AdamNX and Ada2MS
    compile with ``torch.compile`` on their first step, which takes a while). Then, for each of
    ``--repeats`` rounds, every variant in turn runs ``--steps`` steps timed with
    ``time.perf_counter`` (with ``torch.cuda.synchronize`` on CUDA). Interleaving the variants in
    rounds spreads machine drift over all of them alike; the table shows the median over rounds.

How to read the table
    ms/step   median wall time of one step.
    GB/s      the minimal memory traffic of the algorithm divided by that time. The traffic counts
              the tensors an ideal single-pass kernel must read and write per parameter element:
              AdamW-like (AdamW, AdamNX, Ada2MS) read param, grad, exp_avg, exp_avg_sq and write
              param, exp_avg, exp_avg_sq (7 tensors); SGD with momentum reads param, grad, buf and
              writes param, buf (5 tensors). The same count is used for every implementation of
              one algorithm, so a GB/s figure compares implementations directly; extra passes
              over memory show up as a lower GB/s.
    vs fused  ms/step divided by that of torch's fused AdamW in the same run (lower is faster).
    ada2ms-fused-compiled-sum is Ada2MS(fused=True) with its first pass (the sum of g^2 over
    every gradient) compiled like the update, instead of the native CPU kernel of
    analysis_lib/optim/_native.py: the difference of the two rows is what that kernel saves.

The target checks at the end compare our optimizers with torch's AdamW by the ratio of medians
(the ratio of the fastest rounds is shown too, as a check on noise). They print PASS or FAIL;
with ``--check`` the script exits with status 1 when any of them fails. They are set for the full
size and skipped with ``--quick``, where fixed per-tensor overhead dominates a step.

Examples::

    python benchmarks/bench_optimizers.py                  # full size, CPU
    python benchmarks/bench_optimizers.py --quick          # small smoke run
    python benchmarks/bench_optimizers.py --only adamw,adamnx --repeats 9
    python benchmarks/bench_optimizers.py --device cuda --check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from analysis_lib.optim import Ada2MS, AdamNX, ExponentialAlpha

# (shape, count): 36 square matrices, 36 vectors and 2 wide matrices, ~11.6M elements in all.
FULL_SHAPES = [((512, 512), 36), ((512,), 36), ((2048, 512), 2)]
QUICK_SHAPES = [((128, 128), 36), ((128,), 36), ((512, 128), 2)]  # 1/16 of the elements

ADAM_LIKE_TENSORS = 7  # reads p, g, m, v; writes p, m, v
SGD_MOMENTUM_TENSORS = 5  # reads p, g, buf; writes p, buf

REFERENCE = "adamw-fused"


@dataclass
class Variant:
    """One optimizer configuration to time."""

    name: str
    make: Callable[[list[torch.Tensor]], torch.optim.Optimizer]
    tensors_per_element: int
    optimizer: torch.optim.Optimizer | None = None
    times_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)


def all_variants() -> list[Variant]:
    """Every configuration the benchmark knows, in the order of the table."""
    adam, sgd = ADAM_LIKE_TENSORS, SGD_MOMENTUM_TENSORS
    adamw = torch.optim.AdamW
    return [
        Variant("adamw-loop", lambda p: adamw(p, lr=1e-3, foreach=False), adam),
        Variant("adamw-foreach", lambda p: adamw(p, lr=1e-3, foreach=True), adam),
        Variant("adamw-fused", lambda p: adamw(p, lr=1e-3, fused=True), adam),
        Variant("sgdm-default", lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9), sgd),
        Variant(
            "sgdm-foreach",
            lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, foreach=True),
            sgd,
        ),
        Variant("adamnx-loop", lambda p: AdamNX(p, foreach=False), adam),
        Variant("adamnx-foreach", lambda p: AdamNX(p, foreach=True), adam),
        Variant("adamnx-fused", lambda p: AdamNX(p, fused=True), adam),
        Variant("ada2ms-loop", lambda p: Ada2MS(p, foreach=False), adam),
        Variant("ada2ms-foreach", lambda p: Ada2MS(p, foreach=True), adam),
        Variant("ada2ms-fused", lambda p: Ada2MS(p, fused=True), adam),
        Variant("ada2ms-fused-compiled-sum", _ada2ms_compiled_reduction, adam),
        Variant(
            "ada2ms-fused-sched",  # alpha scheduled from 1 to 0.5: must not recompile per step
            lambda p: Ada2MS(p, alpha=ExponentialAlpha(final=0.5, tau=100.0), fused=True),
            adam,
        ),
    ]


def _ada2ms_compiled_reduction(params) -> Ada2MS:
    """Ada2MS(fused=True) with its phase-1 reduction compiled too, instead of the native CPU
    kernel: the row shows what that kernel saves."""
    opt = Ada2MS(params, fused=True)
    opt._native_reduction = False
    return opt


def select(variants: list[Variant], only: str | None) -> list[Variant]:
    """Variants whose name contains one of the comma-separated filters of ``--only``."""
    if not only:
        return variants
    keys = [k.strip() for k in only.split(",") if k.strip()]
    chosen = [v for v in variants if any(k in v.name for k in keys)]
    if not chosen:
        names = ", ".join(v.name for v in variants)
        sys.exit(f"--only {only!r} matches no variant (known: {names})")
    return chosen


def make_gradients(shapes, device: torch.device, seed: int) -> list[torch.Tensor]:
    """Fixed random gradients, shared (read-only) by every variant."""
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(s, generator=gen) * 1e-2 for s, n in shapes for _ in range(n)]
    return [g.to(device) for g in grads]


def make_params(grads: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """A fresh set of parameters whose ``.grad`` are the shared gradients."""
    gen = torch.Generator().manual_seed(seed + 1)
    params = []
    for g in grads:
        p = (torch.randn(g.shape, generator=gen) * 2e-2).to(g.device).requires_grad_()
        p.grad = g
        params.append(p)
    return params


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(v: Variant, grads, device: torch.device, steps: int, seed: int) -> float:
    """Build the optimizer and take ``steps`` untimed steps; returns the seconds it took."""
    v.optimizer = v.make(make_params(grads, seed))
    start = time.perf_counter()
    for _ in range(steps):
        v.optimizer.step()
    sync(device)
    return time.perf_counter() - start


def time_steps(v: Variant, device: torch.device, steps: int) -> float:
    """Milliseconds per step, averaged over ``steps`` consecutive steps."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        v.optimizer.step()
    sync(device)
    return (time.perf_counter() - start) * 1e3 / steps


def run_rounds(variants: list[Variant], device: torch.device, repeats: int, steps: int) -> None:
    """Time every variant once per round; the starting variant rotates from round to round."""
    for r in range(repeats):
        for k in range(len(variants)):
            v = variants[(r + k) % len(variants)]
            v.times_ms.append(time_steps(v, device, steps))


def print_table(variants: list[Variant], numel: int) -> None:
    ref = next((v for v in variants if v.name == REFERENCE), None)
    print(f"{'variant':<20} {'ms/step':>9} {'min':>9} {'max':>9} {'GB/s':>7} {'vs fused':>9}")
    print("-" * 68)
    for v in variants:
        ms = v.median_ms
        gbps = v.tensors_per_element * 4 * numel / (ms * 1e-3) / 1e9
        ratio = f"{ms / ref.median_ms:8.2f}x" if ref else f"{'-':>9}"
        print(
            f"{v.name:<20} {ms:9.2f} {min(v.times_ms):9.2f} {max(v.times_ms):9.2f} "
            f"{gbps:7.1f} {ratio}"
        )


def targets(device: torch.device) -> list[tuple[str, str, float]]:
    """(ours, torch's, largest allowed ratio). The default eager path is a for-loop on CPU and
    the foreach kernels on CUDA, for torch's optimizers and ours alike."""
    eager = "foreach" if device.type == "cuda" else "loop"
    return [
        ("adamnx-fused", "adamw-fused", 1.3),
        ("ada2ms-fused", "adamw-fused", 1.5),
        (f"adamnx-{eager}", f"adamw-{eager}", 1.0),
        (f"ada2ms-{eager}", f"adamw-{eager}", 1.0),
    ]


def check_targets(variants: list[Variant], device: torch.device) -> bool:
    """Print each target as PASS, FAIL or SKIP (a variant not run); True if none failed."""
    by_name = {v.name: v for v in variants}
    ok = True
    print("\ntargets")
    for ours, theirs, limit in targets(device):
        label = f"{ours} <= {limit:.1f}x {theirs}"
        if ours not in by_name or theirs not in by_name:
            print(f"  SKIP  {label} (not run)")
            continue
        a, b = by_name[ours], by_name[theirs]
        ratio = a.median_ms / b.median_ms
        best = min(a.times_ms) / min(b.times_ms)
        passed = ratio <= limit
        ok &= passed
        print(
            f"  {'PASS' if passed else 'FAIL'}  {label}: {ratio:.2f}x (fastest rounds: {best:.2f}x)"
        )
    return ok


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 11; quick 3)")
    ap.add_argument("--steps", type=int, default=None, help="steps per round (default 3; quick 2)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (default 3)")
    ap.add_argument("--quick", action="store_true", help="1/16-size model and few repeats")
    ap.add_argument("--only", help="comma-separated substrings of the variants to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="exit with status 1 if a target fails")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 11)
    args.steps = args.steps or (2 if args.quick else 3)
    return args


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda given but CUDA is not available")
    return device


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    variants = select(all_variants(), args.only)
    grads = make_gradients(shapes, device, args.seed)
    numel = sum(g.numel() for g in grads)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {name}")
    print(
        f"{numel / 1e6:.2f}M float32 parameters in {len(grads)} tensors; "
        f"{args.warmup} warm-up steps, {args.repeats} rounds x {args.steps} steps"
    )
    for v in variants:
        secs = warm_up(v, grads, device, args.warmup, args.seed)
        print(f"  warm-up {v.name:<20} {secs:7.1f} s", flush=True)

    run_rounds(variants, device, args.repeats, args.steps)
    print()
    print_table(variants, numel)
    if args.quick:  # at 1/16 of the size a step is mostly fixed per-tensor overhead
        print("\ntargets: not checked with --quick (they are set for the full size)")
        return 0
    ok = check_targets(variants, device)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
