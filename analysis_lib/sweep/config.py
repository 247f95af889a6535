"""The sweep configuration: a TOML file (read with :mod:`tomllib`), validated in full before anything
runs, and its expansion into frozen :class:`~analysis_lib.sweep.trial.Trial` records.

This module owns the checks: every value of a sweep (the learning rates, every hyperparameter,
the budget, schedule, seeds, task and measurements) is checked once, here, where it enters;
the trial records, the run and the tables take them as checked. (The optimizer's own
constructor check runs once here too, on a throw-away parameter, so that a bad hyperparameter
is named before any trial runs.)

A configuration::

    name = "digits_quick"
    seeds = [0, 1]                  # one trial per seed at every (optimizer, lr)
    selection = "val_loss"          # how an lr is chosen: "val_loss" (lowest) or "val_accuracy"
    measurements = ["lambda_max"]   # names from analysis_lib.sweep.MEASUREMENTS (default none)
    divergence_factor = 1000.0      # passed to training.train (default 1000)

    [task]
    name = "digits"                 # a task of analysis_lib.problems.tasks
    args = { model = "mlp" }        # its arguments (not device or dtype)

    [budget]
    steps = 300
    batch_size = 64                 # leave out for the full batch
    target_train_loss = 0.05        # optional: stop a trial at the first check where the loss
    check_every = 10                #   over the whole training split is <= this (default 10)
    anneal_steps = 300              # optional, with a target: at the target, anneal the rate
                                    #   linearly from the schedule's value over this many steps
                                    #   (fewer when the budget ends first), then stop
                                    #   (analysis_lib.training.AnnealAtTarget)

    [schedule]                      # shared by every trial (default: constant)
    kind = "cosine"                 # "constant" or "cosine": linear warm-up, then cosine decay
    warmup = 30                     #   (a constant schedule takes a warm-up too)
    final = 0.0

    [[optimizers]]
    name = "ada2ms"                 # a name of analysis_lib.optim.make_optimizer
    label = "ada2ms a=0.5"          # unique; default the name
    lrs = [1e-3, 3e-3]              # or: lr_grid = { min = 1e-4, max = 1e-1, num = 7 } (log-spaced)
    hparams = { alpha = 0.5 }       # Ada2MS's 1 -> 0 schedule: alpha = { final = 0.0, tau = 200.0 }

Every error is a :class:`ConfigError` whose message starts with the key at fault
(``optimizers[2].lrs: ...``), raised before any trial runs.
"""

from __future__ import annotations

import inspect
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..io import canonical_json
from ..optim import OPTIMIZERS, make_optimizer
from ..problems import tasks as _tasks
from .measurements import MEASUREMENTS
from .trial import Trial, make_task, resolve_hparams

__all__ = ["SELECTIONS", "TASKS", "ConfigError", "SweepConfig", "load_config", "make_task"]

#: Task factories a sweep may name, from :mod:`analysis_lib.problems.tasks`.
TASKS = ("digits", "mnist1d", "teacher_student", "cifar10")
#: How a learning rate is chosen on the validation split.
SELECTIONS = ("val_loss", "val_accuracy")
_SCHEDULES = ("constant", "cosine")
_TOP_KEYS = {
    "name",
    "seeds",
    "selection",
    "measurements",
    "divergence_factor",
    "task",
    "budget",
    "schedule",
    "optimizers",
}
_OPT_KEYS = {"name", "label", "lrs", "lr_grid", "hparams"}


