"""Shared fixtures: a throwaway copy of the project as its own git + DVC repo on tiny params, built once per session
and copied for each test that changes it; a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from contextlib import chdir
from pathlib import Path
from unittest import mock

import pytest
import yaml
from filelock import FileLock

from tools.project import PROJECT_FILES

ROOT = Path(__file__).resolve().parents[1]

# Small enough for seconds per stage, large enough that every breed and every stand-in quirk is present.
TINY_PARAMS = {
    "pets.standin.images_per_breed": 4,
    "pets.standin.min_side": 40,
    "pets.standin.max_side": 80,
    "pets.presize": 24,
    "mnist_models.linear.epochs": 3,
    "mnist_models.simple_net.epochs": 3,
    "pets_model.size": 16,
    "pets_model.batch_size": 16,
    "lr_find.num_it": 20,
    "fine_tune.epochs": 1,
    # Two test processes share the two cores: a stage computing on two threads beside the other process's work
    # would oversubscribe them, and OpenMP's spinning threads then wait on each other.
    "compute.cpu_threads": 1,
}
ALL_STAGES = {
    "check_params",
    "fetch_mnist",
    "fetch_pets",
    "prepare_mnist",
    "presize_pets",
    "baseline",
    "train_mnist@linear",
    "train_mnist@simple_net",
    "train_mnist@resnet18",
    "lr_find_pets",
    "train_pets",
    "interpret_pets",
    "export_pets",
    "report",
}

os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["PIPELINE_PROGRESS"] = "off"
os.environ.setdefault("PIPELINE_WORKERS", "2")


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
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def dvc(repo: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


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


def repro(project: Path, *targets: str, **options) -> set[str]:
    """Run ``dvc repro`` through DVC's API; the stages it ran, as DVC names them."""
    import signal

    from dvc.repo import Repo

    handler = signal.getsignal(signal.SIGINT)  # DVC may leave SIGINT ignored (see test_faults' Ctrl-C test)
    try:
        with chdir(project), Repo(".") as repo:  # DVC resolves some paths against the working directory
            return {stage.addressing for stage in repo.reproduce(list(targets) or None, **options)}
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


def tracked_outputs(project: Path) -> dict[str, str]:
    """Every file of every output that ``dvc.lock`` records, with its SHA-256 (``missing`` for an output that is
    gone): equal before and after means no output was deleted, added to or changed."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    digests = {}
    for entry in lock["stages"].values():
        for out in entry.get("outs", []):
            path = project / out["path"]
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                key = str(file.relative_to(project))
                digests[key] = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else "missing"
    return digests


def changed_stages(project: Path) -> set[str]:
    """The stages ``dvc status`` flags: those whose own deps or params changed."""
    from dvc.repo import Repo

    with chdir(project), Repo(".") as repo:
        return set(repo.status())


PROJECT_FIXTURES = {"first_build", "built", "clone", "main_branch", "status_project"}


def needs_the_project(item: pytest.Item) -> bool:
    return bool(PROJECT_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-tiny-outputs",
        action="store_true",
        help="build the tiny project under the default environment and record its outputs in tests/tiny_outputs.json",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need no built project first: they run while the project builds (below)."""
    items.sort(key=needs_the_project)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The project's build started at once, in a process of its own, when a selected test needs it: it overlaps the
    tests that do not, instead of one test process building it later while the other waits for it."""
    if not session.config.option.collectonly and any(map(needs_the_project, session.items)):
        start_building(session.config)


def shared_folder(factory: pytest.TempPathFactory) -> Path:
    """The run's temporary folder, which every test process of the run sees (pytest-xdist gives each its own inside)."""
    folder = factory.getbasetemp()
    return folder.parent if os.environ.get("PYTEST_XDIST_WORKER") else folder


# Another machine's environment, as far as a process can stand in for one: thread variables that ask for two threads
# where the params say one (the tiny project's compute.cpu_threads), every instruction-set cap lowered, one worker
# process instead of two. The build runs under it, and tests/tiny_outputs.json holds what a build under the default
# environment wrote (test_reproducibility compares them). None may change a byte: stages/core/cpu.py overrides the
# caps, compute.cpu_threads sets torch's thread count, the worker count only splits the stand-in and presizing, and
# huge pages are speed only.
HOSTILE = {
    "PIPELINE_WORKERS": "1",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "DNNL_MAX_CPU_ISA": "SSE41",
    "MKL_CBWR": "AUTO",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "THP_MEM_ALLOC_ENABLE": "0",
}


