"""Learning tasks: seeded splits, models, losses and the CIFAR-10 binary reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis_lib.problems import cifar10_bin, tasks
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
def _write_cifar(folder, counts=(3, 3, 3, 3, 3), n_test=3, seed=0):
    """A tiny data set in CIFAR-10's binary layout; returns the records written. The tests
    that read it through ``cifar10`` set the records per file to 3 (``_small_cifar``)."""
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


@pytest.fixture
def _small_cifar(monkeypatch):
    monkeypatch.setattr(cifar10_bin, "RECORDS_PER_FILE", 3)


def test_cifar10_reader_parses_the_standard_binary_layout(tmp_path, _small_cifar):
    written = _write_cifar(tmp_path / "cifar-10-batches-bin")
    images, labels = read_cifar10_bin(tmp_path / "cifar-10-batches-bin" / "test_batch.bin")
    want_labels, want_pixels = written["test_batch.bin"]
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, want_labels)
    # channel-major planes of 32 rows of 32: red first
    np.testing.assert_array_equal(images[1, 0, 2, 5], want_pixels[1, 2 * 32 + 5])
    np.testing.assert_array_equal(images[1, 2, 31, 31], want_pixels[1, 3071])

    task = tasks.cifar10(tmp_path, val_fraction=0.0)
    assert len(task.x_train) == 15 and len(task.x_test) == 3 and len(task.x_val) == 0
    # undo the standardisation: the test images come back as the bytes written
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
    std = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)
    back = ((task.x_test * std + mean) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(back.reshape(3, -1), want_pixels)
    np.testing.assert_array_equal(task.y_test.numpy(), want_labels)
    assert task.make_model()(task.x_test).shape == (3, 10)
    # the folder itself is accepted too, and the train images are all the batches' records
    also = tasks.cifar10(tmp_path / "cifar-10-batches-bin", val_fraction=0.0, model="mlp")
    assert also.x_train.shape == (15, 3072)


def test_cifar10_rejects_malformed_files(tmp_path, _small_cifar):
    _write_cifar(tmp_path / "cifar-10-batches-bin")
    bad = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    bad.write_bytes(bad.read_bytes()[:-1])  # truncated by one byte
    with pytest.raises(ValueError, match=r"data_batch_2\.bin.*expected 3 records"):
        tasks.cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"data_batch_2\.bin.*not a whole number"):
        read_cifar10_bin(bad)
    raw = bytearray(np.zeros(3 * 3073, dtype=np.uint8).tobytes())
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


def test_cifar10_refuses_a_batch_file_with_fewer_than_10000_records(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    full = 10_000 * 3073
    for i in range(1, 6):  # sparse files of the right size: all-zero records, label 0
        with open(folder / f"data_batch_{i}.bin", "wb") as f:
            f.truncate(full)
    with open(folder / "test_batch.bin", "wb") as f:
        f.truncate(9_999 * 3073)  # one record short, still a whole number of records
    with pytest.raises(ValueError, match=r"test_batch\.bin: .*9999 records.*expected 10000"):
        tasks.cifar10(tmp_path)
    with open(folder / "data_batch_3.bin", "wb") as f:
        f.truncate(full + 3073)  # one record too many
    with pytest.raises(ValueError, match=r"data_batch_3\.bin: .*10001 records"):
        tasks.cifar10(tmp_path)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: tasks.teacher_student(noise=float("inf")), "noise"),
        (lambda: tasks.teacher_student(noise=float("nan")), "noise"),
        (lambda: tasks.teacher_student(noise=-0.1), "noise"),
        (lambda: tasks.teacher_student(noise="0.1"), "noise"),
        (lambda: tasks.teacher_student(student_hidden=(8.5,)), r"student_hidden\[0\]"),
        (lambda: tasks.teacher_student(teacher_hidden=16), "teacher_hidden"),
        (lambda: tasks.teacher_student(n_train=True), "n_train"),
        (lambda: tasks.digits(val_fraction=float("nan")), "val_fraction"),
        (lambda: tasks.digits(val_fraction=np.float64(1.5)), "val_fraction"),
        (lambda: tasks.digits(hidden=(64, 0)), r"hidden\[1\]"),
        (lambda: tasks.digits(hidden="64"), "hidden"),
        (lambda: tasks.digits(model="cnn", width=2.5), "width"),
        (lambda: tasks.digits(label_smoothing=float("nan")), "label_smoothing"),
        (lambda: tasks.digits(label_smoothing=True), "label_smoothing"),
        (lambda: tasks.mlp(4, (3,), 2.0), "out_features"),
        (lambda: tasks.small_cnn(1, 8, 10, width=True), "width"),
        (lambda: tasks.cifar10(subset=np.float64(3.0)), "subset"),
        (lambda: tasks.cifar10(subset=0), "subset"),
        (lambda: tasks.digits().make_model(seed=-1), "seed"),
        (lambda: tasks.digits().make_model(seed=1.0), "seed"),
        (lambda: tasks.digits(dtype=torch.int64), "dtype"),
        (lambda: tasks.digits(dtype="float32"), "dtype"),
        (lambda: tasks.teacher_student(dtype=torch.complex64), "dtype"),
        (lambda: tasks.cifar10(dtype=torch.int32), "dtype"),
    ],
)
def test_numbers_are_checked_by_one_rule(call, match):
    with pytest.raises(ValueError, match=f"Invalid {match}"):
        call()


def test_numpy_numbers_are_accepted_like_python_ones():
    a = tasks.teacher_student(
        input_dim=np.int64(3),
        teacher_hidden=np.array([4]),
        student_hidden=(np.int32(5),),
        n_train=np.int64(20),
        n_val=np.int64(4),
        n_test=np.int64(4),
        noise=np.float32(0.5),
        seed=np.int64(2),
    )
    b = tasks.teacher_student(3, (4,), (5,), 20, 4, 4, noise=0.5, seed=2)
    torch.testing.assert_close(a.y_train, b.y_train, rtol=0, atol=0)
    assert a.info["noise"] == 0.5
    m1, m2 = a.make_model(seed=np.int64(1)), b.make_model(seed=1)
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)
    assert tasks.digits(val_fraction=np.float64(0.15)).x_val.shape == tasks.digits().x_val.shape
