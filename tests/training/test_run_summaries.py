"""Summaries of finished runs and the gradient-history recorder (analysis_lib.training)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis_lib import training
from analysis_lib.optim import replay
from analysis_lib.problems import tasks


@pytest.fixture(scope="module")
def tiny_run():
    task = tasks.digits(hidden=(4,), seed=0, dtype=torch.float64)
    return training.train(task, "adamw", 40, batch_size=32, lr=1e-2, seed=0, progress=False,
                          callbacks=[training.TransitionCallback(every=5)])  # fmt: skip


def _synthetic(run, steps=10):
    """The run with a history whose loss at step t is t, and measurements x = t^2 every 2 steps."""
    history = pd.DataFrame({"step": np.arange(1, steps + 1), "loss": np.arange(1.0, steps + 1)})
    t = np.arange(2, steps + 1, 2)
    measurements = pd.DataFrame({"step": t, "x": t**2.0})
    return dataclasses.replace(run, history=history, measurements=measurements, steps=steps)


def test_tail_statistic_closed_forms(tiny_run):
    run = _synthetic(tiny_run)
    assert training.tail_statistic(run, "loss", last=0.3) == 9.0  # steps 8, 9, 10
    assert training.tail_statistic(run, "loss", last=1.0) == 5.5
    assert training.tail_statistic(run, "x", last=0.5) == (36 + 64 + 100) / 3  # steps 6, 8, 10
    assert training.tail_statistic(run, "x", last=0.5, statistic="median") == 64.0
    early = dataclasses.replace(run, measurements=run.measurements[run.measurements["step"] < 10])
    assert math.isnan(training.tail_statistic(early, "x", last=0.05))  # none after step 9.5


def test_tail_statistic_skips_nan(tiny_run):
    run = _synthetic(tiny_run)
    run.measurements.loc[run.measurements["step"] == 10, "x"] = math.nan
    assert training.tail_statistic(run, "x", last=0.5) == 50.0  # steps 6 and 8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(column="nope"), "column"),
        (dict(column="loss", last=0.0), "last"),
        (dict(column="loss", last=1.5), "last"),
        (dict(column="loss", statistic="max"), "statistic"),
    ],
)
def test_tail_statistic_rejects_bad_input(tiny_run, kwargs, match):
    with pytest.raises(ValueError, match=match):
        training.tail_statistic(tiny_run, **kwargs)


def test_tail_statistic_needs_a_run():
    with pytest.raises(TypeError, match="run"):
        training.tail_statistic(pd.DataFrame(), "loss")


def test_run_summary_against_direct_measurements(tiny_run):
    task, model = tiny_run.task, tiny_run.model
    row = training.run_summary(tiny_run, {"cos": "cosine_to_momentum"}, last=0.25,
                               splits=("train", "val"))  # fmt: skip
    assert list(row) == ["train_loss_late", "train_loss", "train_accuracy", "val_loss",
                         "val_accuracy", "cos", "seconds"]  # fmt: skip
    h = tiny_run.history  # steps 31..40
    assert row["train_loss_late"] == pytest.approx(h["loss"].to_numpy()[30:].mean(), rel=1e-12)
    with torch.no_grad():
        model.eval()
        out = model(task.x_val)
        model.train()
    val_loss = nn.functional.cross_entropy(out, task.y_val).item()
    val_accuracy = (out.argmax(1) == task.y_val).double().mean().item()
    assert row["val_loss"] == pytest.approx(val_loss, rel=1e-10)
    assert row["val_accuracy"] == pytest.approx(val_accuracy, abs=1e-12)
    m = tiny_run.measurements
    assert row["cos"] == pytest.approx(np.median(m["cosine_to_momentum"].to_numpy()[-2:]))  # 35, 40
    assert row["seconds"] == tiny_run.seconds


def test_run_summary_of_a_diverged_run(tiny_run):
    row = training.run_summary(dataclasses.replace(tiny_run, diverged=True))
    assert math.isnan(row["val_loss"]) and math.isnan(row["val_accuracy"])
    with pytest.raises(ValueError, match="splits"):
        training.run_summary(tiny_run, splits="val")


def _reference_history(model, opt, x, y, steps, batch_size, seed):
    # the hand-written loop the recorder replaces
    gen = torch.Generator(device="cpu").manual_seed(seed)
    grads, losses = [], []
    for _ in range(steps):
        idx = torch.randint(len(y), (batch_size,), generator=gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
        losses.append(loss.item())
        opt.step()
    return grads, losses


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(61, 8), nn.Tanh(), nn.Linear(8, 10)).double()


def test_record_gradients_matches_the_hand_written_loop():
    task = tasks.digits(hidden=(4,), seed=0, dtype=torch.float64)
    x, y = task.x_train, task.y_train
    a, b = _mlp(1), _mlp(1)
    start = [p.detach().clone() for p in a.parameters()]
    opt_a, opt_b = (
        torch.optim.AdamW(a.parameters(), lr=1e-2),
        torch.optim.AdamW(b.parameters(), lr=1e-2),
    )
    got = training.record_gradients(a, opt_a, nn.functional.cross_entropy, x, y, 12,
                                    batch_size=16, seed=3)  # fmt: skip
    grads, losses = _reference_history(b, opt_b, x, y, 12, 16, 3)
    assert got.losses == losses
    assert all(
        torch.equal(g, r)
        for gs, rs in zip(got.gradients, grads, strict=True)
        for g, r in zip(gs, rs, strict=True)
    )
    # replaying the history through the same rule from the start reproduces the trained weights
    again = replay("adamw", start, got.gradients, lr=1e-2)
    assert all(
        torch.equal(p, q)
        for p, q in zip(again.param_groups[0]["params"], a.parameters(), strict=True)
    )
    assert got.losses[-1] < got.losses[0]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(steps=0), ValueError, "steps"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(targets=torch.zeros(3, dtype=torch.long)), ValueError, "targets"),
        (dict(model="mlp"), TypeError, "model"),
        (dict(optimizer="adamw"), TypeError, "optimizer"),
    ],
)
def test_record_gradients_rejects_bad_input(kwargs, error, match):
    model = _mlp(0)
    args = dict(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                loss_fn=nn.functional.cross_entropy, inputs=torch.zeros(5, 61, dtype=torch.float64),
                targets=torch.zeros(5, dtype=torch.long), steps=2, batch_size=2, seed=0)  # fmt: skip
    args.update(kwargs)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(error, match=match):
        training.record_gradients(**args)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
