"""A training run's checkpoint: its identity and its integrity (the file format of
:func:`~analysis_lib.training.train`'s ``checkpoint``).

* The file: :func:`save_checkpoint` writes a dict behind a header that holds the SHA-256 of its
  bytes, atomically (through :func:`analysis_lib.io.write_atomically`);
  :func:`load_checkpoint` checks the header, the checksum, the format and every part, reads it
  with ``torch.load(weights_only=True)`` (nothing is unpickled), checks the parts against each
  other, and raises one :class:`CheckpointError` naming the file and what is wrong.
* The parts agree: the step is a whole number >= 0; the history records are of steps 1..step,
  in order, every step that ``record_every`` makes recorded among them, with no NaN where a
  saved run has none (only the accuracy of a task without one, and the update norm of a stop
  step off the record schedule); the measurements are of steps 1..step, in order; there is a
  first loss exactly when a step was taken (equal to the loss recorded at step 1); a stopped run
  is at its stop step; each schedule has one value per step; no optimizer step counter is
  beyond the step. A file that fails one of these would resume inconsistently: it is refused.
* The identity: what the task, the model, the optimizer as constructed and the run's settings
  are (:func:`run_identity`), compared entry by entry (:func:`identity_differences`), and the
  values of the run's step schedules at every step taken (:class:`Schedules`), since two
  callables cannot always be told apart by their code.
* :class:`Checkpoint`: one run's file, with its identity and schedules: ``load`` refuses a file
  of another configuration, ``save`` stamps what is saved with the format, the identity, the
  schedules' values and the step.

The loop (:mod:`analysis_lib.training.loop`) uses it; :mod:`analysis_lib.training` re-exports
:func:`load_checkpoint`, :func:`save_checkpoint` and :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import fields as dataclass_fields
from io import BytesIO
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import io
from ..problems.tasks import Task
from ._record import Row

__all__ = [
    "FORMAT",
    "RECORD_COLUMNS",
    "Checkpoint",
    "CheckpointError",
    "Schedules",
    "identity_differences",
    "load_checkpoint",
    "run_identity",
    "save_checkpoint",
]

FORMAT = "analysis_lib.training/2"
_MAGIC = b"analysis_lib.training checkpoint\n"
_DIGEST = 64  # hex characters of a SHA-256
_PARTS = {  # key -> (accepted types, what it is)
    "format": (str, "a format string"),
    "identity": (str, "the run's identity as JSON"),
    "step": (int, "a step number"),
    "model": (dict, "the model's state"),
    "optimizer": (dict, "the optimizer's state"),
    "records": (Tensor, "the history records"),
    "measurements": (list, "the measurements"),
    "first_loss": ((float, type(None)), "the first loss"),
    "callback_seconds": (dict, "the callbacks' timings"),
    "callbacks": (list, "the callbacks' state"),
    "rng": (Tensor, "the random generator's state"),
    "schedules": (dict, "the schedules' values"),
}
#: Columns of the history records, in the order a checkpoint stores them (a history row's fields).
RECORD_COLUMNS = Row._fields


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, truncated or corrupted (its checksum
    does not match), not a training checkpoint of this library (or of another version of it),
    or missing parts, or parts that disagree with each other (a step that its history, first
    loss, stop record, schedules or optimizer state contradict). The message names the file and
    what is wrong."""


# -- the file -------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` (a dict :func:`torch.save` can store) to ``path`` atomically (through
    :func:`analysis_lib.io.write_atomically`: synced, then renamed), behind a header with the
    SHA-256 of its bytes, so that :func:`load_checkpoint` detects truncation and corruption.

    Args:
        path: the file written (replaced if it exists).
        checkpoint: the dict saved.

    Returns:
        None.
    """
    buf = BytesIO()
    torch.save(checkpoint, buf)
    body = buf.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode("ascii")
    io.write_atomically(path, _MAGIC + digest + b"\n" + body)


def _failure(path: Path) -> Callable[..., CheckpointError]:
    def fail(what: str, exc: BaseException | None = None) -> CheckpointError:
        detail = "" if exc is None else f" ({type(exc).__name__}: {exc})"
        return CheckpointError(f"checkpoint {path}: {what}{detail}")

    return fail


def _checked_body(path: Path, fail: Callable[..., CheckpointError]) -> bytes:
    """The bytes after the header, when the header is there and their SHA-256 matches it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise fail("cannot be read", exc) from exc
    if not raw:
        raise fail("is empty (0 bytes): truncated")
    if _MAGIC.startswith(raw):
        raise fail(f"is truncated (only {len(raw)} bytes)")
    if not raw.startswith(_MAGIC):
        raise fail(
            "is not a training checkpoint of this version of the library (no header; written "
            "by another program or an older version)"
        )
    header_end = len(_MAGIC) + _DIGEST + 1
    digest, body = raw[len(_MAGIC) : header_end], raw[header_end:]
    if len(digest) < _DIGEST + 1 or digest[_DIGEST:] != b"\n":
        raise fail(f"is truncated (only {len(raw)} bytes)")
    if hashlib.sha256(body).hexdigest().encode("ascii") != digest[:_DIGEST]:
        raise fail(
            f"is truncated or corrupted: its content ({len(body)} bytes) does not match its "
            "checksum"
        )
    return body


