"""The curvature summary of a trained model and the edge-of-stability helpers, against dense
Hessians of tiny models and closed-form thresholds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis_lib import training
from analysis_lib.curvature import dense_hessian
from analysis_lib.curvature.edge import one_hot_mse, sharpness_run
from analysis_lib.curvature.summary import curvature_summary
from analysis_lib.problems import tasks


@pytest.fixture(scope="module")
def task():
    return tasks.digits(hidden=(2,), seed=0, dtype=torch.float64)


@pytest.fixture(scope="module")
def adamw_run(task):
    return training.train(task, "adamw", 30, batch_size=64, lr=1e-2, seed=0, progress=False)


def _adam_p(opt, beta2=0.999, eps=1e-8):
    # P = sqrt(v_hat) + eps from AdamW's state, written out independently
    parts = []
    for p in opt.param_groups[0]["params"]:
        st = opt.state[p]
        step = float(st["step"])
        parts.append((st["exp_avg_sq"] / (1 - beta2**step)).sqrt().add(eps).flatten())
    return torch.cat(parts)


def test_curvature_summary_matches_the_dense_hessian(task, adamw_run):
    model, data = adamw_run.model, task.data("train")
    c = curvature_summary(model, task.loss_fn, data, k=3, trace_matvecs=60, seed=0, check_seed=1,
                          optimizer=adamw_run.optimizer)  # fmt: skip
    h = dense_hessian(model, task.loss_fn, data)
    exact = torch.linalg.eigvalsh(h).flip(0)
    row = c.row()
    assert row["lambda_max"] == pytest.approx(exact[0].item(), rel=1e-8)
    assert row["lambda_max_check"] == pytest.approx(exact[0].item(), rel=1e-6)
    assert row["converged"] and row["residual"] <= 1e-6 * exact[0].item() * 1.0001
    assert abs(row["trace"] - torch.trace(h).item()) <= 3 * row["trace_stderr"] + 1e-9
    frame = c.eigen_frame()
    assert list(frame["rank"]) == [1, 2, 3]
    assert torch.allclose(
        torch.tensor(frame["eigenvalue"].tolist(), dtype=torch.float64), exact[:3], rtol=1e-8
    )
    d = _adam_p(adamw_run.optimizer).rsqrt()
    pre = torch.linalg.eigvalsh(d[:, None] * h * d[None, :]).max().item()
    assert row["preconditioned_lambda_max"] == pytest.approx(pre, rel=1e-5)
    assert row["threshold_adam"] == pytest.approx((2 + 2 * 0.9) / (0.1 * 1e-2), rel=1e-12)
    assert "threshold_momentum" not in row


def test_curvature_summary_of_momentum_sgd(task):
    run = training.train(task, "sgdm", 5, batch_size=64, lr=0.05, seed=0, progress=False)
    row = curvature_summary(run.model, task.loss_fn, task.data("train"), trace_matvecs=9,
                            optimizer=run.optimizer).row()  # fmt: skip
    assert row["threshold_momentum"] == pytest.approx((2 + 2 * 0.9) / 0.05, rel=1e-12)
    assert "preconditioned_lambda_max" not in row and "lambda_max_check" not in row


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(k=0), ValueError, "k"),
        (dict(trace_matvecs=0), ValueError, "trace_matvecs"),
        (dict(check_seed=-1), ValueError, "check_seed"),
        (dict(optimizer="adamw"), TypeError, "optimizer"),
    ],
)
def test_curvature_summary_rejects_bad_input(task, adamw_run, kwargs, error, match):
    with pytest.raises(error, match=match):
        curvature_summary(adamw_run.model, task.loss_fn, task.data("train"), **kwargs)


def test_one_hot_mse(task):
    mse = one_hot_mse(task)
    assert mse.name == "digits-mlp-mse" and mse.loss == "mse"
    assert torch.equal(mse.x_train, task.x_train) and torch.equal(mse.x_test, task.x_test)
    for split in ("train", "val", "test"):
        _, y = mse.split(split)
        assert y.dtype == torch.float64 and y.shape == (len(task.split(split)[1]), 10)
        assert torch.equal(y.argmax(1), task.split(split)[1]) and torch.all(y.sum(1) == 1)
    out = torch.randn(5, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = mse.y_train[:5]
    expected = sum(((out[i, c] - target[i, c]) ** 2).item() for i in range(5) for c in range(10))
    assert mse.loss_fn(out, target).item() == pytest.approx(expected / 50, rel=1e-12)
    with pytest.raises(ValueError, match="task"):
        one_hot_mse(mse)
    with pytest.raises(TypeError, match="task"):
        one_hot_mse("digits")


def test_sharpness_run_measures_the_dense_sharpness(task):
    mse = one_hot_mse(task)
    run = sharpness_run(mse, "sgd", lr=0.5, steps=20, every=10, seed=0)
    assert run.label == "sgd, lr=0.5" and run.config["batch_size"] is None
    m = run.measurements
    assert list(m["step"]) == [10, 20]
    h = dense_hessian(run.model, mse.loss_fn, mse.data("train"))
    exact = torch.linalg.eigvalsh(h).max().item()
    last = m.iloc[-1]
    assert abs(last["sharpness"] - exact) <= last["sharpness_residual"] + 1e-10
    assert last["threshold_gd"] == pytest.approx(4.0, rel=1e-12)
    with pytest.raises(ValueError, match="every"):
        sharpness_run(mse, "sgd", lr=0.5, steps=20, every=0)


def test_sharpness_run_passes_hyperparameters(task):
    run = sharpness_run(one_hot_mse(task), "sgd", lr=0.1, steps=4, every=2, momentum=0.5)
    assert run.optimizer.param_groups[0]["momentum"] == 0.5
    assert run.measurements["threshold_momentum"].iloc[-1] == pytest.approx(3.0 / 0.1, rel=1e-12)
    assert isinstance(run.model, nn.Module)
