"""What running a sweep on Dask costs and gains over running its trials serially.

What it measures
    A sweep of 24 short trials (digits MLP; SGD+momentum, AdamW and Ada2MS at 4 learning rates,
    2 seeds; ``--steps`` steps of batch 64 each), run by ``analysis_lib.sweep.run_sweep`` two
    ways, in one process, one after the other:

    serial   ``serial=True``: the trials one by one in this process.
    dask     the default path: a fresh ``analysis_lib.cluster.local_cluster`` of ``--workers``
             single-threaded worker processes, started and closed by ``run_sweep``; everything is counted (cluster
             start, the workers' imports, submitting, gathering, writing ``trials.csv``).

    pool     the same trials through a plain ``multiprocessing`` pool of ``--workers`` processes
             (no Dask, no files): what parallel processes can gain on this machine right now.
             On a machine busy with other work the pool gains little too; the ratio dask/pool
             then says what Dask itself costs.

    and the same for a sweep of one trial: the difference is the fixed overhead of the Dask path
    (a cluster started for it), and, on a cluster already running, of one trial sent to it.
    The two tables are checked equal (apart from the seconds and worker columns) before any
    number is printed.

Targets (issue 15)
    dask / serial <= 0.65 for the 24 trials on two workers; the single-trial overhead of the
    Dask path < 2 s. On a machine shared with other work, absolute times move with the load:
    ``--repeats`` runs the pair several times and reports the fastest of each.

Examples::

    python benchmarks/bench_sweep.py
    python benchmarks/bench_sweep.py --steps 600 --repeats 2 --check
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from analysis_lib.cluster import local_cluster
from analysis_lib.sweep import load_config, run_sweep, run_trial


def config(steps: int, single: bool = False) -> dict:
    optimizers = [
        {"name": "sgdm", "lrs": [0.01, 0.03, 0.1, 0.3]},
        {"name": "adamw", "lrs": [3e-4, 1e-3, 3e-3, 1e-2]},
        {"name": "ada2ms", "lrs": [3e-4, 1e-3, 3e-3, 1e-2], "hparams": {"alpha": 0.5}},
    ]
    if single:
        optimizers = [{"name": "adamw", "lrs": [1e-3]}]
    return {
        "name": "bench",
        "seeds": [0] if single else [0, 1],
        "task": {"name": "digits", "args": {"model": "mlp"}},
        "budget": {"steps": steps, "batch_size": 64},
        "schedule": {"kind": "cosine", "warmup": steps // 10, "final": 0.0},
        "optimizers": optimizers,
    }


def timed(cfg, out: Path, **kw) -> tuple[float, pd.DataFrame]:
    t0 = time.perf_counter()
    result = run_sweep(cfg, out, progress=False, **kw)
    return time.perf_counter() - t0, result.trials


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = ["seconds", "worker"]
    pd.testing.assert_frame_equal(a.drop(columns=cols), b.drop(columns=cols), check_exact=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400, help="steps per trial (default 400)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="runs of each variant (fastest kept)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    big, one = load_config(config(args.steps)), load_config(config(args.steps, single=True))
    assert len(big.trials()) == 24

    t_serial, t_dask, t_pool, t1_serial, t1_dask, t1_warm = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeats):
            s, serial = timed(big, tmp / f"serial{r}", serial=True)
            d, dask = timed(big, tmp / f"dask{r}", workers=args.workers)
            same(serial, dask)
            t_serial.append(s)
            t_dask.append(d)
            t0 = time.perf_counter()
            with multiprocessing.get_context("fork").Pool(args.workers) as pool:
                pool.map(run_trial, big.trials(), chunksize=1)
            t_pool.append(time.perf_counter() - t0)
            s1, serial1 = timed(one, tmp / f"serial1-{r}", serial=True)
            d1, dask1 = timed(one, tmp / f"dask1-{r}", workers=args.workers)
            same(serial1, dask1)
            t1_serial.append(s1)
            t1_dask.append(d1)
        from distributed import Client

        with local_cluster(1) as cluster, Client(cluster) as client:
            timed(one, tmp / "warmup", client=client)  # the worker's imports, once
            for r in range(args.repeats):
                w1, _ = timed(one, tmp / f"warm1-{r}", client=client)
                t1_warm.append(w1)

    ratio = min(t_dask) / min(t_serial)
    pool_ratio = min(t_pool) / min(t_serial)
    overhead = min(t1_dask) - min(t1_serial)
    warm = min(t1_warm) - min(t1_serial)
    print(f"24 trials of {args.steps} steps, {args.workers} workers, {os.cpu_count()} cores")
    print(
        f"  serial            {min(t_serial):7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in t_serial)})"
    )
    print(
        f"  dask LocalCluster {min(t_dask):7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in t_dask)})"
    )
    print(
        f"  ratio dask/serial {ratio:7.3f}     target <= 0.65: {'ok' if ratio <= 0.65 else 'MISSED'}"
    )
    print(f"  multiprocessing pool {min(t_pool):5.2f} s   ratio pool/serial {pool_ratio:.3f}, "
          f"dask/pool {min(t_dask) / min(t_pool):.3f}")  # fmt: skip
    print("one trial")
    print(f"  serial            {min(t1_serial):7.2f} s")
    print(f"  dask, new cluster {min(t1_dask):7.2f} s   overhead {overhead:5.2f} s   "
          f"target < 2 s: {'ok' if overhead < 2 else 'MISSED'}")  # fmt: skip
    print(f"  dask, warm cluster{min(t1_warm):7.2f} s   overhead {warm:5.2f} s")
    return 1 if args.check and (ratio > 0.65 or overhead >= 2) else 0


if __name__ == "__main__":
    sys.exit(main())
