"""Stage train_pets: chapter 5's transfer learning, fastai's ``fine_tune`` on the presized Pets.

Reads:  data/pets, metrics/pets/lr_find/suggestions.json (when ``fine_tune.base_lr: auto``)
Writes: metrics/pets/train/metrics.json             error_rate, accuracy, top-5 accuracy, validation loss, lr
        metrics/pets/train/plots/metrics/<key>.tsv   per-epoch train_loss, valid_loss, accuracy, error_rate
        data/models/pets/model.pt, run_info.json     arch, classes, size and weights; the device and versions
"""

import json
import time
from pathlib import Path

from stages.core import atomic, checkpoint, stage
from stages.core.devices import Compute
from stages.core.live import epoch_logger, live_logger
from stages.pets.data import read_index
from stages.pets.learner import pets_learner, wants_pretrained

PARAMS = ["source", "device", "pets_model", "fine_tune"]
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
    compute = Compute.from_params(p["device"])
    pretrained = wants_pretrained(cfg["weights"], p["source"])
    classes = read_index()["classes"]
    schedule["base_lr"] = resolve_base_lr(schedule["base_lr"])
    schedule["freeze_lr"] = None if schedule["freeze_lr"] == "base" else float(schedule["freeze_lr"])

    with atomic.output_dir(METRICS) as metrics_dir, atomic.output_dir(MODEL) as model_dir:
        with live_logger(metrics_dir) as live:
            learn = pets_learner(cfg, pretrained, compute, classes, on_epoch=epoch_logger(live, error_rate=True))
            start = time.perf_counter()
            history = learn.fine_tune(**schedule)
            seconds = time.perf_counter() - start
            outputs, targets, valid_loss = learn.get_preds()
            accuracy = (outputs.argmax(1) == targets).float().mean().item()
            top5 = (outputs.topk(min(5, outputs.shape[1]), 1).indices == targets[:, None]).any(1).float().mean().item()
            live.summary.update({"error_rate": round(1 - accuracy, 6), "accuracy": round(accuracy, 6),
                                 "top5_accuracy": round(top5, 6), "valid_loss": round(valid_loss, 6),
                                 "lr": schedule["base_lr"]})  # fmt: skip
            live.make_summary()

        weights = {k: v.cpu() for k, v in learn.model.state_dict().items()}
        info = {**compute.run_info(), "arch": cfg["arch"], "pretrained": pretrained, "epochs": len(history)}
        checkpoint.save(model_dir, {"arch": cfg["arch"], "classes": classes, "size": cfg["size"], "state_dict": weights}, info)
    print(f"train_pets: error_rate {1 - accuracy:.4f}, top-5 accuracy {top5:.4f}, {seconds:.0f}s on {compute.device.type}")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS)
