"""Training checkpoints: the run's identity, the file's integrity, the path, and callbacks that
return something other than numbers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cases import small_teacher_student as small

from analysis_lib import io, training
from analysis_lib.optim import Ada2MS
from analysis_lib.problems import tasks
from analysis_lib.training.checkpoint import RECORD_COLUMNS, Schedules


def go(task, optimizer="adamw", steps=6, **kwargs):
    kwargs.setdefault("lr", 1e-2 if isinstance(optimizer, str) else None)
    if kwargs["lr"] is None:
        del kwargs["lr"]
    return training.train(task, optimizer, steps, device="cpu", progress=False, **kwargs)


def same_run(a: training.Run, b: training.Run) -> None:
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


# -- identity ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        (dict(activation="tanh"), dict(activation="relu"), "activation"),
        (dict(student_hidden=(8,)), dict(student_hidden=(9,)), "student_hidden"),
        (dict(seed=0), dict(seed=1), "seed"),
    ],
)
def test_a_task_built_with_other_arguments_is_refused(tmp_path, first, second, what):
    path = tmp_path / "run.pt"
    go(small(**first), checkpoint=path)
    with pytest.raises(ValueError, match=rf"different configuration.*{what}"):
        go(small(**second), steps=8, checkpoint=path)


@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        (dict(label_smoothing=0.0), dict(label_smoothing=0.1), "label_smoothing"),
        (dict(val_fraction=0.15), dict(val_fraction=0.2), "val_fraction"),
    ],
)
def test_a_digits_task_with_other_smoothing_or_split_is_refused(tmp_path, first, second, what):
    path = tmp_path / "run.pt"
    go(tasks.digits(hidden=(8,), **first), steps=2, batch_size=32, checkpoint=path)
    with pytest.raises(ValueError, match=rf"different configuration.*{what}"):
        go(tasks.digits(hidden=(8,), **second), steps=4, batch_size=32, checkpoint=path)


def test_the_same_configuration_built_again_resumes_bit_identically(tmp_path):
    def run(steps, checkpoint=None):
        # every object is new: task, factory, schedules (new lambdas of the same code)
        return go(
            small(activation="relu"),
            lambda p: Ada2MS(p, lr=1e-2, alpha=lambda t: 1.0 / t),
            steps,
            lr=None,
            batch_size=16,
            lr_schedule=lambda t: 0.9**t,
            checkpoint=checkpoint,
        )

    straight = run(12)
    path = tmp_path / "run.pt"
    run(5, path)
    same_run(run(12, path), straight)


@pytest.mark.parametrize(
    ("a", "b", "what"),
    [
        (lambda p: torch.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.2), "lr"),
        (
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5),
            "momentum",
        ),
        (lambda p: torch.optim.SGD(p, lr=0.1), lambda p: torch.optim.Adam(p, lr=0.1), "class"),
        (
            lambda p: Ada2MS(p, lr=1e-2, alpha=lambda t: 0.5),
            lambda p: Ada2MS(p, lr=1e-2, alpha=lambda t: 0.25),
            "alpha",
        ),
    ],
)
def test_another_optimizer_factory_is_refused_and_never_overridden(tmp_path, a, b, what):
    assert a.__qualname__ == b.__qualname__  # a name cannot tell them apart
    path = tmp_path / "run.pt"
    go(small(), a, checkpoint=path)
    with pytest.raises(ValueError, match=rf"different configuration.*{what}"):
        go(small(), b, steps=8, checkpoint=path)


def test_another_lr_schedule_is_refused_naming_the_step(tmp_path):
    path = tmp_path / "run.pt"
    go(small(), lr_schedule=lambda t: 1.0, checkpoint=path)
    with pytest.raises(ValueError, match=r"different configuration.*lr_schedule"):
        go(small(), steps=8, lr_schedule=lambda t: 0.5, checkpoint=path)
    # a schedule the identity cannot read is compared by its values at the steps taken
    with pytest.raises(ValueError, match=r"lr_schedule' differs at step 1 .*1\.0.*0\.5"):
        Schedules(lambda t: 0.5, torch.optim.SGD([torch.zeros(1)], lr=1)).check(
            {"lr_schedule": torch.ones(6, dtype=torch.float64)}, 6, path
        )


def test_a_cosine_schedule_is_identified_by_its_public_name(tmp_path):
    """The schedule's qualified name is part of a run's identity: checkpoints written before
    ``training`` became a package name it ``analysis_lib.training.cosine_schedule``, and resume."""
    schedule = training.cosine_schedule(12, warmup=2)
    assert io.describe(schedule)["dataclass"] == "analysis_lib.training.cosine_schedule"
    path = tmp_path / "run.pt"
    go(small(), lr_schedule=schedule, checkpoint=path)
    ck = training.load_checkpoint(path)
    assert ck["identity"]["lr_schedule"]["dataclass"] == "analysis_lib.training.cosine_schedule"


def test_the_records_are_the_history_in_its_columns(tmp_path):
    path = tmp_path / "run.pt"
    run = go(tasks.digits(hidden=(8,)), batch_size=50, checkpoint=path)  # with accuracy
    records = training.load_checkpoint(path)["records"].numpy()
    assert tuple(run.history.columns) == RECORD_COLUMNS
    np.testing.assert_array_equal(records, run.history.to_numpy(dtype=np.float64))


def test_other_batch_size_dtype_or_task_type_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    go(small(), batch_size=16, checkpoint=path)
    with pytest.raises(ValueError, match="batch_size"):
        go(small(), steps=8, batch_size=32, checkpoint=path)
    with pytest.raises(ValueError, match="dtype"):
        go(small(dtype=torch.float64), steps=8, batch_size=16, checkpoint=path)
    with pytest.raises(ValueError, match=r"different configuration.*task\.name"):
        go(tasks.digits(hidden=(8,)), steps=8, batch_size=16, checkpoint=path)


def test_steps_a_finished_run_and_a_checkpoint_beyond_steps(tmp_path):
    path = tmp_path / "run.pt"
    straight = go(small(), steps=9)
    first = go(small(), steps=4, checkpoint=path)
    calls = []

    class Count(training.Callback):
        def __call__(self, step, model, optimizer, batch):
            calls.append(step)
            return {}

    # a finished run, resumed with the same steps, takes no step
    again = go(small(), steps=4, checkpoint=path)
    same_run(again, first)
    # more steps continue it, as if it had been run with them from the start (a callback that
    # the first part did not have starts afresh, with a warning)
    with pytest.warns(RuntimeWarning, match="callbacks"):
        more = go(small(), steps=9, checkpoint=path, callbacks=[Count(1)])
    same_run(more, straight)
    assert calls == [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="beyond steps"):
        go(small(), steps=3, checkpoint=path)


# -- the file -----------------------------------------------------------------------------------
def checkpoint_file(tmp_path) -> Path:
    path = tmp_path / "run.pt"
    go(small(), checkpoint=path)
    return path


def flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1 :]


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (lambda raw: raw[: len(raw) // 2], "truncated"),
        (lambda raw: raw[:20], "truncated"),
        (lambda raw: b"", "empty"),
        (lambda raw: flip(raw, len(raw) - 200), "checksum"),  # inside the weights
        (lambda raw: flip(raw, len(raw) // 2), "checksum"),
        (lambda raw: b"not a checkpoint", "no header"),
    ],
)
def test_every_damaged_file_gets_one_error_naming_it(tmp_path, damage, what):
    path = checkpoint_file(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(training.CheckpointError, match=rf"{path}.*{what}"):
        go(small(), steps=8, checkpoint=path)
    with pytest.raises(training.CheckpointError, match=str(path)):
        training.load_checkpoint(path)


def test_a_file_of_another_writer_or_with_parts_missing_is_refused(tmp_path):
    path = checkpoint_file(tmp_path)
    good = training.load_checkpoint(path)
    old = tmp_path / "old.pt"
    torch.save({"format": "analysis_lib.training/1", "config": "{}"}, old)  # the old layout
    with pytest.raises(training.CheckpointError, match=rf"{old}.*no header"):
        training.load_checkpoint(old)
    for key in ("model", "rng", "schedules"):
        broken = tmp_path / f"no-{key}.pt"
        parts = {k: v for k, v in good.items() if k != key}
        parts["identity"] = "{}"
        training.save_checkpoint(broken, parts)
        with pytest.raises(training.CheckpointError, match=rf"{broken}.*lacks.*'{key}'"):
            training.load_checkpoint(broken)
    wrong = tmp_path / "format.pt"
    training.save_checkpoint(wrong, {"format": "something else"})
    with pytest.raises(training.CheckpointError, match=rf"{wrong}.*format"):
        training.load_checkpoint(wrong)
    torch_list = tmp_path / "list.pt"
    training.save_checkpoint(torch_list, [1, 2])
    with pytest.raises(training.CheckpointError, match="list"):
        training.load_checkpoint(torch_list)


def test_saves_go_through_the_one_atomic_writer_and_are_synced(tmp_path, monkeypatch):
    synced, written = [], []
    real_fsync, real_write = os.fsync, io.write_atomically
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    monkeypatch.setattr(io, "write_atomically", lambda p, d: written.append(p) or real_write(p, d))
    path = tmp_path / "run.pt"
    go(small(), steps=4, checkpoint=path, checkpoint_every=2)
    assert written == [path, path, path] and len(synced) >= 3
    assert not hasattr(training, "_atomic_torch_save")


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    first = go(small(), steps=4, checkpoint=path)
    before = path.read_bytes()
    real_replace = os.replace

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        go(small(), steps=6, checkpoint=path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    same_run(go(small(), steps=4, checkpoint=path), first)


# -- the path -----------------------------------------------------------------------------------
def test_a_path_that_cannot_be_written_is_refused_before_the_first_step(tmp_path, monkeypatch):
    steps = []

    class Spy(training.Callback):
        def __call__(self, step, model, optimizer, batch):
            steps.append(step)
            return {}

    with pytest.raises(ValueError, match=r"checkpoint /dev/null/ck\.pt"):
        go(small(), steps=3, checkpoint="/dev/null/ck.pt", callbacks=[Spy(1)])
    with pytest.raises(ValueError, match="is a folder"):
        go(small(), steps=3, checkpoint=tmp_path, callbacks=[Spy(1)])
    folder = tmp_path / "read-only"
    folder.mkdir()
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):  # root ignores permission bits: simulate them
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ValueError, match=rf"checkpoint {folder}/ck\.pt.*{folder}.*Permission"):
        go(small(), steps=3, checkpoint=folder / "ck.pt", callbacks=[Spy(1)])
    assert steps == []


# -- callbacks ----------------------------------------------------------------------------------
class Returns(training.Callback):
    def __init__(self, value, every=2):
        super().__init__(every)
        self.value = value

    @property
    def name(self):
        return "Returns-cb"

    def __call__(self, step, model, optimizer, batch):
        return self.value


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ({"sharp": "1.5"}, "'sharp'"),
        ({"sharp": None}, "'sharp'"),
        ({"sharp": torch.ones(3)}, "'sharp'"),
        ({"sharp": [1.0]}, "'sharp'"),
        ([("sharp", 1.0)], "list"),
        (1.0, "float"),
    ],
)
def test_a_callback_returning_no_numbers_is_named_and_nothing_is_recorded(tmp_path, value, what):
    path = tmp_path / "run.pt"
    with pytest.raises(ValueError, match=rf"callback Returns-cb.*{what}"):
        go(small(), steps=4, callbacks=[Returns(value)], checkpoint=path, checkpoint_every=1)
    # the last checkpoint is the step before the failing call, intact and resumable
    ck = training.load_checkpoint(path)
    assert ck["step"] == 1 and ck["measurements"] == []
    run = go(small(), steps=4, callbacks=[Returns({"sharp": 2}, every=2)], checkpoint=path)
    assert run.measurements["sharp"].tolist() == [2.0, 2.0]


def test_a_callback_may_return_tensors_and_numpy_numbers():
    import numpy as np

    value = {"a": torch.tensor(1.5), "b": np.float32(2.5), "c": 3, "d": float("nan")}
    run = go(small(), steps=2, callbacks=[Returns(value, every=1)])
    assert run.measurements[["a", "b", "c"]].iloc[0].tolist() == [1.5, 2.5, 3.0]


def test_callbacks_may_share_a_column_only_with_equal_values():
    same = [Returns({"lr": 0.5}, every=1), Returns({"lr": 0.5, "x": 1.0}, every=1)]
    run = go(small(), steps=2, callbacks=same)
    assert run.measurements["lr"].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"callback Returns-cb returned 'lr' = 0\.25.*0\.5"):
        go(small(), steps=2, callbacks=[Returns({"lr": 0.5}, 1), Returns({"lr": 0.25}, 1)])
    with pytest.raises(ValueError, match="step column"):
        go(small(), steps=2, callbacks=[Returns({"step": 7}, 1)])


def test_a_home_relative_checkpoint_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    go(small(), steps=2, checkpoint="~/runs/a.pt")
    assert (tmp_path / "runs" / "a.pt").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_run_with_dropout_resumes_bit_identically_on_cuda(tmp_path):
    base = small()
    task = tasks.Task(
        "dropout",
        *(t.cuda() for t in (base.x_train, base.y_train, base.x_val, base.y_val)),
        base.x_test.cuda(),
        base.y_test.cuda(),
        model_factory=lambda: torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1)
        ),
        loss="mse",
    )

    def run(steps, checkpoint=None):
        return training.train(
            task,
            "sgdm",
            steps,
            lr=0.05,
            batch_size=16,
            device="cuda",
            progress=False,
            checkpoint=checkpoint,
        )

    straight = run(8)
    path = tmp_path / "cuda.pt"
    run(3, path)
    same_run(run(8, path), straight)