def _check_parts(ck: Any, fail: Callable[..., CheckpointError]) -> dict[str, Any]:
    """``ck`` with its identity parsed, when it is a checkpoint of this format with every part."""
    if not isinstance(ck, dict):
        raise fail(f"holds a {type(ck).__name__}, not a checkpoint")
    if ck.get("format") != FORMAT:
        raise fail(f"has format {ck.get('format')!r}, expected {FORMAT!r}")
    for key, (types_, what) in _PARTS.items():
        if key not in ck:
            raise fail(f"lacks {what} ({key!r})")
        if not isinstance(ck[key], types_):
            raise fail(f"holds a {type(ck[key]).__name__} as {what} ({key!r})")
    try:
        ck["identity"] = json.loads(ck["identity"])
    except ValueError as exc:
        raise fail("holds an unreadable identity", exc) from exc
    records = ck["records"]
    if records.ndim != 2 or records.shape[1] != len(RECORD_COLUMNS):
        raise fail(
            f"holds history records of shape {tuple(records.shape)}, expected (n, {len(RECORD_COLUMNS)})"
        )
    stopped = ck.get("stopped")  # optional: present when a callback stopped the run
    if stopped is not None and not (
        isinstance(stopped, dict)
        and isinstance(stopped.get("step"), int)
        and isinstance(stopped.get("reason"), str)
    ):
        raise fail(f"holds an unreadable stop record ({stopped!r:.60})")
    _check_consistency(ck, fail)
    return ck


def _whole(x: float) -> bool:
    return math.isfinite(x) and x == int(x)


def _check_consistency(ck: dict[str, Any], fail: Callable[..., CheckpointError]) -> None:
    """Refuse a checkpoint whose parts disagree with each other: the step, the history
    records, the measurements, the first loss, the stop record, the schedules' values and the
    optimizer's step counters must describe one run stopped at one step (see the module's
    docstring for what a run writes)."""
    step = ck["step"]
    if isinstance(step, bool) or step < 0:
        raise fail(f"holds step {step!r}, expected a whole number >= 0")
    _check_records(ck, step, fail)
    first = ck["first_loss"]
    if (first is None) != (step == 0):
        raise fail(
            f"is at step {step} but "
            + ("has no first loss" if first is None else f"has a first loss ({first!r})")
            + ", which only a run at step 0 "
            + ("has" if first is not None else "lacks")
        )
    if first is not None and not math.isfinite(first):
        raise fail(f"holds a non-finite first loss ({first!r})")
    records = ck["records"]
    if len(records) and records[0, 0].item() == 1 and records[0, 1].item() != first:
        raise fail(
            f"holds a first loss ({first!r}) that differs from the loss of its record of step 1 "
            f"({records[0, 1].item()!r})"
        )
    _check_measurements(ck["measurements"], step, fail)
    for name, seconds in ck["callback_seconds"].items():
        if not (
            isinstance(name, str)
            and isinstance(seconds, int | float)
            and not isinstance(seconds, bool)
            and math.isfinite(seconds)
            and seconds >= 0
        ):
            raise fail(f"holds {seconds!r:.40} seconds for callback {name!r:.40}")
    stopped = ck.get("stopped")
    if stopped is not None:
        last = int(records[-1, 0].item()) if len(records) else None
        if stopped["step"] != step or last != step:
            raise fail(
                f"says its run stopped at step {stopped['step']}, but it is at step {step} with "
                f"its last record at step {last}; a stopped run is saved at its stop step"
            )
    for key, values in ck["schedules"].items():
        if not isinstance(values, Tensor) or values.ndim != 1 or len(values) != step:
            got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise fail(
                f"holds values of schedule {key!r} of shape {got}, expected ({step},): one per "
                "step taken"
            )
    _check_optimizer_steps(ck["optimizer"], step, fail)


