"""Learning tasks: seeded splits, models, losses and the CIFAR-10 binary reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis_lib.problems import tasks
from analysis_lib.problems.tasks import Task, read_cifar10_bin


def test_digits_splits_are_seeded_disjoint_and_complete():
    a, b, c = tasks.digits(seed=0), tasks.digits(seed=0), tasks.digits(seed=1)
    for split in ("train", "val", "test"):
        torch.testing.assert_close(a.split(split)[0], b.split(split)[0], rtol=0, atol=0)
    assert not torch.equal(a.y_train, c.y_train)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (1168, 270, 359)  # 1797 in all
    # disjoint: no image of the test split is in the training split
    train = {tuple(r) for r in a.x_train.numpy().round(5)}
    assert sum(tuple(r) in train for r in a.x_test.numpy().round(5)) <= 5  # a few duplicates
    # the MLP inputs are standardised on the training split, constant pixels dropped
    assert a.x_train.shape[1] < 64
    torch.testing.assert_close(
        a.x_train.mean(0), torch.zeros(a.x_train.shape[1]), atol=1e-5, rtol=0
    )
    assert torch.all(a.x_train.std(0, correction=0) > 0.99)


def test_digits_cnn_takes_images():
    task = tasks.digits(model="cnn")
    assert task.x_train.shape[1:] == (1, 8, 8)
    out = task.make_model()(task.x_train[:5])
    assert out.shape == (5, 10)


def test_make_model_is_seeded_and_leaves_the_global_generator_alone():
    task = tasks.digits()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    m1, m2, m3 = task.make_model(seed=4), task.make_model(seed=4), task.make_model(seed=5)
    torch.testing.assert_close(torch.rand(3), expected_next, rtol=0, atol=0)
    for p1, p2, p3 in zip(m1.parameters(), m2.parameters(), m3.parameters(), strict=True):
        assert torch.equal(p1, p2) and not torch.equal(p1, p3)


def test_evaluate_is_the_sample_weighted_mean_over_ragged_batches():
    task = tasks.digits()
    model = task.make_model()
    whole = task.evaluate(model, "test", batch_size=None)
    ragged = task.evaluate(model, "test", batch_size=100)  # 359 = 3 x 100 + 59
    with torch.no_grad():
        out = model(task.x_test)
        loss = torch.nn.functional.cross_entropy(out, task.y_test, reduction="sum") / 359
        acc = (out.argmax(1) == task.y_test).double().mean()
    assert ragged["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert whole["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert ragged["accuracy"] == pytest.approx(acc.item(), abs=1e-9)
    assert [len(x) for x, _ in task.data("test", 100)] == [100, 100, 100, 59]


def test_teacher_student_targets_are_the_teacher_plus_noise():
    task = tasks.teacher_student(noise=0.3, n_train=4000, seed=2)
    assert task.loss == "mse" and not task.has_accuracy
    with torch.no_grad():
        residual = task.y_train.double() - task.teacher(task.x_train)
    assert residual.std().item() == pytest.approx(0.3, rel=0.05)
    assert residual.mean().item() == pytest.approx(0.0, abs=0.02)
    assert task.info["bayes_mse"] == pytest.approx(0.09)
    with pytest.raises(ValueError, match="accuracy"):
        task.accuracy(task.y_train, task.y_train)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(val_fraction=0.5, test_fraction=0.5), "no training data"),
        (dict(test_fraction=-0.1), "test_fraction"),
        (dict(model="resnet"), "model"),
        (dict(seed=-1), "seed"),
        (dict(activation="sigmoidal"), "activation"),
    ],
)
def test_digits_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.digits(**kwargs)


def test_task_rejects_bad_splits_and_names():
    task = tasks.digits()
    with pytest.raises(ValueError, match="split"):
        task.split("validation")
    with pytest.raises(ValueError, match="batch_size"):
        task.data("train", 0)
    with pytest.raises(ValueError, match="targets"):
        Task(
            "bad",
            task.x_train,
            task.y_train[:-1],
            task.x_val,
            task.y_val,
            task.x_test,
            task.y_test,
            model_factory=lambda: None,
        )


# -- CIFAR-10 ----------------------------------------------------------------------------------
def _write_cifar(folder, counts=(3, 2, 2, 2, 2), n_test=4, seed=0):
    """A tiny data set in CIFAR-10's binary layout; returns the records written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, n in zip(names, [*counts, n_test], strict=True):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        np.concatenate([labels[:, None], pixels], axis=1).tofile(folder / name)
        written[name] = (labels, pixels)
    return written


def test_cifar10_reader_parses_the_standard_binary_layout(tmp_path):
    written = _write_cifar(tmp_path / "cifar-10-batches-bin")
    images, labels = read_cifar10_bin(tmp_path / "cifar-10-batches-bin" / "test_batch.bin")
    want_labels, want_pixels = written["test_batch.bin"]
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, want_labels)
    # channel-major planes of 32 rows of 32: red first
    np.testing.assert_array_equal(images[1, 0, 2, 5], want_pixels[1, 2 * 32 + 5])
    np.testing.assert_array_equal(images[1, 2, 31, 31], want_pixels[1, 3071])

    task = tasks.cifar10(tmp_path, val_fraction=0.0)
    assert len(task.x_train) == 11 and len(task.x_test) == 4 and len(task.x_val) == 0
    # undo the standardisation: the test images come back as the bytes written
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
    std = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)
    back = ((task.x_test * std + mean) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(back.reshape(4, -1), want_pixels)
    np.testing.assert_array_equal(task.y_test.numpy(), want_labels)
    assert task.make_model()(task.x_test).shape == (4, 10)
    # the folder itself is accepted too, and the train images are all the batches' records
    also = tasks.cifar10(tmp_path / "cifar-10-batches-bin", val_fraction=0.0, model="mlp")
    assert also.x_train.shape == (11, 3072)


def test_cifar10_rejects_malformed_files(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-bin")
    bad = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    bad.write_bytes(bad.read_bytes()[:-1])  # truncated by one byte
    with pytest.raises(ValueError, match=r"data_batch_2\.bin.*not a whole number"):
        tasks.cifar10(tmp_path)
    raw = bytearray(np.zeros(2 * 3073, dtype=np.uint8).tobytes())
    raw[3073] = 10  # second record's label
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="record 1 has label 10"):
        tasks.cifar10(tmp_path)


def test_cifar10_names_the_expected_path_when_absent(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-bin.*data_batch_1\.bin"):
        tasks.cifar10(tmp_path)
    monkeypatch.delenv(tasks.CIFAR10_ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=tasks.CIFAR10_ENV_VAR):
        tasks.cifar10()
