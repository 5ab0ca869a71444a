"""Stage baseline: chapter 4's pixel-similarity classifier on the prepared MNIST digits."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from stages import atomic, cli, evaluation, params, pixel_similarity
from stages.live_logger import live_logger
from stages.mnist_prepared import load_split

PARAMS = ["baseline.distances"]
OUT = Path("metrics/baseline")


def plot_means(means: torch.Tensor, classes: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(classes), figsize=(1.6 * len(classes), 1.9), squeeze=False)
    for ax, mean, name in zip(axes[0], means, classes):
        ax.imshow(mean.numpy(), cmap="Greys")
        ax.set_title(f"mean {name}")
        ax.axis("off")
    evaluation.save_figure(fig, path)


def main() -> None:
    p = params.load(PARAMS)
    distances = list(p["baseline.distances"])
    train_x, train_y = load_split("train")
    valid_x, valid_y = load_split("valid")
    digits = sorted(torch.unique(train_y).tolist())
    classes = [str(d) for d in digits]
    means = pixel_similarity.mean_images(train_x, train_y, digits)
    actual = np.searchsorted(digits, valid_y.numpy())

    report = {}
    with atomic.output_dir(OUT) as plots, live_logger(plots) as live:
        for kind in distances:
            pred = pixel_similarity.predict(valid_x, means, kind).numpy()
            report[kind] = evaluation.accuracy_report(actual, pred, classes)
            live.log_sklearn_plot("confusion_matrix", [classes[i] for i in actual], [classes[i] for i in pred],
                                  name=f"confusion_{kind}.json")  # fmt: skip
            title = f"pixel similarity, {kind}"
            evaluation.plot_confusion(plots / f"confusion_{kind}.png", actual, pred, classes, title)
        plot_means(means, classes, plots / "mean_images.png")
        live.summary.update(report)  # metrics/baseline/metrics.json, laid out like every model's
        live.make_summary()
    for kind, figures in report.items():
        print(f"pixel similarity ({kind}): accuracy {figures['accuracy']:.4f}, per class {figures['per_class']}")


if __name__ == "__main__":
    cli.run(main)
