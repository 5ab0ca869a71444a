"""Speed, memory and quality of the pipeline, written as JSON (benchmarks/results.json) with every target checked.

    ./with-env python benchmarks/run.py                          # every part: about two hours on 2 cores
    ./with-env python benchmarks/run.py --only augmentation cpu_caps presize training    # the quick parts
    python3 benchmarks/run.py --device cuda --only augmentation augmentation_share training compile   # a GPU's parts

The JSON is written after every part, so a run stopped early keeps what it measured. ``--device`` picks where the parts
that run per device run (augmentation, augmentation_share, training, compile, fastai): the CPU, CUDA, or both (the
default, CUDA where there is one).

Parts:
- presize: images/s of the presize stage's code (JPEG draft decoding, worker processes) against a plain PIL
  open-convert-resize loop, on stand-in JPEGs at real Pets sizes (about 500x375). Target: >= 2x.
- augmentation: images/s of the batched augmentation (stages/pets/augment.py) against the per-image
  torchvision v2 loop it replaced, at 460 -> 224 and 96 -> 64, batches of 64, on the CPU (and CUDA). Target:
  >= 5x at 460 -> 224.
- augmentation_share: the augmentation's share of a training step at the book's size (presized 460, augmented to
  224, resnet34, batches of 64, ImageNet-normalised as the pretrained recipe is), timed inside each step, under
  portable and native numerics, each in a fresh process. Target: at most 5%.
- training: samples/s of one epoch of each model on synthetic data of the real shapes (CPU; CUDA too). On a GPU, also
  the full-size stand-in's shapes (presize 460, resnet34 at 224, bf16). Target there: 3,000 images/s.
- startup: seconds of a fresh process importing what a stage imports (Python and stages; torch and torchvision; a
  training stage's modules), which every computing stage pays once.
- cpu_caps: what the reproducibility caps (stages/core/cpu.py) cost on this CPU: resnet18 training steps with the
  caps, without, and without in channels-last memory (as ``compute.numerics: native`` runs), each in a fresh process.
- allocation: Pets training steps with glibc's malloc as it is and with every freed block kept for reuse
  (docs/operations.md), at the recipe's size and the book's: step time, page faults, system time, peak memory, each
  in a fresh process.
- compile: training steps of the Pets model as it is and under ``torch.compile``, alternating in one process
  (``native`` numerics), at the recipe's size (and on a GPU the book's): their ratio with its interval, the first
  compiled step's seconds and the steps that take to repay. No target: it says whether compiling would pay.
- pipeline: the default ``dvc repro`` from nothing (wall time, peak memory of its largest process), then with
  nothing to do, then in a fresh clone of the last commit (the README's main command: the stages it runs).
  Targets: 6 minutes, 4 GB, 3 s.
- fastai: fastai 2.8 as its users run it (benchmarks/fastai_pets.py, in the benchmark-only .venv-fastai; no CPU
  cap) against this project's Pets recipe (benchmarks/pets_recipe.py) with ``compute.numerics`` native and portable,
  on the same presized stand-in, same schedule and thread count, on the CPU, seeds 0-4 (``--seeds``, at least 2):
  each side's error mean and sd, fine_tune seconds. Each run's line is printed as it ends. Targets: at least 5
  seeds; fastai on native's kernels, portable on AVX2's; native's fine_tune at most 0.6x fastai's time; portable's
  at most 1.0x on an AVX-512 host, 0.8x on an AVX2-only one (the limit is recorded); each side's mean error at
  most one standard error of fastai's mean above it. On a GPU the same comparison runs there too (``fastai_cuda``,
  recorded, no target). FASTAI_PYTHON names a Python that has fastai already, instead of .venv-fastai (a
  lent GPU machine: benchmarks/gpu_session.sh); without DVC, the part presizes by running the stages' commands.
- dry_run: the full-size stand-in (7,400 images) presized to 460 and trained at 224 for a bounded number of
  batches, through the same stages, as the README's ``dvc exp run -S ...``: wall time and peak memory. Target: 4 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import chdir
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The environment as the user gave it, before ``import stages`` below capped it: fastai runs in it (uncapped, below),
# as its users run it.
USERS_ENVIRONMENT = dict(os.environ)
sys.path.insert(0, str(ROOT))

# First, as in every stage: the CPU caps and huge pages (stages/core/cpu.py) precede numpy and torch, so each part
# measures the code as the pipeline runs it.
import stages  # noqa: E402, F401, I001
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import yaml  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from stages.core import stats  # noqa: E402
from stages.core.atomic import write_json  # noqa: E402
from stages.core.cpu import PINNED, USERS_OWN  # noqa: E402
from stages.core.devices import Compute  # noqa: E402
from stages.learner.schedule import discriminative_lrs  # noqa: E402
from stages.mnist import recipes as mnist_recipes  # noqa: E402
from stages.mnist.data import Digits  # noqa: E402
from stages.pets import augment, presize  # noqa: E402
from stages.pets.data import OnDevice  # noqa: E402
from stages.pets import standin as pets_standin  # noqa: E402
from stages.pets.learner import pets_learner  # noqa: E402
from tools.project import PROJECT_FILES  # noqa: E402

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
SEEDS = (0, 1, 2, 3, 4)
# The full-size dry run: the README's command, on top of the default run.
DRY_RUN = {
    "pets.standin.images_per_breed": 200,
    "pets.presize": 460,
    "pets_model.size": 224,
    "pets_model.batches_per_epoch": 20,
    "lr_find.num_it": 20,
    "fine_tune.freeze_epochs": 0,
    "fine_tune.epochs": 1,
}


def uncapped(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the pipeline's caps: where a parent process had already imported stages (a notebook, a test),
    the caps are in it, and the user's own values under them (stages/core/cpu.py) come back."""
    if USERS_OWN not in env:
        return env
    own = json.loads(env[USERS_OWN])
    kept = {name: value for name, value in env.items() if name not in PINNED and name != USERS_OWN}
    return kept | {name: value for name, value in own.items() if value is not None}


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def make_project(folder: Path, repository: bool = True) -> Path:
    """A copy of the project's files in ``folder``; with ``repository``, committed to git, as DVC needs it."""
    for name in PROJECT_FILES:
        src, dst = ROOT / name, folder / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    if not repository:
        return folder
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"]):
        subprocess.run(["git", *args], cwd=folder, check=True)
    return folder


