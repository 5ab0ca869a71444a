"""End to end, the review workflow: experiments, metrics diff, the per-image comparison, a queued sweep, and a shared
remote. One module-wide copy of the built project, with a local-directory DVC remote, as a team's repo would be."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import chdir

import pytest
from conftest import committed_files_changed, dvc, git
from dvc.repo import Repo
from statsmodels.stats.contingency_tables import mcnemar


@pytest.fixture(scope="module")
def main_branch(tmp_path_factory, built):
    root = tmp_path_factory.mktemp("review")
    project = root / "project"
    shutil.copytree(built, project, symlinks=True)
    dvc(project, "remote", "add", "-d", "shared", str(root / "remote"))
    git(project, "commit", "-qam", "shared remote")
    return project


def exp_metrics(project) -> dict[str, dict]:
    """Experiment name -> its flat summary metrics, from ``dvc exp show --json``."""
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                summary = (data.get("metrics") or {}).get("metrics/summary.json", {}).get("data")
                if summary is not None and rev.get("name"):
                    found[rev["name"]] = summary
    return found


def compare(project, *revisions: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "stages.compare", *revisions, "--json"], cwd=project, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["models"]


def test_metrics_diff_and_compare_show_what_a_change_did(main_branch):
    before = json.loads((main_branch / "metrics/summary.json").read_text())
    (main_branch / "params.yaml").write_text(
        (main_branch / "params.yaml").read_text().replace("lr: 1.0", "lr: 0.01", 1)
    )
    try:
        dvc(main_branch, "repro")
        diff = json.loads(dvc(main_branch, "metrics", "diff", "--json").stdout)
        changed = diff["metrics/summary.json"]["mnist_linear_accuracy"]
        assert changed["old"] == before["mnist_linear_accuracy"] and changed["new"] != changed["old"]
        assert "mnist_simple_net_accuracy" not in diff.get("metrics/summary.json", {})
        params_diff = json.loads(dvc(main_branch, "params", "diff", "--json").stdout)
        lr_change = params_diff["params.yaml"]["mnist_models.linear.lr"]
        assert (lr_change["old"], lr_change["new"]) == (1.0, 0.01)
        dvc(main_branch, "plots", "diff", "-o", "plots_diff")
        page = (main_branch / "plots_diff/index.html").read_text()
        assert "cdn.jsdelivr" not in page and "vega-embed" in page  # renders offline
        words = subprocess.run(
            [sys.executable, "-m", "stages.compare"], cwd=main_branch, capture_output=True, text=True
        )
        assert words.returncode == 0 and "A = HEAD, B = workspace" in words.stdout
        linear_line = next(line for line in words.stdout.splitlines() if line.startswith("mnist linear"))
        assert "McNemar p =" in linear_line and "95% CI" in linear_line and "chance" in linear_line
    finally:
        git(main_branch, "checkout", "--", ".")
        with chdir(main_branch), Repo(".") as repo:
            repo.checkout(force=True)
    assert committed_files_changed(main_branch) == ""


def test_two_queued_experiments_run_by_two_workers_and_compare_reads_them_by_name(main_branch):
    # Queued experiments run in their own copies, so neither inherits the other's params; the workspace stays on main.
    experiments = {"l1-only": "baseline.distances=[l1]", "linear-slow": "mnist_models.linear.lr=0.01"}
    for name, change in experiments.items():
        dvc(main_branch, "exp", "run", "--queue", "-n", name, "-S", change)
    dvc(main_branch, "queue", "start", "-j", "2")
    # 'queue logs' follows an experiment until it ends: wait for both, then read their results.
    for name in experiments:
        subprocess.run(["dvc", "queue", "logs", "-f", name], cwd=main_branch, capture_output=True, timeout=600)
    dvc(main_branch, "queue", "stop", "--kill")
    status = dvc(main_branch, "queue", "status").stdout
    assert "Failed" not in status, status
    found = exp_metrics(main_branch)
    assert set(experiments) <= set(found), status
    assert "mnist_pixel_l2_accuracy" not in found["l1-only"] and "mnist_pixel_l2_accuracy" in found["linear-slow"]
    assert found["linear-slow"]["mnist_linear_accuracy"] != found["l1-only"]["mnist_linear_accuracy"]
    assert committed_files_changed(main_branch) == ""

    # An experiment name is a revision for stages.compare, and its figures are statsmodels' on the same images.
    models = compare(main_branch, "HEAD", "linear-slow")
    linear = models["mnist linear"]
    assert linear["status"] == "compared" and linear["images"] == 200
    assert linear["accuracy_b"] == pytest.approx(found["linear-slow"]["mnist_linear_accuracy"], abs=1e-6)
    rights = linear["right_only_in_a"], linear["right_only_in_b"]
    table = [[int(round(linear["accuracy_a"] * 200)) - rights[0], rights[0]], [rights[1], 0]]
    assert linear["mcnemar_p"] == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)
    assert models["mnist resnet18"]["right_only_in_a"] == models["mnist resnet18"]["right_only_in_b"] == 0
    assert compare(main_branch, "HEAD", "l1-only")["pixel similarity (l2)"]["status"].startswith("l2 not computed")


def test_push_then_pull_into_a_fresh_clone_runs_nothing(main_branch, tmp_path):
    dvc(main_branch, "push")
    clone = tmp_path / "teammate"
    subprocess.run(["git", "clone", "-q", str(main_branch), str(clone)], check=True)
    dvc(clone, "pull")
    assert (clone / "data/models/pets/model.pt").is_file()
    with chdir(clone), Repo(".") as repo:
        assert repo.status() == {}
        assert repo.reproduce() == []
