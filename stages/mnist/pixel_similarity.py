"""Chapter 4's baseline, by hand as the book does it: the mean image of each digit ("the ideal 3") and a
prediction by the nearest mean, with L1 (mean absolute difference) or L2 (root mean squared difference).
"""

from __future__ import annotations

import torch

from stages.core.cpu import exact_sqrt
from stages.mnist import DISTANCES


def mean_images(images: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """(K, 28, 28): the pixel-wise mean of each class's training images, in ``classes`` order."""
    return torch.stack([images[labels == c].float().mean(0) for c in classes])


def distance(images: torch.Tensor, means: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, K) distances; broadcasting compares every image with every mean, as the book's ``mnist_distance``."""
    diff = images[:, None].float() - means[None]
    if kind == "l1":
        return diff.abs().mean((-1, -2))
    if kind == "l2":
        return exact_sqrt((diff**2).mean((-1, -2)))
    raise ValueError(f"unknown distance {kind!r}; expected one of {DISTANCES}")


def predict(images: torch.Tensor, means: torch.Tensor, kind: str) -> torch.Tensor:
    """Index (into the classes of ``means``) of the nearest mean image for each image."""
    return distance(images, means, kind).argmin(1)
