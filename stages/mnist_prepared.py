"""Read the prepared MNIST splits written by prepare_mnist."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from stages.cli import UserError

DATA = Path("data/mnist")


def load_split(name: str, folder: Path = DATA) -> tuple[torch.Tensor, torch.Tensor]:
    """(images as float (N, 28, 28) in [0, 1], digit labels) of the ``train`` or ``valid`` split."""
    path = Path(folder) / f"{name}.npz"
    try:
        with np.load(path) as split:
            return torch.from_numpy(split["images"]).float() / 255, torch.from_numpy(split["labels"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: cannot read prepared MNIST ({exc}); rerun 'dvc repro prepare_mnist'") from None