# Runs a command and prints the peak memory of its largest descendant, so each measurement is its own.
PEAK = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
)


def measured(command: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, peak memory (MB, the largest process) and output of ``command``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *command], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    wall, output = time.perf_counter() - start, done.stdout.rsplit("\n", 2)
    return wall, round(int(done.stdout.split()[-1]) / 1024), output[0]  # Linux reports KiB


# --- presize -----------------------------------------------------------------------------------------


def presize_benchmark(n_images: int = 240) -> dict:
    size, workers = PARAMS["pets"]["presize"], 2
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        styles = pets_standin.breed_styles(0)
        paths = []
        for i in range(n_images):
            path = Path(tmp) / f"img_{i}.jpg"
            pets_standin.render(styles[i % len(styles)], rng, min_side=375, max_side=500).save(path, "JPEG", quality=90)
            paths.append(path)
        runs = {
            "plain_pil_loop": lambda: [
                np.asarray(ImageOps.fit(Image.open(p).convert("RGB"), (size, size))) for p in paths
            ],
            "stage": lambda: presize.presize_to_file(paths, size, workers=workers, out=Path(tmp) / "out.npy"),
        }
        speed = {}
        for name, run in runs.items():
            run()  # warm the page cache and the worker start-up path alike
            speed[name] = n_images / timed(run)
    return {
        "images": n_images,
        "image_size": "about 500x375 JPEG",
        "presize": size,
        "workers": workers,
        "plain_pil_loop_images_per_s": round(speed["plain_pil_loop"], 1),
        "stage_images_per_s": round(speed["stage"], 1),
        "speedup": round(speed["stage"] / speed["plain_pil_loop"], 2),
    }


# --- augmentation ------------------------------------------------------------------------------------


def per_image_loop(size: int, min_scale: float):
    """The augmentation this project used before: torchvision v2 called once per image (a random resized crop,
    flip, rotation/zoom, perspective warp, colour jitter, each its own resampling), then ImageNet normalisation."""
    one = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.RandomAffine(degrees=10, scale=(1.0, 1.1))], p=0.75),
            v2.RandomPerspective(distortion_scale=0.2, p=0.75),
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.75),
        ]
    )
    norm = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize(augment.IMAGENET_MEAN, augment.IMAGENET_STD)]
    )
    return lambda batch: norm(torch.stack([one(image) for image in batch]))


def augmentation_benchmark(device: torch.device, batches: int = 3, repeats: int = 7) -> dict:
    """Images per second of each, the median of ``repeats`` timings of ``batches`` batches; the two take turns, so a
    slow spell of the machine hits both alike, and the speedup is the median of the ``repeats`` paired ratios (with
    their range)."""
    results = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for presize_px, size in ((460, 224), (96, 64)):
        batch = torch.randint(0, 256, (64, 3, presize_px, presize_px), dtype=torch.uint8, device=device)
        runs = {
            "batched": augment.BatchAugment(augment.AugTransforms(size, 0.75), seed=0, normalize=True),
            "per_image_loop": per_image_loop(size, 0.75),
        }
        for run in runs.values():
            run(batch)  # warm-up
        sync()

        def images_per_s(run) -> float:
            def some_batches() -> None:
                for _ in range(batches):
                    run(batch)
                sync()

            return 64 * batches / timed(some_batches)

        pairs = [(images_per_s(runs["batched"]), images_per_s(runs["per_image_loop"])) for _ in range(repeats)]
        ratios = [ours / loop for ours, loop in pairs]
        results[f"{presize_px}_to_{size}"] = {
            "batched_images_per_s": round(statistics.median(ours for ours, _ in pairs), 1),
            "per_image_loop_images_per_s": round(statistics.median(loop for _, loop in pairs), 1),
            "speedup": round(statistics.median(ratios), 2),
            "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)],
        }
    return {"device": device.type, "batch": 64, "timings": f"{repeats} paired, {batches} batches each", **results}


# --- training ----------------------------------------------------------------------------------------


def _time_epoch(fit_once, n_samples: int) -> float:
    fit_once()  # warm-up: allocator, kernels, worker start
    return round(n_samples / timed(fit_once), 1)


def training_benchmark(device: torch.device, n_mnist: int = 2048, n_pets: int = 512) -> dict:
    results = {}
    compute = Compute(device, mixed=device.type == "cuda")
    digits = Digits(
        torch.rand(n_mnist, 28, 28), torch.arange(n_mnist) % 2, torch.rand(64, 28, 28), torch.arange(64) % 2, ["3", "7"]
    )
    for name in ("linear", "simple_net", "resnet18"):
        if name == "linear" and device.type != "cpu":
            continue  # the lesson's loop runs on the CPU by design
        cfg = {**PARAMS["mnist_models"][name], "epochs": 1}
        results[f"mnist_{name}"] = _time_epoch(
            lambda: mnist_recipes.RECIPES[name](digits, cfg, compute, lambda r: None), n_mnist
        )
    cfg = PARAMS["pets_model"]
    results[f"pets_{cfg['arch']}_{cfg['size']}px_unfrozen"], _ = pets_images_per_s(
        compute, cfg["arch"], presize_px=PARAMS["pets"]["presize"], size=cfg["size"], n_images=n_pets
    )
    return {"device": device.type, "samples_per_s": results}


