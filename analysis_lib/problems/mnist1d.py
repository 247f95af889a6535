"""MNIST-1D (Greydanus & Steinbach): ten one-dimensional "digits" of 40 samples each, generated
here by the ``mnist1d`` package's procedural generator, and the dataset's reference networks.

Each example is one of ten fixed templates, padded, dilated, scaled, translated, given
correlated and independent noise, sheared and resampled to 40 points by the package's
``mnist1d.transform.transform``, with its random draws from NumPy's global generator seeded as
the package seeds it. Nothing is downloaded and nothing is unpickled: the package's
``get_dataset`` (which fetches a pickle or caches one) is never called.

* :func:`published` reproduces the package's ``make_dataset()`` with its default arguments
  (5,000 examples, 500 per class, generator seed 42, standardised with the mean and standard
  deviation of all 5,000, the first 4,000 for training and the last 1,000 for testing), checked
  against ``make_dataset`` itself by the tests.
* :func:`extra_examples` draws further examples from the same generator with another seed,
  standardised with the published set's statistics, so a larger test set has the published
  distribution.
* :class:`ResidualMLP` and :func:`conv_net` are the reference networks of the dataset's paper:
  an MLP of two hidden ReLU layers of 100 units (the second with a skip connection) and a CNN of
  three strided 1-D convolutions of 25 channels and a linear classifier, which reach about 68%
  and 94% test accuracy.

The global NumPy (and ``random``) state that the generator uses is saved and restored around
every call, so generating the data leaves the caller's random state as it was.
"""

from __future__ import annotations

import contextlib
import functools
import random
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
from torch import Tensor, nn

from .._checks import check_int

__all__ = [
    "LENGTH",
    "PUBLISHED_SEED",
    "ResidualMLP",
    "conv_net",
    "extra_examples",
    "published",
    "test_examples",
]

#: The length of every example.
LENGTH = 40
#: The generator seed of the published data set.
PUBLISHED_SEED = 42
_PUBLISHED_SAMPLES = 5000
_PUBLISHED_TRAIN = 4000


_LOCK = threading.Lock()  # the generator's random state is global: one drawing at a time


@contextlib.contextmanager
def _global_random_state(seed: int) -> Iterator[None]:
    """The generator's global NumPy and ``random`` states seeded with ``seed`` for the block,
    the caller's states put back afterwards. The package's transforms draw from NumPy's global
    generator, so the legacy global API is what reproduces them (hence the noqa)."""
    with _LOCK:
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
        try:
            random.seed(seed)
            np.random.seed(seed)  # noqa: NPY002
            yield
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)


def _arguments() -> SimpleNamespace:
    from mnist1d.data import get_dataset_args

    return SimpleNamespace(**get_dataset_args(as_dict=True))


