"""Stage train_pets: chapter 5's transfer learning, fastai's ``fine_tune`` on the presized Pets.

    python -m stages.train_pets                                          (as dvc.yaml runs it)
    torchrun --standalone --nproc_per_node N -m stages.train_pets        (N processes: N GPUs, or CPU processes)

Reads:  data/pets, metrics/pets/lr_find/suggestions.json (when ``fine_tune.base_lr: auto``)
Writes: metrics/pets/train/metrics.json             error_rate, accuracy and top-5 accuracy, each with its 95%
                                                     interval; validation loss; base lr; epochs (step)
        metrics/pets/train/plots/metrics/<key>.tsv   train_loss, valid_loss, accuracy, error_rate per epoch (dvclive;
                                                     live in dvclive/train_pets/ while it trains)
        metrics/pets/train/show_batch.png            augmented training images as the model sees them (fastai's
                                                     show_batch)
        data/models/pets/model.pt, run_info.json     arch, classes, presize, size, normalisation and weights; the
                                                     device and versions it trained with
"""

import json
import time
from pathlib import Path

from stages.core import stage
from stages.learner import schema as learner_schema
from stages.pets import schema as pets_schema

PARAMS = ["source", "compute", "pets_model", "fine_tune"]
SCHEMA = pets_schema.SCHEMA | learner_schema.SCHEMA  # the blocks PARAMS are in
LR_FIND = Path("metrics/pets/lr_find/suggestions.json")
METRICS = Path("metrics/pets/train")
MODEL = Path("data/models/pets")
SHOW_BATCH = 16  # images in show_batch.png


def resolve_base_lr(setting) -> float:
    """``auto`` takes lr_find's chosen suggestion; a number overrides it."""
    if setting == "auto":
        try:
            return float(json.loads(LR_FIND.read_text())["chosen"]["lr"])
        except (OSError, ValueError, KeyError) as exc:
            raise stage.UserError(f"{LR_FIND}: no lr_find result ({exc}); run 'dvc repro lr_find_pets'") from None
    return float(setting)  # the schema has checked it is a number > 0


def plot_show_batch(path: Path, cfg: dict, *, classes: list[str], normalized: bool) -> None:
    """The first training images through a copy of the augmentation: training's own randomness is left alone."""
    import torch

    from stages.learner.interpret import show_batch
    from stages.pets import augment
    from stages.pets.data import PresizedPets

    train = PresizedPets("train")
    images = [train[i] for i in range(min(SHOW_BATCH, len(train)))]
    batch = torch.stack([image for image, _ in images])
    augmented = augment.BatchAugment(augment.AugTransforms(cfg["size"], cfg["min_scale"]), cfg["seed"], normalized)(
        batch
    )
    shown = augment.denormalize(augmented) if normalized else augmented
    show_batch(path, shown, [classes[label] for _, label in images])


def main(p: dict) -> None:
    from stages.core import atomic, checkpoint
    from stages.core.devices import Compute
    from stages.core.evaluation import proportion
    from stages.core.live import TrainingLog
    from stages.learner import distributed
    from stages.pets.data import read_index
    from stages.pets.learner import pets_learner, wants_normalized, wants_pretrained

    cfg, schedule = p["pets_model"], dict(p["fine_tune"])
    compute = Compute.from_params(p["compute"])
    pretrained = wants_pretrained(cfg["weights"], p["source"])
    classes = read_index()["classes"]
    schedule["base_lr"] = resolve_base_lr(schedule["base_lr"])
    schedule["freeze_lr"] = None if schedule["freeze_lr"] == "base" else float(schedule["freeze_lr"])

    with distributed.process_group(compute) as world:
        with (
            world.main_only(atomic.output_dir(METRICS)) as metrics_dir,
            world.main_only(atomic.output_dir(MODEL)) as model_dir,
        ):
            with world.main_only(TrainingLog("train_pets", error_rate=True)) as log:
                learn = pets_learner(cfg, pretrained, world.compute, classes=classes, on_epoch=log, world=world)
                start = time.perf_counter()
                history = learn.fine_tune(**schedule)
                seconds = time.perf_counter() - start
                if not world.is_main:
                    return  # every process trains; only rank 0 writes
                log.save(metrics_dir)
            outputs, targets, valid_loss = learn.last_preds
            correct = int((outputs.argmax(1) == targets).sum())
            in_top5 = int((outputs.topk(min(5, outputs.shape[1]), 1).indices == targets[:, None]).any(1).sum())
            n = len(targets)
            metrics = {
                **proportion("error_rate", n - correct, n),
                **proportion("accuracy", correct, n),
                **proportion("top5_accuracy", in_top5, n),
                "correct": correct,
                "images": n,
                "valid_loss": round(valid_loss, 6),
                "lr": schedule["base_lr"],
                "step": log.epochs,
            }
            atomic.write_json(metrics_dir / "metrics.json", metrics)
            plot_show_batch(
                metrics_dir / "show_batch.png", cfg, classes=classes, normalized=wants_normalized(pretrained)
            )
            weights = {k: v.cpu() for k, v in learn.model.state_dict().items()}
            saved = {
                "arch": cfg["arch"],
                "classes": classes,
                "presize": learn.dls.valid.dataset.presize,
                "size": cfg["size"],
                "normalized": wants_normalized(pretrained),
                "state_dict": weights,
            }
            info = {
                **world.compute.run_info(),
                "arch": cfg["arch"],
                "pretrained": pretrained,
                "epochs": len(history),
                "processes": world.size,
            }
            checkpoint.save(model_dir, saved, info)
    print(
        f"train_pets: error_rate {metrics['error_rate']:.4f} [95% CI {metrics['error_rate_low']:.3f}, "
        f"{metrics['error_rate_high']:.3f}], top-5 accuracy {metrics['top5_accuracy']:.4f}, "
        f"{seconds:.0f}s on {compute.device.type}"
    )


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA, distributed=True)
