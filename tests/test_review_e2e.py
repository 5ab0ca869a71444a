"""End to end, the review workflow: experiments, metrics diff, the per-image comparison, a queued sweep, and a shared
remote. One module-wide copy of the built project, with a local-directory DVC remote, as a team's repo would be."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from contextlib import chdir
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, committed_files_changed, dvc, git, set_params
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


def exp_show(project) -> tuple[dict[str, dict], dict[str, dict]]:
    """Experiment name -> its flat summary metrics, and name -> its params.yaml, from ``dvc exp show --json``."""
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    metrics, params = {}, {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                summary = (data.get("metrics") or {}).get("metrics/summary.json", {}).get("data")
                if summary is not None and rev.get("name"):
                    metrics[rev["name"]] = summary
                    params[rev["name"]] = (data.get("params") or {}).get("params.yaml", {}).get("data")
    return metrics, params


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


def test_push_then_pull_into_a_fresh_clone_runs_nothing(main_branch, tmp_path):
    dvc(main_branch, "push")
    clone = tmp_path / "teammate"
    subprocess.run(["git", "clone", "-q", str(main_branch), str(clone)], check=True)
    dvc(clone, "pull")
    assert (clone / "data/models/pets/model.pt").is_file()
    with chdir(clone), Repo(".") as repo:
        assert repo.status() == {}
        assert repo.reproduce() == []


def readme_command(start: str) -> list[str]:
    """The README's command that starts with ``start`` (after ./with-env), as an argument list."""
    import re
    import shlex

    text = (ROOT / "README.md").read_text()
    (line,) = {m.strip() for m in re.findall(rf"^\./with-env ({re.escape(start)}[^#\n]*)", text, re.M)}
    return shlex.split(line)


# Three experiments per review: recipe A is main's committed run and seed 1; recipe B, seeds 1 and 2. Pets as
# docs/reviewing.md shows it (six stages an experiment: a slow test); the MNIST simple net, whose experiments rerun
# one training stage, for the same statistics end to end in the default suite.
SEED_REVIEWS = {
    "pets": {
        "a-seed-1": ["pets_model.seed=1"],
        "b-seed-1": ["pets_model.seed=1", "fine_tune.epochs=2"],
        "b-seed-2": ["pets_model.seed=2", "fine_tune.epochs=2"],
    },
    "simple_net": {
        "a-seed-1": ["mnist_models.simple_net.seed=1"],
        "b-seed-1": ["mnist_models.simple_net.seed=1", "mnist_models.simple_net.hidden=60"],
        "b-seed-2": ["mnist_models.simple_net.seed=2", "mnist_models.simple_net.hidden=60"],
    },
}


def wait_for_the_queue(project, timeout: float = 900) -> None:
    """Until nothing is queued or running (`queue logs -f` returns at once for a task not yet started)."""
    import time

    deadline = time.monotonic() + timeout
    while any(word in dvc(project, "queue", "status").stdout for word in ("Queued", "Running")):
        assert time.monotonic() < deadline, dvc(project, "queue", "status").stdout
        time.sleep(2)


