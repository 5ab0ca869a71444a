"""End to end: real ``dvc repro`` in a temporary git repo holding a copy of the project, on tiny params.

What ran is read from DVC itself (the stages ``Repo.reproduce`` returns, and ``dvc status``), never from logs. The
project is built once per session (``built``); tests that change it work on a ``clone``.
"""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import torch
from conftest import ALL_STAGES, changed_stages, committed_files_changed, dvc, git, repro, set_params, tracked_outputs

MODELS = {"train_mnist@linear", "train_mnist@simple_net", "train_mnist@resnet18"}
PETS_TRAINING = {"lr_find_pets", "train_pets", "interpret_pets"}
MNIST_CHAIN = {"prepare_mnist", "baseline"} | MODELS
PETS_CHAIN = {"presize_pets"} | PETS_TRAINING
CHECK = "check_params"  # reads the whole params.yaml, so every params change reruns it (and only it, upstream)


def test_first_repro_runs_every_stage_and_writes_outputs(first_build):
    project, ran = first_build
    assert ran == ALL_STAGES
    assert (project / "data/mnist/train.npz").is_file() and (project / "data/pets/train_images.npy").is_file()
    baseline = json.loads((project / "metrics/baseline/metrics.json").read_text())
    l1 = baseline["l1"]
    assert l1["accuracy"] > 0.85 and set(l1["per_class"]) == {"3", "7"} and l1["images"] == 200
    assert l1["accuracy_low"] < l1["accuracy"] < l1["accuracy_high"]  # its 95% interval
    predictions = pd.read_csv(project / "metrics/baseline/predictions.csv")
    assert list(predictions.columns) == ["item", "actual", "l1", "l2"] and len(predictions) == 200
    pets = json.loads((project / "metrics/data/pets.json").read_text())
    assert pets["classes"] == 37 and pets["skipped_total"] == 1
    for png in ("confusion_l1.png", "confusion_l2.png", "mean_images.png"):
        assert (project / "metrics/baseline" / png).stat().st_size > 1000
    assert not (project / "dvclive").exists()  # live curves are moved into the outputs when a stage succeeds
    assert not (project / "metrics/pets/interpret/metrics.json").exists()  # no empty dvclive summary


def test_second_repro_runs_nothing(clone):
    assert changed_stages(clone) == set()
    assert repro(clone) == set()


