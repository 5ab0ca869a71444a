"""Stage train_mnist@<model>: train one of chapter 4's models on the prepared digits.

    python -m stages.train_mnist {linear,simple_net,resnet18}

Reads:  data/mnist/train.npz, data/mnist/valid.npz
Writes: metrics/mnist/<model>/metrics.json                 accuracy (overall, averaged, per digit), loss
        metrics/mnist/<model>/plots/metrics/<key>.tsv       per-epoch train_loss, valid_loss and accuracy (dvclive)
        metrics/mnist/<model>/plots/sklearn/confusion.json  actual/predicted per validation digit
        metrics/mnist/<model>/confusion.png
        data/models/mnist/<model>/model.pt, run_info.json   the weights; the device and versions it trained with
"""

import time
from pathlib import Path

from stages.core import atomic, checkpoint, evaluation, stage
from stages.core.devices import Compute
from stages.core.live import epoch_logger, live_logger
from stages.learner.learner import decode
from stages.mnist import MODELS
from stages.mnist.data import Digits
from stages.mnist.recipes import RECIPES

PARAMS = ["device", "mnist_models.{model}"]
DATA = Path("data/mnist")
METRICS = Path("metrics/mnist")
MODELS_OUT = Path("data/models/mnist")


def main(p: dict, model: str) -> None:
    cfg, compute = p[f"mnist_models.{model}"], Compute.from_params(p["device"])
    digits = Digits.load(DATA)

    with atomic.output_dir(METRICS / model) as metrics_dir, atomic.output_dir(MODELS_OUT / model) as model_dir:
        with live_logger(metrics_dir) as live:
            start = time.perf_counter()
            result = RECIPES[model](digits, cfg, compute, epoch_logger(live))
            seconds = time.perf_counter() - start

            predicted = decode(result.outputs).numpy()
            actual = digits.valid_y.numpy()
            report = evaluation.accuracy_report(actual, predicted, digits.classes)
            live.summary.update({**report, "loss": round(result.history[-1]["valid_loss"], 6), **result.extra})
            live.make_summary()
            evaluation.log_confusion(live, metrics_dir, actual, predicted, digits.classes, f"MNIST {model}, validation")
        info = {**compute.run_info(), "model": model, "epochs": len(result.history)}
        checkpoint.save(model_dir, result.state_dict, info)
    print(f"{model}: accuracy {report['accuracy']:.4f} on {len(actual)} validation digits, {seconds:.1f}s on {compute.device.type}")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, choices={"model": MODELS})
