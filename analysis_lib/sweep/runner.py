"""Running a sweep, the straight line from a checked configuration to its tables: its
:class:`~analysis_lib.sweep.trial.Trial` records (:mod:`~analysis_lib.sweep.config`), those not
yet done in the output folder (:mod:`~analysis_lib.sweep.folder`) run serially or as Dask
futures (:mod:`~analysis_lib.sweep.scheduler`, :func:`~analysis_lib.sweep.trial.run_trial`),
each row written as it arrives, then the summary (:mod:`~analysis_lib.sweep.tables`).

This module owns where trials run, resuming and extending a folder's sweep, and
:func:`run_sweep`'s own arguments (checked here, where they enter)."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pandas as pd

from .. import __version__, progress_bar
from ..cluster import local_cluster, map_as_completed
from ..io import write_atomically
from .config import ConfigError, SweepConfig, load_config
from .folder import (
    CONFIG_FILE,
    SUMMARY_FILE,
    TRIALS_FILE,
    SweepFolder,
    read_trials_file,
    write_trials,
)
from .measurements import MEASUREMENTS
from .scheduler import DEFAULT_CONNECT_TIMEOUT, check_timeout, connect_scheduler
from .tables import summarize
from .trial import FINAL_STATUSES, Trial, run_trial

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "SCHEDULER_ENV_VAR",
    "SweepResult",
    "run_sweep",
]

#: Environment variable naming the scheduler of an existing cluster (Dask's own name for it).
SCHEDULER_ENV_VAR = "DASK_SCHEDULER_ADDRESS"


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the trials table, the summary and how many trials ran."""

    trials: pd.DataFrame
    summary: pd.DataFrame
    ran: int
    skipped: int
    out: Path


# -- running --------------------------------------------------------------------------------------
def _check_out(out: Path, config: SweepConfig) -> bool:
    """Refuse an output folder that holds another sweep, before anything runs. A sweep whose
    trials are all among ``config``'s (more learning rates, optimizers or seeds, the rest
    unchanged) is extended: returns True, and its ``config.json`` is to be replaced."""
    stored = out / CONFIG_FILE
    if stored.exists():
        try:
            text = stored.read_bytes().decode("utf-8")
        except OSError as e:
            raise ConfigError(
                str(stored), f"cannot be read ({type(e).__name__}: {e.strerror})"
            ) from None
        except UnicodeDecodeError:
            text = None
        if text == config.canonical():
            return False
        try:
            old = json.loads(text)
            diff = sorted(k for k in config.data if old.get(k) != config.data[k])
            old_keys = {t.key for t in load_config(old, check_task=False).trials()}
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            diff, old_keys = [f"(unreadable {stored})"], None
        if old_keys is not None and old_keys <= {t.key for t in config.trials()}:
            return True
        raise ValueError(
            f"Invalid out: {out} holds a sweep of a different configuration (differs in "
            f"{', '.join(diff) or 'its form'}); resume only with the same config or one that "
            "extends it (every trial of the old one among the new one's), or choose another "
            "output folder"
        )
    if (out / TRIALS_FILE).exists():
        raise ValueError(
            f"Invalid out: {out} has a {TRIALS_FILE} but no {CONFIG_FILE}: not a sweep "
            "folder of this library; choose another output folder"
        )
    return False


def _dask_trial(trial: Trial, measures: Mapping) -> dict:
    from distributed import get_worker

    try:
        worker = get_worker().address
    except ValueError:
        worker = "dask"
    return run_trial(trial, measures, worker=worker)


def _scheduler_address(scheduler: str | None) -> str | None:
    if scheduler:
        return scheduler
    return os.environ.get(SCHEDULER_ENV_VAR, "").strip() or None


