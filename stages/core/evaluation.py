"""Classification results a reviewer reads: accuracy figures, and the one confusion logger (per-image records
for DVC's confusion template, through dvclive, and a confusion-matrix picture)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or a training server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from dvclive import Live  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix  # noqa: E402

from stages.core import atomic  # noqa: E402


def accuracy_report(actual: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Overall accuracy, the mean of per-class accuracies (the book's "averaged" figure) and each class's."""
    matrix = confusion_matrix(actual, predicted, labels=list(range(len(classes))))
    per_class = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
    return {
        "accuracy": round(float(np.mean(np.asarray(actual) == np.asarray(predicted))), 6),
        "balanced_accuracy": round(float(per_class.mean()), 6),
        "per_class": {name: round(float(acc), 6) for name, acc in zip(classes, per_class)},
    }


def save_figure(fig: plt.Figure, path: Path) -> None:
    with atomic.output_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_confusion(path: Path, actual: np.ndarray, predicted: np.ndarray, classes: list[str], title: str) -> None:
    size = max(4.0, 0.3 * len(classes))  # 37 breeds need room to stay readable
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        actual, predicted, labels=list(range(len(classes))), display_labels=classes, ax=ax,
        colorbar=False, xticks_rotation="vertical", include_values=len(classes) <= 20,
    )  # fmt: skip
    ax.set_title(title)
    save_figure(fig, path)


def log_confusion(live: Live, folder: Path, actual: np.ndarray, predicted: np.ndarray, classes: list[str],
                  title: str, name: str = "confusion") -> None:  # fmt: skip
    """``plots/sklearn/<name>.json`` (actual/predicted per image, DVC's confusion template) and ``<name>.png``."""
    live.log_sklearn_plot("confusion_matrix", [classes[i] for i in actual], [classes[i] for i in predicted],
                          name=f"{name}.json")  # fmt: skip
    plot_confusion(Path(folder) / f"{name}.png", actual, predicted, classes, title)
