"""CIFAR-10's binary version on disk: finding the folder, checking the files' sizes, reading
the records.

Owns the layout of the six batch files (``data_batch_1.bin`` to ``data_batch_5.bin`` and
``test_batch.bin`` in ``cifar-10-batches-bin``: records of one label byte and 3072 pixel bytes),
the class names and the per-channel statistics. Nothing is downloaded and nothing is unpickled;
the task built on it is :func:`analysis_lib.problems.tasks.cifar10`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_ENV_VAR",
    "MEAN",
    "RECORDS_PER_FILE",
    "RECORD_BYTES",
    "STD",
    "TEST_FILE",
    "TRAIN_FILES",
    "check_sizes",
    "find_folder",
    "read_batches",
    "read_cifar10_bin",
    "standardised",
]

#: Environment variable naming the folder that holds ``cifar-10-batches-bin``.
CIFAR10_ENV_VAR = "ANALYSIS_LIB_CIFAR10"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
RECORD_BYTES = 1 + 3 * 32 * 32
#: Records in each of the six binary batch files (five training batches and the test batch).
RECORDS_PER_FILE = 10_000
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
# per-channel mean and standard deviation of the CIFAR-10 training images (in [0, 1])
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def read_cifar10_bin(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one file of CIFAR-10's binary version: records of one label byte (0-9) followed by
    3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32). Returns images of shape
    (n, 3, 32, 32) as uint8 and labels as int64. A file whose size is not a whole number of
    records, or that holds a label outside 0-9, is rejected with a ValueError.

    Args:
        path: the batch file.

    Returns:
        ``(images, labels)``: uint8 of shape (n, 3, 32, 32) and int64 of shape (n,).

    Raises:
        ValueError: an empty file, a size not a whole number of records, or a label above 9.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise ValueError(
            f"{path.name}: {raw.size} bytes is not a whole number of CIFAR-10 "
            f"records of {RECORD_BYTES} bytes; the file is truncated or not in "
            "the binary layout"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise ValueError(
            f"{path.name}: record {bad} has label {labels[bad]} (expected 0-9); "
            "the file is not in CIFAR-10's binary layout"
        )
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def check_sizes(folder: Path) -> None:
    """Refuse a batch file that does not hold its :data:`RECORDS_PER_FILE` records,
    from its size, before reading anything.

    Args:
        folder: the ``cifar-10-batches-bin`` folder.

    Returns:
        None.

    Raises:
        ValueError: a batch file of the wrong size.
        FileNotFoundError: a batch file missing.
    """
    want = RECORDS_PER_FILE * RECORD_BYTES
    for name in (*TRAIN_FILES, TEST_FILE):
        size = (folder / name).stat().st_size
        if size != want:
            raise ValueError(
                f"{folder / name}: {size} bytes, {size / RECORD_BYTES:g} records (expected "
                f"{RECORDS_PER_FILE} records of {RECORD_BYTES} bytes, {want} bytes); "
                "the file is truncated, padded or not a CIFAR-10 binary batch"
            )


def find_folder(root) -> Path:
    """The folder ``cifar-10-batches-bin``: ``root`` itself or the one inside it (default
    ``$ANALYSIS_LIB_CIFAR10``), with all six batch files there.

    Args:
        root: a folder (str or path), or None for the environment variable.

    Returns:
        The folder's path.

    Raises:
        FileNotFoundError: no ``root`` and no environment variable, or a batch file missing.
    """
    if root is None:
        root = os.environ.get(CIFAR10_ENV_VAR)
        if root is None:
            raise FileNotFoundError(
                "CIFAR-10 is not downloaded by this library: pass root=<folder> holding "
                f"'cifar-10-batches-bin' (the binary version) or set ${CIFAR10_ENV_VAR}"
            )
    root = Path(root)
    folder = root if root.name == "cifar-10-batches-bin" else root / "cifar-10-batches-bin"
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 binary batches not found: expected {folder}/"
            f"{{{', '.join(missing)}}} (the 'CIFAR-10 binary version')"
        )
    return folder


def read_batches(root) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) of the copy in ``root`` (see
    :func:`find_folder`): the five training batches concatenated in order, then the test batch;
    every file's size is checked (:func:`check_sizes`) before any is read.

    Args:
        root: as for :func:`find_folder`.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: 50,000 and 10,000 images (uint8, (n, 3, 32, 32))
        with their int64 labels.

    Raises:
        FileNotFoundError: as for :func:`find_folder`.
        ValueError: a batch file of the wrong size or layout.
    """
    folder = find_folder(root)
    check_sizes(folder)
    parts = [read_cifar10_bin(folder / f) for f in TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_cifar10_bin(folder / TEST_FILE)
    return x_train, y_train, x_test, y_test


def standardised(images: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """uint8 images (n, 3, 32, 32) scaled to [0, 1] and standardised per channel with
    :data:`MEAN` and :data:`STD`, as ``dtype``.

    Args:
        images: uint8 images of shape (n, 3, 32, 32).
        dtype: the floating dtype of the result.

    Returns:
        A CPU tensor of shape (n, 3, 32, 32).
    """
    mean = torch.tensor(MEAN, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=dtype).view(1, 3, 1, 1)
    return (torch.as_tensor(images, dtype=dtype) / 255.0 - mean) / std