def run_sweep(
    config: SweepConfig | str | os.PathLike | dict,
    out: str | os.PathLike,
    *,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    serial: bool = False,
    progress: bool = True,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> SweepResult:
    """Run every trial of ``config`` not yet in ``out`` and write ``out/trials.csv`` (a row per
    trial, rewritten atomically as each one finishes) and ``out/summary.csv``.

    Where the trials run: serially in this process (``serial=True``); on ``client`` (a
    ``distributed.Client`` you manage); on the cluster whose scheduler is at ``scheduler`` or
    ``$DASK_SCHEDULER_ADDRESS``; else on a ``LocalCluster`` of ``workers`` single-threaded
    worker processes (default: one per core, at most one per trial), closed at the end. The
    rows do not depend on which. A scheduler must accept the connection and answer Dask's
    handshake within ``connect_timeout`` seconds (default 10), else a ``ConnectionError``
    names the address and what answered there, before anything is written.

    ``out/config.json`` keeps the configuration: a second call with the same config resumes
    (trials whose status is ``ok`` or ``diverged`` are skipped; errors are retried); a config
    that extends the stored one (every stored trial among its own: more learning rates,
    optimizers or seeds) runs only its new trials and replaces ``config.json``; any other
    config is refused (ValueError) before anything runs.

    One sweep per folder at a time: a sweep holds a lock on ``out`` while it runs (released by
    the system if its process dies), and a second one is refused at once (ConfigError). Every
    row of a resumed ``trials.csv`` is checked whole (see :mod:`analysis_lib.sweep.folder`); a
    bad row, or a file that is not a trials table, is refused with the file and line named
    (ConfigError) before anything runs, never counted.

    Args:
        config: a :class:`SweepConfig`, or what :func:`load_config` reads (a TOML path or a dict).
        out: the output folder (created if missing; resumed or extended when it holds this sweep).
        client: a ``distributed.Client`` to run the trials on (None: see above).
        scheduler: a Dask scheduler address (None: ``$DASK_SCHEDULER_ADDRESS``, else a
            ``LocalCluster``).
        workers: the ``LocalCluster``'s worker processes, an integer >= 1 (None: one per core).
        serial: run the trials here, one by one (not with ``client`` or ``scheduler``).
        progress: show a progress bar.
        connect_timeout: seconds (> 0) to wait for ``scheduler``.

    Returns:
        A :class:`SweepResult`: ``trials`` (the trials table), ``summary``
        (:func:`~analysis_lib.sweep.summarize`, empty with no trials), ``ran`` and ``skipped``
        (trial counts) and ``out`` (the folder as a ``Path``).

    Raises:
        ConfigError: an invalid config, an unusable output folder (a file, not creatable,
            read-only, locked by another sweep) or a bad ``trials.csv`` or ``config.json``.
        ValueError: bad ``workers``, ``connect_timeout`` or ``serial`` with a client or
            scheduler, or ``out`` holds another sweep.
        ConnectionError: the scheduler does not answer as Dask within ``connect_timeout``.
        OSError: a file cannot be written while the sweep runs.
    """
    if not isinstance(config, SweepConfig):
        config = load_config(config)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):  # fmt: skip
        raise ValueError(f"Invalid workers: {workers!r} (expected an integer >= 1)")
    connect_timeout = check_timeout(connect_timeout, "connect_timeout")
    address = None if client is not None or serial else _scheduler_address(scheduler)
    if serial and (client is not None or scheduler):
        raise ValueError("Invalid serial: serial=True runs here, without a client or scheduler")
    out = Path(out)
    with SweepFolder(out):
        extends = _check_out(out, config)
        trials = config.trials()
        order = {t.key: i for i, t in enumerate(trials)}
        by_key = {t.key: t for t in trials}
        rows: dict[str, dict] = {}
        if (out / TRIALS_FILE).exists():
            frame, checksummed = read_trials_file(out / TRIALS_FILE, by_key)
            if not checksummed and len(frame):
                warnings.warn(
                    f"{out / TRIALS_FILE} was written without row checksums (by an older "
                    "version): its rows are checked field by field, but a number cut short "
                    "cannot be detected in them; they get checksums when the file is next "
                    "written",
                    RuntimeWarning,
                    stacklevel=2,
                )
            rows = {r["key"]: r for r in frame.to_dict("records")}
        todo = [t for t in trials if rows.get(t.key, {}).get("status") not in FINAL_STATUSES]
        skipped = len(trials) - len(todo)
        measures = {name: MEASUREMENTS[name] for name in config.measurements}
        own_client = None
        if todo and address is not None:  # before anything is written
            client = own_client = connect_scheduler(address, connect_timeout)
        try:
            if extends or not (out / CONFIG_FILE).exists():
                write_atomically(out / CONFIG_FILE, config.canonical().encode("utf-8"))

            def record(row: dict) -> None:
                rows[row["key"]] = row
                ordered = sorted(rows.values(), key=lambda r: order[r["key"]])
                write_trials(out / TRIALS_FILE, ordered)
                bar.update(1)

            bar = progress_bar(
                total=len(trials),
                initial=skipped,
                desc=config.name,
                unit="trial",
                leave=True,
                progress=progress,
            )
            try:
                if todo and serial:
                    for trial in todo:
                        record(run_trial(trial, measures))
                elif todo:
                    _run_on_dask(todo, measures, record, client, workers)
            finally:
                bar.close()
        finally:
            if own_client is not None:
                own_client.close()

        if (out / TRIALS_FILE).exists():
            table = read_trials_file(out / TRIALS_FILE, by_key)[0]
        else:
            table = pd.DataFrame()
        summary = summarize(table, config.selection, len(config.seeds)) if len(table) else table
        buf = StringIO()
        summary.to_csv(buf, index=False)
        write_atomically(out / SUMMARY_FILE, buf.getvalue().encode("utf-8"))
    return SweepResult(table, summary, ran=len(todo), skipped=skipped, out=out)


def _row_of(trial, fut) -> dict:
    """The row a finished Dask task gives: its result, or an error row when it raised."""
    try:
        return fut.result()
    except Exception as e:  # e.g. KilledWorker: the trial kept killing its workers
        row = trial.row("error", f"{type(e).__name__}: {e}")
        row.update(seconds=math.nan, worker="", device="", version=__version__)
        return row


def _run_on_dask(todo, measures, record, client, workers) -> None:
    from distributed import Client

    cluster = own_client = None
    try:
        if client is None:
            cluster = local_cluster(min(workers or os.cpu_count() or 1, len(todo)))
            client = own_client = Client(cluster)
        map_as_completed(
            client,
            _dask_trial,
            todo,
            [measures] * len(todo),
            key=[f"sweep-trial-{trial.key}" for trial in todo],
            tags=todo,
            on_done=lambda trial, fut: record(_row_of(trial, fut)),
        )
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()
