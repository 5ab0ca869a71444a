"""Classification results a reviewer reads: accuracies with their 95% intervals, and the one predictions writer
(``predictions.csv``, one row per image: what DVC's confusion template plots and ``stages.compare`` pairs across
revisions, and a confusion-matrix picture per model)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or a training server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix  # noqa: E402

from stages.core import atomic  # noqa: E402
from stages.core.stats import with_interval  # noqa: E402


def proportion(name: str, successes: int, n: int) -> dict:
    """``{name: value, name_low: .., name_high: ..}``: a proportion with its 95% Wilson interval, flat keys so that
    ``dvc metrics diff`` and ``dvc exp show`` show each as a column."""
    figure = with_interval(successes, n)
    return {name: figure["value"], f"{name}_low": figure["low"], f"{name}_high": figure["high"]}


def accuracy_report(actual: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Overall accuracy with its interval and counts, the mean of per-class accuracies (the book's "averaged"
    figure) and each class's accuracy with its interval."""
    matrix = confusion_matrix(actual, predicted, labels=list(range(len(classes))))
    correct, images = np.diag(matrix), matrix.sum(1)
    per_class = correct / np.maximum(images, 1)
    return {
        **proportion("accuracy", int(correct.sum()), int(images.sum())),
        "correct": int(correct.sum()),
        "images": int(images.sum()),
        "balanced_accuracy": round(float(per_class.mean()), 6),
        "per_class": {
            name: {**proportion("accuracy", int(c), int(n)), "images": int(n)}
            for name, c, n in zip(classes, correct, images)
        },
    }


def save_figure(fig: plt.Figure, path: Path) -> None:
    """A PNG with no software version inside, so the same figure is the same bytes on every machine."""
    with atomic.output_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def plot_confusion(path: Path, actual: np.ndarray, predicted: np.ndarray, *, classes: list[str], title: str) -> None:
    size = max(4.0, 0.3 * len(classes))  # 37 breeds need room to stay readable
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        actual,
        predicted,
        labels=list(range(len(classes))),
        display_labels=classes,
        ax=ax,
        colorbar=False,
        xticks_rotation="vertical",
        include_values=len(classes) <= 20,
    )
    ax.set_title(title)
    save_figure(fig, path)


def write_predictions(
    folder: Path,
    items: list[str],
    actual: np.ndarray,
    *,
    predicted: dict[str, np.ndarray],
    classes: list[str],
    title: str,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """``predictions.csv`` (item, actual, one column per entry of ``predicted``, then ``extra``) and, for each
    prediction column, a confusion-matrix picture: ``confusion.png`` for one column, ``confusion_<column>.png``
    for several."""
    table = {"item": items, "actual": [classes[i] for i in actual]}
    table |= {column: [classes[i] for i in values] for column, values in predicted.items()}
    table |= {column: np.round(values, 6) for column, values in (extra or {}).items()}
    with atomic.output_file(Path(folder) / "predictions.csv") as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False)
    for column, values in predicted.items():
        name = "confusion" if len(predicted) == 1 else f"confusion_{column}"
        suffix = "" if len(predicted) == 1 else f", {column}"
        plot_confusion(Path(folder) / f"{name}.png", actual, values, classes=classes, title=f"{title}{suffix}")
