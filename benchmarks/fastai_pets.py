"""fastai 2.8 on this project's presized Pets: the yardstick for the Pets error rate and training time.

Runs in the benchmark-only environment (``benchmarks/fastai_env.sh`` builds ``.venv-fastai``), never the project's,
and reads the arrays presize_pets wrote, so both frameworks see the same images:

    .venv-fastai/bin/python benchmarks/fastai_pets.py --data data/pets --seed 0

The recipe is the book's from-scratch variant that train_pets runs by default: ``vision_learner(resnet18,
pretrained=False)``, ``aug_transforms(size, min_scale)``, ``lr_find`` and its ``minimum`` suggestion (or a given
--lr), then ``fine_tune(epochs, base_lr=lr, freeze_epochs=1)``. It prints one JSON line. benchmarks/run.py starts
it as fastai's users run it: no CPU cap (the environment before stages/core/cpu.py set any), on fastai's default
device (a GPU where there is one; --device picks one), the project's thread count.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from fastai.vision.all import (
    CategoryBlock,
    DataBlock,
    ImageBlock,
    IndexSplitter,
    PILImage,
    aug_transforms,
    error_rate,
    minimum,
    resnet18,
    set_seed,
    vision_learner,
)


def dataloaders(folder: Path, *, size: int, min_scale: float, batch_size: int, workers: int, device: str | None):
    index = json.loads((folder / "index.json").read_text())
    images = np.concatenate([np.load(folder / f"{s}_images.npy") for s in ("train", "valid")])
    labels = np.concatenate([np.load(folder / f"{s}_labels.npy") for s in ("train", "valid")])
    n_train = len(np.load(folder / "train_labels.npy"))
    classes = index["classes"]
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=classes)),
        get_x=lambda i: PILImage.create(images[i]),
        get_y=lambda i: classes[labels[i]],
        splitter=IndexSplitter(list(range(n_train, len(labels)))),
        batch_tfms=aug_transforms(size=size, min_scale=min_scale),
    )
    return block.dataloaders(list(range(len(labels))), bs=batch_size, num_workers=workers, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/pets"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--min-scale", type=float, default=0.75)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu or cuda; default: fastai's (a GPU where there is one)")
    parser.add_argument("--lr", type=float, default=None, help="base_lr; default: lr_find's minimum suggestion")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_seed(args.seed, reproducible=True)
    dls = dataloaders(
        args.data,
        size=args.size,
        min_scale=args.min_scale,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
    )
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=error_rate)
    with learn.no_bar(), learn.no_logging():
        start = time.perf_counter()
        lr = args.lr if args.lr is not None else float(learn.lr_find(suggest_funcs=(minimum,), show_plot=False).minimum)
        lr_find_seconds = time.perf_counter() - start
        start = time.perf_counter()
        learn.fine_tune(args.epochs, base_lr=lr, freeze_epochs=args.freeze_epochs)
        train_seconds = time.perf_counter() - start
        _, error = learn.validate()
    print(
        json.dumps(
            {
                "framework": "fastai",
                "version": __import__("fastai").__version__,
                "seed": args.seed,
                "lr": lr,
                "error_rate": round(float(error), 6),
                "train_seconds": round(train_seconds, 1),
                "lr_find_seconds": round(lr_find_seconds, 1),
                "threads": torch.get_num_threads(),
                "loader_workers": args.workers,
                "device": str(dls.device),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            }
        )
    )


if __name__ == "__main__":
    main()