def build(project: Path, env: dict[str, str] | None = None) -> set[str]:
    """A copy of the project on tiny params at ``project``, built with ``dvc repro`` under ``env`` and committed
    (dvc.lock, metrics) as a user's main branch would be; the stages that ran."""
    copy_project(project)
    with mock.patch.dict(os.environ, env or {}):  # inherited by the stage processes dvc starts; then as before
        ran = repro(project)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "built")
    return ran


def build_once(shared: Path) -> None:
    """The project built under ``HOSTILE`` at ``shared/built``, with the stages that ran; unless a process already
    built it. Under a lock: a process that comes while another builds waits for it."""
    project, record = shared / "built" / "project", shared / "built" / "ran.json"
    with FileLock(shared / "built.lock"):
        if not record.is_file():
            shutil.rmtree(project.parent, ignore_errors=True)  # what a failed build left
            ran = build(project, HOSTILE)
            record.write_text(json.dumps(sorted(ran)))


BUILDER = pytest.StashKey[subprocess.Popen]()


def start_building(config: pytest.Config) -> None:
    """One process per run (the first test process to finish collecting) starts ``build_once`` in the background. It
    takes the lock at once, normally long before a test needs the project; should a test come first, that test
    builds and the background process finds it built. If the background build fails, the first test to need the
    project builds it again and fails with the error; build.log beside it keeps the background one's output."""
    shared = shared_folder(config._tmp_path_factory)
    try:
        (shared / "build.started").open("x").close()
    except FileExistsError:
        return
    code = "import sys; from pathlib import Path; from conftest import build_once; build_once(Path(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    with open(shared / "build.log", "wb") as log:
        config.stash[BUILDER] = subprocess.Popen(
            [sys.executable, "-c", code, str(shared)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    builder = session.config.stash.get(BUILDER, None)
    if builder is not None:
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            builder.terminate()
        builder.wait()


@pytest.fixture(scope="session")
def first_build(tmp_path_factory) -> tuple[Path, set[str]]:
    """The built project and the stages its first ``dvc repro`` ran. Built once per test run, in the background
    from the start (above); a test process that needs it before it is done waits for it."""
    shared = shared_folder(tmp_path_factory)
    build_once(shared)
    return shared / "built" / "project", set(json.loads((shared / "built" / "ran.json").read_text()))


@pytest.fixture(scope="session")
def built(first_build) -> Path:
    """The built project. Read it, never change it: tests that change things take a ``clone``."""
    return first_build[0]


@pytest.fixture
def clone(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built project (git history, DVC cache, data and all), free to change."""
    dest = tmp_path / "project"
    shutil.copytree(built, dest, symlinks=True)
    return dest


def run_stage(project_dir: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """Run a stage entry as DVC does (``python -m stages.X`` in the project root)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=project_dir, capture_output=True, text=True)


def run_stage_here(project_dir: Path, module: str) -> subprocess.CompletedProcess:
    """``run_stage`` for a download stage, in this test process: the same command line, params check and one-line
    errors, less the process start (about 6 s of CPU: the download helpers are torchvision's, so a stage process
    that downloads imports torch). The exit status is ``SystemExit``'s code, 0 when the stage returns; an uncaught
    exception, which a process would print as a traceback, fails the test where it is raised."""
    import importlib
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from stages.core import stage

    entry = importlib.import_module(module)
    # stage.run reconfigures stdout, which a StringIO cannot
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2))
    code = 0
    with chdir(project_dir), redirect_stdout(out), redirect_stderr(err):
        try:
            stage.run(entry.main, entry.__doc__, entry.PARAMS, entry.SCHEMA, argv=[])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1  # as a process exits
    out.flush(), err.flush()
    return subprocess.CompletedProcess([module], code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode())


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


def committed_files_changed(project: Path) -> str:
    """``git status --porcelain`` of the project: empty when every tracked file is as committed."""
    return git(project, "status", "--porcelain", "--untracked-files=no")


@pytest.fixture(autouse=True)
def away_from_the_repository(tmp_path_factory, monkeypatch):
    """Every test runs in an empty folder: one that read the repository's own data/ by a relative path would pass
    here, where data/ exists after a dvc repro, and fail on CI's fresh clone, where it does not."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
