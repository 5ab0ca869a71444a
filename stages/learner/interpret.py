"""fastai's ``ClassificationInterpretation`` in small functions: the most-confused pairs and the top losses."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from stages.core import evaluation


def most_confused(actual: np.ndarray, predicted: np.ndarray, classes: list[str], *, min_val: int) -> list[dict]:
    """Off-diagonal cells of the confusion matrix with at least ``min_val`` images, most frequent first."""
    matrix = confusion_matrix(actual, predicted, labels=list(range(len(classes))))
    np.fill_diagonal(matrix, 0)
    pairs = [
        {"actual": classes[a], "predicted": classes[p], "count": int(matrix[a, p])}
        for a, p in zip(*np.nonzero(matrix >= max(min_val, 1)))
    ]
    return sorted(pairs, key=lambda row: (-row["count"], row["actual"], row["predicted"]))


def top_losses(outputs: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest per-image cross-entropy losses and the indices of those images."""
    losses = torch.nn.functional.cross_entropy(outputs, targets, reduction="none")
    return losses.topk(min(k, len(losses)))


def plot_images(path: Path, images: np.ndarray, titles: list[str], *, heading: str, columns: int = 3) -> None:
    """A grid of (H, W, 3) images (uint8, or float in [0, 1]), each with its title."""
    columns = min(columns, len(images)) or 1
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    fig.suptitle(heading, fontsize=10)
    evaluation.save_figure(fig, path)


def plot_top_losses(path: Path, images: np.ndarray, titles: list[str]) -> None:
    """fastai's ``plot_top_losses``: each image titled "predicted / actual / loss / probability"."""
    plot_images(path, images, titles, heading="Prediction / Actual / Loss / Probability")


def show_batch(path: Path, batch: torch.Tensor, labels: list[str]) -> None:
    """fastai's ``show_batch``: augmented training images (N, 3, H, W) in [0, 1] with their labels."""
    images = batch.clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
    plot_images(path, images, labels, heading="show_batch: augmented training images", columns=4)
