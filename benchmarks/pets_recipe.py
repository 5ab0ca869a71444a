"""This project's Pets recipe on presized data, as train_pets runs it, for one seed: the counterpart of
benchmarks/fastai_pets.py, for benchmarks/run.py.

    ./with-env python benchmarks/pets_recipe.py --project . --seed 0 [--numerics native]

It builds the Pets learner from params.yaml's ``pets_model`` block (the seed and the data folder replaced), runs
lr_find and takes its ``lr_find.suggestion`` (or a given --lr), then ``fine_tune`` with the ``fine_tune`` block.
``--numerics`` replaces ``compute.numerics`` and is applied as a stage applies it, before torch loads; ``--device`` and
``--precision`` replace theirs. ``--crop-per-batch`` draws fastai's one crop per batch instead of one per image
(docs/fastai-comparison.md).
It prints one JSON line: the error rate, and the seconds of lr_find and of fine_tune.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from stages.core import cpu  # noqa: E402  (importing stages sets the caps; torch loads only in main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="a project folder whose data/pets to read")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--numerics", choices=["portable", "native"], default=None, help="default: params.yaml's")
    parser.add_argument("--device", default=None, help="compute.device (cpu, cuda); default: params.yaml's")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None, help="default: params.yaml's")
    parser.add_argument(
        "--crop-per-batch",
        action="store_true",
        help="fastai's random resized crop, one per batch (the stages draw one per image); every other draw unchanged",
    )
    args = parser.parse_args()
    params = yaml.safe_load(args.params.read_text())
    if args.numerics is not None:
        params["compute"]["numerics"] = args.numerics
    if args.device is not None:
        params["compute"]["device"] = args.device
    if args.precision is not None:
        params["compute"]["precision"] = args.precision
    cpu.use_numerics(params["compute"]["numerics"])

    import torch

    from stages.core.devices import Compute
    from stages.learner import lr_find
    from stages.pets import data
    from stages.pets.learner import pets_learner, wants_pretrained

    if args.crop_per_batch:
        crop_per_batch()

    cfg = {**params["pets_model"], "seed": args.seed}
    os.chdir(args.project)  # the learner reads data/pets, as the stages do
    compute = Compute.from_params(params["compute"])
    pretrained = wants_pretrained(cfg["weights"], params["source"])
    learn = pets_learner(cfg, pretrained, compute, classes=data.read_index()["classes"])
    start = time.perf_counter()
    finder = params["lr_find"]
    if args.lr is None:
        lrs, losses = learn.lr_find(finder["start_lr"], finder["end_lr"], finder["num_it"])
        lr = lr_find.suggest(lrs, losses, finder["num_it"])[finder["suggestion"]]["lr"]
    else:
        lr = args.lr
    lr_find_seconds = time.perf_counter() - start
    schedule = {**params["fine_tune"], "base_lr": lr}
    schedule["freeze_lr"] = None if schedule["freeze_lr"] == "base" else schedule["freeze_lr"]
    start = time.perf_counter()
    learn.fine_tune(**schedule)
    train_seconds = time.perf_counter() - start
    outputs, targets, _ = learn.last_preds  # the last epoch's validation pass, as train_pets takes it
    error = 1 - (outputs.argmax(1) == targets).float().mean().item()
    print(
        json.dumps(
            {
                "framework": "this project",
                "seed": args.seed,
                "lr": lr,
                "error_rate": round(error, 6),
                "train_seconds": round(train_seconds, 1),
                "lr_find_seconds": round(lr_find_seconds, 1),
                "numerics": params["compute"]["numerics"],
                "precision": "bf16" if compute.mixed else "fp32",
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads(),
                "loader_workers": os.environ.get("PIPELINE_WORKERS"),
                "device": str(compute.device),
                "crop": "per batch" if args.crop_per_batch else "per image",
            }
        )
    )


def crop_per_batch() -> None:
    """Every image of a batch takes the first image's crop, as fastai's ``RandomResizedCropGPU`` draws one per batch.
    The draws themselves are unchanged, so a seed's weights, order and other augmentation stay as the stages make them
    and the two crops compare seed by seed."""
    import dataclasses

    from stages.pets.augment import AugTransforms

    per_image = AugTransforms.draw

    def draw(self, n, presize, g):
        params = per_image(self, n, presize, g)
        first = {name: getattr(params, name)[:1].expand(n).clone() for name in ("crop", "top", "left")}
        return dataclasses.replace(params, **first)

    AugTransforms.draw = draw


if __name__ == "__main__":
    main()
