"""Learning tasks: data split into train / validation / test, a model factory and a loss.

A :class:`Task` is what :func:`analysis_lib.training.train` trains on and what the probes
(curvature, landscape, sharpness) evaluate::

    from analysis_lib.problems import tasks

    task = tasks.digits(model="mlp", seed=0)      # scikit-learn's 8x8 digits, shipped with it
    model = task.make_model(seed=0)
    loss = task.loss_fn(model(task.x_train), task.y_train)
    batches = task.data("train", batch_size=256)  # [(inputs, targets), ...], the last one ragged

The tasks here: :func:`digits` (an MLP or a small CNN), :func:`mnist1d` (MNIST-1D, generated
locally, with its reference MLP or CNN: a task on which optimizers differ),
:func:`teacher_student` (synthetic regression with a known teacher network) and :func:`cifar10`
(read from the standard binary batches of a local copy; nothing is downloaded, nothing
unpickled). Every split is drawn from a ``seed``, and the same seed gives the same split.

This module owns the :class:`Task` record, the model builders and the four constructors: what a
checkpoint's identity (``tasks.digits.<locals>.<lambda>``, ``tasks.mlp``, ...) and a task
method's callable identity (``tasks.Task.loss_fn``) name by qualified name, kept here so that
those stay the same. The data are their families' (:mod:`.digits`, :mod:`.mnist1d`,
:mod:`.cifar10_bin`, whose ``CIFAR10_CLASSES``, ``CIFAR10_ENV_VAR`` and ``read_cifar10_bin`` are
re-exported here); the shared argument checks and split are :mod:`._construction`'s.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_float, check_int
from .._evaluation import accuracy, batches, eval_mode
from . import cifar10_bin
from ._construction import (
    ACTIVATIONS,
    check_activation,
    check_dtype,
    check_hidden,
    recorded,
    split_indices,
)
from .cifar10_bin import CIFAR10_CLASSES, CIFAR10_ENV_VAR, read_cifar10_bin
from .digits import digits_arrays

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_ENV_VAR",
    "Task",
    "cifar10",
    "digits",
    "mlp",
    "mnist1d",
    "read_cifar10_bin",
    "small_cnn",
    "teacher_student",
]

_SPLITS = ("train", "val", "test")
_LOSSES = ("cross_entropy", "mse")


# -- models ---------------------------------------------------------------------------------------
def mlp(
    in_features: int, hidden: Sequence[int], out_features: int, activation: str = "tanh"
) -> nn.Sequential:
    """A fully connected network from ``in_features`` through the ``hidden`` widths to
    ``out_features``, with ``activation`` between the affine layers (none after the last).

    Args:
        in_features: the input width (>= 1).
        hidden: the hidden widths, each >= 1 (may be empty: a linear model).
        out_features: the output width (>= 1).
        activation: a key of ``ACTIVATIONS`` (default ``"tanh"``).

    Returns:
        The ``nn.Sequential``, freshly initialised from torch's global generator.

    Raises:
        ValueError: an unknown ``activation`` or a width out of range, naming it.
    """
    check_activation(activation)
    widths = [
        check_int("in_features", in_features),
        *check_hidden("hidden", hidden),
        check_int("out_features", out_features),
    ]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def small_cnn(
    in_channels: int, image_size: int, num_classes: int, width: int = 16, activation: str = "relu"
) -> nn.Sequential:
    """Two 3x3 convolutions (``width/2`` and ``width`` channels), a 2x2 max-pool and a linear
    classifier: a small CNN for 8x8 digits or, wider, for 32x32 CIFAR-10 images.

    Args:
        in_channels: the input channels (>= 1).
        image_size: the side of the square input images, in pixels (>= 2).
        num_classes: the number of outputs (>= 1).
        width: the channels of the second convolution (>= 2).
        activation: a key of ``ACTIVATIONS`` (default ``"relu"``).

    Returns:
        The ``nn.Sequential``, freshly initialised from torch's global generator.

    Raises:
        ValueError: an unknown ``activation`` or a size out of range, naming it.
    """
    check_activation(activation)
    in_channels = check_int("in_channels", in_channels)
    num_classes = check_int("num_classes", num_classes)
    width, image_size = check_int("width", width, 2), check_int("image_size", image_size, 2)
    act = ACTIVATIONS[activation]
    half = max(width // 2, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, half, 3, padding=1),
        act(),
        nn.Conv2d(half, width, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(width * (image_size // 2) ** 2, num_classes),
    )


# -- the task object ------------------------------------------------------------------------------
@dataclass(eq=False)
class Task:
    """A supervised learning problem: the three splits, a model factory and the loss.

    ``loss`` is ``"cross_entropy"`` (integer class targets, optionally with ``label_smoothing``;
    :meth:`accuracy` is defined) or ``"mse"`` (float targets). :meth:`loss_fn` is the mean over
    the samples of a batch, so a mean over batches weighted by batch size (what :meth:`evaluate`
    and the probes compute) is the mean over the split.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    model_factory: Callable[[], nn.Module] = field(repr=False)
    loss: str = "cross_entropy"
    num_classes: int | None = None
    info: dict = field(default_factory=dict)
    teacher: nn.Module | None = field(default=None, repr=False)
    label_smoothing: float = 0.0
    #: what the constructor (digits, teacher_student, cifar10) was called with; part of a
    #: training checkpoint's identity
    arguments: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.loss not in _LOSSES:
            raise ValueError(f"Invalid loss: {self.loss!r} (expected one of {_LOSSES})")
        self.label_smoothing = check_float(
            "label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True
        )
        if self.label_smoothing and self.loss != "cross_entropy":
            raise ValueError("label_smoothing applies to the cross-entropy loss only")
        for split in _SPLITS:
            x, y = self.split(split)
            if len(x) != len(y):
                raise ValueError(f"{split} split: {len(x)} inputs but {len(y)} targets")
        if len(self.x_train) == 0:
            raise ValueError("the train split is empty")

    # -- data -------------------------------------------------------------------------------------
    def split(self, split: str) -> tuple[Tensor, Tensor]:
        """(inputs, targets) of ``split``: ``"train"``, ``"val"`` or ``"test"``.

        Args:
            split: the split's name.

        Returns:
            ``(inputs, targets)``, the task's own tensors (not copies).

        Raises:
            ValueError: an unknown split.
        """
        if split not in _SPLITS:
            raise ValueError(f"Invalid split: {split!r} (expected one of {_SPLITS})")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def data(
        self, split: str = "train", batch_size: int | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """``split`` as a list of (inputs, targets) batches in order (the probes' ``data``
        format): one batch when ``batch_size`` is None, else batches of ``batch_size`` with a
        smaller last one.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            batch_size: the batch size (>= 1), or None for the whole split.

        Returns:
            A list of ``(inputs, targets)`` views.

        Raises:
            ValueError: an unknown split or ``batch_size`` < 1.
        """
        x, y = self.split(split)
        if batch_size is None:
            return [(x, y)]
        batch_size = check_int("batch_size", batch_size, 1)
        return [
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        ]

    @property
    def n_train(self) -> int:
        """The number of training samples.

        Returns:
            ``len(x_train)``.
        """
        return len(self.x_train)

    @property
    def device(self) -> torch.device:
        """Where the data lives.

        Returns:
            The device of ``x_train``.
        """
        return self.x_train.device

    def to(self, device=None, dtype: torch.dtype | None = None) -> Task:
        """A copy of the task with its data on ``device`` (inputs, and regression targets, cast
        to ``dtype`` when given). Returns ``self`` when nothing changes.

        Args:
            device: the target device (default: the current one).
            dtype: the floating dtype of the inputs (and of regression targets); None keeps it.

        Returns:
            The moved :class:`Task`, or ``self``.
        """
        device = self.device if device is None else torch.device(device)
        if device == self.device and (dtype is None or dtype == self.x_train.dtype):
            return self
        moved = {}
        for split in _SPLITS:
            x, y = self.split(split)
            moved[f"x_{split}"] = x.to(device=device, dtype=dtype)
            moved[f"y_{split}"] = y.to(device=device, dtype=dtype if self.loss == "mse" else None)
        return replace(self, **moved)

    # -- model and loss ---------------------------------------------------------------------------
    def make_model(self, seed: int = 0, device=None, dtype: torch.dtype | None = None) -> nn.Module:
        """A freshly initialised model, the same for the same ``seed``; the global random state
        is left as it was. On the task's device and in its inputs' dtype unless given.

        Args:
            seed: the initialisation seed (>= 0).
            device: the model's device (default: the task's).
            dtype: the model's dtype (default: the dtype of ``x_train``).

        Returns:
            The new ``nn.Module``.

        Raises:
            ValueError: ``seed`` < 0.
        """
        seed = check_int("seed", seed, 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.model_factory()
        return model.to(
            device=self.device if device is None else device,
            dtype=self.x_train.dtype if dtype is None else dtype,
        )

    def loss_fn(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The mean loss of a batch.

        Args:
            outputs: the model's outputs, shape ``(batch, ...)``.
            targets: the batch's targets (class indices or float values).

        Returns:
            A 0-dim tensor: cross-entropy (with ``label_smoothing``) or mean squared error.
        """
        if self.loss == "cross_entropy":
            return F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)
        return F.mse_loss(outputs, targets)

    @property
    def has_accuracy(self) -> bool:
        """Whether :meth:`accuracy` is defined.

        Returns:
            True for a classification (cross-entropy) task.
        """
        return self.loss == "cross_entropy"

    def accuracy(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The fraction of correctly classified samples of a batch (classification tasks):
        :func:`analysis_lib._evaluation.accuracy`, the default accuracy of every probe.

        Args:
            outputs: the model's logits, shape ``(batch, classes)``.
            targets: the class indices, shape ``(batch,)``.

        Returns:
            A 0-dim tensor in [0, 1].

        Raises:
            ValueError: a regression task.
        """
        if not self.has_accuracy:
            raise ValueError(f"task {self.name!r} is a regression task: it has no accuracy")
        return accuracy(outputs, targets)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str = "val", batch_size: int | None = 4096
    ) -> dict[str, float]:
        """Mean loss (and accuracy) of ``model`` over ``split``, in eval mode, weighted by batch
        size, without building a graph. Every submodule's own train/eval flag is restored
        afterwards.

        Args:
            model: the model evaluated.
            split: ``"train"``, ``"val"`` or ``"test"``.
            batch_size: the evaluation batch size (>= 1), or None for the whole split at once.

        Returns:
            ``{"loss": ...}``, with ``"accuracy"`` for a classification task.

        Raises:
            ValueError: an unknown or empty split, or ``batch_size`` < 1.
        """
        data = self.data(split, batch_size)
        if len(self.split(split)[0]) == 0:
            raise ValueError(f"the {split} split of task {self.name!r} is empty")
        with eval_mode(model), torch.no_grad():
            n, loss, correct = 0, 0.0, 0.0
            for b in batches(data):
                out = model(b.inputs)
                loss += float(self.loss_fn(out, b.targets)) * b.size
                if self.has_accuracy:
                    correct += float(self.accuracy(out, b.targets)) * b.size
                n += b.size
        result = {"loss": loss / n}
        if self.has_accuracy:
            result["accuracy"] = correct / n
        return result

    def __repr__(self) -> str:
        sizes = "/".join(str(len(self.split(s)[0])) for s in _SPLITS)
        return (
            f"Task({self.name!r}, train/val/test={sizes}, input={tuple(self.x_train.shape[1:])}"
            f", loss={self.loss!r}, device={self.device})"
        )


# -- digits ---------------------------------------------------------------------------------------
@recorded
def digits(
    model: str = "mlp",
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    width: int = 16,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    label_smoothing: float = 0.0,
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """scikit-learn's 1797 8x8 handwritten digits (shipped with scikit-learn), ten classes.

    ``model="mlp"``: the pixels as a vector; pixels constant over the training split (the blank
    corners) are dropped and the others standardised with the training split's statistics, so
    every input weight gets a gradient. An MLP with ``hidden`` widths and ``activation``
    (the default 64-64 tanh network has ~9k parameters).
    ``model="cnn"``: the images as 1x8x8, standardised with the training split's pixel mean and
    standard deviation, and :func:`small_cnn` with ``width`` channels.
    ``label_smoothing`` > 0 keeps every sample's gradient from vanishing once the training set
    is fitted, so long runs stay in a regime of gradient noise instead of memorisation.

    Args:
        model: ``"mlp"`` or ``"cnn"``.
        hidden: the MLP's hidden widths (each >= 1).
        activation: the MLP's activation, a key of ``ACTIVATIONS`` (the CNN uses ReLU).
        width: the CNN's channels (>= 2).
        val_fraction: the fraction of the samples in the validation split, in [0, 1).
        test_fraction: the fraction in the test split, in [0, 1); the two sum to < 1.
        label_smoothing: the cross-entropy's label smoothing, in [0, 1).
        seed: the seed of the split (>= 0); the model's initialisation is seeded by
            :meth:`Task.make_model`.
        device: where the data is put (default: the CPU).
        dtype: the inputs' floating dtype.

    Returns:
        The :class:`Task` (``"digits-mlp"`` or ``"digits-cnn"``), its arguments recorded.

    Raises:
        ValueError: an argument out of range or unknown, naming it.
    """
    seed = check_int("seed", seed, 0)
    check_dtype(dtype)
    check_activation(activation)
    if model not in ("mlp", "cnn"):
        raise ValueError(f"Invalid model: {model!r} (expected 'mlp' or 'cnn')")
    hidden, width = check_hidden("hidden", hidden), check_int("width", width, 2)
    x, y, (train, val, test) = digits_arrays(model, (val_fraction, test_fraction), seed)
    if model == "mlp":
        n_in = x.shape[1]
        factory = lambda: mlp(n_in, hidden, 10, activation)  # noqa: E731
    else:
        factory = lambda: small_cnn(1, 8, 10, width, "relu")  # noqa: E731
    xs = torch.as_tensor(x, dtype=dtype, device=device)
    ys = torch.as_tensor(y, dtype=torch.long, device=device)
    return Task(
        f"digits-{model}",
        xs[train],
        ys[train],
        xs[val],
        ys[val],
        xs[test],
        ys[test],
        model_factory=factory,
        loss="cross_entropy",
        num_classes=10,
        label_smoothing=label_smoothing,
        info=dict(seed=seed, model=model),
    )


# -- MNIST-1D -------------------------------------------------------------------------------------
@recorded
def mnist1d(
    model: str = "mlp",
    hidden: int = 100,
    channels: int = 25,
    val_fraction: float = 0.15,
    test_size: int = 1000,
    label_smoothing: float = 0.0,
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """MNIST-1D, generated here by the ``mnist1d`` package's generator
    (:mod:`analysis_lib.problems.mnist1d`: nothing downloaded, nothing unpickled), ten classes of
    40-sample signals.

    The published split: 4,000 training and 1,000 test examples. The validation split is carved
    out of the 4,000 as for the digits: a ``val_fraction`` of them (600 by default) drawn by
    ``seed``, the rest (3,400) for training. ``test_size`` > 1,000 adds ``test_size - 1000``
    further examples from the same generator (another generator seed, the published
    standardisation) to the 1,000 published ones, for a test set with a smaller binomial error
    (a multiple of 10, so that the classes stay balanced in the added part).

    ``model="mlp"``: the dataset's reference MLP (:class:`~analysis_lib.problems.mnist1d.ResidualMLP`,
    ``hidden`` units, about 15k parameters); ``"cnn"``: its reference CNN
    (:func:`~analysis_lib.problems.mnist1d.conv_net`, ``channels`` channels, about 5k).

    Args:
        model: ``"mlp"`` or ``"cnn"``.
        hidden: the MLP's hidden units (>= 1).
        channels: the CNN's channels (>= 1).
        val_fraction: the fraction of the 4,000 published training examples held out for
            validation, in [0, 1).
        test_size: the number of test examples (>= 1000, a multiple of 10).
        label_smoothing: the cross-entropy's label smoothing, in [0, 1).
        seed: the seed of the validation split (>= 0).
        device: where the data is put (default: the CPU).
        dtype: the inputs' floating dtype.

    Returns:
        The :class:`Task` (``"mnist1d-mlp"`` or ``"mnist1d-cnn"``), its arguments recorded.

    Raises:
        ValueError: an argument out of range or unknown, naming it.
    """
    from . import mnist1d as generator

    seed = check_int("seed", seed, 0)
    check_dtype(dtype)
    if model not in ("mlp", "cnn"):
        raise ValueError(f"Invalid model: {model!r} (expected 'mlp' or 'cnn')")
    hidden, channels = check_int("hidden", hidden), check_int("channels", channels)
    test_size = check_int("test_size", test_size, 1000)
    if test_size % 10:
        raise ValueError(f"Invalid test_size: {test_size} (expected a multiple of 10)")
    data = generator.published()
    train, val, _ = split_indices(len(data["y"]), (val_fraction, 0.0), seed)
    x_test, y_test = generator.test_examples(test_size)
    if model == "mlp":
        factory = lambda: generator.ResidualMLP(generator.LENGTH, hidden, 10)  # noqa: E731
    else:
        factory = lambda: generator.conv_net(channels, 10)  # noqa: E731

    def tensors(x, y):
        return (
            torch.as_tensor(x, dtype=dtype, device=device),
            torch.as_tensor(y, dtype=torch.long, device=device),
        )

    return Task(
        f"mnist1d-{model}",
        *tensors(data["x"][train], data["y"][train]),
        *tensors(data["x"][val], data["y"][val]),
        *tensors(x_test, y_test),
        model_factory=factory,
        loss="cross_entropy",
        num_classes=10,
        label_smoothing=label_smoothing,
        info=dict(seed=seed, model=model),
    )


# -- teacher-student regression --------------------------------------------------------------------
class _ScaledTeacher(nn.Module):
    """The teacher network with its outputs standardised: the noiseless regression target."""

    def __init__(self, net: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return (self.net(x.to(self.mean.dtype)) - self.mean) / self.std


@recorded
def teacher_student(
    input_dim: int = 20,
    teacher_hidden: Sequence[int] = (32,),
    student_hidden: Sequence[int] = (64,),
    n_train: int = 1024,
    n_val: int = 256,
    n_test: int = 1024,
    noise: float = 0.1,
    activation: str = "tanh",
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """Synthetic regression: x ~ N(0, I), y = teacher(x) + noise * N(0, 1), with a randomly
    initialised teacher MLP (drawn from ``seed``) whose outputs are scaled to unit variance.
    The student is an MLP with ``student_hidden`` widths; the Bayes-optimal mean squared error
    on the test split is ``noise**2`` (``info["bayes_mse"]``), and ``task.teacher`` is the
    noiseless target function (float64).

    Args:
        input_dim: the dimension of x (>= 1).
        teacher_hidden: the teacher's hidden widths (each >= 1).
        student_hidden: the student's hidden widths (each >= 1).
        n_train: the training samples (>= 1).
        n_val: the validation samples (>= 0).
        n_test: the test samples (>= 0).
        noise: the standard deviation of the label noise (>= 0), in units of the teacher's
            output standard deviation.
        activation: both networks' activation, a key of ``ACTIVATIONS``.
        seed: the seed of the teacher and the data (>= 0).
        device: where the data is put (default: the CPU).
        dtype: the floating dtype of inputs and targets.

    Returns:
        The regression :class:`Task` ``"teacher-student"`` (``loss="mse"``), arguments recorded.

    Raises:
        ValueError: an argument out of range or unknown, naming it.
    """
    seed = check_int("seed", seed, 0)
    check_dtype(dtype)
    check_activation(activation)
    teacher_hidden = check_hidden("teacher_hidden", teacher_hidden)
    student_hidden = check_hidden("student_hidden", student_hidden)
    input_dim, n_train = check_int("input_dim", input_dim), check_int("n_train", n_train)
    n_val, n_test = check_int("n_val", n_val, 0), check_int("n_test", n_test, 0)
    noise = check_float("noise", noise, 0.0)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        teacher = mlp(input_dim, teacher_hidden, 1, activation).double()
    n = n_train + n_val + n_test
    x = torch.randn(n, input_dim, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        clean = teacher(x)
        mean, std = clean[:n_train].mean(), clean[:n_train].std()
        clean = (clean - mean) / std
    y = clean + noise * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    x, y = x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)
    a, b = n_train, n_train + n_val
    return Task(
        "teacher-student",
        x[:a],
        y[:a],
        x[a:b],
        y[a:b],
        x[b:],
        y[b:],
        model_factory=lambda: mlp(input_dim, student_hidden, 1, activation),
        loss="mse",
        num_classes=None,
        info=dict(seed=seed, bayes_mse=float(noise) ** 2, noise=float(noise)),
        teacher=_ScaledTeacher(teacher, mean, std),
    )


# -- CIFAR-10 from the binary batches ------------------------------------------------------------
@recorded
def cifar10(
    root: str | os.PathLike | None = None,
    model: str = "cnn",
    width: int = 32,
    val_fraction: float = 0.1,
    subset: int | None = None,
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """CIFAR-10 from a local copy of its binary batches: ``root`` is the folder that holds
    ``cifar-10-batches-bin`` (or that folder itself; default ``$ANALYSIS_LIB_CIFAR10``).

    The 50,000 training images are split into train and validation by ``seed``
    (``val_fraction``); the test split is ``test_batch.bin``. ``subset`` keeps that many
    training images (seeded), for quick studies. Images are scaled to [0, 1] and standardised
    per channel. ``model="cnn"`` is :func:`small_cnn` with ``width`` channels; ``"mlp"`` a
    3072-512-10 ReLU MLP on the flattened image.

    Args:
        root: the folder of the binary batches, or the folder holding it; None reads
            ``$ANALYSIS_LIB_CIFAR10``.
        model: ``"cnn"`` or ``"mlp"``.
        width: the CNN's channels (>= 2).
        val_fraction: the fraction of the 50,000 training images held out, in [0, 1).
        subset: the number of training images kept (>= 1), or None for all.
        seed: the seed of the split and the subset (>= 0).
        device: where the data is put (default: the CPU).
        dtype: the inputs' floating dtype.

    Returns:
        The :class:`Task` (``"cifar10-cnn"`` or ``"cifar10-mlp"``), its arguments recorded.

    Raises:
        ValueError: an argument out of range or unknown, or a batch file of the wrong size or
            layout.
        FileNotFoundError: no ``root`` and no ``$ANALYSIS_LIB_CIFAR10``, or a batch file missing.
    """
    seed = check_int("seed", seed, 0)
    check_dtype(dtype)
    if model not in ("mlp", "cnn"):
        raise ValueError(f"Invalid model: {model!r} (expected 'mlp' or 'cnn')")
    if subset is not None:
        subset = check_int("subset", subset, 1)
    width = check_int("width", width, 2)
    x_all, y_all, x_test, y_test = cifar10_bin.read_batches(root)
    train, val, _ = split_indices(len(y_all), (val_fraction, 0.0), seed)
    if subset is not None:
        train = train[:subset]

    def tensors(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
        x = cifar10_bin.standardised(x, dtype)
        x = x.flatten(1) if model == "mlp" else x
        return x.to(device), torch.as_tensor(y, dtype=torch.long, device=device)

    if model == "mlp":
        factory = lambda: mlp(3 * 32 * 32, (512,), 10, "relu")  # noqa: E731
    else:
        factory = lambda: small_cnn(3, 32, 10, width, "relu")  # noqa: E731
    return Task(
        f"cifar10-{model}",
        *tensors(x_all[train], y_all[train]),
        *tensors(x_all[val], y_all[val]),
        *tensors(x_test, y_test),
        model_factory=factory,
        loss="cross_entropy",
        num_classes=10,
        info=dict(seed=seed, model=model, classes=CIFAR10_CLASSES),
    )