def pets_images_per_s(compute: Compute, arch: str, *, presize_px: int, size: int, n_images: int) -> tuple[float, bool]:
    """Images/s of one unfrozen Pets epoch of the Learner train_pets builds (``pets_learner``: its loader, or its
    images held on a GPU, and its augmentation), on random images of the presized shape written as presize_pets
    writes them; batch size and min_scale are the recipe's. Also whether that learner held its training images on
    the device (stages/pets/data.py's ``OnDevice``)."""
    cfg = {**PARAMS["pets_model"], "arch": arch, "size": size, "batches_per_epoch": "all", "seed": 0}
    classes = [f"breed{i}" for i in range(37)]
    generator = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data/pets"
        folder.mkdir(parents=True)
        for split, count in (("train", n_images), ("valid", 64)):
            images = np.lib.format.open_memmap(
                folder / f"{split}_images.npy", mode="w+", dtype=np.uint8, shape=(count, presize_px, presize_px, 3)
            )
            for start in range(0, count, 256):  # a part at a time: 4,096 images at 460 px are 2.6 GB
                part = images[start : start + 256]
                part[:] = generator.integers(0, 256, size=part.shape, dtype=np.uint8)
            images.flush()
            del images
            np.save(folder / f"{split}_labels.npy", np.arange(count) % len(classes))
        with chdir(tmp):  # pets_learner reads data/pets, as the stages do
            learn = pets_learner(cfg, False, compute, classes=classes)
        lrs = discriminative_lrs(1e-5, 1e-3, 3)
        images_per_s = _time_epoch(lambda: learn.fit_one_cycle(1, lrs, pct_start=0.3, div=5.0), n_images)
        return images_per_s, isinstance(learn.dls.train.dataset, OnDevice)


def full_size_gpu_benchmark(n_images: int = 4096) -> dict:
    """The full-size stand-in's shapes on the GPU: presized 460, resnet34 at 224, bf16 (compute.precision's default
    there), batches of the recipe's size. Target: 3,000 images/s on one H100/H200."""
    compute = Compute(torch.device("cuda"), mixed=True)
    images_per_s, on_the_gpu = pets_images_per_s(compute, "resnet34", presize_px=460, size=224, n_images=n_images)
    return {
        "setting": f"resnet34, presize 460 -> 224, batch {PARAMS['pets_model']['batch_size']}, bf16, {n_images} images",
        "images_on_the_gpu": on_the_gpu,
        "images_per_s": images_per_s,
    }


# --- start-up: what each stage's process pays before it computes ----------------------------------------

STARTUP_PROBES = {
    "python_and_stages": "import stages",
    "torch": "import stages, torch",
    # torchvision 0.29's ops/roi_align.py imports torch._dynamo.utils at its top, which torch itself imports lazily
    "torch_and_dynamo": "import stages, torch, torch._dynamo",
    "torch_and_torchvision": "import stages, torch, torchvision",
    "training_stage_imports": "import stages, stages.train_pets, stages.pets.learner, stages.learner.learner",
}


def startup_benchmark(repeats: int = 3) -> dict:
    """Seconds of a fresh process that imports what a stage imports, the median of ``repeats``: every computing stage
    (baseline, each train_mnist, lr_find_pets, train_pets, interpret_pets, export_pets) pays it once."""
    seconds = {}
    for name, code in STARTUP_PROBES.items():
        times = [timed(lambda: probe(code)) for _ in range(repeats)]
        seconds[name] = round(statistics.median(times), 2)
    return {"seconds": seconds, "repeats": repeats}


def probe(code: str, env: dict[str, str] | None = None) -> str:
    """Runs ``code`` in a fresh Python (this environment's), from the repository root; its output, or its error."""
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"a benchmark probe failed:\n{done.stderr[-3000:]}")
    return done.stdout


# What every Pets training-step probe below starts from, in a fresh process: numerics set before torch loads, a
# from-scratch model as train_pets builds it on ``device``, its optimiser and augmentation, and one batch of random
# presized images, on the device, as train_pets holds them on a GPU with room. ``step_on(m)`` runs the Learner's own
# ``train_step`` on model ``m`` and returns its seconds.
PETS_STEP_SETUP = """
import json, resource, statistics, sys, time
sys.path.insert(0, {root!r})
from stages.core import cpu
cpu.use_numerics({numerics!r})
import torch
from stages.core.devices import Compute
from stages.learner.learner import train_step
from stages.learner.optimizer import adam, param_groups
from stages.pets import augment, model

device = torch.device({device!r})
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
torch.set_num_threads({threads})
torch.manual_seed(0)
compute = Compute(device, mixed=device.type == "cuda", numerics={numerics!r})
net = compute.prepare(model.build({arch!r}, False, 37))
groups = model.layer_groups(net)
opt = adam(param_groups(groups, [1e-4] * len(groups), 0.01))
augmentation = augment.BatchAugment(augment.AugTransforms({size}, 0.75), seed=0, normalize=True)
images = torch.randint(0, 256, ({batch}, 3, {presize}, {presize}), dtype=torch.uint8, device=device)
labels = torch.randint(0, 37, ({batch},), device=device)

def step_on(m, tfm=augmentation):
    sync()
    start = time.perf_counter()
    train_step(m, images, labels, loss_func=torch.nn.functional.cross_entropy, opt=opt, compute=compute, tfm=tfm)
    sync()
    return time.perf_counter() - start
"""