@functools.lru_cache(maxsize=4)
def _raw(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` examples (``num_samples // 10`` of each class, in a shuffled order) as
    the package's generator draws them from ``seed``, before standardisation (read-only
    arrays, kept for the process: drawing the 5,000 published ones takes about 2.5 s)."""
    from mnist1d.data import get_templates
    from mnist1d.transform import transform

    args = _arguments()
    templates = get_templates()
    per_class = num_samples // len(templates["y"])
    xs, ys = [], []
    with _global_random_state(seed):
        for label, template in zip(templates["y"], templates["x"], strict=True):
            for _ in range(per_class):
                x, _ = transform(template, templates["t"], args)
                xs.append(x)
                ys.append(label)
        order = np.random.permutation(len(ys))  # noqa: NPY002
    x, y = np.stack(xs)[order], np.asarray(ys, dtype=np.int64)[order]
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _statistics() -> tuple[float, float, np.ndarray, np.ndarray]:
    x, y = _raw(_PUBLISHED_SAMPLES, PUBLISHED_SEED)
    return float(x.mean()), float(x.std()), x, y


def published() -> dict[str, np.ndarray]:
    """The published data set: ``x`` (4000, 40) and ``y`` (4000,) for training, ``x_test``
    (1000, 40) and ``y_test`` (1000,), standardised as the package does.

    Returns:
        A dict of the four arrays (regenerated on each call).
    """
    mean, std, x, y = _statistics()
    x = (x - mean) / std
    n = _PUBLISHED_TRAIN
    return {"x": x[:n], "y": y[:n].copy(), "x_test": x[n:], "y_test": y[n:].copy()}


def extra_examples(count: int, seed: int = PUBLISHED_SEED + 1) -> tuple[np.ndarray, np.ndarray]:
    """``count`` further examples (a multiple of 10, balanced over the classes) drawn by the same
    generator from ``seed`` (not the published 42), standardised with the published set's mean
    and standard deviation.

    Args:
        count: the number of examples (a multiple of 10, >= 10).
        seed: the generator's seed (>= 0, not the published one).

    Returns:
        ``(x, y)``: inputs of shape (count, 40) and labels of shape (count,).

    Raises:
        ValueError: ``count`` not a multiple of 10 (or < 10), ``seed`` < 0 or the published
            seed.
    """
    count = check_int("count", count, 10)
    if count % 10:
        raise ValueError(f"Invalid count: {count} (expected a multiple of 10: balanced classes)")
    seed = check_int("seed", seed, 0)
    if seed == PUBLISHED_SEED:
        raise ValueError(f"Invalid seed: {seed} (the published examples' seed; pick another)")
    mean, std, _, _ = _statistics()
    x, y = _raw(count, seed)
    return (x - mean) / std, y.copy()


def test_examples(size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A test set of ``size`` examples (a multiple of 10, at least 1000): the 1000 published ones,
    then ``size - 1000`` from :func:`extra_examples`.

    Args:
        size: the number of test examples; 1000 or less gives the 1000 published ones.

    Returns:
        ``(x_test, y_test)``: inputs of shape (size, 40) and labels of shape (size,).

    Raises:
        ValueError: ``size`` above 1000 and not a multiple of 10.
    """
    data = published()
    x_test, y_test = data["x_test"], data["y_test"]
    if size > len(y_test):
        x_more, y_more = extra_examples(size - len(y_test))
        x_test, y_test = np.concatenate([x_test, x_more]), np.concatenate([y_test, y_more])
    return x_test, y_test


class ResidualMLP(nn.Module):
    """``x -> h1 = relu(W1 x + b1) -> h2 = h1 + relu(W2 h1 + b2) -> W3 h2 + b3``: the
    dataset's reference MLP (``hidden`` = 100 units)."""

    def __init__(self, in_features: int = LENGTH, hidden: int = 100, classes: int = 10) -> None:
        super().__init__()
        self.linear1 = nn.Linear(check_int("in_features", in_features), check_int("hidden", hidden))
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, check_int("classes", classes))

    def forward(self, x: Tensor) -> Tensor:
        """The logits.

        Args:
            x: inputs of shape ``(batch, in_features)``.

        Returns:
            A tensor of shape ``(batch, classes)``.
        """
        h = self.linear1(x).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


def conv_net(channels: int = 25, classes: int = 10) -> nn.Sequential:
    """The dataset's reference CNN: three 1-D convolutions of ``channels`` channels (kernel 5,
    3, 3; stride 2; padding 1; 40 -> 19 -> 10 -> 5 positions), each followed by a ReLU, and a
    linear classifier of the flattened ``channels * 5`` features. Inputs ``(batch, 40)``.

    Args:
        channels: the channels of each convolution (>= 1).
        classes: the number of outputs (>= 1).

    Returns:
        The ``nn.Sequential``, freshly initialised from torch's global generator.

    Raises:
        ValueError: ``channels`` or ``classes`` < 1.
    """
    channels, classes = check_int("channels", channels), check_int("classes", classes)
    return nn.Sequential(
        nn.Unflatten(1, (1, LENGTH)),
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * 5, classes),
    )
