"""MNIST-1D generated here: the published data set exactly as the package's own ``make_dataset``
builds it, further examples from the same generator, the task's splits and the reference
networks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from analysis_lib.problems import mnist1d, tasks


@pytest.fixture(scope="module")
def published():
    return mnist1d.published()


@pytest.mark.slow
def test_published_data_set_is_the_package_generators(published):
    from mnist1d.data import make_dataset

    reference = make_dataset()  # the package's own construction (no download, no pickle)
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(published[key], reference[key])
    assert published["x"].shape == (4000, 40) and published["x_test"].shape == (1000, 40)
    assert np.bincount(np.concatenate([published["y"], published["y_test"]])).tolist() == [500] * 10


def test_generating_leaves_the_callers_random_state(published):
    np.random.seed(7)  # noqa: NPY002
    random.seed(7)
    expected = (np.random.rand(), random.random())  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    random.seed(7)
    mnist1d.extra_examples(20, seed=99)
    assert (np.random.rand(), random.random()) == expected  # noqa: NPY002


def test_extra_examples_are_new_balanced_and_standardised_like_the_published(published):
    x, y = mnist1d.extra_examples(2000)
    assert x.shape == (2000, 40) and np.bincount(y).tolist() == [200] * 10
    everything = np.concatenate([published["x"], published["x_test"]])
    assert not (x[:, None, :] == everything[None, :200, :]).all(-1).any()
    # the published standardisation, not the new examples' own: close to 0 / 1, not exactly
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    assert x.mean() != pytest.approx(0.0, abs=1e-12)
    x2, _ = mnist1d.extra_examples(2000)
    np.testing.assert_array_equal(x, x2)  # the same seed gives the same examples


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"count": 15}, "count"),
        ({"count": 0}, "count"),
        ({"count": 10, "seed": mnist1d.PUBLISHED_SEED}, "seed"),
        ({"count": 10, "seed": -1}, "seed"),
    ],
)
def test_extra_examples_refuse_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mnist1d.extra_examples(**kwargs)


def test_task_splits(published):
    task = tasks.mnist1d("mlp", seed=3)
    assert (task.n_train, len(task.x_val), len(task.x_test)) == (3400, 600, 1000)
    assert task.x_train.dtype == torch.float32 and task.x_train.shape[1] == 40
    # train and validation together are the 4,000 published training examples, reordered
    both = torch.cat([task.x_train, task.x_val]).numpy()
    ref = published["x"].astype(np.float32)
    np.testing.assert_array_equal(np.unique(both, axis=0), np.unique(ref, axis=0))
    assert len(np.unique(both, axis=0)) == 4000
    np.testing.assert_array_equal(task.y_test.numpy(), published["y_test"])
    other = tasks.mnist1d("mlp", seed=4)
    assert not torch.equal(other.x_val, task.x_val)
    assert torch.equal(tasks.mnist1d("mlp", seed=3).x_val, task.x_val)
    bigger = tasks.mnist1d("cnn", test_size=3000)
    assert len(bigger.x_test) == 3000
    assert torch.equal(bigger.x_test[:1000], task.x_test)
    assert task.arguments["constructor"] == "mnist1d"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "rnn"}, "model"),
        ({"test_size": 999}, "test_size"),
        ({"test_size": 1005}, "test_size"),
        ({"hidden": 0}, "hidden"),
        ({"channels": 1.5}, "channels"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_task_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.mnist1d(**kwargs)


def test_reference_networks():
    torch.manual_seed(0)
    net = mnist1d.ResidualMLP()
    assert sum(p.numel() for p in net.parameters()) == 40 * 100 + 100 + 100 * 100 + 100 + 1010
    x = torch.randn(5, 40)
    h = torch.relu(x @ net.linear1.weight.T + net.linear1.bias)
    h = h + torch.relu(h @ net.linear2.weight.T + net.linear2.bias)
    torch.testing.assert_close(net(x), h @ net.linear3.weight.T + net.linear3.bias)
    cnn = mnist1d.conv_net()
    assert cnn(x).shape == (5, 10)
    assert sum(p.numel() for p in cnn.parameters()) == (5 * 25 + 25) + 2 * (3 * 25 * 25 + 25) + (
        125 * 10 + 10
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "steps", "published"),
    [("mlp", 6000, 0.68), ("cnn", 3000, 0.94)],
)
def test_reference_networks_reach_the_published_accuracy(model, steps, published):
    """Trained as the dataset's paper trains them (all 4,000 training examples, batches of
    100), with SGD+momentum at 0.05, the reference networks come within a few points of the
    published test accuracies (MLP 68%, CNN 94%; 1,000 test examples: a binomial standard error
    of about 1.5 and 0.8 points)."""
    from analysis_lib.training import train

    task = tasks.mnist1d(model, val_fraction=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums on every machine
    try:
        run = train(
            task,
            "sgdm",
            steps=steps,
            batch_size=100,
            lr=0.05,
            seed=0,
            record_every=100,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    accuracy = run.evaluate("test")["accuracy"]
    assert abs(accuracy - published) < 0.05, f"{model}: {accuracy:.3f} against {published}"
