"""Bad input and faults: what each must do, and what it must leave behind.

| fault                                              | must                                              | leaves behind                         |
|----------------------------------------------------|---------------------------------------------------|---------------------------------------|
| bad params: unknown key, wrong type, out of range, | exit 1, one line naming key, value, what is       | nothing written                       |
|   presize < size, unknown source/arch, bad digits  |   allowed, before any work                        |                                       |
| stage killed part-way (SIGTERM, SIGKILL)           | the next ``dvc repro`` completes                  | no temporaries; ``dvc status`` clean  |
| download: no network, 404, md5 mismatch, truncated | exit 1, one line naming the URL and how to switch | data/ as it was (test_download.py)    |
|   archive, ``../``, absolute or link members        |   to ``source: sample``                           |                                       |
| download interrupted mid-file                      | exit 1, one line naming the URL                   | data/ as it was                       |
| corrupt or odd images (PNG/GIF/CMYK/RGBA/broken)   | decoded or counted as skipped and named           | metrics/data/pets.json lists them     |
| unwritable output path (read-only data/, a file    | exit 1, one line naming the path                  | no traceback                          |
|   where a folder belongs)                          |                                                   |                                       |
| corrupt prepared data                              | exit 1, one line naming the file and the fix      | no outputs of the failed stage        |
| a checkpoint carrying pickled code                 | refused by ``weights_only=True``, exit 1          | the code never runs                   |
| a Git repository with no commit yet (``git init``)  | training stages run (dvclive issue #522)          | metrics written                       |
"""

from __future__ import annotations

import functools
import http.server
import os
import signal
import subprocess
import threading
import time
from contextlib import chdir
from pathlib import Path

import pytest
import torch
from conftest import copy_project, run_stage
from dvc.repo import Repo

from stages.core import stage


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"pets.valid_pct": 1.5}, "pets.valid_pct: 1.5 is not allowed; expected a number > 0 and < 1"),
        ({"mnist_models.linear.lr": 0}, "mnist_models.linear.lr: 0 is not allowed; expected a number > 0"),
        ({"fine_tune.base_lr": -0.1}, "fine_tune.base_lr: -0.1 is not allowed; expected 'auto' or a number > 0"),
        ({"pets_model.arch": "vgg16"}, "pets_model.arch: 'vgg16' is not allowed; expected one of ['resnet18'"),
        ({"mnist.digits": [3]}, "mnist.digits: [3] is not allowed; expected a list of two or more different digits"),
        ({"mnist.digits": [3, 10]}, "mnist.digits: [3, 10] is not allowed"),
        ({"pets.presize": 12}, "pets_model.size: 16 is not allowed; expected at most pets.presize (12)"),
        ({"source": "internet"}, "source: 'internet' is not allowed; expected one of ['sample', 'full']"),
        ({"mnist.digitz": [1, 2]}, "mnist.digitz: unknown key under 'mnist'"),
        ({"mnist_models.linear.epochs": "10"}, "mnist_models.linear.epochs: '10' is not allowed; expected an integer"),
        ({"device": "gpu"}, "device: 'gpu' is not allowed"),
    ],
    ids=["valid_pct", "lr<=0", "fine_tune-lr", "arch", "one-digit", "digit-10", "presize<size", "source",
         "typo-key", "type", "device"],  # fmt: skip
)
def test_bad_params_fail_before_any_work_with_one_line(tmp_path, change, expected):
    project = copy_project(tmp_path / "p", change)
    # Every stage validates the whole file through params.load; the first case checks three of them.
    stages = ("stages.fetch_mnist", "stages.baseline", "stages.train_pets") if "pets.valid_pct" in change else ("stages.fetch_mnist",)
    for stage in stages:
        line = one_error_line(run_stage(project, stage))
        assert expected in line, line
    assert not (project / "data").exists() and not (project / "metrics").exists()