def test_metrics_and_plots_are_declared_for_dvc(built):
    """One declared metrics file, the decision figures, each once; one confusion matrix per model (Vega)."""
    shown = json.loads(dvc(built, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert set(files) == {"metrics/summary.json"}
    summary = files["metrics/summary.json"]["data"]
    assert list(summary)[:4] == ["pets_error_rate", "pets_error_rate_low", "pets_error_rate_high", "pets_top5_accuracy"]
    plots = json.loads(dvc(built, "plots", "show", "--json").stdout)["data"]
    assert {
        "baseline_confusion_l1",
        "pets_confusion",
        "mnist_confusion_resnet18",
        "metrics/baseline/mean_images.png",
    } <= set(plots)
    assert not [name for name in plots if "confusion" in name and name.endswith(".png")]


@pytest.fixture(scope="module")
def status_project(tmp_path_factory, built):
    """One clone for the ``dvc status`` cases: each edits params.yaml, asks DVC, and restores it."""
    import shutil

    project = tmp_path_factory.mktemp("status") / "project"
    shutil.copytree(built, project, symlinks=True)
    return project


@pytest.mark.parametrize(
    ("change", "flagged"),
    [
        ({"baseline.distances": ["l1"]}, {"baseline"}),
        ({"pets.presize": 20}, {"presize_pets"}),
        ({"pets.valid_pct": 0.25}, {"presize_pets"}),
        ({"fine_tune.epochs": 2}, {"train_pets"}),
        ({"pets_model.size": 20}, {"lr_find_pets", "train_pets"}),
        ({"lr_find.num_it": 30}, {"lr_find_pets"}),
        ({"interpret.min_val": 1}, {"interpret_pets"}),
        ({"mnist.seed": 1}, {"prepare_mnist"}),
        ({"mnist.digits": [1, 3, 7]}, {"prepare_mnist"}),
        ({"pets.standin.seed": 8}, {"fetch_pets"}),
        ({"mnist_models.linear.lr": 0.5}, {"train_mnist@linear"}),
        ({"mnist_models.resnet18.epochs": 2}, {"train_mnist@resnet18"}),
        ({"compute.device": "cpu"}, MODELS | PETS_TRAINING),
        ({"compute.cpu_threads": 2}, {"baseline"} | MODELS | PETS_TRAINING),  # the tiny project's is 1
        ({"compute.numerics": "native"}, {"baseline"} | MODELS | PETS_TRAINING),
        ({"source": "full"}, {"fetch_mnist", "fetch_pets", "lr_find_pets", "train_pets", "report"}),
    ],
    ids=[
        "baseline-key",
        "pets-presize",
        "pets-valid-pct",
        "pets-epochs",
        "pets-size",
        "lr-find",
        "interpret-min-val",
        "mnist-seed",
        "mnist-digits",
        "standin-seed",
        "linear-lr",
        "resnet18-epochs",
        "device",
        "cpu-threads",
        "numerics",
        "source",
    ],
)
def test_a_param_change_flags_exactly_the_stages_that_read_it(status_project, change, flagged):
    """The heart of the product: DVC reruns a stage when, and only when, a key it reads changed (and then what
    its new outputs feed, which is DVC's business: the real reruns below check it)."""
    set_params(status_project / "params.yaml", change)
    try:
        assert changed_stages(status_project) == flagged | {CHECK}
    finally:
        git(status_project, "checkout", "--", "params.yaml")


@pytest.mark.parametrize(
    ("change", "reran"),
    [
        ({"baseline.distances": ["l1"]}, {"baseline", "report"}),
        ({"interpret.min_val": 1}, {"interpret_pets", "report"}),
        ({"interpret.top_losses": 4}, {"interpret_pets"}),
        ({"mnist_models.linear.lr": 0.5}, {"train_mnist@linear", "report"}),
    ],
    ids=["baseline-key", "interpret-min-val", "interpret-top-losses", "linear-lr"],
)
def test_a_param_change_reruns_those_stages_and_what_their_outputs_feed(clone, change, reran):
    """``report`` reruns exactly when a file it reads changed content: the baseline's metrics, the linear model's,
    the most-confused table (pairs of one image join it at ``min_val`` 1); fewer top losses change only a plot that
    report does not read, so it stays."""
    set_params(clone / "params.yaml", change)
    ran = repro(clone)
    assert ran == reran | {CHECK}
    assert changed_stages(clone) == set()


MNIST_MODELS = {"train_mnist@linear", "train_mnist@simple_net", "train_mnist@resnet18"}


@pytest.mark.parametrize(
    ("package", "stale"),
    [
        ("pets", {"fetch_pets", "presize_pets", "lr_find_pets", "train_pets", "interpret_pets", "export_pets"}),
        ("mnist", {"fetch_mnist", "prepare_mnist", "baseline"} | MNIST_MODELS),
        ("learner", {"lr_find_pets", "train_pets", "interpret_pets"} | MNIST_MODELS),
    ],
)
def test_editing_a_package_makes_stale_only_the_stages_that_import_it(clone, package, stale):
    """Code deps are exactly the imports, and each stage checks only the params blocks it reads: a new architecture
    in stages/pets/__init__.py leaves chapter 4 up to date, and a new MNIST model leaves chapter 5."""
    init = clone / "stages" / package / "__init__.py"
    init.write_text(init.read_text() + "EDITED = True\n")
    assert changed_stages(clone) == stale | {CHECK}


def test_a_typo_in_params_is_reported_before_any_stage_runs(clone):
    set_params(clone / "params.yaml", {"mnist_models.linear.lr": 0.5, "pets.presise": 20})
    result = dvc(clone, "repro", check=False)
    assert result.returncode != 0
    assert "error: params.yaml: pets.presise: unknown key under 'pets'" in result.stderr
    assert "Running stage 'check_params'" in result.stdout and "train_mnist@linear" not in result.stdout
    assert committed_files_changed(clone) == " M params.yaml\n"


def test_more_than_two_digits_switch_every_model_to_one_output_per_digit(clone):
    set_params(clone / "params.yaml", {"mnist.digits": [1, 3, 7]})
    assert repro(clone, "baseline", "train_mnist@linear") == {CHECK, "prepare_mnist", "baseline", "train_mnist@linear"}
    baseline = json.loads((clone / "metrics/baseline/metrics.json").read_text())
    assert set(baseline["l1"]["per_class"]) == {"1", "3", "7"}
    metrics = json.loads((clone / "metrics/mnist/linear/metrics.json").read_text())
    assert set(metrics["per_class"]) == {"1", "3", "7"} and metrics["accuracy"] > 0.5  # chance is 1/3
    weights = torch.load(clone / "data/models/mnist/linear/model.pt", weights_only=True)
    assert weights["state_dict"]["weights"].shape == (784, 3) and weights["classes"] == ["1", "3", "7"]


def test_models_write_metrics_curves_predictions_and_weights(built):
    for model in ("linear", "simple_net", "resnet18"):
        folder = built / "metrics/mnist" / model
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {"accuracy", "accuracy_low", "accuracy_high", "loss", "per_class", "balanced_accuracy"} <= set(metrics)
        curve = pd.read_csv(folder / "plots/metrics/accuracy.tsv", sep="\t")
        assert curve["step"].tolist() == list(range(1, metrics["step"] + 1))  # step N is epoch N, in both files
        predictions = pd.read_csv(folder / "predictions.csv")
        assert len(predictions) == 200 and list(predictions.columns) == ["item", "actual", "predicted"]
        assert (predictions["actual"] == predictions["predicted"]).mean() == pytest.approx(metrics["accuracy"])
        assert (folder / "confusion.png").stat().st_size > 1000
        info = json.loads((built / "data/models/mnist" / model / "run_info.json").read_text())
        assert info["device"] in {"cpu", "cuda", "mps"} and "device" not in metrics
        torch.load(built / "data/models/mnist" / model / "model.pt", weights_only=True)
    linear = json.loads((built / "metrics/mnist/linear/metrics.json").read_text())
    assert linear["accuracy"] > linear["accuracy_before_training"]


def test_pets_metrics_carry_intervals_and_the_summary_flat_keys(built):
    pets = json.loads((built / "metrics/pets/train/metrics.json").read_text())
    # one step per epoch of the whole fine_tune, the frozen one first: no step twice in the curves
    assert pets["step"] == 1 + 1  # freeze_epochs 1 + epochs 1 (tiny params)
    curve = pd.read_csv(built / "metrics/pets/train/plots/metrics/error_rate.tsv", sep="\t")
    assert curve["step"].tolist() == [1, 2] and curve["error_rate"].iloc[-1] == pytest.approx(
        pets["error_rate"], abs=1e-6
    )
    assert pets["error_rate"] == pytest.approx(1 - pets["accuracy"], abs=1e-6)
    assert pets["error_rate_low"] <= pets["error_rate"] <= pets["error_rate_high"]
    summary = json.loads((built / "metrics/summary.json").read_text())
    assert {"pets_error_rate_low", "pets_error_rate_high", "mnist_linear_accuracy_low"} <= set(summary)
    assert all(not isinstance(v, (dict, list)) for v in summary.values())
    # each figure once: not the accuracy beside the error rate, no per-class figures or counts
    assert "pets_accuracy" not in summary and not [key for key in summary if "per_class" in key or "correct" in key]
    report = (built / "metrics/report.md").read_text()
    assert f"[{summary['pets_error_rate_low']:.3f}, {summary['pets_error_rate_high']:.3f}]" in report


def test_full_source_without_network_fails_clearly_and_says_how_to_switch(clone):
    outputs = tracked_outputs(clone)
    set_params(clone / "params.yaml", {"source": "full", "mnist.download.mirrors": ["http://127.0.0.1:9/"]})
    result = subprocess.run(["dvc", "repro", "fetch_mnist"], cwd=clone, capture_output=True, text=True)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "http://127.0.0.1:9/" in errors[0] and "source: sample" in errors[0]
    # check_params passed and dvc.lock says so; fetch_mnist failed and left its last good output in place.
    assert committed_files_changed(clone) == " M dvc.lock\n M params.yaml\n"
    assert tracked_outputs(clone) == outputs  # fetch_mnist's last good output among them