# --- the caps' cost ----------------------------------------------------------------------------------

CAPS_PROBE = """
import time, torch, torchvision
torch.set_num_threads({threads})
net = torchvision.models.resnet18(num_classes=37).to(memory_format=torch.{layout})
opt = torch.optim.AdamW(net.parameters(), 1e-3)
x, y = torch.rand(64, 3, {size}, {size}).contiguous(memory_format=torch.{layout}), torch.randint(0, 37, (64,))
def step():
    loss = torch.nn.functional.cross_entropy(net(x), y); opt.zero_grad(); loss.backward(); opt.step()
step(); step()
start = time.perf_counter()
for _ in range(5):
    step()
print(5 * 64 / (time.perf_counter() - start), torch.backends.cpu.get_cpu_capability())
"""


def cpu_caps_benchmark() -> dict:
    """Capped (portable), uncapped, and uncapped in channels-last memory (native: both of what it changes)."""
    threads, size = cpu_threads(), PARAMS["pets_model"]["size"]
    free = uncapped(dict(os.environ))
    result = {}
    cases = (
        ("capped", {**free, **PINNED}, "contiguous_format"),
        ("uncapped", free, "contiguous_format"),
        ("native", free, "channels_last"),
    )
    for name, env, layout in cases:
        speed, capability = probe(CAPS_PROBE.format(threads=threads, size=size, layout=layout), env).split()
        result[name] = {"resnet18_images_per_s": round(float(speed), 1), "aten_capability": capability}
    speeds = {name: result[name]["resnet18_images_per_s"] for name, _, _ in cases}
    result["uncapped_over_capped"] = round(speeds["uncapped"] / speeds["capped"], 2)
    result["native_over_capped"] = round(speeds["native"] / speeds["capped"], 2)
    result["setting"] = (
        f"resnet18 training steps, batch 64 at {size} px, {threads} threads; native: uncapped and channels-last"
    )
    return result


# --- allocation: freed memory kept or given back ------------------------------------------------------

ALLOCATION_PROBE = (
    PETS_STEP_SETUP
    + """
WARM_UP, steps = 3, []
for _ in range(WARM_UP + {steps}):
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = step_on(net)
    after = resource.getrusage(resource.RUSAGE_SELF)
    steps.append((seconds, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime))
steps = steps[WARM_UP:]  # the first steps grow the heap (or the maps) under any setting
print(json.dumps({{
    "step_seconds": [round(s, 3) for s, _, _ in steps],
    "step_seconds_median": round(statistics.median(s for s, _, _ in steps), 3),
    "page_faults_per_step": round(statistics.mean(f for _, f, _ in steps)),
    "system_seconds_per_step": round(statistics.mean(t for _, _, t in steps), 3),
    "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
}}))
"""
)

# glibc's own behaviour, which the stages keep, and every block kept for reuse (docs/operations.md's setting for CPU
# training at the book's size: faster, at more memory).
ALLOCATION_SETTINGS = {
    "glibc_default": {},
    "every_block_kept": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4294967295"},
}


def allocation_benchmark() -> dict:
    """Pets training steps (portable) under each of ALLOCATION_SETTINGS, each in a fresh process: the step's median
    time, its page faults and system time, the process's peak memory; at the recipe's size and at the book's."""
    cfg, threads = PARAMS["pets_model"], cpu_threads()
    shapes = [(cfg["arch"], PARAMS["pets"]["presize"], cfg["size"], 10), ("resnet34", 460, 224, 5)]  # and steps
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    result = {"setting": f"training steps of batch 64, {threads} threads, after 3 steps; each setting a process"}
    for arch, presize_px, size, steps in shapes:
        shape = f"{arch}_{presize_px}_to_{size}"
        code = ALLOCATION_PROBE.format(
            root=str(ROOT),
            numerics="portable",
            device="cpu",
            threads=threads,
            arch=arch,
            presize=presize_px,
            size=size,
            batch=64,
            steps=steps,
        )
        result[shape] = {name: json.loads(probe(code, {**clean, **env})) for name, env in ALLOCATION_SETTINGS.items()}
        print(f"  allocation part: {shape}: {result[shape]}", file=sys.stderr, flush=True)
    return result


# --- the pipeline ------------------------------------------------------------------------------------


