"""End to end: real ``dvc repro`` in a temporary git repo holding a copy of the project, on tiny params.

What ran is read from DVC itself (the stages ``Repo.reproduce`` returns, and ``dvc status``), never from logs.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import chdir

import pytest
from conftest import set_params
from dvc.repo import Repo

ALL_STAGES = {"fetch_mnist", "fetch_pets", "prepare_mnist", "presize_pets", "baseline"}
MNIST_CHAIN = {"prepare_mnist", "baseline"}
PETS_CHAIN = {"presize_pets"}


def repro(project) -> set[str]:
    with chdir(project), Repo(".") as repo:  # DVC resolves some paths against the working directory
        return {stage.addressing for stage in repo.reproduce()}


def changed_stages(project) -> set[str]:
    with chdir(project), Repo(".") as repo:
        return set(repo.status())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One project built once; tests that change params restore them, so each starts up to date."""
    from conftest import copy_project

    project = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    ran = repro(project)
    return project, ran


@pytest.fixture
def clean(built):
    project, _ = built
    params_text = (project / "params.yaml").read_text()
    yield project
    (project / "params.yaml").write_text(params_text)
    repro(project)


def test_first_repro_runs_every_stage_and_writes_outputs(built):
    project, ran = built
    assert ran == ALL_STAGES
    assert (project / "data/mnist/train.npz").is_file() and (project / "data/pets/train_images.npy").is_file()
    baseline = json.loads((project / "metrics/baseline.json").read_text())
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
    assert "metrics/baseline.json" in shown.stdout
    plots = subprocess.run(["dvc", "plots", "show", "--json"], cwd=clean, capture_output=True, text=True, check=True)
    rendered = json.loads(plots.stdout)["data"]
    assert {"baseline_confusion_l1", "baseline_confusion_l2", "metrics/baseline/mean_images.png"} <= set(rendered)


@pytest.mark.parametrize(
    ("change", "flagged", "reran"),
    [
        ({"baseline.distances": ["l1"]}, {"baseline"}, {"baseline"}),
        ({"pets.presize": 20}, PETS_CHAIN, PETS_CHAIN),
        ({"pets.valid_pct": 0.25}, PETS_CHAIN, PETS_CHAIN),
        ({"mnist.digits": [1, 3, 7]}, {"prepare_mnist"}, MNIST_CHAIN),
        ({"mnist.seed": 1}, {"prepare_mnist"}, MNIST_CHAIN),
        ({"unrelated_new_key": {"anything": 1}}, set(), set()),
        ({"pets.standin.seed": 8}, {"fetch_pets"}, {"fetch_pets"} | PETS_CHAIN),
    ],
    ids=["baseline-key", "pets-presize", "pets-valid-pct", "mnist-digits", "mnist-seed", "unrelated-key", "standin-seed"],
)
def test_a_param_change_reruns_exactly_the_stages_that_read_it(clean, change, flagged, reran):
    """``flagged``: stages whose own params changed (``dvc status``); ``reran``: those plus what their new
    outputs feed, which is what ``dvc repro`` must run and nothing more."""
    set_params(clean / "params.yaml", change)
    assert changed_stages(clean) == flagged
    assert repro(clean) == reran
    assert changed_stages(clean) == set()


def test_more_than_two_digits_flow_through_to_the_baseline(clean):
    set_params(clean / "params.yaml", {"mnist.digits": [1, 3, 7]})
    repro(clean)
    baseline = json.loads((clean / "metrics/baseline.json").read_text())
    assert set(baseline["l1"]["per_class"]) == {"1", "3", "7"}


def test_full_source_without_network_fails_clearly_and_says_how_to_switch(clean):
    set_params(clean / "params.yaml", {"source": "full", "pets.download.mirrors": ["http://127.0.0.1:9/"]})
    result = subprocess.run(["dvc", "repro", "fetch_pets"], cwd=clean, capture_output=True, text=True)
    assert result.returncode != 0
    assert "http://127.0.0.1:9/images.tar.gz" in result.stderr + result.stdout
    assert "source: sample" in result.stderr + result.stdout
