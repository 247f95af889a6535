"""The one eval-mode context: every submodule's own train/eval flag comes back, after a normal
exit and after an exception, in the helper itself and in every caller (tasks, landscapes,
curvature)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from analysis_lib._evaluation import eval_mode
from analysis_lib.curvature import (
    SharpnessCallback,
    dense_hessian,
    hessian_eigenvalues,
    hessian_trace,
    spectral_density,
)
from analysis_lib.landscape import auto_chunk_size
from analysis_lib.problems.tasks import Task


def mixed_model(parent_training: bool) -> nn.Module:
    """A model whose submodules are not all in the parent's mode: the dropout layer and the
    inner block are set to the opposite of the parent."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(6, 6), nn.Tanh())
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), inner, nn.Linear(6, 3)).double()
    model.train(parent_training)
    model[1].train(not parent_training)
    inner[0].train(not parent_training)
    return model


def flags(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    return [(x[:5], torch.arange(5) % 3), (x[5:], torch.arange(4) % 3)]


def tiny_task() -> Task:
    (x1, y1), (x2, y2) = data()
    x, y = torch.cat([x1, x2]), torch.cat([y1, y2])
    return Task("tiny", x, y, x[:4], y[:4], x[:4], y[:4], model_factory=lambda: mixed_model(True))


PARENT = [True, False]


@pytest.mark.parametrize("parent_training", PARENT)
def test_eval_mode_restores_each_submodule_also_after_an_exception(parent_training):
    model = mixed_model(parent_training)
    before = flags(model)
    assert len(set(before.values())) == 2  # really mixed
    with eval_mode(model):
        assert not any(flags(model).values())
    assert flags(model) == before
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert flags(model) == before
    with pytest.raises(ValueError, match="model"), eval_mode("not a model"):
        pass


@pytest.mark.parametrize("parent_training", PARENT)
def test_task_evaluate_restores_every_submodule(parent_training):
    task, model = tiny_task(), mixed_model(parent_training)
    before = flags(model)
    seen = []
    model.register_forward_pre_hook(lambda m, _: seen.append(any(flags(m).values())))
    result = task.evaluate(model, "train", batch_size=4)
    assert seen and not any(seen)  # evaluated with dropout off
    assert flags(model) == before
    with torch.no_grad(), eval_mode(model):
        want = F.cross_entropy(model(task.x_train), task.y_train).item()
    assert result["loss"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("parent_training", PARENT)
def test_auto_chunk_size_restores_every_submodule(parent_training):
    model = mixed_model(parent_training)
    before = flags(model)
    assert auto_chunk_size(model, data(), points=10) >= 1
    assert flags(model) == before


@pytest.mark.parametrize("parent_training", PARENT)
def test_curvature_probes_restore_every_submodule(parent_training):
    model = mixed_model(parent_training)
    before = flags(model)
    hessian_eigenvalues(model, F.cross_entropy, data(), k=2)
    assert flags(model) == before
    hessian_trace(model, F.cross_entropy, data(), matvecs=6)
    spectral_density(model, F.cross_entropy, data(), lanczos_steps=5, runs=2)
    dense_hessian(model, F.cross_entropy, data())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    SharpnessCallback(F.cross_entropy, data(), max_matvecs=5)(1, model, opt)
    assert flags(model) == before
