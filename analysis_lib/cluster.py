"""A Dask ``LocalCluster`` set up for this library's work: short CPU-bound tasks (sweep trials,
chunks of a loss surface) on single-threaded worker processes.

:func:`local_cluster` is what :func:`analysis_lib.sweep.run_sweep` starts when it is given no
client or scheduler, and what to hand to ``landscape.surface_2d(..., client=...)`` on one
machine. It differs from a default ``LocalCluster`` in three ways:

* **How workers start** (:func:`start_method`): forked on Linux when this process runs no
  other thread (and no Dask cluster or client is alive in it), so that they inherit the imported
  library and start in a fraction of a second instead of importing torch afresh; from a
  forkserver with torch preloaded when another thread runs (another cluster's, a test runner's
  I/O thread, a Jupyter kernel's: a fork then can copy a lock one of them holds and hang the
  worker; a script then needs the usual ``if __name__ == "__main__":`` guard, as with
  Dask's default ``spawn``); spawned where CUDA is in play (a CUDA context survives neither)
  or off Linux.
* **Housekeeping** (:data:`COMPUTE_CONFIG`): Dask's default cluster samples every worker's stack
  every 10 ms for its profiler, checks each event loop every 20 ms and each worker's memory every
  100 ms. An idle two-worker cluster spent 0.6 s of CPU in 2.5 s on that here (a quarter of a
  core, taken from the work on a two-core machine); with these settings 0.08 s. The price: no
  profile in the dashboard, and a worker's memory is checked once a second.
* **Quiet and free**: logs below ERROR are silenced and the scheduler's HTTP server (the
  dashboard, when bokeh is installed) takes any free port, so a second cluster never warns that
  8787 is taken.
* **Local only**: the scheduler, the workers and their nannies listen on ``127.0.0.1``
  (``host``), and so does the scheduler's HTTP server (``dashboard_address``: Dask's default
  binds it to every interface, ``0.0.0.0``, whatever ``host`` says). Nothing is served to the
  network unless the caller asks: ``local_cluster(host="0.0.0.0")`` serves the scheduler and the
  dashboard on every interface, ``dashboard_address="0.0.0.0:8787"`` the dashboard alone.

Each worker runs one task at a time on one torch thread; the tasks of this library set torch to
one thread themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ._checks import check_int

__all__ = [
    "COMPUTE_CONFIG",
    "PRELOAD",
    "local_cluster",
    "map_as_completed",
    "one_torch_thread",
    "start_method",
]

#: Dask settings in force while :func:`local_cluster` starts its scheduler and workers (the
#: workers keep them, restarted ones too).
COMPUTE_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}

#: Modules a forkserver imports once before it forks workers (see :func:`start_method`).
PRELOAD = ("distributed", "torch", "analysis_lib.sweep.trial", "analysis_lib.landscape.surface")


def start_method() -> str:
    """How :func:`local_cluster` starts its worker processes: ``"fork"``, ``"forkserver"`` or
    ``"spawn"`` (the rule is in the module's docstring).

    Returns:
        ``"spawn"`` off Linux or once CUDA is available or initialised; else ``"forkserver"``
        while another Python thread runs in this process or a Dask client or cluster of it is
        alive, ``"fork"`` otherwise.
    """
    import torch

    if sys.platform != "linux" or torch.cuda.is_initialized() or torch.cuda.is_available():
        return "spawn"
    return "forkserver" if threading.active_count() > 1 or _dask_alive() else "fork"


def _dask_alive() -> bool:
    """Whether a Dask client or cluster of this process is running (its threads may hold
    locks). Unknown (a ``distributed`` without these registries) counts as alive."""
    from distributed import Client
    from distributed.deploy.spec import SpecCluster

    clients = getattr(Client, "_instances", None)
    clusters = getattr(SpecCluster, "_instances", None)
    if clients is None or clusters is None:
        return True
    alive = [str(getattr(c, "status", "")) for c in [*list(clients), *list(clusters)]]
    return any(not s.endswith(("closed", "closing", "failed")) for s in alive)


def local_cluster(
    workers: int | None = None,
    *,
    threads_per_worker: int = 1,
    preload: Sequence[str] = PRELOAD,
    **kwargs,
):
    """A ``distributed.LocalCluster`` of ``workers`` worker processes (default: one per core)
    of ``threads_per_worker`` threads, set up as the module's docstring says. ``preload``: the
    modules a forkserver imports before forking (used only when workers start from one).
    Further keywords go to ``LocalCluster`` and win over these settings: ``host`` (default
    ``"127.0.0.1"``) is where the scheduler and workers listen, ``dashboard_address`` (default:
    a free port on ``host``) where the dashboard does; ``interface`` or ``protocol`` replace the
    default ``host``. Use it as a context manager, or close it; ``distributed.Client(cluster)``
    connects to it.

    Args:
        workers: number of worker processes, an integer >= 1; None: ``os.cpu_count()``.
        threads_per_worker: threads in each worker, an integer >= 1 (default 1).
        preload: module names a forkserver imports before forking (default :data:`PRELOAD`).
        **kwargs: passed on to ``distributed.LocalCluster``, overriding the defaults.

    Returns:
        The started ``distributed.LocalCluster``.

    Raises:
        ValueError: ``workers`` or ``threads_per_worker`` not an integer >= 1, or ``preload`` not
            a sequence of module names; the message names the argument.
    """
    import dask
    from distributed import LocalCluster
    from distributed.utils import get_mp_context

    workers = check_int("workers", (os.cpu_count() or 1) if workers is None else workers, 1)
    threads_per_worker = check_int("threads_per_worker", threads_per_worker, 1)
    if isinstance(preload, str) or not all(isinstance(m, str) for m in preload):
        raise ValueError(f"Invalid preload: {preload!r} (expected a sequence of module names)")
    method = start_method()
    options = {
        "n_workers": workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        **_listen_addresses(kwargs),
        "silence_logs": logging.ERROR,
        **kwargs,
    }
    with dask.config.set({**COMPUTE_CONFIG, "distributed.worker.multiprocessing-method": method}):
        if method == "forkserver":
            get_mp_context().set_forkserver_preload(list(preload))
        return LocalCluster(**options)


LOCALHOST = "127.0.0.1"


def _listen_addresses(kwargs: dict) -> dict[str, str]:
    """``host`` and ``dashboard_address`` for ``LocalCluster``: the loopback interface, unless
    the caller's keywords choose a host (``host``, ``ip``, ``interface`` or ``protocol``), in
    which case the dashboard follows the caller's ``host`` (or stays on the loopback)."""
    chosen = {k for k in ("host", "ip", "interface", "protocol") if kwargs.get(k) is not None}
    host = kwargs.get("host") or kwargs.get("ip")
    options = {} if chosen else {"host": LOCALHOST}
    if isinstance(host, str) and host:
        host = host.split("://", 1)[-1]  # "tcp://10.0.0.1" -> "10.0.0.1"
        if host.startswith("["):  # "[::1]" or "[::1]:8786"
            host = host[: host.find("]") + 1]
        elif host.count(":") == 1:  # "10.0.0.1:8786"
            host = host.split(":")[0]
        elif ":" in host:  # an IPv6 address
            host = f"[{host}]"
    else:
        host = LOCALHOST
    options["dashboard_address"] = f"{host}:0"
    return options


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block on one torch (intra-op) thread, restoring the thread count afterwards, as
    the library's Dask tasks (sweep trials, chunks of a loss surface) do: their numbers then do
    not depend on the worker's core count.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with one_torch_thread():
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def map_as_completed(
    client: Any,
    fn: Callable,
    *iterables: Sequence,
    key: Sequence[str],
    tags: Sequence,
    on_done: Callable[[Any, Any], None],
) -> None:
    """``fn`` over ``iterables`` on ``client`` as one ``client.map`` (one message for all the
    tasks, named by ``key``), calling ``on_done(tag, future)`` as each task finishes (``tags``,
    one a task, tell them apart; ``future.result()`` gives its value or raises its error). When
    ``on_done`` raises or the wait is interrupted, the tasks still outstanding are cancelled.

    Args:
        client: a ``distributed.Client``.
        fn: the function to map.
        *iterables: its arguments, one sequence per positional parameter.
        key: one unique Dask key per task.
        tags: one value per task, passed to ``on_done``.
        on_done: called as ``on_done(tag, future)`` for each finished task, in completion order.

    Raises:
        ValueError: ``tags`` and the tasks differ in number.
        Exception: whatever ``on_done`` raises (after cancelling the outstanding tasks).
    """
    from distributed import as_completed

    submitted = client.map(fn, *iterables, key=list(key))
    tag_of = dict(zip(submitted, tags, strict=True))
    done = set()
    try:
        for fut in as_completed(submitted):
            done.add(fut)
            on_done(tag_of[fut], fut)
    finally:
        outstanding = [f for f in submitted if f not in done]
        if outstanding:
            client.cancel(outstanding)
