"""The evaluation core. The one eval-mode context: every submodule's own train/eval flag comes
back, after a normal exit and after an exception, in the helper itself and in every caller
(tasks, landscapes, curvature). The one rule for ``data``: batches weighted by size (against the
full-batch loss), DataLoaders and tuple inputs, each bad input refused with an error naming
``data`` by the core and by the probes alike. The parameter space and the default accuracy."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from analysis_lib._evaluation import ParameterSpace, accuracy, batches, eval_mode
from analysis_lib.curvature import (
    HessianOperator,
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


# -- the one rule for data -------------------------------------------------------------------------
def two_input_model() -> nn.Module:
    """A model of two inputs: ``f(a, b) = W2 tanh(W1 [a, b])``."""

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))

        def forward(self, a, b):
            return self.net(torch.cat([a, b], dim=-1))

    torch.manual_seed(0)
    return TwoInputs().double()


def full_loss(model, inputs, targets) -> float:
    """The mean loss over all samples in one forward pass (the reference)."""
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.no_grad(), eval_mode(model):
        return F.cross_entropy(model(*args), targets).item()


def probe_loss(model, data) -> float:
    """The loss over data as the curvature probes compute it (sample-weighted batch means)."""
    return HessianOperator(model, F.cross_entropy, data).loss()


def test_a_ragged_last_batch_is_weighted_by_its_size():
    model = mixed_model(False)
    (x1, y1), (x2, y2) = data()
    x, y = torch.cat([x1, x2]), torch.cat([y1, y2])
    ragged = [(x[:8], y[:8]), (x[8:], y[8:])]  # 8 and 1 samples
    got = batches(ragged)
    assert [b.size for b in got] == [8, 1]
    assert [b.weight for b in got] == [8 / 9, 1 / 9]
    want = full_loss(model, x, y)
    assert probe_loss(model, ragged) == pytest.approx(want, rel=1e-12)
    # the unweighted mean of the batch losses (what averaging per batch gives) is another number
    per_batch = [full_loss(model, xb, yb) for xb, yb in ragged]
    assert abs(sum(per_batch) / 2 - want) > 1e-3
    # empty batches are skipped, not counted
    with_empty = [(x[:0], y[:0]), *ragged, (x[9:], y[9:])]
    assert [b.size for b in batches(with_empty)] == [8, 1]
    assert probe_loss(model, with_empty) == pytest.approx(want, rel=1e-12)


def test_a_dataloader_is_read_once_with_its_ragged_last_batch():
    model = mixed_model(False)
    (x1, y1), (x2, y2) = data()
    x, y = torch.cat([x1, x2]), torch.cat([y1, y2])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    got = batches(loader)
    assert [b.size for b in got] == [4, 4, 1]
    assert probe_loss(model, loader) == pytest.approx(full_loss(model, x, y), rel=1e-12)
    reads = []
    once = (reads.append(b) or b for b in [(x, y)])  # a generator can be read only once
    assert probe_loss(model, once) == pytest.approx(full_loss(model, x, y), rel=1e-12)
    assert len(reads) == 1


class PairDataset(torch.utils.data.Dataset):
    """Samples ``((a_i, b_i), y_i)``: a DataLoader collates them into ``[[A, B], Y]``."""

    def __init__(self, a, b, y) -> None:
        self.a, self.b, self.y = a, b, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return (self.a[i], self.b[i]), self.y[i]


def test_tuple_inputs_are_the_models_positional_arguments():
    model = two_input_model()
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    b = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=gen)
    want = full_loss(model, (a, b), y)
    as_tuples = [((a[:5], b[:5]), y[:5]), ((a[5:], b[5:]), y[5:])]
    assert isinstance(batches(as_tuples)[0].inputs, tuple)
    assert probe_loss(model, as_tuples) == pytest.approx(want, rel=1e-12)
    # a DataLoader collates the pair into a list: handed on as positional arguments too
    loader = torch.utils.data.DataLoader(PairDataset(a, b, y), batch_size=3)
    first = batches(loader)[0]
    assert isinstance(first.inputs, tuple) and len(first.inputs) == 2
    assert probe_loss(model, loader) == pytest.approx(want, rel=1e-12)


def test_batches_are_moved_to_the_device_once_and_accepted_again():
    (x1, y1), (x2, y2) = data()
    arrays = [(x1.numpy(), y1.numpy()), (x2, y2)]  # NumPy arrays are converted
    checked = batches(arrays)
    assert all(isinstance(b.inputs, torch.Tensor) for b in checked)
    torch.testing.assert_close(checked[0].inputs, x1)
    moved = batches(checked, device="meta")  # a checked list is accepted again, and moved
    assert all(b.inputs.device.type == "meta" and b.targets.device.type == "meta" for b in moved)
    assert [b.weight for b in moved] == [b.weight for b in checked] == [5 / 9, 4 / 9]


def bad_data():
    x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
    return {
        "one pair": ((x, y), "one \\(inputs, targets\\) pair; wrap it in a list"),
        "empty": ([], "no samples"),
        "only empty batches": ([(x[:0], y[:0])], "no samples"),
        "not iterable": (3, "int \\(expected an iterable"),
        "a tensor": (x, "Tensor \\(expected an iterable"),
        "a string": ("data.npz", "str \\(expected an iterable"),
        "a dict": ({"x": x, "y": y}, "dict \\(expected an iterable"),
        "a triple": ([(x, y, y)], "batch 0 is not an \\(inputs, targets\\) pair \\(got 3 items\\)"),
        "a bare tensor batch": ([x], "batch 0 is not an \\(inputs, targets\\) pair"),
        "inputs not tensors": ([("abc", y)], "the inputs of batch 0 are a str"),
        "targets a list of ints": ([(x, [0, 1, 0, 1])], "the targets of batch 0\\[0\\] are a int"),
        "empty tuple inputs": ([((), y)], "the inputs of batch 0 are an empty tuple"),
        "0-d targets": ([(x[:1], y[0])], "the targets of batch 0 are a 0-d tensor"),
        "mismatched sizes": ([(x, y), (x, y[:3])], "batch 1 has 4 inputs and 3 targets"),
        "mismatched tuple": ([((x, x[:2]), y)], "batch 0 has 4 inputs and 2 inputs"),
    }


@pytest.mark.parametrize("case", list(bad_data()))
def test_bad_data_is_refused_with_an_error_naming_data(case):
    value, message = bad_data()[case]
    with pytest.raises(ValueError, match="Invalid data: .*" + message):
        batches(value)
    with pytest.raises(ValueError, match="Invalid bn_data: "):
        batches(value, name="bn_data")
    model = mixed_model(False)
    with pytest.raises(ValueError, match="Invalid data: .*" + message):
        hessian_trace(model, F.cross_entropy, value, matvecs=4)
    with pytest.raises(ValueError, match="Invalid data: .*" + message):
        SharpnessCallback(F.cross_entropy, value)


def test_a_probe_and_the_sharpness_measures_refuse_the_same_data():
    from analysis_lib.sharpness import worst_case_sharpness

    model = mixed_model(False)
    for value, message in bad_data().values():
        with pytest.raises(ValueError, match="Invalid data: .*" + message):
            worst_case_sharpness(model, F.cross_entropy, value, 0.1)


# -- parameters and accuracy -----------------------------------------------------------------------
def test_parameter_space_round_trips_and_directions_use_it():
    from analysis_lib import landscape

    model = mixed_model(True)
    named = dict(model.named_parameters())
    space = ParameterSpace(named)
    flat = space.flatten(named)
    assert flat.shape == (sum(p.numel() for p in model.parameters()),) == (space.size,)
    want = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(flat.detach(), want, rtol=0, atol=0)
    back = space.unflatten(flat.detach())
    assert list(back) == list(named)
    for k, p in named.items():
        torch.testing.assert_close(back[k], p.detach(), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"Invalid flat: shape \(3,\)"):
        space.unflatten(torch.zeros(3))
    torch.testing.assert_close(landscape.flatten(named).detach(), want, rtol=0, atol=0)
    floats = landscape.unflatten(want.float(), named)  # cast and placed like the parameters
    assert all(v.dtype == torch.float64 for v in floats.values())
    with pytest.raises(ValueError, match="Invalid vector: 3 entries"):
        landscape.unflatten(torch.zeros(3), named)


def test_the_default_accuracy_is_the_tasks():
    outputs = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.3, 0.2], [0.0, 1.0]])
    targets = torch.tensor([1, 0, 1, 0])
    assert accuracy(outputs, targets).item() == 0.5
    assert tiny_task().accuracy(outputs, targets).item() == 0.5