class ConfigError(ValueError):
    """A malformed sweep configuration; ``key`` names the entry at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


# -- small checks ---------------------------------------------------------------------------------
def _table(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {type(value).__name__} {value!r}")
    return value


def _unknown(table: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{extra[0]}", f"unknown key (expected one of {sorted(allowed)})")


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ConfigError(key, f"expected an integer >= {minimum}, got {value}")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ConfigError(key, f"expected a finite number, got {value!r}")
    return float(value)


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    return value


def _positive_lr(value: Any, key: str) -> float:
    lr = _number(value, key)
    if lr <= 0:
        raise ConfigError(key, f"learning rates must be > 0, got {value!r}")
    return lr


def _plain_hparam(value: Any, key: str) -> Any:
    """TOML values allowed as optimizer hyperparameters: numbers, booleans, strings, arrays of
    them (e.g. betas), and for ``alpha`` a schedule table."""
    if isinstance(value, bool | int | float | str):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return value
    if isinstance(value, list):
        return [_plain_hparam(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(key, f"expected a number, boolean, string or array, got {value!r}")


def _alpha_schedule(value: dict, key: str, steps: int) -> dict:
    _unknown(value, {"final", "tau", "within"}, key)
    if "final" not in value or ("tau" in value) == ("within" in value):
        raise ConfigError(
            key, "an alpha schedule is { final = F, tau = T } or { final = F, within = W }"
        )
    return {k: _number(v, f"{key}.{k}") for k, v in value.items()}


def _round_lr(x: float) -> float:
    return float(f"{x:.6g}")  # six significant digits: the grid reads well in tables


# -- the configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep configuration in plain data (see the module docstring); ``data`` is
    the normalised configuration (defaults filled in, lr grids expanded) that is stored in the
    output folder as canonical JSON."""

    data: dict

    @property
    def name(self) -> str:
        """The sweep's name (default: the TOML file's stem)."""
        return self.data["name"]

    @property
    def selection(self) -> str:
        """How an lr is chosen: one of :data:`SELECTIONS`."""
        return self.data["selection"]

    @property
    def seeds(self) -> list[int]:
        """The seeds, as a new list."""
        return list(self.data["seeds"])

    @property
    def optimizers(self) -> list[dict]:
        """The normalised optimizer entries (``name``, ``label``, ``lrs``, ``hparams``)."""
        return self.data["optimizers"]

    @property
    def measurements(self) -> list[str]:
        """The measurement names, as a new list."""
        return list(self.data["measurements"])

    def canonical(self) -> str:
        """The configuration as canonical JSON (:func:`analysis_lib.io.canonical_json`).

        Returns:
            The JSON text of ``data``, the same for equal configurations.
        """
        return canonical_json(self.data)

    def trials(self) -> list[Trial]:
        """The sweep's trials, in the order optimizer x lr x seed: one frozen :class:`Trial`
        each, built here once from the checked configuration; each has its ``key`` (a hash of
        everything that determines its result).

        Returns:
            A new list of :class:`Trial`, ``len(optimizers) * len(lrs) * len(seeds)`` long.
        """
        d = self.data
        budget = d["budget"]
        return [
            Trial(
                task=d["task"],
                optimizer=opt["name"],
                label=opt["label"],
                hparams=opt["hparams"],
                lr=lr,
                seed=seed,
                steps=budget["steps"],
                batch_size=budget["batch_size"],
                schedule=d["schedule"],
                measurements=tuple(d["measurements"]),
                divergence_factor=d["divergence_factor"],
                target_train_loss=budget.get("target_train_loss"),
                check_every=budget.get("check_every"),
                anneal_steps=budget.get("anneal_steps"),
            )
            for opt in d["optimizers"]
            for lr in opt["lrs"]
            for seed in d["seeds"]
        ]


