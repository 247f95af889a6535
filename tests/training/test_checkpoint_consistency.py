"""A checkpoint's parts are checked against each other on load: a step that its history, first
loss, measurements, stop record, schedules or optimizer state contradict, or records with
numbers a saved run never has, is refused with one CheckpointError naming the file and the
reason, before the run changes anything."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cases import small_teacher_student as small

from analysis_lib import training


class Measure(training.Callback):
    def __call__(self, step, model, optimizer, batch):
        return {"value": float(step)}


def go(path, steps=6, **kwargs):
    kwargs.setdefault("callbacks", [Measure(2)])
    return training.train(
        small(), "adamw", steps, lr=1e-2, device="cpu", progress=False, checkpoint=path, **kwargs
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A checkpoint of a run of 6 steps, recorded at every step, with a schedule and
    measurements at steps 2, 4, 6."""
    path = tmp_path_factory.mktemp("ck") / "run.pt"
    go(path, lr_schedule=_schedule)
    return path.read_bytes()


def _schedule(t):
    return 1.0 / t


def rewrite(tmp_path, written, change):
    """The written checkpoint with ``change(ck)`` applied, saved as a valid file (its checksum
    right), so that only the consistency of its parts is wrong."""
    path = tmp_path / "run.pt"
    path.write_bytes(written)
    ck = training.load_checkpoint(path)
    change(ck)
    ck["identity"] = json.dumps(ck["identity"])
    training.save_checkpoint(path, ck)
    return path


def _set(key, value):
    return lambda ck: ck.__setitem__(key, value)


def _record(row, column, value):
    def change(ck):
        ck["records"][row, column] = value

    return change


def _drop_records(keep):
    def change(ck):
        ck["records"] = ck["records"][keep]

    return change


def _swap_rows(ck):
    ck["records"] = ck["records"][[0, 2, 1, 3, 4, 5]]


def _opt_step(ck):
    for entry in ck["optimizer"]["state"].values():
        entry["step"] = torch.tensor(9.0)


CASES = {
    "step 0 with 6 records": (_set("step", 0), "step 0"),
    "step 3 with 6 records": (_set("step", 3), r"step 3 .*6 history records"),
    "step 5 with 6 records": (_set("step", 5), r"step 5 .*6 history records"),
    "step 10 with 6 records": (_set("step", 10), r"step 10 .*record_every=1.*missing"),
    "negative step": (_set("step", -1), "step -1"),
    "step True": (_set("step", True), "step True"),
    "records missing": (_drop_records([0, 1, 2, 4, 5]), r"step 4 .*missing"),
    "records out of order": (_swap_rows, "out of order"),
    "NaN step in records": (_record(3, 0, math.nan), "record 3 .*step nan"),
    "NaN loss": (_record(2, 1, math.nan), "step 3 with loss nan"),
    "inf loss": (_record(5, 1, math.inf), "step 6 with loss inf"),
    "NaN grad_norm": (_record(1, 3, math.nan), "grad_norm nan"),
    "NaN update_norm": (_record(4, 4, math.nan), "update_norm NaN"),
    "negative update_norm": (_record(4, 4, -1.0), "update_norm -1.0"),
    "NaN lr": (_record(0, 5, math.nan), "lr nan"),
    "accuracy in one row only": (_record(0, 2, 0.5), "accuracy in some rows"),
    "all records NaN": (lambda ck: ck["records"].fill_(math.nan), "step nan"),
    "no first loss": (_set("first_loss", None), "no first loss"),
    "NaN first loss": (_set("first_loss", math.nan), "first loss"),
    "first loss not step 1's": (_set("first_loss", 123.0), "loss of its record of step 1"),
    "measurement beyond step": (
        lambda ck: ck["measurements"].append({"step": 8, "value": 1.0}),
        "measurements row 3 of step 8",
    ),
    "measurements out of order": (
        lambda ck: ck["measurements"].reverse(),
        "measurements row 1 of step 4",
    ),
    "measurement without numbers": (
        lambda ck: ck["measurements"][0].__setitem__("value", "x"),
        "measurements row 0",
    ),
    "stopped elsewhere": (
        _set("stopped", {"step": 4, "reason": "target"}),
        "stopped at step 4",
    ),
    "schedule of other length": (
        lambda ck: ck["schedules"].__setitem__("lr_schedule", torch.ones(4, dtype=torch.float64)),
        r"schedule 'lr_schedule' of shape \(4,\), expected \(6,\)",
    ),
    "optimizer ahead": (_opt_step, "optimizer's state .* step 9"),
    "negative callback seconds": (
        lambda ck: ck["callback_seconds"].__setitem__("Measure", -1.0),
        "seconds for callback",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_parts_that_disagree_are_refused_by_name(tmp_path, written, case):
    change, reason = CASES[case]
    path = rewrite(tmp_path, written, change)
    before = path.read_bytes()
    with pytest.raises(training.CheckpointError, match=rf"checkpoint {path}: .*{reason}"):
        training.load_checkpoint(path)
    # a run given it refuses it before taking a step, and leaves the file as it was
    with pytest.raises(training.CheckpointError, match=rf"{path}.*{reason}"):
        go(path, steps=8, lr_schedule=_schedule)
    assert path.read_bytes() == before


def test_the_checkpoints_a_run_writes_pass(tmp_path):
    # records off the record schedule (the ends of earlier parts), a stop at an unrecorded step
    path = tmp_path / "run.pt"
    go(path, steps=4, record_every=3, checkpoint_every=2)
    go(path, steps=9, record_every=3)
    ck = training.load_checkpoint(path)
    assert ck["records"][:, 0].tolist() == [3, 4, 6, 9] and ck["step"] == 9

    class Stop(training.Callback):
        def __call__(self, step, model, optimizer, batch):
            if step == 5:
                raise training.StopTraining("enough")
            return {}

    stopped = tmp_path / "stopped.pt"
    run = go(stopped, steps=9, record_every=3, callbacks=[Stop(1)])
    ck = training.load_checkpoint(stopped)
    assert ck["step"] == 5 and ck["stopped"]["step"] == 5 and run.stopped_at == 5
    again = go(stopped, steps=9, record_every=3, callbacks=[Stop(1)])
    assert again.stopped_at == 5 and again.history.equals(run.history)
    assert math.isnan(ck["records"][-1, 4].item())  # the unrecorded stop step: no update norm
