"""Stage train_pets: chapter 5's transfer learning, fastai's ``fine_tune`` on the presized Pets.

Reads:  data/pets, metrics/pets/lr_find/suggestions.json (when ``fine_tune.base_lr: auto``)
Writes: metrics/pets/train/metrics.json             error_rate, accuracy and top-5 accuracy, each with its 95%
                                                     interval; validation loss; base lr; epochs (step)
        metrics/pets/train/plots/metrics/<key>.tsv   train_loss, valid_loss, accuracy, error_rate per epoch (dvclive;
                                                     live in dvclive/train_pets/ while it trains)
        data/models/pets/model.pt, run_info.json     arch, classes, sizes and weights; the device and versions
"""

import json
import time
from pathlib import Path

from stages.core import atomic, checkpoint, stage
from stages.core.devices import Compute
from stages.core.evaluation import proportion
from stages.core.live import TrainingLog
from stages.pets.data import read_index
from stages.pets.learner import pets_learner, wants_pretrained

PARAMS = ["source", "compute", "pets_model", "fine_tune"]
LR_FIND = Path("metrics/pets/lr_find/suggestions.json")
METRICS = Path("metrics/pets/train")
MODEL = Path("data/models/pets")


def resolve_base_lr(setting) -> float:
    """``auto`` takes lr_find's chosen suggestion; a number overrides it."""
    if setting == "auto":
        try:
            return float(json.loads(LR_FIND.read_text())["chosen"]["lr"])
        except (OSError, ValueError, KeyError) as exc:
            raise stage.UserError(f"{LR_FIND}: no lr_find result ({exc}); run 'dvc repro lr_find_pets'") from None
    return float(setting)  # the schema has checked it is a number > 0


def main(p: dict) -> None:
    cfg, schedule = p["pets_model"], dict(p["fine_tune"])
    compute = Compute.from_params(p["compute"])
    pretrained = wants_pretrained(cfg["weights"], p["source"])
    classes = read_index()["classes"]
    schedule["base_lr"] = resolve_base_lr(schedule["base_lr"])
    schedule["freeze_lr"] = None if schedule["freeze_lr"] == "base" else float(schedule["freeze_lr"])

    with atomic.output_dir(METRICS) as metrics_dir, atomic.output_dir(MODEL) as model_dir:
        with TrainingLog("train_pets", error_rate=True) as log:
            learn = pets_learner(cfg, pretrained, compute, classes, on_epoch=log)
            start = time.perf_counter()
            history = learn.fine_tune(**schedule)
            seconds = time.perf_counter() - start
            log.save(metrics_dir)
        outputs, targets, valid_loss = learn.get_preds()
        correct = int((outputs.argmax(1) == targets).sum())
        in_top5 = int((outputs.topk(min(5, outputs.shape[1]), 1).indices == targets[:, None]).any(1).sum())
        n = len(targets)
        metrics = {**proportion("error_rate", n - correct, n), **proportion("accuracy", correct, n),
                   **proportion("top5_accuracy", in_top5, n), "correct": correct, "images": n,
                   "valid_loss": round(valid_loss, 6), "lr": schedule["base_lr"], "step": log.epochs}  # fmt: skip
        atomic.write_json(metrics_dir / "metrics.json", metrics)
        weights = {k: v.cpu() for k, v in learn.model.state_dict().items()}
        info = {**compute.run_info(), "arch": cfg["arch"], "pretrained": pretrained, "epochs": len(history)}
        checkpoint.save(model_dir, {"arch": cfg["arch"], "classes": classes, "size": cfg["size"], "state_dict": weights}, info)
    print(f"train_pets: error_rate {metrics['error_rate']:.4f} [95% CI {metrics['error_rate_low']:.3f}, "
          f"{metrics['error_rate_high']:.3f}], top-5 accuracy {metrics['top5_accuracy']:.4f}, {seconds:.0f}s on {compute.device.type}")  # fmt: skip


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS)
