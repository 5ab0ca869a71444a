"""The arithmetic behind benchmarks/run.py's fastai targets, and the environment fastai runs in: the figures a closing
note quotes are only as good as these (the timings themselves live in the benchmark, not in tests)."""

from __future__ import annotations

import importlib.util
import json
import statistics

import pytest
import yaml
from conftest import ROOT
from scipy.stats import ttest_ind

from stages.core.cpu import PINNED, USERS_OWN


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def side(bench, errors, seconds):
    runs = [{"error_rate": e, "train_seconds": s, "lr_find_seconds": 0.0} for e, s in zip(errors, seconds)]
    return bench.side_summary(runs)


def test_against_gives_the_time_ratio_the_difference_and_both_standard_errors(bench):
    theirs = side(bench, [0.10, 0.12, 0.14, 0.11, 0.13], [100, 110, 90, 100, 100])
    ours = side(bench, [0.12, 0.13, 0.14, 0.12, 0.14], [60, 60, 60, 60, 60])
    result = bench.against(ours, theirs)
    assert result["time_ratio"] == 0.6
    assert result["error_difference_points"] == pytest.approx(1.0)
    their_se = statistics.stdev([0.10, 0.12, 0.14, 0.11, 0.13]) / 5**0.5
    our_se = statistics.stdev([0.12, 0.13, 0.14, 0.12, 0.14]) / 5**0.5
    assert result["their_error_se_points"] == round(100 * their_se, 2) == 0.71
    assert result["error_difference_se_points"] == round(100 * (their_se**2 + our_se**2) ** 0.5, 2)
    welch = ttest_ind([0.12, 0.13, 0.14, 0.12, 0.14], [0.10, 0.12, 0.14, 0.11, 0.13], equal_var=False)
    low, high = welch.confidence_interval(0.95)
    assert result["error_difference_95_interval_points"] == [round(100 * low, 2), round(100 * high, 2)]


def test_the_time_ratios_interval_covers_the_true_ratio_95_times_in_100(bench):
    """Ten timings a side, spread as the fastai comparison's are (sd 6 s and 9 s): the interval of the ratio of the
    means must hold the true ratio in about 95% of draws; too narrow or too wide misses that band."""
    import numpy as np

    draws = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        ours, theirs = draws.normal(90, 6, 10).tolist(), draws.normal(123, 9, 10).tolist()
        low, high = bench.ratio_interval(ours, theirs)
        covered += low <= 90 / 123 <= high
    assert 0.92 <= covered / 400 <= 0.98
    assert bench.ratio_interval([90.0] * 3, [120.0] * 3) == (0.75, 0.75)  # no spread: the ratio itself


def test_fastai_targets_hold_each_side_to_its_limit_and_one_se_of_fastais_mean(bench):
    def fastai_part(ratio, difference, portable_capability="AVX2", limit=0.8):
        against = {"time_ratio": round(ratio, 2), "error_difference_points": difference, "their_error_se_points": 0.7}
        return {
            "fastai": {"train_seconds_mean": 100.0},
            "native": {"train_seconds_mean": 100.0 * ratio},
            "portable": {"train_seconds_mean": 100.0 * ratio},
            "native_against_fastai": against,
            "portable_against_fastai": against,
            "portable_time_limit": limit,
            "cpu_capabilities": {"fastai": ["AVX512"], "native": ["AVX512"], "portable": [portable_capability]},
        }

    met = bench.fastai_targets(fastai_part(0.6, 0.7), 5)
    assert all(met.values()), met
    missed = bench.fastai_targets(fastai_part(0.81, 0.71, "AVX512"), 4)
    assert not any(missed.values()), missed
    lower_error = bench.fastai_targets(fastai_part(0.85, -3.0), 5)  # below fastai is within; portable 0.85 > 0.8
    assert lower_error["native_error_within_1_se_of_fastai"] and lower_error["portable_error_within_1_se_of_fastai"]
    assert not lower_error["portable_time_within_its_limit_of_fastai"]
    just_over = bench.fastai_targets(fastai_part(1.004, 0.0, limit=1.0), 5)  # recorded as 1.0x, but over the limit
    assert not just_over["portable_time_within_its_limit_of_fastai"]


def test_fastai_runs_uncapped_with_the_users_own_settings_back(bench):
    """Started from a process that had already imported stages, the environment holds the caps; fastai must get the
    user's own values (or none), as its users run it."""
    own = {name: None for name in PINNED} | {"MKL_CBWR": "AUTO"}
    capped = {"PATH": "/bin", **PINNED, USERS_OWN: json.dumps(own)}
    env = bench.uncapped(capped)
    assert env == {"PATH": "/bin", "MKL_CBWR": "AUTO"}
    assert bench.uncapped({"PATH": "/bin"}) == {"PATH": "/bin"}  # never capped: as it was


