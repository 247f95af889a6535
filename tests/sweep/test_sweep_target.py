"""Sweeps at matched training loss: the budget's target_train_loss / check_every keys (validated,
naming the key), a trial stopped at the first check where the full training loss reaches the
target (against prefixes of the same run trained separately), and its row."""

from __future__ import annotations

import math

import pytest

from analysis_lib import training
from analysis_lib.sweep import ConfigError, load_config, run_sweep
from analysis_lib.sweep.config import make_task
from analysis_lib.sweep.trial import run_trial

if not hasattr(training, "TargetLoss"):  # pragma: no cover - until the callback is there
    pytest.skip("training.TargetLoss is not available", allow_module_level=True)

TASK = {"name": "digits", "args": {"model": "mlp", "hidden": [8]}}
STEPS, EVERY, LR = 40, 5, 0.05


def config(**budget) -> dict:
    """One optimizer, one lr, one seed on a small digits MLP, constant schedule (so a run of k
    steps is the first k steps of a longer one)."""
    return {
        "name": "target",
        "seeds": [0],
        "task": TASK,
        "budget": {"steps": STEPS, "batch_size": 32, **budget},
        "optimizers": [{"name": "sgd", "lrs": [LR]}],
    }


@pytest.mark.parametrize(
    "budget, key",
    [
        ({"target_train_loss": 0.0}, "budget.target_train_loss"),
        ({"target_train_loss": -1.0}, "budget.target_train_loss"),
        ({"target_train_loss": "low"}, "budget.target_train_loss"),
        ({"target_train_loss": math.inf}, "budget.target_train_loss"),
        ({"target_train_loss": 0.1, "check_every": 0}, "budget.check_every"),
        ({"target_train_loss": 0.1, "check_every": 2.5}, "budget.check_every"),
        ({"target_train_loss": 0.1, "check_every": STEPS + 1}, "budget.check_every"),
        ({"check_every": 5}, "budget.check_every"),
        ({"target": 0.1}, "budget.target"),
    ],
)
def test_bad_target_keys_are_named(budget, key):
    with pytest.raises(ConfigError) as err:
        load_config(config(**budget), check_task=False)
    assert err.value.key == key
    assert str(err.value).startswith(f"{key}:")


def test_a_config_without_target_keeps_its_trials_and_budget():
    plain = load_config(config(), check_task=False)
    assert plain.data["budget"] == {"steps": STEPS, "batch_size": 32}
    (trial,) = plain.trials()
    assert trial.target_train_loss is None and trial.check_every is None
    assert "target_train_loss" not in trial.spec() and "check_every" not in trial.spec()
    with_target = load_config(config(target_train_loss=0.5), check_task=False)
    assert with_target.data["budget"]["check_every"] == 10  # the default
    (t2,) = with_target.trials()
    assert t2.target_train_loss == 0.5 and t2.key != trial.key


def _train_losses() -> dict[int, float]:
    """The full training loss after k = EVERY, 2 EVERY, ... steps, each from its own run."""
    task = make_task(TASK)
    out = {}
    for k in range(EVERY, STEPS + 1, EVERY):
        run = training.train(task, "sgd", k, batch_size=32, lr=LR, seed=0, progress=False)
        out[k] = run.evaluate("train")["loss"]
    return out


@pytest.fixture(scope="module")
def losses() -> dict[int, float]:
    return _train_losses()


def test_a_trial_stops_at_the_first_check_under_the_target(losses):
    ks = sorted(losses)
    assert losses[ks[-1]] < losses[ks[0]]  # the run learns, so a target in between is met
    target = (losses[20] + losses[25]) / 2  # between two checks: the first one under it is 25
    expected = next(k for k in ks if losses[k] <= target)
    (trial,) = load_config(config(target_train_loss=target, check_every=EVERY)).trials()
    row = run_trial(trial)
    assert row["status"] == "ok", row["message"]
    assert row["steps_taken"] == expected < STEPS
    assert row["target_reached"] is True
    assert row["target_train_loss"] == target
    assert row["train_loss"] == pytest.approx(losses[expected], rel=1e-5)
    assert row["train_loss"] <= target