def _check_records(ck: dict[str, Any], step: int, fail: Callable[..., CheckpointError]) -> None:
    """The history: one row per recorded step, in order, within 1..step; every step that
    ``record_every`` (from the identity, when it names one) makes recorded is there; numbers
    that a saved run can have (no NaN but in the accuracy column and the update norm of a
    stop step that was not on the record schedule)."""
    records = ck["records"]
    if not records.is_floating_point():
        raise fail(f"holds history records of dtype {records.dtype}, expected floating point")
    rows = records.detach().to("cpu", torch.float64).tolist()
    steps = [r[0] for r in rows]
    where = f"is at step {step} but holds {len(rows)} history records"
    for i, t in enumerate(steps):
        if not _whole(t) or not 1 <= t <= step:
            raise fail(f"{where}, record {i} of which is of step {t!r} (expected 1..{step})")
        if i and t <= steps[i - 1]:
            raise fail(
                f"{where} out of order: record {i} is of step {t:g}, after step {steps[i - 1]:g}"
            )
    every = ck["identity"].get("record_every") if isinstance(ck["identity"], dict) else None
    if isinstance(every, int) and not isinstance(every, bool) and every >= 1:
        missing = sorted(set(range(every, step + 1, every)) - {int(t) for t in steps})
        if missing:
            raise fail(
                f"{where}: with record_every={every} the records of step"
                f"{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing[:5]))}"
                f"{' ...' if len(missing) > 5 else ''} are missing"
            )
    stopped = ck.get("stopped")
    stop_step = stopped["step"] if stopped is not None else None
    accuracies = {math.isnan(r[2]) for r in rows}
    if len(accuracies) > 1:
        raise fail("holds history records with accuracy in some rows and NaN in others")
    for r in rows:
        t, loss, accuracy, grad_norm, update_norm, lr = r
        bad = None
        if not math.isfinite(loss):
            bad = f"loss {loss!r} (a run with a non-finite loss diverged and was not saved)"
        elif not (math.isnan(accuracy) or 0 <= accuracy <= 1):
            bad = f"accuracy {accuracy!r} (expected 0..1)"
        elif math.isnan(grad_norm) or grad_norm < 0:
            bad = f"grad_norm {grad_norm!r} (expected >= 0)"
        elif math.isnan(update_norm) and t != stop_step:
            bad = "update_norm NaN (only a stop step off the record schedule has none)"
        elif not math.isnan(update_norm) and not (math.isfinite(update_norm) and update_norm >= 0):
            bad = f"update_norm {update_norm!r} (expected a finite number >= 0)"
        elif not (math.isfinite(lr) and lr >= 0):
            bad = f"lr {lr!r} (expected a finite number >= 0)"
        if bad is not None:
            raise fail(f"holds a history record of step {t:g} with {bad}")


def _check_measurements(measurements: list, step: int, fail: Callable[..., CheckpointError]):
    """One dict of names -> numbers per measured step, in order, within 1..step."""
    previous = 0
    for i, row in enumerate(measurements):
        if not isinstance(row, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in row.items()
        ):
            raise fail(f"holds measurements row {i} that is not a dict of names -> numbers")
        t = row.get("step")
        if t is None or not _whole(t) or not previous < t <= step:
            raise fail(
                f"is at step {step} but holds measurements row {i} of step {t!r} (expected "
                f"a step in {previous + 1}..{step}, after the previous row's)"
            )
        previous = int(t)


