"""Results that do not depend on the machine: every stage that computes with torch, rerun with `dvc repro` under an
environment that would change the numbers if it were obeyed, reproduces the committed outputs bit for bit.

The environment a user or a machine brings decides, unless the pipeline overrides it, the intra-op thread count
(OMP_NUM_THREADS, MKL_NUM_THREADS) and the kernels' instruction sets (ATen's, oneDNN's, MKL's, numpy's). Lowering
the caps here stands in for an older CPU; another thread count, for another machine. stages/core/cpu.py pins all of
them, so the outputs, dvc.lock and the committed metrics stay exactly as they were.
"""

import pytest
import torch
from conftest import changed_stages, committed_files_changed, dvc, set_params

# The stages that compute with torch, and those that use worker processes (the stand-in, presizing, data loading),
# in two groups that two test processes can rerun side by side.
RERUN = {
    "mnist": ["baseline", "train_mnist@linear", "train_mnist@simple_net", "train_mnist@resnet18"],
    "pets": ["fetch_pets", "presize_pets", "lr_find_pets", "train_pets", "interpret_pets", "export_pets"],
}
# Thread variables that ask for two threads where the params say one (the tiny project's compute.cpu_threads), every
# instruction-set cap lowered, one worker process instead of two: thread counts, caps and worker counts at once.
HOSTILE = {"PIPELINE_WORKERS": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default",
           "ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "AUTO",
           "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR", "THP_MEM_ALLOC_ENABLE": "0"}  # fmt: skip


@pytest.mark.parametrize("stages", list(RERUN.values()), ids=list(RERUN))
def test_a_forced_rerun_in_another_environment_reproduces_every_output_exactly(clone, stages):
    dvc(clone, "repro", "--force", "--single-item", *stages, env=HOSTILE)
    assert committed_files_changed(clone) == ""  # metrics, curves, predictions and PNGs: the same bytes
    assert changed_stages(clone) == set()  # and the cached models: dvc.lock still describes them


@pytest.mark.skipif(torch.cuda.is_available(), reason="the tiny project trains on the GPU here: CPU threads sum nothing")
def test_the_thread_count_param_does_change_the_bits(clone):
    # The check above can fail: threads decide the order of sums. Pinned through params.yaml, that is a change
    # DVC sees and reruns; left to the environment it would silently differ between machines.
    set_params(clone / "params.yaml", {"compute.cpu_threads": 2})  # the tiny project computes on one
    dvc(clone, "repro", "--single-item", "train_pets")
    changed = committed_files_changed(clone)
    assert "metrics/pets/train/metrics.json" in changed or "metrics/pets/train/plots" in changed


def test_worker_counts_are_not_params_and_rerun_nothing(clone):
    # PIPELINE_WORKERS is an environment setting, not a param: DVC sees no change (and the forced rerun above, with
    # one worker where the build used two, wrote the same bytes).
    assert dvc(clone, "status", "--json", env={"PIPELINE_WORKERS": "1"}).stdout.strip() == "{}"
