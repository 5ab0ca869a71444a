"""End to end: real ``dvc repro`` in a temporary git repo holding a copy of the project, on tiny params.

What ran is read from DVC itself (the stages ``Repo.reproduce`` returns, and ``dvc status``), never from logs.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import chdir

import pytest
import torch
from conftest import copy_project, git, set_params
from dvc.repo import Repo

MODELS = {"train_mnist@linear", "train_mnist@simple_net", "train_mnist@resnet18"}
PETS_TRAINING = {"lr_find_pets", "train_pets", "interpret_pets"}
ALL_STAGES = {"fetch_mnist", "fetch_pets", "prepare_mnist", "presize_pets", "baseline", "report"} | MODELS | PETS_TRAINING
MNIST_CHAIN = {"prepare_mnist", "baseline"} | MODELS
PETS_CHAIN = {"presize_pets"} | PETS_TRAINING


def repro(project, *targets: str, **options) -> set[str]:
    with chdir(project), Repo(".") as repo:  # DVC resolves some paths against the working directory
        return {stage.addressing for stage in repo.reproduce(*targets, **options)}


def changed_stages(project) -> set[str]:
    with chdir(project), Repo(".") as repo:
        return set(repo.status())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One project built once and committed (dvc.lock, metrics), as a user's main branch would be."""
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    ran = repro(project)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "built")
    return project, ran


@pytest.fixture
def clean(built):
    """The built project; afterwards, back to the built commit the DVC way: git for params, dvc.lock and
    metrics, ``dvc checkout`` for data from the cache. Nothing is recomputed."""
    project, _ = built
    yield project
    git(project, "reset", "-q", "--hard")
    git(project, "clean", "-qfd")
    with chdir(project), Repo(".") as repo:
        repo.checkout(force=True)


def test_first_repro_runs_every_stage_and_writes_outputs(built):
    project, ran = built
    assert ran == ALL_STAGES
    assert (project / "data/mnist/train.npz").is_file() and (project / "data/pets/train_images.npy").is_file()
    baseline = json.loads((project / "metrics/baseline/metrics.json").read_text())
    assert baseline["l1"]["accuracy"] > 0.85 and set(baseline["l1"]["per_class"]) == {"3", "7"}
    pets = json.loads((project / "metrics/data/pets.json").read_text())
    assert pets["classes"] == 37 and pets["skipped_total"] == 1
    for png in ("confusion_l1.png", "confusion_l2.png", "mean_images.png"):
        assert (project / "metrics/baseline" / png).stat().st_size > 1000


def test_second_repro_runs_nothing(clean):
    assert changed_stages(clean) == set()
    assert repro(clean) == set()


def test_metrics_and_plots_are_declared_for_dvc(clean):
    shown = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=clean, capture_output=True, text=True, check=True)
    assert "metrics/baseline/metrics.json" in shown.stdout
    plots = subprocess.run(["dvc", "plots", "show", "--json"], cwd=clean, capture_output=True, text=True, check=True)
    rendered = json.loads(plots.stdout)["data"]
    assert {"baseline_confusion_l1", "baseline_confusion_l2", "metrics/baseline/mean_images.png"} <= set(rendered)


@pytest.mark.parametrize(
    ("change", "flagged", "reran"),
    [
        ({"baseline.distances": ["l1"]}, {"baseline"}, {"baseline"}),
        ({"pets.presize": 20}, {"presize_pets"}, PETS_CHAIN),
        ({"pets.valid_pct": 0.25}, {"presize_pets"}, PETS_CHAIN),
        ({"fine_tune.epochs": 2}, {"train_pets"}, {"train_pets", "interpret_pets"}),
        ({"pets_model.size": 20}, {"lr_find_pets", "train_pets"}, PETS_TRAINING),
        ({"interpret.min_val": 1}, {"interpret_pets"}, {"interpret_pets"}),
        ({"mnist.seed": 1}, {"prepare_mnist"}, MNIST_CHAIN),
        ({"unrelated_new_key": {"anything": 1}}, set(), set()),
        ({"pets.standin.seed": 8}, {"fetch_pets"}, {"fetch_pets"} | PETS_CHAIN),
        ({"mnist_models.linear.lr": 0.5}, {"train_mnist@linear"}, {"train_mnist@linear"}),
        ({"mnist_models.resnet18.epochs": 2}, {"train_mnist@resnet18"}, {"train_mnist@resnet18"}),
        ({"device": "cpu"}, MODELS | PETS_TRAINING, MODELS | PETS_TRAINING),
    ],
    ids=["baseline-key", "pets-presize", "pets-valid-pct", "pets-epochs", "pets-size", "interpret-min-val", "mnist-seed", "unrelated-key",
         "standin-seed", "linear-lr", "resnet18-epochs", "device"],  # fmt: skip
)
def test_a_param_change_reruns_exactly_the_stages_that_read_it(clean, change, flagged, reran):
    """``flagged``: stages whose own params changed (``dvc status``); ``reran``: those plus what their new
    outputs feed, which is what ``dvc repro`` must run and nothing more. ``report`` aggregates metrics, so it
    reruns exactly when a metric file it reads changed content, which depends on the run; it is left aside."""
    set_params(clean / "params.yaml", change)
    assert changed_stages(clean) == flagged
    ran = repro(clean)
    assert ran - {"report"} == reran
    assert ran == set() if not reran else True
    assert changed_stages(clean) == set()