@pytest.mark.parametrize("held", [False, True])
def test_the_training_figure_says_whether_the_learner_held_its_images_on_the_device(bench, monkeypatch, held):
    """``full_size_gpu``'s ``images_on_the_gpu`` is read from the learner it timed, not predicted beside it."""
    import torch

    from stages.core.devices import Compute

    monkeypatch.setattr(Compute, "holds", lambda self, nbytes: held)  # as a GPU with room (or without) would answer
    torch.set_num_threads(1)
    compute = Compute(torch.device("cpu"), mixed=False)
    images_per_s, on_device = bench.pets_images_per_s(compute, "resnet18", presize_px=24, size=16, n_images=448)
    assert on_device is held and images_per_s > 0


def test_compiling_pays_back_after_its_compile_time_over_each_steps_saving(bench):
    timing = {"eager": [0.50, 0.52, 0.48], "compiled": [0.40, 0.41, 0.39], "cpu_capability": "AVX512"}
    summary = bench.compile_summary({**timing, "first_compiled_step_seconds": 10.4})
    assert summary["compiled_over_eager"] == 0.8
    low, high = summary["compiled_over_eager_95_interval"]
    assert low < 0.8 < high < 1
    assert summary["break_even_steps"] == 100  # 10.0 s of compiling, 0.1 s saved a step
    slower = {**timing, "compiled": [0.60, 0.61, 0.59], "first_compiled_step_seconds": 10.6}
    assert bench.compile_summary(slower)["break_even_steps"] is None
    unclear = {**timing, "compiled": [0.30, 0.50, 0.60], "first_compiled_step_seconds": 10.4}  # faster on average
    assert bench.compile_summary(unclear)["compiled_over_eager_95_interval"][1] > 1
    assert bench.compile_summary(unclear)["break_even_steps"] is None


@pytest.mark.parametrize("name", ["ALLOCATION_PROBE", "SHARE_PROBE", "COMPILE_PROBE"])
def test_each_training_step_probe_is_python_once_filled_in(bench, name):
    """The probes are format strings run in a fresh process: a stray brace, a field left unfilled or broken syntax
    would show only there, hours into a run."""
    fields = dict(root="/r", numerics="native", device="cpu", threads=2, arch="resnet18", presize=96, size=64, batch=64)
    code = getattr(bench, name).format(**fields, steps=3, pairs=2)
    compile(code, name, "exec")
    assert "step_on(" in code


def test_the_device_choice_runs_each_part_where_asked_and_refuses_a_missing_gpu(bench):
    assert [d.type for d in bench.selected_devices("all", cuda_available=False)] == ["cpu"]
    assert [d.type for d in bench.selected_devices("all", cuda_available=True)] == ["cpu", "cuda"]
    assert [d.type for d in bench.selected_devices("cpu", cuda_available=True)] == ["cpu"]
    assert [d.type for d in bench.selected_devices("cuda", cuda_available=True)] == ["cuda"]
    with pytest.raises(ValueError, match="--device cuda: torch sees no CUDA device"):
        bench.selected_devices("cuda", cuda_available=False)


def test_presizing_without_dvc_runs_every_stage_presize_pets_reads_from_in_order(bench):
    """Without DVC (a lent GPU machine) the fastai part runs these stages' commands itself: each must come after the
    stages whose outputs it reads, and none of presize_pets's upstream may be missing."""
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    made_by = {  # an output is a path, or a path with its options
        out if isinstance(out, str) else next(iter(out)): name
        for name, stage in pipeline.items()
        for out in stage.get("outs", [])
    }
    for place, name in enumerate(bench.PRESIZE_CHAIN):
        upstream = {made_by[dep] for dep in pipeline[name]["deps"] if dep in made_by}
        assert upstream <= set(bench.PRESIZE_CHAIN[:place]), (name, upstream)
    assert bench.PRESIZE_CHAIN[-1] == "presize_pets"


def test_a_stopped_run_keeps_the_parts_it_finished_and_leaves_no_probe_running(tmp_path):
    """What a lent GPU's deadline relies on (benchmarks/gpu_session.sh): the JSON is written after each part, and a
    SIGTERM kills the probe the run waits on instead of leaving it to hold the cores or the GPU."""
    import os
    import signal
    import subprocess
    import sys
    import time

    marker, out = tmp_path / "probe.pid", tmp_path / "out.json"
    script = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("benchmarks_run", {str(ROOT / "benchmarks/run.py")!r})
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
bench.startup_benchmark = lambda: {{"seconds": 1}}  # a part that finishes
# and one whose probe outlasts the run
hang = "import os, pathlib, time; pathlib.Path({str(marker)!r}).write_text(str(os.getpid())); time.sleep(120)"
bench.cpu_caps_benchmark = lambda: bench.probe(hang)
sys.argv = ["run.py", "--device", "cpu", "--only", "startup", "cpu_caps", "--out", {str(out)!r}]
bench.main()
"""
    run = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while not marker.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the probe never started"
    time.sleep(0.5)  # the pid is written; let the write finish
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(int(marker.read_text()), 0)  # the probe is gone
    kept = json.loads(out.read_text())
    assert kept["startup"] == {"seconds": 1}
    assert kept["targets_met"] == {"full_size_gpu_at_least_3000_images_per_s": None}  # not run, without a GPU
