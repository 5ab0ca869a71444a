"""Results that do not depend on the machine: the tiny project, built with `dvc repro` under an environment that
would change the numbers if it were obeyed, writes every output bit for bit as a build under the default environment
recorded them, on whichever machine recorded them.

The environment a user or a machine brings decides, unless the pipeline overrides it, the intra-op thread count
(OMP_NUM_THREADS, MKL_NUM_THREADS) and the kernels' instruction sets (ATen's, oneDNN's, MKL's, numpy's). Lowering
the caps here stands in for an older CPU; another thread count, for another machine. stages/core/cpu.py pins all of
them, so the outputs, dvc.lock and the committed metrics stay exactly as they were.
"""

import json
import math
import platform
from contextlib import chdir
from pathlib import Path

import dvc.api as dvc_api
import pytest
import torch
from conftest import build, changed_stages, committed_files_changed, dvc, set_params, tracked_outputs
from dvc.repo import Repo
from dvc.scm import resolve_rev
from torch import nn

from stages.core.cpu import exact_sqrt
from stages.learner.optimizer import adam, param_groups
from stages.mnist import pixel_similarity
from stages.pets import augment

ROOT = Path(__file__).resolve().parents[1]

RECORDED = ROOT / "tests" / "tiny_outputs.json"
RECORD_COMMAND = "./with-env pytest -n 0 tests/test_reproducibility.py -k recorded_bytes --record-tiny-outputs"


def cpu_has_avx2() -> bool:
    return platform.machine() in ("x86_64", "AMD64") and "avx2" in Path("/proc/cpuinfo").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the tiny project trains on the GPU here, not on the CPU")