def _read(source: str | Path | dict) -> tuple[dict, str]:
    """The raw table of a config (a TOML path or a dict) and its default name."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise ConfigError("config", f"no such file: {path}")
        if not path.is_file():
            raise ConfigError("config", f"{path} is not a file (a TOML file is expected)")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigError(
                "config", f"cannot read {path} ({type(e).__name__}: {e.strerror or e})"
            ) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(
                "config",
                f"{path} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
                "TOML files are UTF-8",
            ) from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("config", f"{path.name} is not valid TOML ({e})") from None
        return raw, path.stem
    if isinstance(source, dict):
        return source, "sweep"
    raise ConfigError("config", f"expected a TOML path or a dict, got {type(source).__name__}")


def _seeds(seeds: Any) -> list[int]:
    if not isinstance(seeds, list):
        raise ConfigError("seeds", f"expected an array of integers, got {seeds!r}")
    if not seeds:
        raise ConfigError("seeds", "empty: a sweep needs at least one seed")
    seeds = [_int(s, f"seeds[{i}]", 0) for i, s in enumerate(seeds)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", f"repeated seeds in {seeds}")
    return seeds


def _measurements(measurements: Any) -> list[str]:
    if not isinstance(measurements, list):
        raise ConfigError("measurements", f"expected an array of names, got {measurements!r}")
    for i, m in enumerate(measurements):
        if m not in MEASUREMENTS:
            raise ConfigError(
                f"measurements[{i}]", f"unknown measurement {m!r} (known: {sorted(MEASUREMENTS)})"
            )
    if len(set(measurements)) != len(measurements):
        raise ConfigError("measurements", f"repeated names in {measurements}")
    return list(measurements)


def _task_spec(value: Any) -> dict:
    task = _table(value, "task")
    _unknown(task, {"name", "args"}, "task")
    task_name = _str(task.get("name"), "task.name")
    if task_name not in TASKS:
        raise ConfigError("task.name", f"unknown task {task_name!r} (known: {list(TASKS)})")
    args = _table(task.get("args", {}), "task.args")
    params = inspect.signature(getattr(_tasks, task_name)).parameters
    for k in args:
        if k not in params or k in ("device", "dtype"):
            allowed = sorted(p for p in params if p not in ("device", "dtype"))
            raise ConfigError(f"task.args.{k}", f"unknown argument of tasks.{task_name} {allowed}")
    return {"name": task_name, "args": dict(args)}


def _budget_spec(value: Any) -> dict:
    """``steps``, ``batch_size`` and, optionally, ``target_train_loss`` (a trial stops at the
    first check where the loss over the whole training split is at most this) with
    ``check_every`` (steps between checks, default 10). The target keys are in the spec only
    when given, so a config without them keeps its trial keys."""
    budget = _table(value, "budget")
    _unknown(
        budget,
        {"steps", "batch_size", "target_train_loss", "check_every", "anneal_steps"},
        "budget",
    )
    if "steps" not in budget:
        raise ConfigError("budget.steps", "missing")
    steps = _int(budget["steps"], "budget.steps", 1)
    batch_size = budget.get("batch_size")
    if batch_size is not None:
        batch_size = _int(batch_size, "budget.batch_size", 1)
    spec: dict[str, Any] = {"steps": steps, "batch_size": batch_size}
    if "target_train_loss" in budget:
        target = _number(budget["target_train_loss"], "budget.target_train_loss")
        if target <= 0:
            raise ConfigError("budget.target_train_loss", f"expected a number > 0, got {target}")
        every = _int(budget.get("check_every", 10), "budget.check_every", 1)
        if every > steps:
            raise ConfigError("budget.check_every", f"{every} is above budget.steps = {steps}")
        spec.update(target_train_loss=target, check_every=every)
        if "anneal_steps" in budget:
            anneal = _int(budget["anneal_steps"], "budget.anneal_steps", 1)
            if anneal % every:
                raise ConfigError(
                    "budget.anneal_steps", f"{anneal} is not a multiple of check_every = {every}"
                )
            if anneal >= steps:
                raise ConfigError("budget.anneal_steps", f"{anneal} is not below steps = {steps}")
            if steps % every:
                raise ConfigError(
                    "budget.anneal_steps",
                    f"needs budget.steps ({steps}) to be a multiple of check_every ({every}), "
                    "so that an anneal cut by the budget ends on a check",
                )
            spec["anneal_steps"] = anneal
    else:
        for key in ("check_every", "anneal_steps"):
            if key in budget:
                raise ConfigError(f"budget.{key}", "only a budget with target_train_loss takes it")
    return spec


def _schedule_spec(value: Any, steps: int) -> dict:
    schedule = _table(value, "schedule")
    _unknown(schedule, {"kind", "warmup", "final"}, "schedule")
    kind = schedule.get("kind", "constant")
    if kind not in _SCHEDULES:
        raise ConfigError("schedule.kind", f"expected one of {_SCHEDULES}, got {kind!r}")
    if kind == "constant":
        if "final" in schedule:
            raise ConfigError("schedule.final", "only a cosine schedule takes final")
        if "warmup" not in schedule:
            return {"kind": "constant"}  # the spec of configs without a warm-up stays as it was
        warmup = _int(schedule["warmup"], "schedule.warmup", 0)
        if warmup >= steps:
            raise ConfigError("schedule.warmup", f"{warmup} is not below budget.steps = {steps}")
        return {"kind": "constant", "warmup": warmup}
    warmup = _int(schedule.get("warmup", 0), "schedule.warmup", 0)
    if warmup >= steps:
        raise ConfigError("schedule.warmup", f"{warmup} is not below budget.steps = {steps}")
    final = _number(schedule.get("final", 0.0), "schedule.final")
    if not 0 <= final <= 1:
        raise ConfigError("schedule.final", f"expected a number in [0, 1], got {final}")
    return {"kind": "cosine", "warmup": warmup, "final": final}


def _lrs(opt: dict, where: str) -> list[float]:
    if ("lrs" in opt) == ("lr_grid" in opt):
        raise ConfigError(f"{where}.lrs", "give exactly one of lrs and lr_grid")
    if "lrs" in opt:
        lrs = opt["lrs"]
        if not isinstance(lrs, list):
            raise ConfigError(f"{where}.lrs", f"expected an array of numbers, got {lrs!r}")
        lrs = [_positive_lr(v, f"{where}.lrs[{j}]") for j, v in enumerate(lrs)]
    else:
        grid = _table(opt["lr_grid"], f"{where}.lr_grid")
        _unknown(grid, {"min", "max", "num"}, f"{where}.lr_grid")
        for k in ("min", "max", "num"):
            if k not in grid:
                raise ConfigError(f"{where}.lr_grid.{k}", "missing")
        lo = _positive_lr(grid["min"], f"{where}.lr_grid.min")
        hi = _positive_lr(grid["max"], f"{where}.lr_grid.max")
        num = _int(grid["num"], f"{where}.lr_grid.num", 0)
        if hi < lo:
            raise ConfigError(f"{where}.lr_grid", f"max {hi} is below min {lo}")
        if num == 1 and hi != lo:
            raise ConfigError(f"{where}.lr_grid.num", "1 point needs min == max")
        lrs = (
            []
            if num == 0
            else [_round_lr(lo * (hi / lo) ** (j / max(num - 1, 1))) for j in range(num)]
        )
    if not lrs:
        raise ConfigError(f"{where}.lrs", "empty learning-rate grid")
    if len(set(lrs)) != len(lrs):
        raise ConfigError(f"{where}.lrs", f"repeated learning rates in {lrs}")
    return lrs


def _optimizer_spec(opt: dict, where: str, steps: int, labels: set[str]) -> dict:
    _unknown(opt, _OPT_KEYS, where)
    name = _str(opt.get("name"), f"{where}.name")
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"{where}.name", f"unknown optimizer {name!r} (known: {sorted(OPTIMIZERS)})"
        )
    label = _str(opt.get("label", name), f"{where}.label")
    if label in labels:
        raise ConfigError(f"{where}.label", f"{label!r} is used twice (labels are unique)")
    labels.add(label)
    lrs = _lrs(opt, where)
    hp = _table(opt.get("hparams", {}), f"{where}.hparams")
    if "lr" in hp:
        raise ConfigError(f"{where}.hparams.lr", "the learning rate goes in lrs or lr_grid")
    hparams = {}
    for k, v in hp.items():
        if k == "alpha" and isinstance(v, dict):
            hparams[k] = _alpha_schedule(v, f"{where}.hparams.alpha", steps)
        else:
            hparams[k] = _plain_hparam(v, f"{where}.hparams.{k}")
    probe = [torch.zeros(2, requires_grad=True)]
    try:  # the optimizer's own validation, on a throw-away parameter
        make_optimizer(name, probe, lr=lrs[0], **resolve_hparams(hparams, steps))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}.hparams", f"{name} rejects them: {e}") from None
    return {"name": name, "label": label, "lrs": lrs, "hparams": hparams}


def _optimizers(opts: Any, steps: int) -> list[dict]:
    if not isinstance(opts, list) or not all(isinstance(o, dict) for o in opts):
        raise ConfigError("optimizers", "expected an array of tables ([[optimizers]])")
    if not opts:
        raise ConfigError("optimizers", "empty: a sweep needs at least one optimizer")
    labels: set[str] = set()
    return [_optimizer_spec(opt, f"optimizers[{i}]", steps, labels) for i, opt in enumerate(opts)]


def _check_task(task_spec: dict, batch_size: int | None) -> None:
    try:
        task_obj = make_task(task_spec)
    except (TypeError, ValueError, OSError) as e:
        raise ConfigError("task.args", f"tasks.{task_spec['name']} rejects them: {e}") from None
    if batch_size is not None and batch_size > task_obj.n_train:
        raise ConfigError(
            "budget.batch_size",
            f"{batch_size} is larger than the training set ({task_obj.n_train} samples)",
        )


def load_config(source: str | Path | dict, *, check_task: bool = True) -> SweepConfig:
    """Read (a path to a TOML file) or take (a dict) a sweep configuration and validate it.

    ``check_task`` builds the task once (cheap for digits) to check its arguments and the
    batch size against the training set. Raises :class:`ConfigError` naming the bad key.

    Args:
        source: a path to a TOML file (``str`` or ``Path``), or the configuration as a dict.
        check_task: build the task to check its arguments and the batch size.

    Returns:
        The validated :class:`SweepConfig`.

    Raises:
        ConfigError: a missing, unreadable or non-UTF-8 file, invalid TOML, or any invalid
            entry (its ``key`` names the entry, e.g. ``"budget.steps"``).

    Examples:
        >>> config = load_config({"name": "demo", "seeds": [0, 1], "task": {"name": "digits"},
        ...                       "budget": {"steps": 10},
        ...                       "optimizers": [{"name": "sgd", "lrs": [0.1, 0.3]}]},
        ...                      check_task=False)
        >>> config.name, config.selection, len(config.trials())
        ('demo', 'val_loss', 4)
    """
    raw, default_name = _read(source)
    _unknown(raw, _TOP_KEYS, "")
    for required in ("task", "budget", "seeds", "optimizers"):
        if required not in raw:
            raise ConfigError(required, "missing")
    name = _str(raw.get("name", default_name), "name")
    seeds = _seeds(raw["seeds"])
    selection = raw.get("selection", "val_loss")
    if selection not in SELECTIONS:
        raise ConfigError("selection", f"expected one of {SELECTIONS}, got {selection!r}")
    divergence_factor = _number(raw.get("divergence_factor", 1000.0), "divergence_factor")
    if divergence_factor <= 1:
        raise ConfigError("divergence_factor", f"expected a number > 1, got {divergence_factor}")
    measurements = _measurements(raw.get("measurements", []))
    task_spec = _task_spec(raw["task"])
    budget = _budget_spec(raw["budget"])
    schedule = _schedule_spec(raw.get("schedule", {"kind": "constant"}), budget["steps"])
    optimizers = _optimizers(raw["optimizers"], budget["steps"])
    data = {
        "name": name,
        "task": task_spec,
        "budget": budget,
        "schedule": schedule,
        "seeds": seeds,
        "selection": selection,
        "measurements": measurements,
        "divergence_factor": divergence_factor,
        "optimizers": optimizers,
    }
    if check_task:
        _check_task(task_spec, budget["batch_size"])
    return SweepConfig(data)
