"""Presized Pets for training: a memory-mapped uint8 store, and the batch transforms that run on the device.

Like fastai's presizing, each image was resized once (presize_pets); here every batch is copied to the device
as uint8 and augmented there with torchvision.transforms.v2: a random resized crop to ``size`` keeping at
least ``min_scale`` of the image, flips, a mild rotation/zoom and warp, and lighting, each drawn per image.
Validation takes a centre crop. Both end in ImageNet normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from stages.core.stage import UserError

DATA = Path("data/pets")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class PresizedPets(Dataset):
    """``(uint8 image (3, P, P), class index)`` pairs from ``{split}_images.npy`` without loading it whole."""

    def __init__(self, split: str, folder: Path = DATA):
        try:
            self.images = np.load(Path(folder) / f"{split}_images.npy", mmap_mode="r")
            self.labels = np.load(Path(folder) / f"{split}_labels.npy")
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{folder}: cannot read presized Pets ({exc}); rerun 'dvc repro presize_pets'") from None
        if len(self.images) != len(self.labels):
            raise UserError(f"{folder}: {split} has {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1), int(self.labels[i])  # copy: memmaps are read-only


def read_index(folder: Path = DATA) -> dict:
    path = Path(folder) / "index.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read ({exc}); rerun 'dvc repro presize_pets'") from None


_normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def augmentation(size: int, min_scale: float) -> v2.Transform:
    """fastai's ``aug_transforms(size=size, min_scale=min_scale)`` in torchvision terms, for one uint8 image."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.RandomAffine(degrees=10, scale=(1.0, 1.1))], p=0.75),  # max_rotate 10, max_zoom 1.1
        v2.RandomPerspective(distortion_scale=0.2, p=0.75),  # max_warp 0.2
        v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.75),  # max_lighting 0.2
    ])  # fmt: skip


def train_batch_transform(size: int, min_scale: float):
    augment = augmentation(size, min_scale)

    def transform(batch: torch.Tensor) -> torch.Tensor:
        # v2 draws one set of random parameters per call, so call it per image for per-image augmentation.
        return _normalize(torch.stack([augment(image) for image in batch]))

    return transform


def valid_batch_transform(size: int):
    resize = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    return lambda batch: _normalize(resize(batch))
