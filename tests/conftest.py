"""Shared fixtures: a throwaway copy of the project as its own git + DVC repo, tiny params, a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvc/plots", ".dvcignore",
                 ".gitignore"]

# Small enough for seconds per stage, large enough that every breed and every stand-in quirk is present.
TINY_PARAMS = {
    "pets.standin.images_per_breed": 4,
    "pets.standin.min_side": 40,
    "pets.standin.max_side": 80,
    "pets.presize": 24,
    "pets.presize_workers": 1,
    "mnist_models.linear.epochs": 3,
    "mnist_models.simple_net.epochs": 3,
    "pets_model.size": 16,
    "pets_model.batch_size": 16,
    "pets_model.workers": 0,
    "lr_find.num_it": 20,
    "fine_tune.epochs": 1,
}

os.environ["DVC_NO_ANALYTICS"] = "1"


def set_params(path: Path, updates: dict) -> None:
    tree = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def copy_project(dest: Path, params: dict | None = None) -> Path:
    for name in PROJECT_FILES:
        src, dst = ROOT / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    set_params(dest / "params.yaml", {**TINY_PARAMS, **(params or {})})
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "project copy")
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git + DVC repo holding a copy of the project with tiny params."""
    return copy_project(tmp_path / "project")


def run_stage(project_dir: Path, module: str) -> subprocess.CompletedProcess:
    """Run a stage entry as DVC does (``python -m stages.X`` in the project root)."""
    return subprocess.run([sys.executable, "-m", module], cwd=project_dir, capture_output=True, text=True)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path):
    """Serve ``tmp_path / 'served'`` on 127.0.0.1; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (temporaries included) with its content, to compare before and after."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