def test_more_than_two_digits_rerun_the_mnist_chain_and_every_model_switches_to_one_output_per_digit(clean):
    set_params(clean / "params.yaml", {"mnist.digits": [1, 3, 7]})
    assert changed_stages(clean) == {"prepare_mnist"}
    assert repro(clean) == MNIST_CHAIN | {"report"}  # and nothing of Pets
    baseline = json.loads((clean / "metrics/baseline/metrics.json").read_text())
    assert set(baseline["l1"]["per_class"]) == {"1", "3", "7"}
    for model in ("linear", "simple_net", "resnet18"):
        metrics = json.loads((clean / f"metrics/mnist/{model}/metrics.json").read_text())
        assert set(metrics["per_class"]) == {"1", "3", "7"}
        assert metrics["accuracy"] > 0.5, model  # three classes: chance is 1/3
    weights = torch.load(clean / "data/models/mnist/linear/model.pt", weights_only=True)
    assert weights["weights"].shape == (784, 3)  # one output per digit


def test_models_write_metrics_curves_confusion_and_weights(built):
    project, _ = built
    for model in ("linear", "simple_net", "resnet18"):
        folder = project / "metrics/mnist" / model
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {"accuracy", "loss", "per_class", "balanced_accuracy"} <= set(metrics)
        epochs = (folder / "plots/metrics/accuracy.tsv").read_text().splitlines()
        assert len(epochs) == 1 + metrics["step"]
        records = json.loads((folder / "plots/sklearn/confusion.json").read_text())
        assert len(records) == 200 and set(records[0]) == {"actual", "predicted"}
        assert (folder / "confusion.png").stat().st_size > 1000
        info = json.loads((project / "data/models/mnist" / model / "run_info.json").read_text())
        assert info["device"] in {"cpu", "cuda", "mps"} and "device" not in metrics
        torch.load(project / "data/models/mnist" / model / "model.pt", weights_only=True)
    linear = json.loads((project / "metrics/mnist/linear/metrics.json").read_text())
    assert linear["accuracy"] > linear["accuracy_before_training"]


def test_a_forced_rerun_reproduces_metrics_and_outputs_exactly_on_cpu(clean):
    lock_before = (clean / "dvc.lock").read_text()
    for model in ("linear", "simple_net", "resnet18"):
        folder = clean / "metrics/mnist" / model
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.suffix != ".png"}
        assert repro(clean, f"train_mnist@{model}", force=True, single_item=True) == {f"train_mnist@{model}"}
        after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.suffix != ".png"}
        assert after == before, model
    # Weights and run info too: dvc.lock records their hashes, so a rerun leaves git clean.
    assert (clean / "dvc.lock").read_text() == lock_before


def test_full_source_without_network_fails_clearly_and_says_how_to_switch(clean):
    set_params(clean / "params.yaml", {"source": "full", "pets.download.mirrors": ["http://127.0.0.1:9/"]})
    result = subprocess.run(["dvc", "repro", "fetch_pets"], cwd=clean, capture_output=True, text=True)
    assert result.returncode != 0
    assert "http://127.0.0.1:9/images.tar.gz" in result.stderr + result.stdout
    assert "source: sample" in result.stderr + result.stdout


def test_pets_stages_write_lr_find_metrics_interpretation_and_weights(built):
    project, _ = built
    found = json.loads((project / "metrics/pets/lr_find/suggestions.json").read_text())
    assert set(found["suggestions"]) == {"valley", "minimum", "steep"} and found["chosen"]["lr"] > 0
    metrics = json.loads((project / "metrics/pets/train/metrics.json").read_text())
    assert {"error_rate", "accuracy", "top5_accuracy", "valid_loss"} <= set(metrics)
    assert metrics["error_rate"] == pytest.approx(1 - metrics["accuracy"], abs=1e-5)
    assert metrics["lr"] == pytest.approx(found["chosen"]["lr"])  # fine_tune.lr: auto took the suggestion
    interpret = project / "metrics/pets/interpret"
    records = json.loads((interpret / "plots/sklearn/confusion.json").read_text())
    assert {r["actual"] for r in records} <= set(json.loads((project / "data/pets/index.json").read_text())["classes"])
    assert (interpret / "most_confused.csv").read_text().startswith("actual,predicted,count")
    for png in ("confusion.png", "top_losses.png"):
        assert (interpret / png).stat().st_size > 5000
    checkpoint = torch.load(project / "data/models/pets/model.pt", weights_only=True)
    assert checkpoint["arch"] == "resnet18" and len(checkpoint["classes"]) == 37