def _check_optimizer_steps(state: dict, step: int, fail: Callable[..., CheckpointError]) -> None:
    """No parameter's step counter in the optimizer's state is beyond the checkpoint's step."""
    entries = state.get("state")
    if not isinstance(entries, dict):
        return
    for key, entry in entries.items():
        counter = entry.get("step") if isinstance(entry, dict) else None
        if isinstance(counter, Tensor) and counter.numel() == 1:
            counter = counter.item()
        if isinstance(counter, int | float) and not isinstance(counter, bool):
            if not (math.isfinite(counter) and 0 <= counter <= step):
                raise fail(
                    f"is at step {step} but its optimizer's state of parameter {key} is at "
                    f"step {counter!r}"
                )


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict[str, Any]:
    """The checkpoint :func:`~analysis_lib.training.train` wrote to ``path``, checked against its
    checksum and read with ``torch.load(weights_only=True)`` (nothing is unpickled).

    Args:
        path: the checkpoint file.
        map_location: as for :func:`torch.load` (e.g. a device); None keeps the saved devices.

    Returns:
        The checked checkpoint dict.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is unreadable, truncated, corrupted, of another format or
            version, lacks a part, or holds parts that disagree (a step that its history
            contradicts, NaN records, ...); the message names the file and what is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    fail = _failure(path)
    body = _checked_body(path, fail)
    try:
        ck = torch.load(BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as exc:  # checksum right, content unreadable: another writer's bytes
        raise fail("cannot be decoded", exc) from exc
    return _check_parts(ck, fail)


# -- the identity ---------------------------------------------------------------------------------
def _identified(value: Any, where: str) -> Any:
    """``io.describe(value)``, or a note that it could not be identified (then it is compared
    through what it produces)."""
    try:
        return io.describe(value, where)
    except io.UnidentifiableError:
        name = getattr(value, "__qualname__", type(value).__qualname__)
        return {"unidentified": name}


def _task_identity(task: Task) -> dict[str, Any]:
    names = [f.name for f in dataclass_fields(task)]
    names.sort(key=lambda n: n != "arguments")  # the constructor's arguments say it best
    return {n: _identified(getattr(task, n), f"task.{n}") for n in names}


def run_identity(
    task, model, opt, *, name, lr, hparams, lr_schedule, batch_size, seed, extra
) -> dict[str, Any]:
    """What the task, the model, the optimizer as constructed (its class and every param
    group's hyperparameters) and the run's settings are, as JSON-able values.

    Args:
        task: the run's :class:`~analysis_lib.problems.tasks.Task`.
        model: the freshly initialised model.
        opt: the optimizer as constructed.
        name: the optimizer's name.
        lr: the learning rate given (or None).
        hparams: the further optimizer hyperparameters.
        lr_schedule: the learning-rate schedule, or None.
        batch_size: the batch size (None: full batch).
        seed: the run's seed.
        extra: further entries merged in at the top level.

    Returns:
        A nested dict of JSON values (as a checkpoint gives it back).
    """
    groups = []
    for i, g in enumerate(opt.param_groups):
        desc = {k: _identified(v, f"param_groups[{i}][{k!r}]") for k, v in g.items()}
        desc["params"] = [list(p.shape) for p in g["params"]]
        groups.append(desc)
    identity = {
        "task": _task_identity(task),
        "model": {
            "architecture": repr(model),
            "initial": io.describe(model.state_dict()),
            "dtype": str(next(model.parameters()).dtype),
        },
        "optimizer": {
            "name": name,
            "class": f"{type(opt).__module__}.{type(opt).__qualname__}",
            "param_groups": groups,
        },
        "lr": lr,
        "hparams": {k: _identified(v, k) for k, v in sorted(hparams.items())},
        "lr_schedule": None if lr_schedule is None else _identified(lr_schedule, "lr_schedule"),
        "batch_size": batch_size,
        "seed": seed,
        **extra,
    }
    return json.loads(json.dumps(identity))  # as a checkpoint gives it back


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and "sha256" in value:  # a tensor: one entry
        value = f"{value.get('tensor')} {value.get('shape')} sha256 {value['sha256'][:12]}"
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and not all(isinstance(v, int | float) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value
    return out


def identity_differences(saved: dict, now: dict) -> list[str]:
    """The entries in which two identities differ, ``'key' (checkpoint ..., now ...)``, in the
    order of the identity.

    Args:
        saved: the checkpoint's identity.
        now: this run's identity (:func:`run_identity`).

    Returns:
        A list of strings, empty when the two agree.
    """
    a, b = _flatten(saved, "", {}), _flatten(now, "", {})
    diffs = []
    for key in [*b, *(k for k in a if k not in b)]:  # in the order of the identity
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            then, current = (repr(v)[:60] for v in (a.get(key, "<absent>"), b.get(key, "<absent>")))
            diffs.append(f"'{key}' (checkpoint {then}, now {current})")
    return diffs


class Schedules:
    """The values of the run's step schedules (``lr_schedule`` and callable hyperparameters of
    the param groups, e.g. Ada2MS's alpha) at steps 1..t: what a checkpoint compares, since two
    callables cannot always be told apart by their code."""

    def __init__(self, lr_schedule, opt) -> None:
        self.fns: dict[str, Callable[[int], Any]] = {}
        if lr_schedule is not None:
            self.fns["lr_schedule"] = lr_schedule
        for i, g in enumerate(opt.param_groups):
            for k, v in g.items():
                if k != "params" and callable(v):
                    self.fns[f"param_groups[{i}][{k!r}]"] = v
        self.values: dict[str, list[float]] = {k: [] for k in self.fns}

    def upto(self, step: int) -> dict[str, Tensor]:
        """Each schedule's values at steps 1..``step`` (computed once and kept).

        Args:
            step: the last step (>= 0).

        Returns:
            key -> a float64 tensor of ``step`` values.

        Raises:
            ValueError: a schedule raised at some step.
        """
        for key, fn in self.fns.items():
            values = self.values[key]
            for t in range(len(values) + 1, step + 1):
                try:
                    values.append(float(fn(t)))
                except Exception as exc:
                    raise ValueError(
                        f"{key}({t}) failed ({type(exc).__name__}: {exc}); a checkpointed run "
                        "compares its schedules by their values at every step"
                    ) from exc
        return {k: torch.tensor(v[:step], dtype=torch.float64) for k, v in self.values.items()}

    def check(self, saved: dict[str, Tensor], step: int, path: Path) -> None:
        """Refuse a checkpoint whose schedules differ from this run's at steps 1..``step``.

        Args:
            saved: the checkpoint's schedule values (:meth:`upto` when it was written).
            step: the checkpoint's step.
            path: the checkpoint file, named in the error.

        Returns:
            None.

        Raises:
            ValueError: a schedule only one of the runs has, or a value that differs (naming
                the first step), or a schedule that raised.
        """
        now = self.upto(step)
        for key in sorted(saved.keys() | now.keys()):
            if key not in saved or key not in now:
                where = "the checkpoint's run" if key in saved else "this run"
                raise ValueError(
                    f"checkpoint {path.name} was written by a different configuration: only "
                    f"{where} has a schedule '{key}'; remove it or pass another path"
                )
            a, b = saved[key].to(torch.float64).cpu(), now[key]
            if a.shape != b.shape or not torch.equal(a, b):
                bad = next((t for t in range(min(len(a), len(b))) if a[t].item() != b[t].item()), 0)
                raise ValueError(
                    f"checkpoint {path.name} was written by a different configuration: "
                    f"'{key}' differs at step {bad + 1} (the checkpoint's run used "
                    f"{a[bad].item() if len(a) > bad else None!r}, this one gives "
                    f"{b[bad].item() if len(b) > bad else None!r}); remove it or pass "
                    "another path"
                )


# -- one run's file -------------------------------------------------------------------------------
class Checkpoint:
    """The checkpoint file of one run: ``path``, the run's ``identity`` (see
    :func:`run_identity`) and its :class:`Schedules`."""

    def __init__(self, path: Path, identity: dict[str, Any], schedules: Schedules) -> None:
        self.path, self.identity, self.schedules = path, identity, schedules

    def exists(self) -> bool:
        """Whether the file exists.

        Returns:
            True when there is a file at ``path``.
        """
        return self.path.exists()

    def load(self, steps: int, map_location=None) -> dict[str, Any]:
        """The file's checkpoint, when it was written by this run's configuration at a step
        <= ``steps`` (else a ValueError says what differs; :class:`CheckpointError` for a file
        that cannot be read).

        Args:
            steps: the number of steps of this run.
            map_location: as for :func:`torch.load`.

        Returns:
            The checked checkpoint dict.

        Raises:
            FileNotFoundError: there is no file.
            CheckpointError: the file cannot be read (see :func:`load_checkpoint`).
            ValueError: another configuration's checkpoint, one beyond ``steps``, or one whose
                schedules differ.
        """
        ck = load_checkpoint(self.path, map_location=map_location)
        diffs = identity_differences(ck["identity"], self.identity)
        if diffs:
            raise ValueError(
                f"checkpoint {self.path.name} was written by a different configuration; it "
                f"differs in {'; '.join(diffs[:8])}"
                f"{f' and {len(diffs) - 8} more' if len(diffs) > 8 else ''}; "
                "remove it or pass another path"
            )
        if ck["step"] > steps:
            raise ValueError(
                f"checkpoint {self.path.name} is at step {ck['step']}, beyond steps={steps}"
            )
        self.schedules.check(ck["schedules"], ck["step"], self.path)
        return ck

    def save(self, step: int, parts: dict[str, Any]) -> None:
        """Save ``parts`` (model, optimizer, records, ...) as the checkpoint of ``step``.

        Args:
            step: the step the run is at.
            parts: the state to save, merged with the format, identity, schedules and step.

        Returns:
            None.

        Raises:
            ValueError: a schedule raised (see :meth:`Schedules.upto`).
        """
        save_checkpoint(
            self.path,
            {
                "format": FORMAT,
                "identity": json.dumps(self.identity),
                "schedules": self.schedules.upto(step),
                "step": step,
                **parts,
            },
        )
