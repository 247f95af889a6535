"""A real Dask LocalCluster for the tests (imported by test modules; not a test itself)."""

from __future__ import annotations

import contextlib
import logging
import sys


@contextlib.contextmanager
def local_cluster(workers: int = 2):
    """``workers`` single-threaded worker processes, forked on Linux as the sweep's own
    LocalCluster is (so that they, and a restarted one, start without importing torch afresh);
    no dashboard, its HTTP server on a free port."""
    import dask
    import distributed

    method = "fork" if sys.platform == "linux" else "spawn"
    with (
        dask.config.set({"distributed.worker.multiprocessing-method": method}),
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
    ):
        yield cluster
