"""The optimizer-comparison protocol as reproducible sweeps, run on Dask.

A sweep is a task x optimizers (each with its hyperparameters and a learning-rate grid) x seeds
x a budget (steps, batch size) x a shared schedule, described in a TOML file (see
:mod:`analysis_lib.sweep.config`). Each trial is an independent, seeded training run
(:func:`run_trial`) whose row goes into ``OUT/trials.csv`` as soon as it finishes; the learning
rate of each optimizer is chosen on the validation split and its test numbers, mean and 95%
interval over seeds, go into ``OUT/summary.csv``::

    from analysis_lib import sweep

    result = sweep.run_sweep("data/sweeps/digits_quick.toml", "out/digits_quick")
    result.summary        # per optimizer: chosen lr, test loss / accuracy with intervals
    result.trials         # one row per trial

or from the shell: ``python -m analysis_lib.sweep data/sweeps/digits_quick.toml --out DIR``.
By default the trials run on a ``distributed.LocalCluster`` with one single-threaded worker per
core; ``scheduler="tcp://host:8786"`` (or ``$DASK_SCHEDULER_ADDRESS``) sends them to an existing
cluster, ``serial=True`` runs them here. Dask is imported only when a sweep runs on it.
"""

from .config import SELECTIONS, TASKS, ConfigError, SweepConfig, load_config
from .measurements import MEASUREMENTS, register_measurement
from .runner import (
    SCHEDULER_ENV_VAR,
    SweepResult,
    lr_sensitivity,
    read_trials,
    run_sweep,
    summarize,
)
from .trial import FINAL_STATUSES, STATUSES, run_trial

__all__ = [
    "FINAL_STATUSES",
    "MEASUREMENTS",
    "SCHEDULER_ENV_VAR",
    "SELECTIONS",
    "STATUSES",
    "TASKS",
    "ConfigError",
    "SweepConfig",
    "SweepResult",
    "load_config",
    "lr_sensitivity",
    "read_trials",
    "register_measurement",
    "run_sweep",
    "run_trial",
    "summarize",
]
