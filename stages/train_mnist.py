"""Stage train_mnist@<model>: train one of chapter 4's models (linear, simple_net, resnet18) on the digits.

Writes metrics/mnist/<model>/ (dvclive: metrics.json, per-epoch curves, confusion records; confusion PNG)
and data/models/mnist/<model>/ (model.pt weights, run_info.json with the device and timings).
"""

import sys
import time
from pathlib import Path

import torch

from stages import atomic, cli, devices, evaluation, mnist_recipes, params, training
from stages.live_logger import live_logger
from stages.mnist_prepared import load_split

PARAMS = ["device", "mnist_models.{model}"]
METRICS = Path("metrics/mnist")
MODELS = Path("data/models/mnist")


def load_digits() -> mnist_recipes.Digits:
    train_x, train_digits = load_split("train")
    valid_x, valid_digits = load_split("valid")
    digits = sorted(torch.unique(train_digits).tolist())
    to_index = lambda labels: torch.searchsorted(torch.tensor(digits), labels)  # noqa: E731
    return mnist_recipes.Digits(train_x, to_index(train_digits), valid_x, to_index(valid_digits), [str(d) for d in digits])


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in mnist_recipes.RECIPES:
        raise cli.UserError(f"usage: python -m stages.train_mnist {{{','.join(mnist_recipes.RECIPES)}}}")
    name = sys.argv[1]
    p = params.load([key.format(model=name) for key in PARAMS])
    cfg, device = p[f"mnist_models.{name}"], devices.pick(p["device"])
    digits = load_digits()

    with atomic.output_dir(METRICS / name) as metrics_dir, atomic.output_dir(MODELS / name) as model_dir:
        with live_logger(metrics_dir) as live:

            def log_epoch(record: dict) -> None:
                for key in ("train_loss", "valid_loss", "accuracy"):
                    live.log_metric(key, record[key])
                live.next_step()

            start = time.perf_counter()
            result = mnist_recipes.RECIPES[name](digits, cfg, device, log_epoch)
            seconds = time.perf_counter() - start

            predicted = training.decode(result.outputs).numpy()
            actual = digits.valid_y.numpy()
            report = evaluation.accuracy_report(actual, predicted, digits.classes)
            live.summary.update({**report, "loss": round(result.history[-1]["valid_loss"], 6), **result.extra})
            live.make_summary()
            names = digits.classes
            live.log_sklearn_plot("confusion_matrix", [names[i] for i in actual], [names[i] for i in predicted], name="confusion.json")
            evaluation.plot_confusion(metrics_dir / "confusion.png", actual, predicted, names, f"MNIST {name}, validation")

        torch.save(result.state_dict, model_dir / "model.pt")
        # No timings here: they differ every run and would change the output's hash (benchmarks/ measures speed).
        info = {**devices.run_info(device), "model": name, "epochs": len(result.history)}
        atomic.write_json(model_dir / "run_info.json", info)
    print(f"{name}: accuracy {report['accuracy']:.4f} on {len(actual)} validation digits, {seconds:.1f}s on {device.type}")


if __name__ == "__main__":
    cli.run(main)
