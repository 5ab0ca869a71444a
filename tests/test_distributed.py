"""Training on several processes with torchrun and DistributedDataParallel, here two CPU processes over gloo: the same
global batch split in two, outputs written once, by rank 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import easy_pets
import numpy as np
import pytest
import torch
import yaml
from conftest import run_stage, set_params

from stages.core.devices import Compute
from stages.core.stage import UserError
from stages.learner import distributed


def one_cpu_process(project, model_folder: str, metrics: str, *module: str) -> dict:
    """The one-process run's metrics on the CPU, as the two processes below compute: the built project's, unless a
    GPU trained it (two processes there would need two GPUs), then a rerun with ``compute.device: cpu``."""
    set_params(project / "params.yaml", {"compute.device": "cpu"})
    if json.loads((project / model_folder / "run_info.json").read_text())["device"] != "cpu":
        result = run_stage(project, *module)
        assert result.returncode == 0, result.stderr
    return json.loads((project / metrics).read_text())


def torchrun(project, *module: str) -> subprocess.CompletedProcess:
    launcher = shutil.which("torchrun")
    assert launcher, "torchrun comes with torch"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [launcher, "--standalone", "--nproc_per_node", "2", "-m", *module],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def train_pets_on_two_processes(project) -> dict:
    """torchrun train_pets on two CPU processes, checked for what any data shows: every validation image evaluated
    once, the schedule's epochs, and each output written once, by rank 0. Returns its metrics."""
    set_params(project / "params.yaml", {"compute.device": "cpu"})
    result = torchrun(project, "stages.train_pets")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = json.loads((project / "metrics/pets/train/metrics.json").read_text())
    valid_images = len(np.load(project / "data/pets/valid_labels.npy"))
    fine_tune = yaml.safe_load((project / "params.yaml").read_text())["fine_tune"]
    # every validation image, none twice (rank 0 does not see only its shard); the frozen and unfrozen epochs
    assert (metrics["images"], metrics["step"]) == (valid_images, fine_tune["freeze_epochs"] + fine_tune["epochs"])
    info = json.loads((project / "data/models/pets/run_info.json").read_text())
    assert info["processes"] == 2
    # written once: one epoch line per epoch (rank 0's), no leftovers of a second writer
    assert result.stdout.count("unfrozen epoch 1:") == 1
    assert not list(project.glob("metrics/pets/.*tmp*")) and not list(project.glob("data/models/.*tmp*"))
    assert not (project / "dvclive").exists()
    return metrics


def test_two_processes_train_pets_over_every_validation_image_and_write_once(clone):
    """On the tiny build's data, which trains near chance: what two processes must do whatever they learn. That they
    learn as one process does is test_learnability's torchrun test (one step on two processes equals one on the whole
    batch, exactly) and, over whole epochs, the slow test below."""
    train_pets_on_two_processes(clone)


@pytest.mark.slow  # about 65 s of CPU and two minutes of a 2-core machine: the two processes step in lockstep
def test_two_processes_train_pets_learn_the_easy_set(clone):
    """On the constructed easy set, where a working recipe gets nearly every image right: two processes, each
    stepping on half of every batch, end far below chance, as the same recipe does in one process
    (tests/test_learnability.py)."""
    easy_pets.write(clone / "data/pets")
    set_params(clone / "params.yaml", {"fine_tune.epochs": 4, "fine_tune.base_lr": 0.01})
    metrics = train_pets_on_two_processes(clone)
    assert metrics["error_rate"] <= 0.1 < easy_pets.CHANCE_ERROR, metrics


@pytest.mark.slow  # a minute on 2 cores; the Pets cases above run the same DistributedDataParallel path
def test_two_processes_train_the_mnist_resnet_within_the_one_process_interval(clone):
    # 200 validation digits at about 90% accuracy: a much tighter interval than the tiny Pets set gives.
    single = one_cpu_process(
        clone, "data/models/mnist/resnet18", "metrics/mnist/resnet18/metrics.json", "stages.train_mnist", "resnet18"
    )
    result = torchrun(clone, "stages.train_mnist", "resnet18")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    double = json.loads((clone / "metrics/mnist/resnet18/metrics.json").read_text())
    assert single["accuracy_low"] <= double["accuracy"] <= single["accuracy_high"], (single, double)
    assert json.loads((clone / "data/models/mnist/resnet18/run_info.json").read_text())["processes"] == 2


def test_a_stage_that_is_not_distributed_refuses_torchrun_in_one_line(built):
    # WORLD_SIZE is what torchrun sets in each process it starts, and what the refusal reads.
    result = subprocess.run(
        [sys.executable, "-m", "stages.interpret_pets"],
        cwd=built,
        capture_output=True,
        text=True,
        env={**os.environ, "WORLD_SIZE": "2"},
    )
    assert result.returncode != 0
    assert "error: python -m stages.interpret_pets runs in one process; torchrun is for train_pets" in result.stderr


def test_more_processes_than_gpus_is_one_clear_error_in_every_process(monkeypatch):
    # torchrun's variables for the second of two processes on a machine with one GPU: without the check, this one
    # failed inside CUDA (invalid device ordinal) while the first waited for it.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for rank in ("0", "1"):
        for name, value in {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": "2"}.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(UserError, match=r"torchrun: 2 processes on a machine with 1 GPU\(s\)"):
            with distributed.process_group(Compute(torch.device("cuda"), mixed=True)):
                pass
