"""The optimizer-comparison protocol as reproducible sweeps, run on Dask.

A sweep is a task x optimizers (each with its hyperparameters and a learning-rate grid) x seeds
x a budget (steps, batch size) x a shared schedule, described in a TOML file (see
:mod:`analysis_lib.sweep.config`). Each trial is a frozen :class:`Trial` record and an
independent, seeded training run (:func:`run_trial`) whose row goes into ``OUT/trials.csv`` as
soon as it finishes; the learning rate of each optimizer is chosen on the validation split and
its test numbers, mean and 95% interval over seeds, go into ``OUT/summary.csv``::

    from analysis_lib import sweep

    result = sweep.run_sweep("data/sweeps/digits_quick.toml", "out/digits_quick")
    result.summary        # per optimizer: chosen lr, test loss / accuracy with intervals
    result.trials         # one row per trial

or from the shell: ``python -m analysis_lib.sweep data/sweeps/digits_quick.toml --out DIR``.
By default the trials run on a ``distributed.LocalCluster`` with one single-threaded worker per
core; ``scheduler="tcp://host:8786"`` (or ``$DASK_SCHEDULER_ADDRESS``) sends them to an existing
cluster, ``serial=True`` runs them here. Dask is imported only when a sweep runs on it.

The modules, bottom up (each imports only modules before it): ``measurements`` (the named
measurements), ``trial`` (the :class:`Trial` record: its fields, key and row, and running it),
``config`` (the TOML file, every value checked once where it enters, expanded into trials),
``folder`` (the output folder: its lock, ``trials.csv`` written and read back checked),
``scheduler`` (connecting to a Dask scheduler), ``tables`` (the summary and the lr curves),
``runner`` (:func:`run_sweep`), ``analysis`` (reading a finished sweep) and ``__main__`` (the
command line). The statistics are :mod:`analysis_lib.stats`'s.
"""

from .config import SELECTIONS, TASKS, ConfigError, SweepConfig, load_config
from .folder import read_trials
from .measurements import MEASUREMENTS, register_measurement
from .runner import SCHEDULER_ENV_VAR, SweepResult, run_sweep
from .tables import lr_sensitivity, summarize
from .trial import FINAL_STATUSES, STATUSES, Trial, run_trial

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
    "Trial",
    "load_config",
    "lr_sensitivity",
    "read_trials",
    "register_measurement",
    "run_sweep",
    "run_trial",
    "summarize",
]
