"""Stage train_pets: chapter 5's transfer learning, ``fine_tune`` on the presized Pets.

Writes metrics/pets/train/ (dvclive: metrics.json with error_rate, accuracy, top-5 accuracy and validation
loss; per-epoch curves) and data/models/pets/ (model.pt: arch, classes, size and weights; run_info.json).
"""

import json
import time
from pathlib import Path

import torch

from stages import atomic, cli, devices, fine_tune, params, pets_setup, training
from stages.live_logger import live_logger

PARAMS = ["source", "device", "pets_model", "fine_tune"]
LR_FIND = Path("metrics/pets/lr_find/suggestions.json")
METRICS = Path("metrics/pets/train")
MODEL = Path("data/models/pets")


def base_lr(setting) -> float:
    """``auto`` takes lr_find's chosen suggestion; a number overrides it."""
    if setting == "auto":
        try:
            return float(json.loads(LR_FIND.read_text())["chosen"]["lr"])
        except (OSError, ValueError, KeyError) as exc:
            raise cli.UserError(f"{LR_FIND}: no lr_find result ({exc}); run 'dvc repro lr_find_pets'") from None
    return float(setting)  # params_schema has checked it is a number > 0


def main() -> None:
    p = params.load(PARAMS)
    cfg, ft = p["pets_model"], p["fine_tune"]
    device = devices.pick(p["device"])
    setup = pets_setup.prepare(cfg, p["source"], device)
    lr = base_lr(ft["lr"])

    with atomic.output_dir(METRICS) as metrics_dir, atomic.output_dir(MODEL) as model_dir:
        with live_logger(metrics_dir) as live:

            def log_epoch(record: dict) -> None:
                for key in ("train_loss", "valid_loss", "accuracy"):
                    live.log_metric(key, record[key])
                live.log_metric("error_rate", 1 - record["accuracy"])
                live.next_step()

            loop = fine_tune.Loop(setup.model, setup.train, setup.valid, setup.loss_fn, device,
                                  setup.train_transform, setup.valid_transform, log_epoch)  # fmt: skip
            start = time.perf_counter()
            freeze_lr = None if ft["freeze_lr"] == "base" else float(ft["freeze_lr"])
            history = fine_tune.fine_tune(loop, ft["epochs"], lr, ft["freeze_epochs"], ft["lr_mult"], ft["pct_start"],
                                          ft["div"], freeze_lr, ft["freeze_pct_start"])  # fmt: skip
            seconds = time.perf_counter() - start
            outputs, targets, valid_loss = training.predict(setup.model, setup.valid, device, setup.loss_fn, setup.valid_transform)
            accuracy = (outputs.argmax(1) == targets).float().mean().item()
            top5 = (outputs.topk(min(5, outputs.shape[1]), 1).indices == targets[:, None]).any(1).float().mean().item()
            live.summary.update({"error_rate": round(1 - accuracy, 6), "accuracy": round(accuracy, 6),
                                 "top5_accuracy": round(top5, 6), "valid_loss": round(valid_loss, 6), "lr": lr})  # fmt: skip
            live.make_summary()

        checkpoint = {"arch": cfg["arch"], "classes": setup.classes, "size": cfg["size"],
                      "state_dict": {k: v.cpu() for k, v in setup.model.state_dict().items()}}  # fmt: skip
        torch.save(checkpoint, model_dir / "model.pt")
        # No timings here: they differ every run and would change the output's hash (benchmarks/ measures speed).
        info = {**devices.run_info(device), "arch": cfg["arch"], "pretrained": setup.pretrained, "epochs": len(history)}
        atomic.write_json(model_dir / "run_info.json", info)
    print(f"train_pets: error_rate {1 - accuracy:.4f}, top-5 accuracy {top5:.4f}, {seconds:.0f}s on {device.type}")


if __name__ == "__main__":
    cli.run(main)