@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file() or not cpu_has_avx2(), reason="bit-identical on x86-64 + AVX2")
def test_the_build_under_another_environment_wrote_the_recorded_bytes(built, tmp_path, request):
    """Every output of every stage (data, models, metrics, curves, predictions, PNGs) of the tiny build, which ran
    under conftest's HOSTILE environment, byte for byte as tests/tiny_outputs.json records them: written by a build
    under the default environment, on whichever x86-64 machine last recorded them. So this checks another thread
    count, lower caps and another worker count, and another machine when the tests run on one."""
    if request.config.getoption("record_tiny_outputs"):
        reference = build(tmp_path / "reference")
        assert reference == set(json.loads((built.parent / "ran.json").read_text()))
        files = tracked_outputs(tmp_path / "reference")
        RECORDED.write_text(json.dumps({"how": RECORD_COMMAND, "files": files}, indent=1) + "\n")
    recorded = json.loads(RECORDED.read_text())["files"]
    written = tracked_outputs(built)
    differ = sorted(path for path in recorded.keys() | written.keys() if recorded.get(path) != written.get(path))
    assert not differ, (
        f"{len(differ)} output files differ from tests/tiny_outputs.json, first {differ[:5]}. If the change to the "
        f"numbers is meant, record them again (as dvc.lock is committed after dvc repro): {RECORD_COMMAND}"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the tiny project trains on the GPU here: no CPU thread sums")
def test_the_thread_count_param_does_change_the_bits(clone):
    # The check above can fail: threads decide the order of sums. Pinned through params.yaml, that is a change
    # DVC sees and reruns; left to the environment it would silently differ between machines.
    set_params(clone / "params.yaml", {"compute.cpu_threads": 2})  # the tiny project computes on one
    dvc(clone, "repro", "--single-item", "train_pets")
    changed = committed_files_changed(clone)
    assert "metrics/pets/train/metrics.json" in changed or "metrics/pets/train/plots" in changed


def test_worker_counts_are_not_params_and_rerun_nothing(clone):
    # PIPELINE_WORKERS is an environment setting, not a param: DVC sees no change (and the build, with one worker where
    # the recorded one used two, wrote the same bytes).
    assert dvc(clone, "status", "--json", env={"PIPELINE_WORKERS": "1"}).stdout.strip() == "{}"


# --- compute.numerics: portable (the caps) or native (the machine's own kernels) -------------------------------------

CAPABILITY_UNDER = """
import json, os, sys
import stages
from stages.core import cpu
cpu.use_numerics(sys.argv[1])
import torch
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "aten": os.environ.get("ATEN_CPU_CAPABILITY"),
                  "mkl": os.environ.get("MKL_CBWR")}))
"""


def capability(numerics: str, **env: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    # as a user's shell has it: none of the caps, nor this test process's record of what it had before them
    dropped = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "PIPELINE_CAPS_BEFORE")
    environment = {k: v for k, v in os.environ.items() if k not in dropped} | env
    done = subprocess.run(
        [sys.executable, "-c", CAPABILITY_UNDER, numerics], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_native_numerics_lift_every_cap_and_give_back_the_users_own_settings():
    import subprocess
    import sys

    plain = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    ).stdout.strip()  # fmt: skip
    portable, native = capability("portable"), capability("native")
    assert (portable["aten"], portable["mkl"]) == ("avx2", "COMPATIBLE")
    assert portable["capability"] in ("AVX2", "DEFAULT")  # AVX2 wherever the CPU has it: the cap
    assert native["capability"] == plain and (native["aten"], native["mkl"]) == (None, None)
    # A user's own cap is what native gives back (portable overrides it, as ever).
    assert capability("native", MKL_CBWR="AVX512")["mkl"] == "AVX512"
    assert capability("portable", MKL_CBWR="AVX512")["mkl"] == "COMPATIBLE"


def test_native_numerics_cannot_apply_once_torch_is_loaded():
    from stages.core import cpu
    from stages.core.errors import UserError

    cpu.use_numerics("portable")  # what the process already has: nothing to do
    with pytest.raises(UserError, match="compute.numerics: native cannot apply in this process, which loaded"):
        cpu.use_numerics("native")


def test_a_native_experiment_changes_no_committed_file_and_records_its_numerics(clone):
    import json

    before = tracked_outputs(clone)
    dvc(clone, "exp", "run", "--temp", "-n", "native", "-S", "compute.numerics=native", "train_mnist@linear")
    assert committed_files_changed(clone) == "" and tracked_outputs(clone) == before
    with chdir(clone), Repo(".") as repo:
        sha = resolve_rev(repo.scm, "native")
        metrics = json.loads(repo.scm.get_fs(sha).read_text("metrics/mnist/linear/metrics.json"))
    run_info = json.loads(dvc_api.read("data/models/mnist/linear/run_info.json", repo=str(clone), rev=sha))
    assert metrics["accuracy"] > 0.5 and run_info["numerics"] == "native"  # it trained, and under native
    assert changed_stages(clone) == set()  # and portable still describes the workspace


# --- the one kernel no cap reaches: torch's CPU square root ------------------------------------------------------


def test_exact_sqrt_is_correctly_rounded_where_torchs_cpu_sqrt_is_not():
    values = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4096
    for dtype in (torch.float32, torch.float64):
        x = values.to(dtype)
        correct = torch.tensor([math.sqrt(v) for v in x.tolist()], dtype=torch.float64).to(dtype)  # Python's: IEEE's
        assert torch.equal(exact_sqrt(x), correct)
        # Why the helper exists: MKL's vector math is a bit off for some values, and which ones depends on the CPU.
        # Should a torch release make it exact, this fails, and the helper can go.
        assert not torch.equal(x.sqrt(), correct)


def off(sqrt):
    """A square root off by a part in a thousand: far more than another CPU's last bit, so any use shows."""
    return lambda x, *args, **kwargs: sqrt(x, *args, **kwargs) * 1.001


def what_the_pipeline_computes_with_a_square_root() -> dict[str, torch.Tensor]:
    """An optimiser's steps as train_pets and train_mnist take them, the augmentation's crop sizes, chapter 4's L2
    distance: every place a stage needs a square root on the CPU."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    opt = adam(param_groups([model], [1e-2], weight_decay=0.01))
    x, y = torch.rand(16, 3, 8, 8), torch.arange(16) % 5
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = augment.AugTransforms(64).draw(512, 96, torch.Generator().manual_seed(0))
    images, means = torch.rand(50, 28, 28), torch.rand(2, 28, 28)
    return {
        "weights": torch.cat([p.detach().flatten() for p in model.parameters()]),
        "crop": params.crop,
        "l2": pixel_similarity.distance(images, means, "l2"),
    }


def test_no_stage_computes_with_torchs_cpu_square_root(monkeypatch):
    # torch's CPU sqrt, perturbed everywhere, changes nothing the pipeline computes: the fused AdamW and exact_sqrt
    # never call it. With torch's default (unfused) AdamW the weights move; with Tensor.sqrt, the crops and distances.
    reference = what_the_pipeline_computes_with_a_square_root()
    monkeypatch.setattr(torch, "sqrt", off(torch.sqrt))
    monkeypatch.setattr(torch.Tensor, "sqrt", off(torch.Tensor.sqrt))
    monkeypatch.setattr(torch, "_foreach_sqrt", lambda xs: [torch.sqrt(x) for x in xs])
    perturbed = what_the_pipeline_computes_with_a_square_root()
    for name, value in reference.items():
        assert torch.equal(perturbed[name], value), name


def test_pngs_carry_no_software_version(tmp_path):
    """A PNG that named matplotlib's version would change its bytes, and dvc.lock, with every matplotlib release."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from stages.core import evaluation

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    evaluation.save_figure(fig, tmp_path / "figure.png")
    committed = sorted((ROOT / "metrics").rglob("*.png"))
    assert committed
    for path in [tmp_path / "figure.png", *committed]:
        with Image.open(path) as image:
            assert not any(
                "software" in key.lower() or "matplotlib" in str(value).lower() for key, value in image.info.items()
            ), (path, image.info)
