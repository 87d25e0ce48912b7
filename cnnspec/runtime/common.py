"""The framework-neutral code of the generated scripts: data sources, the run folder, weight
files, plots and reports. Copied into both backends' scripts by name (see
cnnspec.backends.runtime); the imports and the script's constants below are for the linter,
the type checker and the unit tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cnnspec.runtime.script import CIFAR10_URL, SEED, TEST_FRACTION


class DataError(Exception):
    """The data is missing, empty or unreadable; main() prints it as one line."""


def find_cifar10(data_dir):
    """The cifar-10-batches-py folder in `data_dir`, as Keras's cache keeps it."""
    data_dir = Path(data_dir)
    for folder in (
        data_dir / "cifar-10-batches-py",
        data_dir / "cifar-10-batches-py-target" / "cifar-10-batches-py",
        data_dir,
    ):
        if (folder / "data_batch_1").is_file():
            return folder
    raise DataError(
        f"no CIFAR-10 data at {data_dir / 'cifar-10-batches-py'}: download "
        f"{CIFAR10_URL} and extract it into {data_dir}, or pass --data-dir"
    )


def load_cifar10(data_dir):
    """CIFAR-10 as uint8 (N, 32, 32, 3) images and int labels, by split."""
    folder = find_cifar10(data_dir)

    def read(name):
        with open(folder / name, "rb") as stream:
            batch = pickle.load(stream, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype="uint8").reshape(-1, 3, 32, 32)
        return images.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype="int64")

    parts = [read(f"data_batch_{index}") for index in range(1, 6)]
    train = (
        np.concatenate([images for images, _ in parts]),
        np.concatenate([labels for _, labels in parts]),
    )
    return {"train": train, "test": read("test_batch")}


def load_digits_splits(data_dir=None):
    """scikit-learn's bundled 8x8 digits (values 0-16) with a stratified held-out test
    split: {split: (images, labels)}. Nothing is downloaded; `data_dir` is unused."""
    digits = load_digits()
    images = digits.images[..., np.newaxis].astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target,
        test_size=TEST_FRACTION,
        stratify=digits.target,
        random_state=SEED,
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}
