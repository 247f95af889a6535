"""Matched-loss runs that end annealed: :class:`analysis_lib.training.AnnealAtTarget` (the base
schedule until the full training loss reaches the target, then a linear anneal from there and a
stop), checked against a plain run with :class:`~analysis_lib.training.TargetLoss` (the same
trajectory up to the target) and against its closed-form rates; and the sweep's
``anneal_steps`` budget key."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis_lib import training
from analysis_lib.sweep import ConfigError, load_config, run_sweep
from analysis_lib.sweep.config import make_task
from analysis_lib.sweep.trial import run_trial

TASK = {"name": "digits", "args": {"model": "mlp", "hidden": [8]}}
STEPS, EVERY, LR, WARMUP = 60, 5, 0.05, 4


def warm(t: int) -> float:
    return min(1.0, t / WARMUP)


def _quiet(task, steps, callbacks, schedule=None, record_every=1):
    return training.train(
        task, "sgd", steps, batch_size=32, lr=LR, seed=0, progress=False,
        lr_schedule=schedule, callbacks=callbacks, record_every=record_every,
    )  # fmt: skip


@pytest.fixture(scope="module")
def task():
    return make_task(TASK)


@pytest.fixture(scope="module")
def target_and_stop(task):
    """A target first met at a check well inside the budget, and that check's step, from a
    plain TargetLoss run with the same warm-up."""
    probe = training.TargetLoss(task, 1e-9, every=EVERY)
    losses = _quiet(task, STEPS, [probe], warm).measurements.set_index("step")["target_train_loss"]
    target = float(losses.loc[20])
    stop = training.TargetLoss(task, target, every=EVERY)
    first = _quiet(task, STEPS, [stop], warm).stopped_at
    assert first is not None and first <= 20 < STEPS - 20
    return target, first


def test_the_anneal_starts_at_the_target_and_follows_its_closed_form(task, target_and_stop):
    target, first = target_and_stop
    k = 10
    cb = training.AnnealAtTarget(task, target, k, every=EVERY, schedule=warm)
    run = _quiet(task, STEPS, [cb], cb.schedule)
    plain = _quiet(task, first, [], warm)
    assert cb.started == first and cb.annealed
    assert run.stopped_at == run.steps == first + k
    h = run.history.set_index("step")
    # up to the target: the plain run, bit for bit
    np.testing.assert_array_equal(h.loc[1:first, "loss"], plain.history["loss"])
    lrs = h["lr"].to_numpy()
    expected = [LR * min(1.0, t / WARMUP) for t in range(1, first + 1)]
    expected += [LR * (k - j + 1) / k for j in range(1, k + 1)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[-1] == pytest.approx(LR / k)
    assert run.measurements.set_index("step").loc[first + k, "anneal_started"] == first
    assert f"at step {first}" in run.reason


def test_a_target_never_reached_keeps_the_constant_rate(task):
    cb = training.AnnealAtTarget(task, 1e-9, 10, every=EVERY)
    run = _quiet(task, 20, [cb], cb.schedule)
    assert cb.started is None and not cb.annealed and run.stopped_at is None
    assert (run.history["lr"] == LR).all() and run.steps == 20


def test_an_anneal_is_cut_to_the_budget(task, target_and_stop):
    target, first = target_and_stop
    cb = training.AnnealAtTarget(task, target, 50, every=EVERY, schedule=warm, steps=first + 20)
    run = _quiet(task, first + 20, [cb], cb.schedule)
    assert cb.started == first and cb.annealed and cb.length == 20
    assert run.stopped_at == run.steps == first + 20
    lrs = run.history.set_index("step")["lr"]
    np.testing.assert_allclose(lrs.loc[first + 1 :], [LR * (21 - j) / 20 for j in range(1, 21)])
    # without the budget, the same anneal is longer and is cut by the run's end, unfinished
    open_ended = training.AnnealAtTarget(task, target, 50, every=EVERY, schedule=warm)
    run = _quiet(task, first + 20, [open_ended], open_ended.schedule)
    assert open_ended.started == first and not open_ended.annealed and run.stopped_at is None
    assert run.history["lr"].iloc[-1] == pytest.approx(LR * 31 / 50)


def test_the_anneal_starts_from_the_base_schedules_value(task, target_and_stop):
    target, _ = target_and_stop
    cosine = training.cosine_schedule(STEPS, warmup=WARMUP, final=0.0)
    first = _quiet(task, STEPS, [training.TargetLoss(task, target, every=EVERY)], cosine).stopped_at
    assert first is not None and first + 10 <= STEPS
    cb = training.AnnealAtTarget(task, target, 10, every=EVERY, schedule=cosine, steps=STEPS)
    run = _quiet(task, STEPS, [cb], cb.schedule)
    assert cb.started == first and cb.annealed and run.steps == first + 10
    lrs = run.history.set_index("step")["lr"]
    np.testing.assert_allclose(lrs.loc[1:first], [LR * cosine(t) for t in range(1, first + 1)])
    np.testing.assert_allclose(
        lrs.loc[first + 1 :], [LR * cosine(first) * (11 - j) / 10 for j in range(1, 11)]
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [({"anneal_steps": 7}, "anneal_steps"), ({"anneal_steps": 0}, "anneal_steps"),
     ({"anneal_steps": 10, "schedule": 0.5}, "schedule"), ({"anneal_steps": 10.0}, "anneal_steps"),
     ({"anneal_steps": 10, "steps": 12}, "steps"), ({"anneal_steps": 10, "steps": 0}, "steps")],
)  # fmt: skip
def test_bad_arguments_are_named(task, kwargs, name):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        training.AnnealAtTarget(task, 0.5, every=EVERY, **kwargs)


# -- the sweep's budget key -----------------------------------------------------------------------
def config(schedule=None, **budget) -> dict:
    return {
        "name": "anneal",
        "seeds": [0],
        "task": TASK,
        "budget": {"steps": STEPS, "batch_size": 32, **budget},
        "schedule": schedule or {"kind": "constant", "warmup": WARMUP},
        "optimizers": [{"name": "sgd", "lrs": [LR]}],
    }


@pytest.mark.parametrize(
    "budget, schedule, key",
    [
        ({"anneal_steps": 10}, None, "budget.anneal_steps"),  # no target
        ({"target_train_loss": 0.5, "check_every": 5, "anneal_steps": 7}, None,
         "budget.anneal_steps"),
        ({"target_train_loss": 0.5, "check_every": 5, "anneal_steps": STEPS}, None,
         "budget.anneal_steps"),
        ({"target_train_loss": 0.5, "check_every": 7, "anneal_steps": 14}, None,
         "budget.anneal_steps"),  # 60 steps are not a multiple of 7
        ({}, {"kind": "constant", "final": 0.0}, "schedule.final"),
        ({}, {"kind": "constant", "warmup": STEPS}, "schedule.warmup"),
    ],
)  # fmt: skip
def test_bad_anneal_keys_are_named(budget, schedule, key):
    with pytest.raises(ConfigError) as err:
        load_config(config(schedule, **budget), check_task=False)
    assert err.value.key == key


def test_a_constant_schedule_without_warmup_keeps_its_trial_keys():
    cfg = config({"kind": "constant"})
    assert load_config(cfg, check_task=False).data["schedule"] == {"kind": "constant"}
    warm = load_config(config(), check_task=False)
    assert warm.trials()[0].key != load_config(cfg, check_task=False).trials()[0].key


def test_the_trial_row_of_an_annealed_run(target_and_stop, tmp_path):
    target, first = target_and_stop
    cfg = config(target_train_loss=target, check_every=EVERY, anneal_steps=10)
    (trial,) = load_config(cfg).trials()
    row = run_trial(trial)
    assert row["status"] == "ok", row["message"]
    assert row["target_reached"] is True and row["anneal_started"] == first
    assert row["steps_taken"] == first + 10 and row["anneal_steps"] == 10
    assert row["final_lr"] == pytest.approx(LR / 10)
    assert row["train_loss"] < target  # the anneal goes on below it
    cfg["optimizers"][0]["lrs"] = [LR, 1e-6]  # the tiny rate never gets there
    result = run_sweep(cfg, tmp_path / "out", serial=True, progress=False)
    t = result.trials.set_index("lr")
    assert t.loc[LR, "anneal_started"] == first and t.loc[LR, "final_lr"] == pytest.approx(LR / 10)
    assert not t.loc[1e-6, "target_reached"] and math.isnan(t.loc[1e-6, "anneal_started"])
    assert t.loc[1e-6, "final_lr"] == pytest.approx(1e-6) and t.loc[1e-6, "steps_taken"] == STEPS
    again = run_sweep(cfg, tmp_path / "out", serial=True, progress=False)  # resumed: nothing runs
    assert again.trials["seconds"].tolist() == result.trials["seconds"].tolist()
