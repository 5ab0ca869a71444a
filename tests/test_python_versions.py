"""The Pythons ``./with-env`` accepts (3.11, 3.12, 3.13, the range pyproject.toml declares), which one it picks, and,
in the slow part, that each builds the environment from the lock and reproduces the committed results bit for bit."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = ("3.11", "3.12", "3.13")


def stub(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def with_env_alone(tmp_path: Path) -> Path:
    """``with-env`` and the lock in a folder of their own, with no environment built yet."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("with-env", "requirements.lock"):
        shutil.copy2(ROOT / name, project / name)
    return project


def run_with_env(project: Path, bin_folder: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_folder}:{env['PATH']}"
    return subprocess.run([str(project / "with-env"), "true"], env=env, capture_output=True, text=True, timeout=60)


def test_the_supported_range_is_the_same_in_with_env_pyproject_and_the_lock():
    accepted = re.search(r'supported="([^"]+)"', (ROOT / "with-env").read_text()).group(1).split()
    assert tuple(accepted) == SUPPORTED
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.14"
    # uv's universal resolution from the lowest supported version covers the higher ones
    assert "--universal --python-version 3.11 " in (ROOT / "tools/lock.sh").read_text()


def test_with_env_refuses_an_unsupported_python_in_one_line_naming_what_it_accepts(tmp_path):
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for name in ("python3.11", "python3.12", "python3.13"):
        stub(bin_folder, name, "exit 127")  # as if not installed, whatever this machine has
    stub(bin_folder, "python3", "echo 3.10")
    project = with_env_alone(tmp_path)
    result = run_with_env(project, bin_folder)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("with-env: Python 3.11, 3.12 or 3.13 is required")
    assert "found python3 (3.10)" in result.stderr and not (project / ".venv").exists()


@pytest.mark.parametrize(
    ("installed", "picked"), [(("3.12", "3.13"), "3.12"), (("3.13",), "3.13"), (("3.11", "3.13"), "3.11")]
)
def test_with_env_builds_with_the_first_supported_python_it_finds(tmp_path, installed, picked):
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for version in SUPPORTED:
        # a stub answers the version check, then stops the build at its first step (making the venv) by name
        script = (
            f'[ "$1" = "-c" ] && echo {version} && exit 0; echo "venv by python{version}" >&2; exit 3'
            if version in installed
            else "exit 127"
        )
        stub(bin_folder, f"python{version}", script)
    stub(bin_folder, "python3", "exit 127")
    result = run_with_env(with_env_alone(tmp_path), bin_folder)
    assert result.returncode == 3 and f"venv by python{picked}" in result.stderr, result.stderr


def real_python(version: str) -> str | None:
    """An interpreter of ``version`` on this machine: on the PATH, or one pyenv installed."""
    candidates = [shutil.which(f"python{version}")] + sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}"))
    )
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@pytest.mark.slow  # per version: the lock into a new venv (1-3 minutes) and the pipeline from nothing (4-7 minutes)
@pytest.mark.parametrize("version", SUPPORTED)
def test_a_fresh_clone_reproduces_the_committed_results_with_only_this_python(tmp_path, version):
    python = real_python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (PATH or pyenv): not verified here")
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for other in SUPPORTED:
        stub(bin_folder, f"python{other}", f'exec {python} "$@"' if other == version else "exit 127")
    stub(bin_folder, "python3", "exit 127")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    env |= {"PATH": f"{bin_folder}:{env['PATH']}", "PIPELINE_PROGRESS": "off", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(["./with-env", "dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    built_with = subprocess.run(
        [str(clone / ".venv/bin/python"), "-c", "import sys; print(sys.version)"], capture_output=True, text=True
    ).stdout
    assert built_with.startswith(version), built_with
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert status == "", status  # every committed metric and dvc.lock's every hash, as committed from 3.11
