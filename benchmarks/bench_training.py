"""The cost of analysis_lib.training.train over a bare hand-written loop, and of its callbacks.

What it measures
    The digits MLP (61-64-64-10, tanh, ~8.8k parameters) trained with torch's AdamW (for-loop
    path) for ``--steps`` steps, full batch and minibatches of 64, two ways:

    bare   zero_grad, forward, loss, backward, step: nothing recorded.
    train  ``training.train(..., progress=False)``: records loss, accuracy, gradient and update
           norms and the learning rate at every step and checks for divergence.
    train/10  the same with ``record_every=10``: the loss is still checked at every step, the
           other records are taken every tenth step.

    and the cost per call of the callbacks (TransitionCallback, EvaluateCallback), measured
    inside ``train`` and shown as a multiple of one training step.

How it is measured
    Both variants run in interleaved rounds (``--repeats``), so machine drift hits them alike.
    The table shows the median time per step over rounds, the ratio of the medians and the ratio
    of the fastest rounds. On a shared machine the fastest round is the one least disturbed by
    other processes, so the min ratio is the better estimate of the harness's own overhead; the
    target of the training-harness issue (at most 1.10) is checked on it.

Examples::

    python benchmarks/bench_training.py
    python benchmarks/bench_training.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from analysis_lib import training
from analysis_lib.problems import tasks
from analysis_lib.training.loop import (
    _Batches,  # the loop's own batches, for a like-for-like bare loop
)

TARGET = 1.10


def bare_loop(task, steps: int, batch_size: int | None, seed: int = 0) -> None:
    """The loop a user would write by hand, with the same batches as train()."""
    model = task.make_model(seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    batches = _Batches(task.x_train, task.y_train, batch_size, seed)
    model.train()
    for step in range(1, steps + 1):
        x, y = batches(step)
        opt.zero_grad(set_to_none=True)
        loss = task.loss_fn(model(x), y)
        loss.backward()
        opt.step()


def harness(
    task, steps: int, batch_size: int | None, callbacks=(), record_every: int = 1
) -> training.Run:
    opt = lambda params: torch.optim.AdamW(params, lr=1e-3, foreach=False)  # noqa: E731
    return training.train(
        task,
        opt,
        steps,
        batch_size=batch_size,
        callbacks=callbacks,
        device="cpu",
        progress=False,
        record_every=record_every,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target fails")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 50, 3
    torch.set_num_threads(1)  # a per-step overhead is what is measured: no thread noise
    task = tasks.digits()
    print(
        f"digits MLP, {sum(p.numel() for p in task.make_model().parameters())} parameters, "
        f"AdamW (for-loop), {args.steps} steps x {args.repeats} rounds, 1 thread"
    )
    print(f"{'batch':>6} {'variant':>9} {'ms/step':>9} {'median ratio':>13} {'min ratio':>10}")
    ok = True
    for batch_size in (None, 64):
        times: dict[str, list[float]] = {"bare": [], "train": [], "train/10": []}
        harness(task, 10, batch_size)  # warm-up
        runs = {
            "bare": lambda b=batch_size: bare_loop(task, args.steps, b),
            "train": lambda b=batch_size: harness(task, args.steps, b),
            "train/10": lambda b=batch_size: harness(task, args.steps, b, record_every=10),
        }
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) / args.steps)
        bare = times["bare"]
        for name, ours in times.items():
            med = statistics.median(ours) / statistics.median(bare)
            fastest = min(ours) / min(bare)
            if name == "train":
                ok &= fastest <= TARGET
            print(
                f"{batch_size or 'full':>6} {name:>9} {1e3 * statistics.median(ours):9.3f} "
                f"{med:13.3f} {fastest:10.3f}"
            )

    step = statistics.median(times["train"])
    every = 10
    run = harness(
        task,
        args.steps,
        64,
        [
            training.TransitionCallback(every=every),
            training.EvaluateCallback(task, "val", every=every),
        ],
    )
    calls = args.steps // every
    print(f"\ncallback cost per call, batch 64 (one training step = {1e3 * step:.3f} ms):")
    for name, seconds in run.callback_seconds.items():
        per = seconds / calls
        print(f"  {name:<20} {1e3 * per:8.3f} ms = {per / step:5.2f} steps")
    print(
        f"\ntarget train/bare (min ratio, recording every step) <= {TARGET}: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