def end_the_workers(project, timeout: float = 30) -> None:
    """Each queue worker gone, ended if it is still there ``timeout`` seconds after ``queue stop``. Each worker's
    monitor sends it a shutdown once the queue is empty; with two workers the message can reach the other one instead
    (DVC 3.67, dvc-task 0.40: the second worker's log ends with its last task, the first's with "Got shutdown from
    remote"), and the worker it was for then waits for tasks forever. Seen once in a suite run here."""
    import signal
    import time

    def running(pid: int) -> bool:
        """A queue worker with that number, not a later process that got it, nor a zombie. Its command line is DVC's
        ``exp queue-worker``, or celery's title for it where setproctitle is installed."""
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"queue-worker" in command or b"celery" in command

    def pid(file: Path) -> int | None:  # a worker that is exiting rewrites its file: empty for a moment
        text = file.read_text().strip()
        return int(text) if text.isdigit() else None

    pids = [pid(f) for f in (project / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.pid")]
    pids = [number for number in pids if number is not None]
    for sig, wait in ((None, timeout), (signal.SIGTERM, 10), (signal.SIGKILL, 0)):
        for number in filter(running, pids) if sig else ():
            os.kill(number, sig)  # DVC's race, not the review's failure
        deadline = time.monotonic() + wait
        while any(map(running, pids)) and time.monotonic() < deadline:
            time.sleep(0.5)


def run_queue(project, experiments: dict[str, list[str]]) -> tuple[dict[str, dict], dict[str, dict]]:
    """``experiments`` (name -> its ``-S`` changes) queued and run by two workers, as docs/reviewing.md shows; each
    experiment's summary metrics and params (``exp_show``)."""
    for name, changes in experiments.items():
        dvc(project, "exp", "run", "--queue", "-n", name, *[arg for c in changes for arg in ("-S", c)])
    # Into a file, not a pipe: the workers `queue start` leaves running inherit its output, and reading a pipe to its
    # end would wait for them to exit, which a worker can fail to do (end_the_workers).
    log = project.parent / "queue-start.log"
    with log.open("w") as out:
        started = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=project, stdout=out, stderr=out)
    assert started.returncode == 0, log.read_text()
    wait_for_the_queue(project)
    dvc(project, "queue", "stop", "--kill")
    end_the_workers(project)
    status = dvc(project, "queue", "status").stdout
    assert "Failed" not in status, status
    found, params = exp_show(project)
    assert set(experiments) <= set(found), status
    return found, params


def queue_seed_review(built, folder, review: str) -> tuple:
    """A copy of the built project of its own (its experiments are these three alone), with the review's two recipes
    queued under seeds and run; the copy, and each experiment's summary metrics."""
    project = folder / "project"
    shutil.copytree(built, project, symlinks=True)
    return project, run_queue(project, SEED_REVIEWS[review])[0]


def test_a_queued_seed_review_runs_on_two_workers_and_compare_reads_it_by_name_and_by_group(main_branch):
    """One queue, as a reviewer runs it: the simple net's seed review beside a baseline change. Each experiment runs in
    a copy of its own, with its own params and no other's, and the workspace stays on main; stages.compare reads an
    experiment by name (statsmodels' figures on the same images) and two groups of seeds."""
    experiments = {**SEED_REVIEWS["simple_net"], "l1-only": ["baseline.distances=[l1]"]}
    found, params = run_queue(main_branch, experiments)
    main = (main_branch / "params.yaml").read_text()
    for name, changes in experiments.items():
        expected = yaml.safe_load(main)  # main's, with this experiment's changes
        for key, value in (change.split("=", 1) for change in changes):
            *parents, leaf = key.split(".")
            functools.reduce(dict.__getitem__, parents, expected)[leaf] = yaml.safe_load(value)
        assert params[name] == expected, name
    assert "mnist_pixel_l2_accuracy" not in found["l1-only"]
    assert all("mnist_pixel_l2_accuracy" in found[name] for name in SEED_REVIEWS["simple_net"])
    assert committed_files_changed(main_branch) == ""

    # An experiment name is a revision for stages.compare, and its figures are statsmodels' on the same images.
    models = compare(main_branch, "HEAD", "b-seed-2")
    net = models["mnist simple_net"]
    assert net["status"] == "compared" and net["images"] == 200
    assert net["accuracy_b"] == pytest.approx(found["b-seed-2"]["mnist_simple_net_accuracy"], abs=1e-6)
    rights = net["right_only_in_a"], net["right_only_in_b"]
    assert sum(rights) > 0, net  # another seed and width: some images change sides
    table = [[int(round(net["accuracy_a"] * 200)) - rights[0], rights[0]], [rights[1], 0]]
    assert net["mcnemar_p"] == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)
    assert models["mnist resnet18"]["right_only_in_a"] == models["mnist resnet18"]["right_only_in_b"] == 0
    assert compare(main_branch, "HEAD", "l1-only")["pixel similarity (l2)"]["status"].startswith("l2 not computed")

    compare_takes_two_groups_of_seeds(main_branch, found, "mnist_simple_net_accuracy", images=200)


@pytest.mark.slow  # 3.5 minutes on 2 cores; the simple net's review above checks the same statistics
def test_a_pets_seed_review_reads_in_the_readme_table_and_compares_as_two_recipes(built, tmp_path):
    project, found = queue_seed_review(built, tmp_path, "pets")
    the_readme_review_table_fits_160_columns_with_the_headline_leftmost(project, found)
    compare_takes_two_groups_of_seeds(project, found, "pets_error_rate", images=29)


