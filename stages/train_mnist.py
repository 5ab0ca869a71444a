"""Stage train_mnist@<model>: train one of chapter 4's models on the prepared digits.

    python -m stages.train_mnist {linear,simple_net,resnet18}
    torchrun --standalone --nproc_per_node N -m stages.train_mnist resnet18     (N processes)

Reads:  data/mnist/train.npz, data/mnist/valid.npz
Writes: metrics/mnist/<model>/metrics.json               accuracy with its 95% interval, averaged and per digit;
                                                         validation loss; the number of epochs (step)
        metrics/mnist/<model>/plots/metrics/<key>.tsv     train_loss, valid_loss and accuracy per epoch (dvclive;
                                                         live in dvclive/train_mnist@<model>/ while it trains)
        metrics/mnist/<model>/predictions.csv             item (row of the raw file), actual and predicted digit
        metrics/mnist/<model>/confusion.png
        data/models/mnist/<model>/model.pt, run_info.json the weights and digits; the device and versions it used
"""

import time
from pathlib import Path

from stages.core import stage
from stages.mnist import MODELS
from stages.mnist import schema as mnist_schema

PARAMS = ["compute", "mnist_models.{model}"]
SCHEMA = mnist_schema.SCHEMA  # the blocks PARAMS are in
DATA = Path("data/mnist")
METRICS = Path("metrics/mnist")
MODELS_OUT = Path("data/models/mnist")


def main(p: dict, model: str) -> None:
    from stages.core import atomic, checkpoint, evaluation
    from stages.core.devices import Compute
    from stages.core.live import TrainingLog
    from stages.learner import distributed
    from stages.learner.learner import decode
    from stages.mnist.data import Digits
    from stages.mnist.recipes import RECIPES

    cfg, compute = p[f"mnist_models.{model}"], Compute.from_params(p["compute"])
    digits = Digits.load(DATA)

    with distributed.process_group(compute) as world:
        if world.size > 1 and model != "resnet18":
            raise stage.UserError(f"torchrun: only resnet18 trains on several processes, not {model}")
        several = {"world": world} if world.size > 1 else {}
        with (
            world.main_only(atomic.output_dir(METRICS / model)) as metrics_dir,
            world.main_only(atomic.output_dir(MODELS_OUT / model)) as model_dir,
        ):
            with world.main_only(TrainingLog(f"train_mnist@{model}")) as log:
                start = time.perf_counter()
                result = RECIPES[model](digits, cfg, world.compute, log, **several)
                seconds = time.perf_counter() - start
                if not world.is_main:
                    return  # every process trains; only rank 0 writes
                log.save(metrics_dir)
            predicted, actual = decode(result.outputs).numpy(), digits.valid_y.numpy()
            report = evaluation.accuracy_report(actual, predicted, digits.classes)
            metrics = {**report, "loss": round(result.history[-1]["valid_loss"], 6), **result.extra, "step": log.epochs}
            atomic.write_json(metrics_dir / "metrics.json", metrics)
            items = [str(i) for i in digits.valid_ids]
            evaluation.write_predictions(
                metrics_dir,
                items,
                actual,
                predicted={"predicted": predicted},
                classes=digits.classes,
                title=f"MNIST {model}, validation",
            )
            saved = {"model": model, "classes": digits.classes, "state_dict": result.state_dict}
            info = {**world.compute.run_info(), "model": model, "epochs": len(result.history), "processes": world.size}
            checkpoint.save(model_dir, saved, info)
    print(
        f"{model}: accuracy {report['accuracy']:.4f} [95% CI {report['accuracy_low']:.3f}, "
        f"{report['accuracy_high']:.3f}] on {report['images']} validation digits, "
        f"{seconds:.1f}s on {compute.device.type}"
    )


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA, choices={"model": MODELS}, distributed=True)
