"""End to end, the review workflow: experiments, metrics diff, a queued sweep, and a shared remote."""

from __future__ import annotations

import json
import subprocess
from contextlib import chdir
from pathlib import Path

import pytest
from conftest import copy_project, git
from dvc.repo import Repo


def dvc(project: Path, *args: str) -> str:
    result = subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def main_branch(tmp_path_factory):
    """A built project committed on main, with a local-directory DVC remote, as a team's repo would be."""
    root = tmp_path_factory.mktemp("review")
    project = copy_project(root / "project")
    dvc(project, "remote", "add", "-d", "shared", str(root / "remote"))
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline run")
    return project


def exp_metrics(project: Path) -> dict[str, dict]:
    """Experiment name -> its flat summary metrics, from ``dvc exp show --json``."""
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                summary = (data.get("metrics") or {}).get("metrics/summary.json", {}).get("data")
                if summary is not None and rev.get("name"):
                    found[rev["name"]] = summary
    return found


def test_two_experiments_show_different_metrics(main_branch):
    # --temp runs each in its own copy, so neither inherits the other's params and the workspace stays on main.
    dvc(main_branch, "exp", "run", "--temp", "-n", "l1-only", "-S", "baseline.distances=[l1]")
    dvc(main_branch, "exp", "run", "--temp", "-n", "linear-slow", "-S", "mnist_models.linear.lr=0.01")
    found = exp_metrics(main_branch)
    assert {"l1-only", "linear-slow"} <= set(found)
    assert "mnist_pixel_l2_accuracy" not in found["l1-only"] and "mnist_pixel_l2_accuracy" in found["linear-slow"]
    assert found["linear-slow"]["mnist_linear_accuracy"] != found["l1-only"]["mnist_linear_accuracy"]


def test_metrics_diff_shows_what_a_change_did(main_branch):
    before = json.loads((main_branch / "metrics/summary.json").read_text())
    (main_branch / "params.yaml").write_text((main_branch / "params.yaml").read_text().replace("lr: 1.0", "lr: 0.01", 1))
    try:
        dvc(main_branch, "repro")
        diff = json.loads(dvc(main_branch, "metrics", "diff", "--json"))
        changed = diff["metrics/summary.json"]["mnist_linear_accuracy"]
        assert changed["old"] == before["mnist_linear_accuracy"] and changed["new"] != changed["old"]
        assert "mnist_simple_net_accuracy" not in diff.get("metrics/summary.json", {})
        params_diff = json.loads(dvc(main_branch, "params", "diff", "--json"))
        lr_change = params_diff["params.yaml"]["mnist_models.linear.lr"]
        assert (lr_change["old"], lr_change["new"]) == (1.0, 0.01)
        dvc(main_branch, "plots", "diff", "-o", "plots_diff")
        page = (main_branch / "plots_diff/index.html").read_text()
        assert "cdn.jsdelivr" not in page and "vega-embed" in page  # renders offline
    finally:
        git(main_branch, "checkout", "--", ".")
        with chdir(main_branch), Repo(".") as repo:
            repo.checkout(force=True)


def test_two_queued_experiments_run_by_two_workers_both_finish(main_branch):
    for lr in ("0.5", "0.05"):
        dvc(main_branch, "exp", "run", "--queue", "-n", f"queued-lr-{lr}", "-S", f"mnist_models.linear.lr={lr}")
    dvc(main_branch, "queue", "start", "-j", "2")
    # 'queue logs' follows an experiment until it ends: wait for both, then read their results.
    for lr in ("0.5", "0.05"):
        subprocess.run(["dvc", "queue", "logs", "-f", f"queued-lr-{lr}"], cwd=main_branch, capture_output=True, timeout=600)
    dvc(main_branch, "queue", "stop", "--kill")
    status = dvc(main_branch, "queue", "status")
    assert "Failed" not in status, status
    found = exp_metrics(main_branch)
    assert {"queued-lr-0.5", "queued-lr-0.05"} <= set(found), status
    assert found["queued-lr-0.5"]["mnist_linear_accuracy"] != found["queued-lr-0.05"]["mnist_linear_accuracy"]


def test_push_then_pull_into_a_fresh_clone_runs_nothing(main_branch, tmp_path):
    dvc(main_branch, "push")
    clone = tmp_path / "teammate"
    subprocess.run(["git", "clone", "-q", str(main_branch), str(clone)], check=True)
    dvc(clone, "pull")
    assert (clone / "data/models/pets/model.pt").is_file()
    with chdir(clone), Repo(".") as repo:
        assert repo.status() == {}
        assert repo.reproduce() == []