def _wait_for(predicate, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "dvc repro ended before the moment to kill it"
        assert time.monotonic() < deadline, "timed out waiting for the stage to start writing"
        time.sleep(0.05)


def _temporaries(project: Path) -> list[Path]:
    return [p for folder in ("data", "metrics") for p in (project / folder).rglob(".*.tmp-*")]


@pytest.mark.parametrize(
    ("sig", "moment", "target"),
    [
        (signal.SIGTERM, "fetch_pets", "presize_pets"),
        (signal.SIGKILL, "fetch_pets", "presize_pets"),
        (signal.SIGKILL, "train_mnist@resnet18", "train_mnist@resnet18"),
    ],
    ids=["sigterm-fetch_pets", "sigkill-fetch_pets", "sigkill-train_resnet18"],
)
def test_killed_stage_then_repro_completes_consistently(tmp_path, sig, moment, target):
    project = copy_project(tmp_path / "p")
    markers = {
        # half the stand-in written into the temporary folder, nothing renamed into place yet
        "fetch_pets": lambda: any(len(list(t.glob("images/*"))) > 60 for t in (project / "data/raw").glob(".pets.tmp-*")),
        # dvclive has logged at least one epoch into resnet18's temporary metrics folder
        "train_mnist@resnet18": lambda: any((project / "metrics/mnist").glob(".resnet18.tmp-*/plots")),
    }
    process = subprocess.Popen(["dvc", "repro", target], cwd=project, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for(markers[moment], process)
    finally:
        os.killpg(process.pid, sig)
        process.wait(timeout=60)

    result = subprocess.run(["dvc", "repro", target], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _temporaries(project) == []
    with chdir(project), Repo(".") as repo:
        assert repo.status(targets=[target], with_deps=True) == {}
    if moment == "fetch_pets":
        assert len(list((project / "data/raw/pets/images").iterdir())) == 37 * 4 + 3
    else:
        assert (project / "metrics/mnist/resnet18/metrics.json").is_file()


class DropsMidFile(http.server.SimpleHTTPRequestHandler):
    """Promises a whole file, sends a third of it, then closes the connection."""

    def do_GET(self) -> None:  # noqa: N802
        data = b"x" * 30000
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:10000])
        self.wfile.flush()
        self.connection.close()

    def log_message(self, *args) -> None:
        pass


def test_download_interrupted_mid_file_is_one_line_and_leaves_data(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(DropsMidFile, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        project = copy_project(tmp_path / "p", {"source": "full", "pets.download.mirrors": [url],
                                                 "pets.download.files": {"images.tar.gz": "0" * 32}})  # fmt: skip
        line = one_error_line(run_stage(project, "stages.fetch_pets"))
    finally:
        server.shutdown()
        server.server_close()
    assert url + "images.tar.gz" in line and ("interrupted" in line or "md5 mismatch" in line)
    assert list((project / "data/raw").iterdir()) == []


def test_a_file_where_the_output_folder_belongs_is_one_line_naming_it(tmp_path):
    project = copy_project(tmp_path / "p")
    (project / "data").write_text("not a folder")
    line = one_error_line(run_stage(project, "stages.fetch_mnist"))
    assert "data/raw" in line


def test_permission_denied_is_one_line_naming_the_path(capsys):
    # Tests run as root, which ignores file modes, so a read-only data/ is simulated at the point of failure.
    def main():
        raise PermissionError(13, "Permission denied", "data/raw/mnist")

    with pytest.raises(SystemExit) as exit_info:
        stage.guarded(main)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "error: cannot write or read data/raw/mnist: Permission denied"


def test_corrupt_prepared_data_names_the_file_and_the_fix(tmp_path):
    project = copy_project(tmp_path / "p")
    assert run_stage(project, "stages.fetch_mnist").returncode == 0
    assert run_stage(project, "stages.prepare_mnist").returncode == 0
    (project / "data/mnist/train.npz").write_bytes(b"PK\x03\x04 truncated")
    line = one_error_line(run_stage(project, "stages.baseline"))
    assert "data/mnist/train.npz" in line and "dvc repro prepare_mnist" in line
    assert not (project / "metrics/baseline/metrics.json").exists()


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_checkpoint_with_pickled_code_is_refused(tmp_path):
    project = copy_project(tmp_path / "p")
    (project / "data/models/pets").mkdir(parents=True)
    torch.save({"arch": "resnet18", "classes": ["a", "b"], "size": 16, "state_dict": Payload()},
               project / "data/models/pets/model.pt")  # fmt: skip
    line = one_error_line(run_stage(project, "stages.interpret_pets"))
    assert "data/models/pets/model.pt: cannot load" in line
    assert not (project / "PWNED").exists()


def test_training_runs_in_a_git_repository_with_no_commit_yet(tmp_path):
    project = copy_project(tmp_path / "p")
    subprocess.run(["git", "update-ref", "-d", "HEAD"], cwd=project, check=True)  # as right after 'git init'
    result = subprocess.run(["dvc", "repro", "train_mnist@linear"], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "metrics/mnist/linear/metrics.json").is_file()