def test_a_target_never_reached_is_recorded_and_the_run_completes(losses):
    (trial,) = load_config(config(target_train_loss=1e-9, check_every=EVERY)).trials()
    row = run_trial(trial)
    assert row["status"] == "ok" and row["target_reached"] is False
    assert row["steps_taken"] == STEPS
    assert row["train_loss"] == pytest.approx(losses[STEPS], rel=1e-5)


def test_sweep_rows_carry_the_target_columns(tmp_path, losses):
    target = losses[30] * 1.0001
    cfg = config(target_train_loss=target, check_every=EVERY)
    cfg["optimizers"][0]["lrs"] = [LR, 1e-6]  # the tiny lr never gets there
    result = run_sweep(cfg, tmp_path / "out", serial=True, progress=False)
    t = result.trials.set_index("lr")
    assert t.loc[LR, "target_reached"] and not t.loc[1e-6, "target_reached"]
    assert t.loc[LR, "steps_taken"] <= 30 and t.loc[1e-6, "steps_taken"] == STEPS
    assert (t["target_train_loss"] == target).all()
    plain = run_sweep(config(), tmp_path / "plain", serial=True, progress=False)
    assert "target_reached" not in plain.trials.columns


def test_the_population_measurement_is_the_report_on_the_first_training_samples():
    from analysis_lib.sharpness import sharpness_report
    from analysis_lib.sweep import MEASUREMENTS
    from analysis_lib.sweep.measurements import SHARPNESS_SAMPLES, SHARPNESS_SETTINGS

    task = make_task(TASK)
    model = task.make_model(seed=1)
    row = MEASUREMENTS["sharpness_subset"](model, task)
    x, y = task.x_train[:SHARPNESS_SAMPLES], task.y_train[:SHARPNESS_SAMPLES]
    ref = sharpness_report(model, task.loss_fn, [(x, y)], progress=False, **SHARPNESS_SETTINGS)
    assert SHARPNESS_SAMPLES < task.n_train
    for k in ("loss", "worst_case", "worst_case_adaptive", "average", "epsilon", "lambda_max"):
        assert row[k] == pytest.approx(ref[k], rel=1e-6), k
    assert row["loss"] != pytest.approx(task.evaluate(model, "train")["loss"], rel=1e-3)


def test_the_population_measurement_in_a_trial_row():
    from analysis_lib.sweep import MEASUREMENTS

    cfg = config()
    cfg.update(measurements=["sharpness_subset"])
    cfg["budget"]["steps"] = 5
    (trial,) = load_config(cfg).trials()
    row = run_trial(trial, MEASUREMENTS)
    assert row["status"] == "ok", row["message"]
    assert row["worst_case"] >= 0 and row["lambda_max"] > 0 and row["sharpness_seconds"] > 0


def test_the_whole_split_measurement_is_the_report_on_every_training_sample():
    from analysis_lib.sharpness import sharpness_report
    from analysis_lib.sweep import MEASUREMENTS
    from analysis_lib.sweep.measurements import SHARPNESS_SETTINGS

    task = make_task(TASK)
    model = task.make_model(seed=1)
    row = MEASUREMENTS["sharpness_train"](model, task)
    ref = sharpness_report(
        model, task.loss_fn, [(task.x_train, task.y_train)], progress=False, **SHARPNESS_SETTINGS
    )
    for k in ("loss", "worst_case", "worst_case_adaptive", "average", "epsilon", "lambda_max"):
        assert row[k] == pytest.approx(ref[k], rel=1e-6), k
    assert row["loss"] == pytest.approx(task.evaluate(model, "train")["loss"], rel=1e-5)
    assert row["sharpness_seconds"] > 0 and "seconds" not in row
