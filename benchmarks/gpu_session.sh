#!/usr/bin/env bash
# Issue 26's GPU figures on a lent GPU machine, one device call each (timeout_s 600), with that machine's own PyTorch
# (nothing can be downloaded there):
#
#   bash benchmarks/gpu_session.sh           # figures: training with full_size_gpu (target 3,000 images/s),
#                                            # compile, augmentation_share, augmentation, startup
#   bash benchmarks/gpu_session.sh fastai    # fastai against native and portable there, seeds 0-4 (SEEDS=...);
#                                            # needs .whl/ from benchmarks/gpu_wheels.sh, carried: carry [".whl"]
#
# Output under $OUT (the device tool's folder), else ./gpu-out: one JSON per part, each written as soon as it ends (the
# fastai part after each run), so a lease that runs out keeps what was measured, and the log. Everything stops at
# SECONDS_LEFT (540 s). A session's 15 minutes of device time hold the machine's start and one such call: the figures
# first; the fastai call in a later session, or with SECONDS_LEFT=300 SEEDS="0 1 2" where time is left.
# DEVICE=cpu SECONDS_LEFT=60 tries the wiring on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-figures}"
out="${OUT:-gpu-out}"
device="${DEVICE:-cuda}"
deadline=$((SECONDS + ${SECONDS_LEFT:-540}))
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  echo "cpus: $(nproc)"
} | tee "$out/machine.txt"  # Python, torch and torchvision: each part's JSON records them
export PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1

# A part of benchmarks/run.py into its own JSON, within what is left of the deadline. Each part is its own process,
# at about 13 s of imports each there: on versions this project never ran, a part that breaks ends alone.
run_part() {
  local part="$1" left=$((deadline - SECONDS))
  shift
  if [ "$left" -le 10 ]; then
    echo "gpu_session: no time left for $part" | tee -a "$out/gpu.log"
    return
  fi
  echo "gpu_session: $part, at most ${left} s" | tee -a "$out/gpu.log"
  timeout -k 15 "$left" python3 benchmarks/run.py --device "$device" --only "$part" --out "$out/$part.json" "$@" 2>&1 |
    tee -a "$out/gpu.log"
  echo "gpu_session: $part ended with exit ${PIPESTATUS[0]}" | tee -a "$out/gpu.log"
}

case "$mode" in
  figures)
    for part in training compile augmentation_share augmentation startup; do
      run_part "$part"
    done
    ;;
  fastai)
    if ! ls .whl/fastai-*.whl > /dev/null 2>&1; then
      echo "gpu_session: no .whl/fastai-*.whl: run benchmarks/gpu_wheels.sh here and carry .whl" >&2
      exit 2
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
      exit 2
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" FASTAI_PYTHON="$(command -v python3)"
    # shellcheck disable=SC2086  # the seeds are words
    run_part fastai --fixed-lr --seeds ${SEEDS:-0 1 2 3 4}
    ;;
  *)
    echo "gpu_session: figures or fastai, not $mode" >&2
    exit 2
    ;;
esac