def pipeline_benchmark(project: Path) -> dict:
    """``dvc repro`` from nothing (every stage runs), then with nothing to do; then the README's main command in a
    fresh clone of this repository's last commit, which has dvc.lock and the metrics: there DVC skips the stages whose
    only outputs are those committed files (lr_find_pets among them) once it finds their inputs rebuilt
    byte-identical."""
    wall, peak, _ = measured(["dvc", "repro"], project)
    noop = [timed(lambda: subprocess.run(["dvc", "repro", "-q"], cwd=project, check=True)) for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        clone_wall, clone_peak, log = measured(["dvc", "repro"], clone)
        clean = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    ran = [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]
    return {
        "from_scratch_seconds": round(wall, 1),
        "peak_memory_mb": peak,
        "noop_repro_seconds": round(statistics.median(noop), 2),
        "fresh_clone": {
            "seconds": round(clone_wall, 1),
            "peak_memory_mb": clone_peak,
            "stages_run": ran,
            "git_status_clean": clean == "",
        },
    }


# --- against fastai ----------------------------------------------------------------------------------

# The three sides of the comparison: fastai as its users run it (no cap: every kernel the CPU has), this project with
# compute.numerics native (no cap either) and portable (the default: every kernel capped at AVX2).
SIDES = ("fastai", "native", "portable")


def side_summary(results: list[dict]) -> dict:
    errors, seconds = [r["error_rate"] for r in results], [r["train_seconds"] for r in results]
    return {
        "error_rate_mean": round(statistics.mean(errors), 4),
        "error_rate_sd": round(statistics.stdev(errors), 4),
        "train_seconds_mean": round(statistics.mean(seconds), 1),
        "train_seconds_sd": round(statistics.stdev(seconds), 1),
        "lr_find_seconds_mean": round(statistics.mean(r["lr_find_seconds"] for r in results), 1),
        "runs": results,
    }


def ratio_interval(ours: list[float], theirs: list[float], level: float = 0.95) -> tuple[float, float]:
    """The interval of ``mean(ours) / mean(theirs)`` across runs: Welch's t on the ratio's logarithm, whose variance is
    the sum of each mean's squared relative standard error (the delta method), so the interval is never below zero
    and a ratio and its inverse get mirrored intervals."""
    ratio = statistics.fmean(ours) / statistics.fmean(theirs)
    parts = [
        (statistics.variance(runs) / len(runs) / statistics.fmean(runs) ** 2, len(runs) - 1) for runs in (ours, theirs)
    ]
    low, high = stats.welch_interval(0.0, parts, level)  # about the ratio's logarithm
    return ratio * math.exp(low), ratio * math.exp(high)


def against(ours: dict, theirs: dict) -> dict:
    """``ours`` against ``theirs`` (two side summaries over the same seeds): the time ratio and its 95% interval
    across seeds (``ratio_interval``); the error difference; the standard error of ``theirs``'s mean (the issue's
    yardstick: ours within one of it); the standard error of the difference (Welch), how far apart two such means fall
    by the seed alone; and the difference's 95% interval across seeds (``stats.seed_groups``, as the compare stage
    reads two recipes' seeds): an interval that excludes zero says one side's error is higher."""
    errors = {
        side: [run["error_rate"] for run in summary["runs"]] for side, summary in (("ours", ours), ("theirs", theirs))
    }
    squared_se = {side: statistics.variance(values) / len(values) for side, values in errors.items()}
    low, high = stats.seed_groups(errors["theirs"], errors["ours"]).interval()
    seconds = [[run["train_seconds"] for run in summary["runs"]] for summary in (ours, theirs)]
    return {
        "time_ratio": round(ours["train_seconds_mean"] / theirs["train_seconds_mean"], 2),
        "time_ratio_95_interval": [round(bound, 3) for bound in ratio_interval(*seconds)],
        "error_difference_points": round(
            100 * (statistics.mean(errors["ours"]) - statistics.mean(errors["theirs"])), 2
        ),
        "their_error_se_points": round(100 * squared_se["theirs"] ** 0.5, 2),
        "error_difference_se_points": round(100 * (squared_se["ours"] + squared_se["theirs"]) ** 0.5, 2),
        "error_difference_95_interval_points": [round(100 * low, 2), round(100 * high, 2)],
    }


def fastai_targets(fastai: dict, n_seeds: int) -> dict[str, bool]:
    """The issue's targets on the CPU comparison: time ratios, each error within one standard error of fastai's mean
    (above it; below is better), every side on the kernels it claims, and enough seeds for a spread."""
    native, portable = fastai["native_against_fastai"], fastai["portable_against_fastai"]
    capabilities = fastai["cpu_capabilities"]
    # Ratios of the mean times, not the two-decimal time_ratio: 1.004x must not pass a 1.0x limit.
    ratio = {
        side: fastai[side]["train_seconds_mean"] / fastai["fastai"]["train_seconds_mean"]
        for side in ("native", "portable")
    }
    return {
        "fastai_at_least_5_seeds": n_seeds >= 5,
        "fastai_uncapped_and_portable_capped": capabilities["fastai"] == capabilities["native"]
        and capabilities["portable"] == ["AVX2"],
        "native_time_at_most_0_6x_fastai": ratio["native"] <= 0.6,
        "native_error_within_1_se_of_fastai": native["error_difference_points"] <= native["their_error_se_points"],
        "portable_time_within_its_limit_of_fastai": ratio["portable"] <= fastai["portable_time_limit"],
        "portable_error_within_1_se_of_fastai": portable["error_difference_points"]
        <= portable["their_error_se_points"],
    }


def committed_lr() -> float:
    """The base lr the committed lr_find_pets chose (metrics/pets/lr_find/suggestions.json)."""
    return float(json.loads((ROOT / "metrics/pets/lr_find/suggestions.json").read_text())["chosen"]["lr"])


# presize_pets and every stage upstream of it, in an order that runs each after what it reads
PRESIZE_CHAIN = ("check_params", "fetch_pets", "presize_pets")


def presize_pets(project: Path) -> None:
    """The presized Pets in ``project``: ``dvc repro presize_pets`` where DVC is installed, else the commands of that
    stage and of the stages before it, as dvc.yaml gives them, in its order (the same code, run without the cache)."""
    if shutil.which("dvc"):
        subprocess.run(["dvc", "repro", "-q", "presize_pets"], cwd=project, check=True)
        return
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    for name in PRESIZE_CHAIN:
        program, *arguments = pipeline[name]["cmd"].split()
        if program != "python":
            raise RuntimeError(f"dvc.yaml: {name}'s cmd is not a python command: {pipeline[name]['cmd']}")
        subprocess.run([sys.executable, *arguments], cwd=project, check=True)


def fastai_benchmark(project: Path, seeds: list[int], fixed_lr: bool, device: str, keep=lambda runs: None) -> dict:
    """Each seed trains all three sides on ``device``, in an order that rotates with the seed, so neither a slow spell
    of the machine nor going first favours one side (each run records its place). Every side gets the project's
    thread count; the project loads batches as its stages do, fastai with its default loader workers, one per core.
    ``keep`` is given the runs so far after each one."""
    presize_pets(project)
    # FASTAI_PYTHON: a Python that already has fastai (a lent GPU machine, which cannot build .venv-fastai offline)
    fastai_python = (
        os.environ.get("FASTAI_PYTHON")
        or (
            subprocess.run([str(ROOT / "benchmarks/fastai_env.sh")], check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
    )
    cfg, schedule, threads = PARAMS["pets_model"], PARAMS["fine_tune"], cpu_threads()
    fastai_command = [
        fastai_python,
        str(ROOT / "benchmarks/fastai_pets.py"),
        "--data",
        str(project / "data/pets"),
        "--size",
        str(cfg["size"]),
        "--min-scale",
        str(cfg["min_scale"]),
        "--batch-size",
        str(cfg["batch_size"]),
        "--epochs",
        str(schedule["epochs"]),
        "--freeze-epochs",
        str(schedule["freeze_epochs"]),
        "--threads",
        str(threads),
        "--workers",
        str(min(16, os.cpu_count() or 1)),  # fastai's default: defaults.cpus
        "--device",
        device,
    ]
    commands = {
        "fastai": (fastai_command, uncapped(USERS_ENVIRONMENT)),
        **{
            numerics: (
                [sys.executable, str(ROOT / "benchmarks/pets_recipe.py"), "--project", str(project)]
                + ["--numerics", numerics, "--device", device],
                dict(os.environ),
            )
            for numerics in ("native", "portable")
        },
    }
    # --fixed-lr: every side fine-tunes at the lr the committed lr_find chose, and skips its own lr_find (on a slow
    # CPU that is a third of the part's time; the fine_tune comparison is the same)
    lr = ["--lr", str(committed_lr())] if fixed_lr else []
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for i, seed in enumerate(seeds):
        for place, side in enumerate(SIDES[i % len(SIDES) :] + SIDES[: i % len(SIDES)]):
            command, env = commands[side]
            # cwd: fastai's lr_find saves a temporary model under ./models; keep it in the throwaway project
            done = subprocess.run(
                [*command, "--seed", str(seed), *lr], env=env, cwd=project, capture_output=True, text=True
            )
            if done.returncode:
                raise RuntimeError(f"{side} seed {seed} failed:\n{done.stderr[-3000:]}")
            runs[side].append({**json.loads(done.stdout.strip().splitlines()[-1]), "place": place + 1})
            print(f"  fastai part: {side} seed {seed}: {runs[side][-1]}", file=sys.stderr, flush=True)
            keep(runs)
    summaries = {side: side_summary(runs[side]) for side in SIDES}
    base_lr = (
        f"lr {lr[1]} (the committed lr_find's, --fixed-lr)"
        if fixed_lr
        else f"lr_find {PARAMS['lr_find']['suggestion']}"
    )
    return {
        "recipe": f"{cfg['arch']} from scratch, {base_lr}, fine_tune({schedule['epochs']}, "
        f"freeze_epochs={schedule['freeze_epochs']}), size {cfg['size']}, min_scale {cfg['min_scale']}, "
        f"batch {cfg['batch_size']}, seeds {seeds}, {threads} threads; fastai uncapped, as its users run it",
        "device": device,
        # fastai must have run with the kernels native ran with (no cap), portable with AVX2's
        "cpu_capabilities": {side: sorted({run["cpu_capability"] for run in runs[side]}) for side in SIDES},
        **summaries,
        "native_against_fastai": against(summaries["native"], summaries["fastai"]),
        "portable_against_fastai": against(summaries["portable"], summaries["fastai"]),
    }


# --- the augmentation's share of a training step ---------------------------------------------------------------

SHARE_PROBE = (
    PETS_STEP_SETUP
    + """
spent = []

def timed_augmentation(batch):
    sync()
    start = time.perf_counter()
    out = augmentation(batch)
    sync()
    spent.append(time.perf_counter() - start)
    return out

step_on(net, timed_augmentation)  # warm-up: kernels, allocator
spent.clear()
total = sum(step_on(net, timed_augmentation) for _ in range({steps}))
print(json.dumps({{"step_seconds": total / {steps}, "augmentation_seconds": sum(spent) / {steps},
                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}}))
"""
)


def augmentation_share_benchmark(device: str, steps: int) -> dict:
    """The book's size: presized 460, augmented to 224 for resnet34, batches of 64. Each numerics in its own process;
    the augmentation is timed inside each training step, so it sees the caches a step leaves. On a GPU the timing
    synchronises around the augmentation, which takes away its overlap with the step: the share is an upper bound
    there, over at least 20 steps (the first ones tune cuDNN)."""
    settings = {"arch": "resnet34", "presize": 460, "size": 224, "batch": 64}
    steps = steps if device == "cpu" else max(steps, 20)
    threads = cpu_threads()
    result: dict = {"device": device, **settings, "steps": steps}
    for numerics in ("portable", "native") if device == "cpu" else ("portable",):
        code = SHARE_PROBE.format(
            root=str(ROOT), numerics=numerics, device=device, threads=threads, steps=steps, **settings
        )
        timing = json.loads(probe(code).strip().splitlines()[-1])
        result[numerics if device == "cpu" else device] = {
            "step_seconds": round(timing["step_seconds"], 3),
            "augmentation_seconds": round(timing["augmentation_seconds"], 4),
            "augmentation_share": round(timing["augmentation_seconds"] / timing["step_seconds"], 4),
            "cpu_capability": timing["cpu_capability"],
        }
    return result


# --- torch.compile: whether it pays for training -------------------------------------------------------------

COMPILE_PROBE = (
    PETS_STEP_SETUP
    + """
compiled = torch.compile(net)  # the same module, so both step the same weights
step_on(net)  # the process's own first-step costs (kernels, allocator), which are not compiling's
first = step_on(compiled)  # tracing, compiling and the step
for _ in range(2):
    step_on(net), step_on(compiled)
eager, fused = [], []
for i in range({pairs}):  # alternating which goes first, so drift and caches fall on both
    order = [(net, eager), (compiled, fused)][:: 1 if i % 2 == 0 else -1]
    for m, seconds in order:
        seconds.append(step_on(m))
print(json.dumps({{"first_compiled_step_seconds": first, "eager": eager, "compiled": fused,
                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}}))
"""
)


def compile_benchmark(device: str, pairs: int = 20) -> dict:
    """Training steps of the Pets learner's model as it is and wrapped in ``torch.compile`` (inductor), alternating in
    one process, under ``native`` numerics (compiled kernels are the machine's own), with an empty compile cache as
    on a user's first run. fine_tune pays the first step's cost more than once (the frozen and unfrozen phases and
    evaluation trace their own graphs), so compiling pays only where ``break_even_steps``, per graph, is well below
    the steps of a run. The recipe's size, and on a GPU also the book's."""
    cfg = PARAMS["pets_model"]
    shapes = [(cfg["arch"], PARAMS["pets"]["presize"], cfg["size"])]
    if device == "cuda":
        shapes.append(("resnet34", 460, 224))
    result: dict = {"device": device, "setting": f"batch 64, {pairs} alternating pairs, {cpu_threads()} threads"}
    for arch, presize_px, size in shapes:
        code = COMPILE_PROBE.format(
            root=str(ROOT),
            numerics="native",
            device=device,
            threads=cpu_threads(),
            arch=arch,
            presize=presize_px,
            size=size,
            batch=64,
            pairs=pairs,
        )
        with tempfile.TemporaryDirectory() as cache:
            cold = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": f"{cache}/triton"}
            timing = json.loads(probe(code, cold).strip().splitlines()[-1])
        shape = f"{arch}_{presize_px}_to_{size}"
        result[shape] = compile_summary(timing)
        print(f"  compile part: {shape}: {result[shape]}", file=sys.stderr, flush=True)
    return result


def compile_summary(timing: dict) -> dict:
    """Mean step seconds of each side, their ratio and its 95% interval, and the steps whose saving repays the first
    compiled step: None unless the whole interval lies below 1 (a saving the run cannot tell from none repays
    nothing)."""
    eager, compiled = statistics.fmean(timing["eager"]), statistics.fmean(timing["compiled"])
    first = timing["first_compiled_step_seconds"]
    low, high = ratio_interval(timing["compiled"], timing["eager"])
    return {
        "eager_step_seconds": round(eager, 4),
        "compiled_step_seconds": round(compiled, 4),
        "compiled_over_eager": round(compiled / eager, 3),
        "compiled_over_eager_95_interval": [round(low, 3), round(high, 3)],
        "first_compiled_step_seconds": round(first, 1),
        # rounded before the ceiling, so that 10.0 s over 0.1 s a step is 100 steps, not 101 by a float's last bit
        "break_even_steps": math.ceil(round((first - compiled) / (eager - compiled), 6)) if high < 1 else None,
        "cpu_capability": timing["cpu_capability"],
    }


# --- the full-size dry run ---------------------------------------------------------------------------


def dry_run_benchmark(project: Path) -> dict:
    """After the default run in ``project``: the README's full-size dry run as ``dvc exp run``."""
    settings = [arg for key, value in DRY_RUN.items() for arg in ("-S", f"{key}={value}")]
    wall, peak, _ = measured(["dvc", "exp", "run", "-q", *settings], project)
    summary = json.loads((project / "metrics/data/pets.json").read_text())
    pets = json.loads((project / "metrics/pets/train/metrics.json").read_text())
    return {
        "settings": DRY_RUN,
        "command": "dvc exp run " + " ".join(settings),
        "seconds": round(wall, 1),
        "peak_memory_mb": peak,
        "images": summary["splits"],
        "error_rate": pets["error_rate"],
    }


def cpu_threads() -> int:
    """``compute.cpu_threads`` as a number (``auto``: one per core, as torch chooses)."""
    threads = PARAMS["compute"]["cpu_threads"]
    return torch.get_num_threads() if threads == "auto" else threads


def cpu_description() -> str:
    """The CPU's model name, its widest vector instructions as the OS shows them, and its family and model
    (/proc/cpuinfo on Linux): two machines of one model name can differ in what their hypervisor exposes, and speed
    follows that."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    widths = (("avx512f", "AVX-512"), ("avx2", "AVX2"))
    widest = next((name for flag, name in widths if flag in flags), "no AVX2")
    # a model name such as "AMD EPYC" covers several generations; the family and model tell them apart
    generation = f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields else ""
    amx = ", AMX" if "amx_tile" in flags else ""
    return f"{fields.get('model name', platform.machine())}, {widest}{amx}{generation}"


def selected_devices(choice: str, cuda_available: bool) -> list[torch.device]:
    """The devices ``--device`` names: ``all`` is the CPU, and CUDA where torch sees it."""
    if choice == "cuda" and not cuda_available:
        raise ValueError("--device cuda: torch sees no CUDA device on this machine")
    available = [torch.device("cpu")] + ([torch.device("cuda")] if cuda_available else [])
    return [device for device in available if choice in ("all", device.type)]


def main() -> None:
    parts = (
        "presize",
        "augmentation",
        "augmentation_share",
        "training",
        "startup",
        "cpu_caps",
        "allocation",
        "compile",
        "pipeline",
        "fastai",
        "dry_run",
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=parts, default=list(parts))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="the fastai part's seeds")
    parser.add_argument(
        "--fixed-lr", action="store_true", help="the fastai part: every side at the committed lr_find's lr"
    )
    parser.add_argument("--steps", type=int, default=3, help="the augmentation_share part's timed training steps")
    parser.add_argument(
        "--device",
        choices=("all", "cpu", "cuda"),
        default="all",
        help="where the parts that run per device run: all (the CPU, and CUDA where there is one), or one of them",
    )
    args = parser.parse_args()
    # A stop (timeout, a lease's end) raises here, and subprocess.run kills the probe it waits on, as it does on Ctrl-C:
    # no probe outlives the run to hold the cores or the GPU that the next measurement times.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        devices = selected_devices(args.device, torch.cuda.is_available())
    except ValueError as exc:
        parser.error(str(exc))
    if "fastai" in args.only and len(args.seeds) < 2:
        parser.error("--seeds: the fastai part needs at least 2 (a spread over seeds)")
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_description(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        }
    }
    on = {device.type for device in devices}
    # A run without a GPU cannot measure the GPU's target: it is named, as not run (null), rather than left out.
    targets: dict = {} if "cuda" in on else {"full_size_gpu_at_least_3000_images_per_s": None}

    def save() -> None:
        """After every part, so that a run stopped early (a lent GPU's time running out) keeps what it measured."""
        write_json(args.out, {**results, "targets_met": targets})

    if "presize" in args.only:
        results["presize"] = presize_benchmark()
        targets["presize_at_least_2x"] = results["presize"]["speedup"] >= 2
        save()
    if "augmentation" in args.only:
        results["augmentation"] = [augmentation_benchmark(device) for device in devices]
        if "cpu" in on:  # the target is the CPU's
            cpu_figures = results["augmentation"][0]["460_to_224"]
            targets["augmentation_at_least_5x_at_460_to_224"] = cpu_figures["speedup"] >= 5
        save()
    if "augmentation_share" in args.only:
        results["augmentation_share"] = [augmentation_share_benchmark(device.type, args.steps) for device in devices]
        for share in results["augmentation_share"]:
            for name, timing in share.items():
                if isinstance(timing, dict):
                    targets[f"augmentation_at_most_5_percent_of_a_step_{name}"] = timing["augmentation_share"] <= 0.05
        save()
    if "training" in args.only:
        results["training"] = [
            training_benchmark(device)
            if device.type == "cpu"
            else training_benchmark(device, n_mnist=16384, n_pets=4096)
            for device in devices
        ]
        save()
        if "cuda" in on:
            results["full_size_gpu"] = full_size_gpu_benchmark()
            targets["full_size_gpu_at_least_3000_images_per_s"] = results["full_size_gpu"]["images_per_s"] >= 3000
        save()
    if "startup" in args.only:
        results["startup"] = startup_benchmark()
        save()
    if "cpu_caps" in args.only:
        results["cpu_caps"] = cpu_caps_benchmark()
        save()
    if "allocation" in args.only:
        results["allocation"] = allocation_benchmark()
        save()
    if "compile" in args.only:
        results["compile"] = []
        for device in devices:
            results["compile"].append(compile_benchmark(device.type))
            save()
    with tempfile.TemporaryDirectory() as tmp:
        # the parts that run the pipeline need a project, and DVC needs it in git; fastai's part presizes without DVC
        # where there is none (a lent GPU machine, which may have no git either)
        pipeline_parts = {"pipeline", "fastai", "dry_run"} & set(args.only)
        repository = pipeline_parts != {"fastai"} or shutil.which("dvc") is not None
        project = make_project(Path(tmp) / "project", repository) if pipeline_parts else None
        if "pipeline" in args.only:
            results["pipeline"] = pipeline_benchmark(project)
            targets |= {
                "pipeline_at_most_6_minutes": results["pipeline"]["from_scratch_seconds"] <= 360,
                "fresh_clone_repro_at_most_6_minutes": results["pipeline"]["fresh_clone"]["seconds"] <= 360,
                "pipeline_at_most_4_gb": results["pipeline"]["peak_memory_mb"] <= 4096,
                "noop_repro_under_3_s": results["pipeline"]["noop_repro_seconds"] < 3,
            }
            save()

        def keep_runs(key: str):
            """Each run of the fastai part saved as it ends, under ``<key>_unfinished`` until the part is done."""

            def keep(runs: dict) -> None:
                results[f"{key}_unfinished"] = runs
                save()

            return keep

        if "fastai" in args.only and "cpu" in on:
            results["fastai"] = fastai = fastai_benchmark(
                project, args.seeds, args.fixed_lr, "cpu", keep_runs("fastai")
            )
            del results["fastai_unfinished"]
            # portable runs capped at AVX2 against fastai's widest kernels: on an AVX-512 host that is a handicap
            fastai["portable_time_limit"] = 1.0 if "AVX-512" in results["machine"]["cpu"] else 0.8
            targets |= fastai_targets(fastai, len(args.seeds))
            save()
        if "fastai" in args.only and "cuda" in on:  # the same comparison on the GPU, recorded: no target there
            results["fastai_cuda"] = fastai_benchmark(
                project, args.seeds, args.fixed_lr, "cuda", keep_runs("fastai_cuda")
            )
            del results["fastai_cuda_unfinished"]
            save()
        if "dry_run" in args.only:
            subprocess.run(["dvc", "repro", "-q"], cwd=project, check=True)  # the default run first, if not done
            results["dry_run"] = dry_run_benchmark(project)
            targets["dry_run_at_most_4_gb"] = results["dry_run"]["peak_memory_mb"] <= 4096
    save()
    print(json.dumps({**results, "targets_met": targets}, indent=2))


if __name__ == "__main__":
    main()