def the_readme_review_table_fits_160_columns_with_the_headline_leftmost(project, found):
    command = readme_command("dvc exp show")
    shown = subprocess.run(command, cwd=project, capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    assert shown.returncode == 0, shown.stderr
    lines = [line.rstrip() for line in shown.stdout.splitlines() if line.strip()]
    assert max(map(len, lines)) <= 160, "\n".join(lines)
    assert "pets_model.seed" in lines[1] and "fine_tune.epochs" in lines[1] and "…" not in shown.stdout
    # results before inputs, the headline first among the results (the whole table, as CSV)
    header = dvc(project, "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    summary_keys = list(found["a-seed-1"])
    metric_columns = [column for column in header if column in summary_keys]
    assert metric_columns[0] == "pets_error_rate" and metric_columns == summary_keys
    assert max(header.index(key) for key in summary_keys) < header.index("pets_model.seed")


def compare_takes_two_groups_of_seeds(project, found, key: str, images: int) -> None:
    group_a, group_b = ["HEAD", "a-seed-1"], ["b-seed-1", "b-seed-2"]
    result = subprocess.run(
        [sys.executable, "-m", "stages.compare", "--a", *group_a, "--b", *group_b, "--json"],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figure = json.loads(result.stdout)["figures"][key]
    committed = json.loads((project / "metrics/summary.json").read_text())
    runs_a = [committed[key]] + [found[n][key] for n in group_a[1:]]
    runs_b = [found[n][key] for n in group_b]
    assert (figure["runs_a"], figure["runs_b"], figure["images"]) == (2, 2, images)
    assert figure["mean_a"] == pytest.approx(np.mean(runs_a), abs=1e-6)
    assert figure["difference"] == pytest.approx(np.mean(runs_b) - np.mean(runs_a), abs=1e-6)
    assert figure["difference_low"] <= figure["difference"] <= figure["difference_high"]
    assert figure["seed_sd_a"] == pytest.approx(np.std(runs_a, ddof=1), abs=1e-6)
    words = subprocess.run(
        [sys.executable, "-m", "stages.compare", "--a", *group_a, "--b", *group_b], cwd=project,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    line = next(line for line in words.splitlines() if line.startswith(key))
    assert "95% CI" in line and f"over seeds and the {images} validation images" in line
    # the verdict the interval calls for (which way is better: tests/test_compare_groups.py)
    low, high = figure["difference_low"], figure["difference_high"]
    if low > 0 or high < 0:
        assert ("B is better" if (low > 0) != figure["lower_is_better"] else "B is worse") in line, line
    else:
        assert "not enough evidence" in line or "no difference" in line, line
    refused = subprocess.run(
        [sys.executable, "-m", "stages.compare", "--a", "HEAD", "--b", *group_b], cwd=project,
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 1 and "at least 2 runs" in refused.stderr and "Traceback" not in refused.stderr


def workflow_runs() -> list[str]:
    workflow = yaml.safe_load((ROOT / ".github/workflows/review.yml").read_text())
    (job,) = workflow["jobs"].values()
    return [step["run"] for step in job["steps"] if "run" in step]


def test_the_pull_request_workflow_commands_write_the_review_report(main_branch, tmp_path):
    """Every `run` of .github/workflows/review.yml, in order, in a pull request's checkout: the base branch pushed to
    the DVC remote, the change a Pets param. GitHub's comment step cannot run here: its body file must be the report."""
    dvc(main_branch, "push")
    base = git(main_branch, "rev-parse", "--abbrev-ref", "HEAD").strip()
    checkout = tmp_path / "pull-request"
    subprocess.run(["git", "clone", "-q", str(main_branch), str(checkout)], check=True)
    set_params(checkout / "params.yaml", {"fine_tune.epochs": 2})
    git(checkout, "commit", "-qam", "two epochs")
    *runs, comment = workflow_runs()
    assert comment.startswith("gh pr comment") and "--body-file review/report.md" in comment
    env = {**os.environ, "GITHUB_BASE_REF": base}
    logs = []
    for run in runs:
        # ./with-env builds the environment these tests already run in
        done = subprocess.run(
            ["bash", "-c", run.replace("./with-env ", "")], cwd=checkout, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{run}\n{done.stdout}\n{done.stderr}"
        logs.append(done.stdout)
    assert "Running stage 'train_pets'" in logs[1] and "Running stage 'train_mnist@linear'" not in logs[1]
    report = (checkout / "review/report.md").read_text()
    assert report.startswith(f"# Review: origin/{base} → workspace")
    assert "| `pets_error_rate` |" in report and "- **pets**: " in report and "McNemar p =" in report
    assert "| `fine_tune.epochs` | 1 | 2 |" in report
    assert "- Pets error rate per epoch" in report and "- mnist_confusion_linear" not in report
    assert (checkout / "review/plots/index.html").is_file()
    assert "review" not in git(checkout, "status", "--porcelain", "--untracked-files=all")  # git-ignored
