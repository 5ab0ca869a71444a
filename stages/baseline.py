"""Stage baseline: chapter 4's pixel-similarity classifier on the prepared digits.

Reads:  data/mnist/train.npz (the mean image of each digit), data/mnist/valid.npz
Writes: metrics/baseline/metrics.json                   accuracy per distance, overall and per digit
        metrics/baseline/plots/sklearn/confusion_<d>.json  actual/predicted per image, for each distance <d>
        metrics/baseline/confusion_<d>.png, metrics/baseline/mean_images.png
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from stages.core import atomic, evaluation, stage
from stages.core.live import live_logger
from stages.mnist import pixel_similarity
from stages.mnist.data import load_split

PARAMS = ["baseline.distances"]
DATA = Path("data/mnist")
OUT = Path("metrics/baseline")


def plot_means(means: torch.Tensor, classes: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(classes), figsize=(1.6 * len(classes), 1.9), squeeze=False)
    for ax, mean, name in zip(axes[0], means, classes):
        ax.imshow(mean.numpy(), cmap="Greys")
        ax.set_title(f"mean {name}")
        ax.axis("off")
    evaluation.save_figure(fig, path)


def main(p: dict) -> None:
    train_x, train_y = load_split(DATA, "train")
    valid_x, valid_y = load_split(DATA, "valid")
    digits = sorted(torch.unique(train_y).tolist())
    classes = [str(d) for d in digits]
    means = pixel_similarity.mean_images(train_x, train_y, digits)
    actual = np.searchsorted(digits, valid_y.numpy())

    report = {}
    with atomic.output_dir(OUT) as out, live_logger(out) as live:
        for kind in p["baseline.distances"]:
            predicted = pixel_similarity.predict(valid_x, means, kind).numpy()
            report[kind] = evaluation.accuracy_report(actual, predicted, classes)
            evaluation.log_confusion(live, out, actual, predicted, classes, f"pixel similarity, {kind}",
                                     name=f"confusion_{kind}")  # fmt: skip
        plot_means(means, classes, out / "mean_images.png")
        live.summary.update(report)  # metrics/baseline/metrics.json, laid out like every model's
        live.make_summary()
    for kind, figures in report.items():
        print(f"pixel similarity ({kind}): accuracy {figures['accuracy']:.4f}, per class {figures['per_class']}")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS)
