"""The training loop, its records, divergence, resume and the transition measures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis_lib import training
from analysis_lib.optim import Ada2MS, ExponentialAlpha, adamnx_betas, transition_measures
from analysis_lib.problems import tasks
from analysis_lib.problems.tasks import Task
from analysis_lib.training.loop import _Batches

CPU = "cpu"


@pytest.fixture(scope="module")
def digits():
    return tasks.digits()


def quiet_train(*args, **kwargs):
    return training.train(*args, device=CPU, progress=False, **kwargs)


# -- learning --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "lr"),
    [
        ("sgd", 0.1),
        ("sgdm", 0.05),
        ("adam", 1e-3),
        ("adamw", 1e-3),
        ("adamnx", 1e-3),
        ("ada2ms", 1e-3),
    ],
)
def test_loss_decreases_on_digits_for_every_optimizer(digits, name, lr):
    run = quiet_train(digits, name, 150, batch_size=64, lr=lr, seed=1)
    loss = run.history["loss"].to_numpy()
    assert not run.diverged and run.steps == 150
    assert loss[-20:].mean() < 0.3 * loss[:5].mean()
    assert run.evaluate("val")["accuracy"] > 0.85


def test_divergence_is_flagged_not_raised(digits):
    run = quiet_train(digits, "sgd", 50, lr=1e4)
    assert run.diverged and run.diverged_at is not None and run.diverged_at < 50
    assert "first loss" in run.reason
    assert run.history["step"].iloc[-1] == run.diverged_at
    assert math.isnan(run.history["update_norm"].iloc[-1])  # the divergent step was not taken
    assert run.steps == run.diverged_at - 1 and math.isnan(run.final_loss)

    inf_lr = quiet_train(digits, lambda p: torch.optim.SGD(p, lr=float("inf")), 5)
    assert inf_lr.diverged and inf_lr.diverged_at == 1 and "non-finite" in inf_lr.reason

    tight = quiet_train(digits, "sgd", 20, lr=5.0, divergence_factor=1.5)
    assert tight.diverged


def test_ada2ms_alpha_one_trains_exactly_as_adamw(digits):
    hp = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    a = quiet_train(
        digits, lambda p: torch.optim.AdamW(p, lr=2e-3, foreach=False, **hp), 60, batch_size=128
    )
    b = quiet_train(
        digits, lambda p: Ada2MS(p, lr=2e-3, alpha=1.0, foreach=False, **hp), 60, batch_size=128
    )
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)


def test_minibatches_cover_each_epoch_once(digits):
    batches = _Batches(digits.x_train, digits.y_train, 100, seed=3)
    seen = torch.cat([batches(t)[1] for t in range(1, batches.per_epoch + 1)])
    assert batches.per_epoch == 11 and len(seen) == 1100
    first_epoch = torch.cat([batches(t)[0] for t in range(1, 12)])
    assert len({tuple(r) for r in first_epoch.numpy().round(6)}) >= 1095  # no repeats (bar dups)
    again = _Batches(digits.x_train, digits.y_train, 100, seed=3)
    assert torch.equal(again(17)[0], batches(17)[0])


# -- records on a model small enough to do by hand ---------------------------------------------------
def _two_parameter_task(loss: str) -> Task:
    x = torch.tensor([[1.0], [2.0], [-1.0], [0.5]], dtype=torch.float64)
    if loss == "mse":
        y = torch.tensor([[2.0], [3.5], [-1.0], [1.0]], dtype=torch.float64)
        factory = lambda: nn.Linear(1, 1)  # noqa: E731  (weight and bias: two parameters)
    else:
        y = torch.tensor([0, 1, 0, 1])
        factory = lambda: nn.Linear(1, 2, bias=False)  # noqa: E731
    return Task(
        "tiny",
        x,
        y,
        x,
        y,
        x,
        y,
        model_factory=factory,
        loss=loss,
        num_classes=None if loss == "mse" else 2,
    )


def test_records_match_a_hand_computation_for_regression():
    task = _two_parameter_task("mse")
    lr, steps = 0.1, 4
    run = quiet_train(task, "sgd", steps, lr=lr)
    w, b = (p.item() for p in task.make_model().parameters())
    x, y = task.x_train.numpy().ravel(), task.y_train.numpy().ravel()
    for t in range(steps):
        r = w * x + b - y
        loss = np.mean(r**2)
        gw, gb = np.mean(2 * r * x), np.mean(2 * r)
        row = run.history.iloc[t]
        assert row["step"] == t + 1
        assert row["loss"] == pytest.approx(loss, rel=1e-12)
        assert row["grad_norm"] == pytest.approx(math.hypot(gw, gb), rel=1e-12)
        assert row["update_norm"] == pytest.approx(lr * math.hypot(gw, gb), rel=1e-12)
        assert row["lr"] == lr
        w, b = w - lr * gw, b - lr * gb
    assert "accuracy" not in run.history
    final_w, final_b = (p.item() for p in run.model.parameters())
    assert (final_w, final_b) == pytest.approx((w, b), rel=1e-12)


def test_records_match_a_hand_computation_for_classification():
    task = _two_parameter_task("cross_entropy")
    run = quiet_train(task, "sgd", 3, lr=0.5)
    w = task.make_model().weight.detach().numpy().ravel().copy()
    x, y = task.x_train.numpy().ravel(), task.y_train.numpy()
    for t in range(3):
        logits = np.outer(x, w)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(4), y]))
        grad = ((p - np.eye(2)[y]) * x[:, None]).mean(0)
        row = run.history.iloc[t]
        assert row["loss"] == pytest.approx(loss, rel=1e-12)
        assert row["accuracy"] == np.mean(logits.argmax(1) == y)
        assert row["grad_norm"] == pytest.approx(np.linalg.norm(grad), rel=1e-12)
        w = w - 0.5 * grad


def test_weight_decay_is_part_of_the_update_norm():
    task = _two_parameter_task("mse")
    run = quiet_train(task, "adamw", 1, lr=0.1, weight_decay=0.5)
    theta = torch.cat([p.detach().flatten() for p in task.make_model().parameters()])
    # first AdamW step: theta (1 - lr wd) - lr sign(g) (m_hat / sqrt(v_hat) = g / |g|)
    model = task.make_model()
    task.loss_fn(model(task.x_train), task.y_train).backward()
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    step = -0.1 * 0.5 * theta - 0.1 * g / (g.abs() + 1e-8)
    assert run.history["update_norm"].iloc[0] == pytest.approx(step.norm().item(), rel=1e-9)


def test_lr_schedule_sets_the_learning_rate_of_each_step(digits):
    schedule = training.cosine_schedule(20, warmup=5, final=0.1)
    run = quiet_train(
        digits,
        "sgdm",
        20,
        lr=0.2,
        lr_schedule=schedule,
        callbacks=[training.TransitionCallback(every=5)],
    )
    expected = [0.2 * schedule(t) for t in range(1, 21)]
    np.testing.assert_allclose(run.history["lr"], expected, rtol=1e-15)
    assert schedule(5) == 1.0 and schedule(20) == pytest.approx(0.1)
    assert run.measurements["lr"].tolist() == pytest.approx(expected[4::5], rel=1e-15)


# -- checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("adamw", {}),
        ("adamnx", {}),
        ("sgdm", {}),
        ("ada2ms", dict(alpha=ExponentialAlpha.reaching(0.0, steps=30))),
    ],
)
def test_resume_continues_bit_identically(digits, tmp_path, name, hparams):
    def go(steps, checkpoint=None, every=None):
        return quiet_train(
            digits,
            name,
            steps,
            batch_size=50,
            lr=1e-2,
            seed=2,
            callbacks=[training.TransitionCallback(every=4)],
            checkpoint=checkpoint,
            checkpoint_every=every,
            **hparams,
        )

    straight = go(30)
    path = tmp_path / "run.pt"
    first = go(13, path, every=5)  # stops between checkpoints; the end is saved too
    assert first.history["step"].iloc[-1] == 13 and path.exists()
    resumed = go(30, path, every=5)
    pd.testing.assert_frame_equal(resumed.history, straight.history, check_exact=True)
    pd.testing.assert_frame_equal(resumed.measurements, straight.measurements, check_exact=True)
    for p, q in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind


def test_resume_refuses_another_configuration(digits, tmp_path):
    path = tmp_path / "run.pt"
    quiet_train(digits, "adamw", 3, lr=1e-3, checkpoint=path)
    with pytest.raises(ValueError, match=r"different configuration.*'lr'"):
        quiet_train(digits, "adamw", 6, lr=2e-3, checkpoint=path)
    with pytest.raises(ValueError, match="beyond steps"):
        quiet_train(digits, "adamw", 2, lr=1e-3, checkpoint=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(training.CheckpointError, match=r"run\.pt.*not a training checkpoint"):
        quiet_train(digits, "adamw", 6, lr=1e-3, checkpoint=path)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(optimizer="lion"), "Unknown optimizer.*ada2ms"),
        (dict(steps=0), "steps"),
        (dict(batch_size=10_000), "batch_size"),
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(callbacks=[object()]), r"callbacks\[0\]"),
        (dict(divergence_factor=1.0), "divergence_factor"),
        (dict(checkpoint_every=5), "checkpoint_every"),
        (dict(optimizer=lambda p: torch.optim.SGD(p, lr=0.1), lr=0.1), "factory"),
    ],
)
def test_bad_arguments_are_rejected_before_any_work(digits, kwargs, match):
    args = dict(optimizer="sgd", steps=5) | kwargs
    with pytest.raises(ValueError, match=match):
        quiet_train(digits, args.pop("optimizer"), args.pop("steps"), **args)


def test_callbacks_are_called_every_k_steps_with_the_step_batch(digits):
    seen = []

    class Probe(training.Callback):
        def __call__(self, step, model, optimizer, batch):
            seen.append((step, len(batch[0])))
            return {"probe": float(step) ** 2}

    run = quiet_train(digits, "sgd", 20, batch_size=32, lr=0.1, callbacks=[Probe(every=6)])
    assert seen == [(6, 32), (12, 32), (18, 32)]
    assert run.measurements["probe"].tolist() == [36.0, 144.0, 324.0]
    assert run.callback_seconds["Probe"] >= 0
    frame = training.runs_frame([run, run], "measurements")
    assert len(frame) == 6 and set(frame["run"]) == {"sgd"}


# -- transition measures ---------------------------------------------------------------------------
def _adam_state(opt, p):
    st = opt.state[p]
    return st["exp_avg"].double(), st["exp_avg_sq"].double(), float(st["step"])


def test_transition_measures_match_a_direct_computation_from_adamw_state(digits):
    kw = dict(batch_size=64, lr=3e-3, seed=0, betas=(0.9, 0.99))
    states = {}
    for steps in (10, 20):
        run = quiet_train(digits, "adamw", steps, **kw)
        s_parts, m_parts = [], []
        for p in run.model.parameters():
            m, v, t = _adam_state(run.optimizer, p)
            s_parts.append((3e-3 / ((v / (1 - 0.99**t)).sqrt() + 1e-8)).flatten())
            m_parts.append((m / (1 - 0.9**t)).flatten())
        states[steps] = torch.cat(s_parts), torch.cat(m_parts)
    measured = quiet_train(
        digits, "adamw", 20, callbacks=[training.TransitionCallback(10)], **kw
    ).measurements.set_index("step")
    s, m = states[20]
    q25, q50, q75 = np.percentile(s.numpy(), [25, 50, 75])
    row = measured.loc[20]
    assert row["step_size_median"] == pytest.approx(q50, rel=1e-6)
    assert row["step_size_log10_iqr"] == pytest.approx(np.log10(q75 / q25), rel=1e-6)
    assert row["step_size_cv"] == pytest.approx((s.std(correction=0) / s.mean()).item(), rel=1e-6)
    cos = (s * m @ m / ((s * m).norm() * m.norm())).item()
    assert row["cosine_to_momentum"] == pytest.approx(cos, rel=1e-6)  # float32 state
    drift = ((states[20][0] - states[10][0]).norm() / states[10][0].norm()).item()
    assert row["preconditioner_drift"] == pytest.approx(drift, rel=1e-6)
    assert math.isnan(measured.loc[10, "preconditioner_drift"])
    assert "beta2_hat" not in measured and "alpha" not in measured


def test_transition_measures_of_adamnx_and_ada2ms(digits):
    cb = [training.TransitionCallback(every=5)]
    nx = quiet_train(
        digits, "adamnx", 15, batch_size=64, lr=1e-3, callbacks=cb, betas=(0.9, 0.9)
    ).measurements
    assert nx["beta2_hat"].tolist() == pytest.approx(
        [adamnx_betas(0.9, 0.9, t)[1] for t in (5, 10, 15)], rel=1e-15
    )

    schedule = ExponentialAlpha(final=0.0, tau=10.0)
    ms = quiet_train(
        digits,
        "ada2ms",
        15,
        batch_size=64,
        lr=1e-3,
        alpha=schedule,
        callbacks=[training.TransitionCallback(every=5)],
    ).measurements
    assert ms["alpha"].tolist() == pytest.approx([schedule(t) for t in (5, 10, 15)])
    sgd_like = quiet_train(
        digits,
        "ada2ms",
        15,
        batch_size=64,
        lr=1e-3,
        alpha=0.0,
        callbacks=[training.TransitionCallback(every=5)],
    ).measurements
    np.testing.assert_allclose(sgd_like["cosine_to_momentum"], 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sgd_like["step_size_log10_iqr"], 0.0, atol=1e-12)
    np.testing.assert_allclose(sgd_like["step_size_cv"], 0.0, atol=1e-6)

    sgdm = quiet_train(
        digits, "sgdm", 10, batch_size=64, lr=0.1, callbacks=[training.TransitionCallback(every=5)]
    ).measurements
    np.testing.assert_allclose(sgdm["cosine_to_momentum"], 1.0, atol=1e-12)
    assert sgdm["preconditioner_drift"].iloc[1] == 0.0
    assert sgdm["step_size_median"].tolist() == pytest.approx([0.1, 0.1], rel=1e-7)


def test_transition_measures_need_a_step_and_a_known_optimizer():
    p = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="not taken a step"):
        transition_measures(torch.optim.AdamW([p]))
    with pytest.raises(TypeError, match="RMSprop"):
        transition_measures(torch.optim.RMSprop([p]))


def test_record_every_keeps_every_kth_row_and_the_same_training(digits):
    every = quiet_train(digits, "adamw", 23, batch_size=64, lr=1e-3)
    sparse = quiet_train(digits, "adamw", 23, batch_size=64, lr=1e-3, record_every=5)
    assert sparse.history["step"].tolist() == [5, 10, 15, 20, 23]  # and the last step
    expected = every.history.set_index("step").loc[[5, 10, 15, 20, 23]].reset_index()
    pd.testing.assert_frame_equal(sparse.history, expected, check_exact=True)
    assert sparse.steps == every.steps == 23
    for p, q in zip(sparse.model.parameters(), every.model.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="record_every"):
        quiet_train(digits, "adamw", 5, record_every=0)


def test_a_model_with_dropout_resumes_bit_identically_and_leaves_the_global_rng(digits, tmp_path):
    task = Task(
        "digits-dropout",
        digits.x_train,
        digits.y_train,
        digits.x_val,
        digits.y_val,
        digits.x_test,
        digits.y_test,
        loss="cross_entropy",
        num_classes=10,
        model_factory=lambda: nn.Sequential(
            nn.Linear(digits.x_train.shape[1], 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)
        ),
    )
    torch.manual_seed(7)
    expected_next = torch.rand(2)
    torch.manual_seed(7)
    straight = quiet_train(task, "sgdm", 12, batch_size=64, lr=0.05, seed=3)
    torch.testing.assert_close(torch.rand(2), expected_next, rtol=0, atol=0)
    again = quiet_train(task, "sgdm", 12, batch_size=64, lr=0.05, seed=3)
    pd.testing.assert_frame_equal(again.history, straight.history, check_exact=True)
    path = tmp_path / "dropout.pt"
    quiet_train(task, "sgdm", 5, batch_size=64, lr=0.05, seed=3, checkpoint=path)
    torch.rand(5)  # the caller's generator moves on: the run must not depend on it
    resumed = quiet_train(task, "sgdm", 12, batch_size=64, lr=0.05, seed=3, checkpoint=path)
    pd.testing.assert_frame_equal(resumed.history, straight.history, check_exact=True)


# -- early stop -------------------------------------------------------------------------------------
class FullTrainLoss(training.Callback):
    """The mean training loss over the whole split, computed directly (the reference)."""

    def __call__(self, step, model, optimizer, batch):
        task = self.task
        model.eval()
        with torch.no_grad():
            value = task.loss_fn(model(task.x_train), task.y_train).item()
        model.train()
        return {"reference": value}


def _reference(task, steps, every, **kw):
    probe = FullTrainLoss(every)
    probe.task = task
    run = quiet_train(task, "adamw", steps, batch_size=64, lr=3e-3, callbacks=[probe], **kw)
    return run, run.measurements.set_index("step")["reference"]


def test_target_loss_stops_at_the_first_checked_step_below_the_target(digits):
    every = 5
    straight, reference = _reference(digits, 80, every)
    target = float(reference.loc[45])  # reached first at step 45 or earlier (the loss may rise)
    expected = int(reference.index[(reference <= target).to_numpy()][0])
    assert 0 < expected < 80
    cb = training.TargetLoss(digits, target, every=every, batch_size=None)
    run = quiet_train(digits, "adamw", 80, batch_size=64, lr=3e-3, callbacks=[cb], record_every=7)
    assert run.stopped_at == expected == run.steps and not run.diverged
    assert (
        run.reason
        == f"train loss {reference.loc[expected]:.4g} <= target {target:g} at step {expected}"
    )
    assert run.history["step"].iloc[-1] == expected  # recorded although 7 does not divide it
    full_row = straight.history.set_index("step").loc[expected]
    stop_row = run.history.set_index("step").loc[expected]
    pd.testing.assert_series_equal(stop_row, full_row, check_exact=True)  # the update norm too
    meas = run.measurements.set_index("step")["target_train_loss"]
    assert meas.index.tolist() == list(range(every, expected + 1, every))
    np.testing.assert_allclose(meas, reference.loc[meas.index], rtol=1e-6)
    assert meas.iloc[-1] <= target < meas.iloc[:-1].min()
    for p, q in zip(
        run.model.parameters(),
        _reference(digits, expected, every)[0].model.parameters(),
        strict=True,
    ):
        assert torch.equal(p, q)  # the model of the stop step, not one step more
    assert run.model.training  # eval mode was restored


def test_an_unreachable_target_runs_every_step(digits):
    run = quiet_train(
        digits,
        "sgd",
        12,
        lr=0.1,
        callbacks=[training.TargetLoss(digits, 1e-9, every=4, split="val")],
    )
    assert run.stopped_at is None and run.reason is None and run.steps == 12
    assert run.measurements["step"].tolist() == [4, 8, 12]
    assert (run.measurements["target_val_loss"] > 1e-9).all()


def test_a_callback_may_stop_at_a_step_that_is_not_recorded(digits):
    class Stop(training.Callback):
        def __call__(self, step, model, optimizer, batch):
            raise training.StopTraining("enough", {"seen": step})

    others = training.TransitionCallback(every=3)
    run = quiet_train(digits, "sgdm", 20, lr=0.05, record_every=4, callbacks=[Stop(6), others])
    assert (run.stopped_at, run.steps, run.reason) == (6, 6, "enough")
    assert run.history["step"].tolist() == [4, 6]
    assert math.isnan(run.history["update_norm"].iloc[-1])  # taken, but not measured
    assert run.measurements["step"].tolist() == [3, 6]
    assert run.measurements["seen"].iloc[-1] == 6.0  # the stop's numbers, and the others' too
    assert not math.isnan(run.measurements["cosine_to_momentum"].iloc[-1])


def test_a_stopped_run_resumes_as_stopped(digits, tmp_path):
    path = tmp_path / "stop.pt"
    _, reference = _reference(digits, 40, 5)
    target = float(reference.loc[25])
    stop_at = int(reference.index[(reference <= target).to_numpy()][0])

    def go(steps, callbacks):
        return quiet_train(
            digits,
            "adamw",
            steps,
            batch_size=64,
            lr=3e-3,
            checkpoint=path,
            checkpoint_every=3,
            callbacks=callbacks,
        )

    first = go(40, [training.TargetLoss(digits, target, every=5)])
    ck = training.load_checkpoint(path)
    assert ck["step"] == stop_at == first.stopped_at
    assert ck["stopped"] == {"step": stop_at, "reason": first.reason}
    calls = []

    class Count(training.Callback):
        def __call__(self, step, model, optimizer, batch):
            calls.append(step)
            return {}

    again = go(60, [Count(1)])  # more steps, other callbacks: still stopped, no step taken
    assert calls == [] and again.steps == again.stopped_at == stop_at
    assert again.reason == first.reason
    pd.testing.assert_frame_equal(again.history, first.history, check_exact=True)
    pd.testing.assert_frame_equal(again.measurements, first.measurements, check_exact=True)
    with pytest.raises(ValueError, match="beyond steps"):
        go(stop_at - 1, [])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(target=float("nan")), "target"),
        (dict(target="0.1"), "target"),
        (dict(every=0), "every"),
        (dict(split="holdout"), "split"),
        (dict(batch_size=0), "batch_size"),
        (dict(task="digits"), "task"),
    ],
)
def test_target_loss_names_a_bad_argument(digits, kwargs, match):
    args = dict(task=digits, target=0.1) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        training.TargetLoss(**args)


def test_an_optimizer_name_in_any_case_is_the_registry_s_name():
    task = _two_parameter_task("mse")
    upper = quiet_train(task, "AdamW", 3, lr=0.1)
    lower = quiet_train(task, "adamw", 3, lr=0.1)
    pd.testing.assert_frame_equal(upper.history, lower.history, check_exact=True)
    assert upper.label == upper.config["optimizer"] == "adamw"
    assert upper.config == lower.config
