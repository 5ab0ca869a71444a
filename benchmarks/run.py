"""Speed and memory of the pipeline, written as JSON (benchmarks/results.json) with the targets checked.

    ./with-env python benchmarks/run.py                 # everything, about 5 minutes on 2 cores
    ./with-env python benchmarks/run.py --skip-pipeline # leave out the from-scratch pipeline run

- presize: images/s of the presize stage's code (JPEG draft decoding, worker processes) against a plain PIL
  open-convert-resize loop on the same stand-in JPEGs at real Pets sizes (about 500x375). Target: >= 2x.
- training: samples/s of one training epoch of each model on synthetic data of the real shapes, with the
  batch sizes in params.yaml, on the CPU and, when present, on CUDA (bf16 mixed precision).
- pipeline: the default ``dvc repro`` from nothing in a temporary copy of the project (wall time, peak
  memory of its largest process; targets 6 minutes and 4 GB), then ``dvc repro`` with nothing to do (< 3 s).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.core.devices import Compute  # noqa: E402
from stages.learner.learner import DataLoaders, Learner  # noqa: E402
from stages.learner.schedule import discriminative_lrs  # noqa: E402
from stages.mnist import recipes as mnist_recipes  # noqa: E402
from stages.mnist.data import Digits  # noqa: E402
from stages.pets import data as pets_data  # noqa: E402
from stages.pets import model as pets_model  # noqa: E402
from stages.pets import presize  # noqa: E402
from stages.pets import standin as pets_standin  # noqa: E402

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def presize_benchmark(n_images: int = 240) -> dict:
    size, workers = PARAMS["pets"]["presize"], PARAMS["pets"]["presize_workers"]
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        styles = pets_standin.breed_styles(0)
        paths = []
        for i in range(n_images):
            path = Path(tmp) / f"img_{i}.jpg"
            pets_standin.render(styles[i % len(styles)], rng, 375, 500).save(path, "JPEG", quality=90)
            paths.append(path)

        def plain_loop():
            return [np.asarray(ImageOps.fit(Image.open(p).convert("RGB"), (size, size))) for p in paths]

        def stage_code():
            return presize.presize_all(paths, size, workers)

        timings = {}
        for name, run in (("plain_pil_loop", plain_loop), ("stage", stage_code)):
            run()  # warm the page cache and the worker start-up path alike
            start = time.perf_counter()
            run()
            timings[name] = n_images / (time.perf_counter() - start)
    return {
        "images": n_images, "image_size": "about 500x375 JPEG", "presize": size, "workers": workers,
        "plain_pil_loop_images_per_s": round(timings["plain_pil_loop"], 1),
        "stage_images_per_s": round(timings["stage"], 1),
        "speedup": round(timings["stage"] / timings["plain_pil_loop"], 2),
    }  # fmt: skip


def _time_epoch(fit_once, n_samples: int) -> float:
    fit_once()  # warm-up: allocator, kernels, worker start
    start = time.perf_counter()
    fit_once()
    return round(n_samples / (time.perf_counter() - start), 1)


def training_benchmark(device: torch.device, n_mnist: int = 2048, n_pets: int = 512) -> dict:
    results = {}
    compute = Compute(device, mixed=device.type == "cuda")
    digits = Digits(torch.rand(n_mnist, 28, 28), torch.arange(n_mnist) % 2, torch.rand(64, 28, 28),
                                  torch.arange(64) % 2, ["3", "7"])  # fmt: skip
    for name in ("linear", "simple_net", "resnet18"):
        cfg = {**PARAMS["mnist_models"][name], "epochs": 1}
        if name == "linear" and device.type != "cpu":
            continue  # the lesson's loop runs on the CPU by design
        results[f"mnist_{name}"] = _time_epoch(lambda: mnist_recipes.RECIPES[name](digits, cfg, compute, lambda r: None), n_mnist)

    cfg = PARAMS["pets_model"]
    model = pets_model.build(cfg["arch"], False, 37)
    images = torch.randint(0, 256, (n_pets, 3, PARAMS["pets"]["presize"], PARAMS["pets"]["presize"]), dtype=torch.uint8)
    data = DataLoader(TensorDataset(images, torch.arange(n_pets) % 37), batch_size=cfg["batch_size"],
                      pin_memory=device.type == "cuda")  # fmt: skip
    valid = DataLoader(TensorDataset(images[:64], torch.arange(64) % 37), batch_size=cfg["batch_size"])
    dls = DataLoaders(data, valid, pets_data.train_batch_transform(cfg["size"], cfg["min_scale"]),
                      pets_data.valid_batch_transform(cfg["size"]))
    learn = Learner(model, dls, torch.nn.CrossEntropyLoss(), compute, splitter=pets_model.layer_groups, name="bench")
    lrs = discriminative_lrs(1e-5, 1e-3, 3)
    results[f"pets_{cfg['arch']}_{cfg['size']}px_unfrozen"] = _time_epoch(
        lambda: learn.fit_one_cycle(1, lrs, pct_start=0.3, div=5.0), n_pets)
    return {"device": device.type, "samples_per_s": results}


def pipeline_benchmark() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        for name in ("stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvc/plots", ".dvcignore", ".gitignore"):
            src, dst = ROOT / name, project / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        start = time.perf_counter()
        subprocess.run(["dvc", "repro", "-q"], cwd=project, check=True)
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB
        noop = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(["dvc", "repro", "-q"], cwd=project, check=True)
            noop.append(time.perf_counter() - start)
    return {"from_scratch_seconds": round(wall, 1), "peak_memory_mb": round(peak_mb),
            "noop_repro_seconds": round(statistics.median(noop), 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-pipeline", action="store_true", help="leave out the from-scratch dvc repro")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "presize": presize_benchmark(),
        "training": [training_benchmark(torch.device("cpu"))],
    }  # fmt: skip
    if torch.cuda.is_available():
        results["training"].append(training_benchmark(torch.device("cuda"), n_mnist=16384, n_pets=4096))
    targets = {"presize_speedup_at_least_2x": results["presize"]["speedup"] >= 2}
    if not args.skip_pipeline:
        results["pipeline"] = pipeline_benchmark()
        targets |= {
            "pipeline_at_most_6_minutes": results["pipeline"]["from_scratch_seconds"] <= 360,
            "pipeline_at_most_4_gb": results["pipeline"]["peak_memory_mb"] <= 4096,
            "noop_repro_under_3_s": results["pipeline"]["noop_repro_seconds"] < 3,
        }
    results["targets_met"] = targets
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
