"""Stage baseline: chapter 4's pixel-similarity classifier on the prepared digits.

Reads:  data/mnist/train.npz (the mean image of each digit), data/mnist/valid.npz
Writes: metrics/baseline/metrics.json          accuracy per distance <d> (l1, l2) with its 95% interval, per digit
        metrics/baseline/predictions.csv       item (row of the raw file), actual digit, the digit each <d> predicts
        metrics/baseline/confusion_<d>.png, metrics/baseline/mean_images.png
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stages.core import stage
from stages.mnist import schema as mnist_schema

if TYPE_CHECKING:
    import torch

PARAMS = ["compute.numerics", "compute.cpu_threads", "baseline.distances"]
SCHEMA = mnist_schema.SCHEMA  # the blocks PARAMS are in
DATA = Path("data/mnist")
OUT = Path("metrics/baseline")


def plot_means(means: torch.Tensor, classes: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    from stages.core import evaluation

    fig, axes = plt.subplots(1, len(classes), figsize=(1.6 * len(classes), 1.9), squeeze=False)
    for ax, mean, name in zip(axes[0], means, classes):
        ax.imshow(mean.numpy(), cmap="Greys")
        ax.set_title(f"mean {name}")
        ax.axis("off")
    evaluation.save_figure(fig, path)


def main(p: dict) -> None:
    import numpy as np
    import torch

    from stages.core import atomic, cpu, evaluation
    from stages.mnist import pixel_similarity
    from stages.mnist.data import load_split

    cpu.use_threads(p["compute.cpu_threads"])
    train_x, train_y, _ = load_split(DATA, "train")
    valid_x, valid_y, valid_ids = load_split(DATA, "valid")
    digits = sorted(torch.unique(train_y).tolist())
    classes = [str(d) for d in digits]
    means = pixel_similarity.mean_images(train_x, train_y, digits)
    actual = np.searchsorted(digits, valid_y.numpy())

    predicted = {kind: pixel_similarity.predict(valid_x, means, kind).numpy() for kind in p["baseline.distances"]}
    report = {kind: evaluation.accuracy_report(actual, pred, classes) for kind, pred in predicted.items()}
    with atomic.output_dir(OUT) as out:
        atomic.write_json(out / "metrics.json", report)
        evaluation.write_predictions(
            out, [str(i) for i in valid_ids], actual, predicted=predicted, classes=classes, title="pixel similarity"
        )
        plot_means(means, classes, out / "mean_images.png")
    for kind, figures in report.items():
        print(
            f"pixel similarity ({kind}): accuracy {figures['accuracy']:.4f} [95% CI {figures['accuracy_low']:.3f}, "
            f"{figures['accuracy_high']:.3f}] on {figures['images']} validation digits"
        )


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
