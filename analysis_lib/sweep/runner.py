"""Running a sweep: trials as Dask futures (or serially), results written as they arrive,
resume, and the summary over seeds."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from .. import __version__, progress_disabled
from ..cluster import local_cluster
from ..io import write_atomically
from ..training import choose_lr
from .config import ConfigError, SweepConfig, load_config
from .folder import (
    CONFIG_FILE,
    SUMMARY_FILE,
    TRIALS_FILE,
    SweepFolder,
    read_trials_file,
    trials_csv,
)
from .measurements import MEASUREMENTS
from .scheduler import DEFAULT_CONNECT_TIMEOUT, check_timeout, connect_scheduler
from .trial import FINAL_STATUSES, base_row, run_trial

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "SCHEDULER_ENV_VAR",
    "SweepResult",
    "lr_sensitivity",
    "read_trials",
    "run_sweep",
    "summarize",
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


# -- the tables -----------------------------------------------------------------------------------
def read_trials(path: str | os.PathLike) -> pd.DataFrame:
    """``trials.csv`` (or a folder holding it) as a DataFrame. Floats are written with their
    shortest round-trip repr and pandas (>= 3) parses them back exactly.

    Every row is checked whole before it counts (see :mod:`analysis_lib.sweep.folder`): all
    its fields, its checksum, a key found once and, when the folder's ``config.json`` is
    there, a key that is a trial of that configuration with that trial's configuration.

    Raises:
        ConfigError: the file (or the folder's ``config.json``) is unreadable or not what a
            sweep writes, or a row is bad; the message names the file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRIALS_FILE
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(str(path), f"{what}: no trials table there")
    trials = None
    stored = path.parent / CONFIG_FILE
    if stored.is_file():
        trials = {t["key"]: t for t in _stored_config(stored).trials()}
    return read_trials_file(path, trials)[0]


def _stored_config(stored: Path) -> SweepConfig:
    """The configuration kept in a sweep folder's ``config.json`` (the normalised data a sweep
    wrote, taken as it is: its measurements need not be registered here)."""
    try:
        data = json.loads(stored.read_bytes().decode("utf-8"))
        config = SweepConfig(data)
        config.trials()
    except OSError as e:
        raise ConfigError(
            str(stored), f"cannot be read ({type(e).__name__}: {e.strerror})"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(
            str(stored), f"is not the configuration of a sweep ({type(e).__name__}: {e})"
        ) from None
    return config


def _write_table(path: Path, rows: list[dict]) -> None:
    write_atomically(path, trials_csv(rows))


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of ``values`` (NaN bounds for fewer than 2)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(values))
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def lr_sensitivity(trials: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """One row per (label, lr): mean and 95% t-interval of ``metric`` over the seeds that
    finished (``n``), and ``failed``, the number of seeds that diverged or raised. Tidy, for a
    plot of ``metric`` against lr with one line (and band) per optimizer."""
    if metric not in trials.columns:
        raise ValueError(f"Invalid metric: {metric!r} (not a column of the trials table)")
    out = []
    for (label, lr), group in trials.groupby(["label", "lr"], sort=False):
        ok = group[group["status"] == "ok"]
        mean, low, high = _interval(ok[metric].to_numpy(dtype=float))
        out.append(
            {
                "label": label,
                "optimizer": group["optimizer"].iloc[0],
                "lr": float(lr),
                "n": len(ok),
                "failed": int((group["status"] != "ok").sum()),
                "mean": mean,
                "low": low,
                "high": high,
            }
        )
    return pd.DataFrame(out).sort_values(["label", "lr"], kind="stable", ignore_index=True)


def summarize(
    trials: pd.DataFrame, selection: str = "val_loss", seeds: int | None = None
) -> pd.DataFrame:
    """Per optimizer label: the learning rate chosen on the validation split and the test
    numbers at it, mean and 95% Student-t interval over seeds.

    The chosen lr has the lowest mean validation loss over seeds (``selection="val_loss"``) or
    the highest mean validation accuracy (``"val_accuracy"``). An lr with any seed diverged,
    raised or missing (fewer than ``seeds`` trials) counts as the worst, so an lr that works
    only for lucky seeds is never chosen; ties go to the smaller lr. When every lr of an
    optimizer failed, its lr and numbers are NaN and ``status`` says so.
    """
    if selection not in ("val_loss", "val_accuracy"):
        raise ValueError(f"Invalid selection: {selection!r}")
    rows = []
    for label, group in trials.groupby("label", sort=False):
        best = choose_lr(
            group.assign(failed=group["status"] != "ok"), selection, failed="failed", seeds=seeds
        )
        best = None if math.isnan(best) else best
        row = {
            "label": label,
            "optimizer": group["optimizer"].iloc[0],
            "hparams": group["hparams"].iloc[0],
            "lr": math.nan if best is None else float(best),
            "lrs": int(group["lr"].nunique()),
            "failed_trials": int((group["status"] != "ok").sum()),
        }
        chosen = (
            group[(group["lr"] == best) & (group["status"] == "ok")]
            if best is not None
            else group[:0]
        )
        row["seeds"] = len(chosen)
        row[f"{selection}_mean"] = float(chosen[selection].mean()) if len(chosen) else math.nan
        for metric in ("test_loss", "test_accuracy"):
            mean, low, high = _interval(chosen[metric].dropna().to_numpy(dtype=float))
            row[f"{metric}_mean"], row[f"{metric}_low"], row[f"{metric}_high"] = mean, low, high
        row["status"] = "ok" if best is not None else "every lr failed"
        rows.append(row)
    return pd.DataFrame(rows)


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
            old_keys = {t["key"] for t in load_config(old, check_task=False).trials()}
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            diff, old_keys = [f"(unreadable {stored})"], None
        if old_keys is not None and old_keys <= {t["key"] for t in config.trials()}:
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


def _dask_trial(trial: Mapping, measures: Mapping) -> dict:
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
        order = {t["key"]: i for i, t in enumerate(trials)}
        by_key = {t["key"]: t for t in trials}
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
        todo = [t for t in trials if rows.get(t["key"], {}).get("status") not in FINAL_STATUSES]
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
                _write_table(out / TRIALS_FILE, ordered)
                bar.update(1)

            bar = tqdm(
                total=len(trials),
                initial=skipped,
                desc=config.name,
                unit="trial",
                disable=not progress or progress_disabled(),
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


def _run_on_dask(todo, measures, record, client, workers) -> None:
    from distributed import Client, as_completed

    cluster = own_client = None
    try:
        if client is None:
            cluster = local_cluster(min(workers or os.cpu_count() or 1, len(todo)))
            client = own_client = Client(cluster)
        submitted = client.map(  # one message for all the trials
            _dask_trial,
            todo,
            [measures] * len(todo),
            key=[f"sweep-trial-{trial['key']}" for trial in todo],
        )
        trial_of = dict(zip(submitted, todo, strict=True))
        for fut in as_completed(submitted):
            trial = trial_of[fut]
            try:
                row = fut.result()
            except Exception as e:  # e.g. KilledWorker: the trial kept killing its workers
                row = base_row(trial, "error", f"{type(e).__name__}: {e}")
                row.update(seconds=math.nan, worker="", device="", version=__version__)
            record(row)
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()
