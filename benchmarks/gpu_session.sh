#!/usr/bin/env bash
# Issue 26's GPU figures in one call on a lent GPU machine, with nothing but that machine's own PyTorch (nothing can
# be installed there): the training throughput with the full-size stand-in's (full_size_gpu, target 3,000 images/s),
# whether torch.compile pays, the augmentation's share of a step, the augmentation itself, and start-up. Most wanted
# first, each part in its own JSON, each written as soon as it ends: a lease that runs out keeps what was measured.
#
#   bash benchmarks/gpu_session.sh                     # into $OUT (the device tool's folder), else ./gpu-out
#   DEVICE=cpu SECONDS_LEFT=60 bash benchmarks/gpu_session.sh    # its wiring, tried on a machine without a GPU
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
device="${DEVICE:-cuda}"
deadline=$((SECONDS + ${SECONDS_LEFT:-540}))
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  echo "cpus: $(nproc)"
  python3 -c 'import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__)'
} | tee "$out/machine.txt"
export PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1
for part in training compile augmentation_share augmentation startup; do
  left=$((deadline - SECONDS))
  if [ "$left" -le 10 ]; then
    echo "gpu_session: no time left for $part" | tee -a "$out/gpu.log"
    continue
  fi
  echo "gpu_session: $part, at most ${left} s" | tee -a "$out/gpu.log"
  timeout "$left" python3 benchmarks/run.py --device "$device" --only "$part" --out "$out/$part.json" 2>&1 |
    tee -a "$out/gpu.log"
  echo "gpu_session: $part ended with exit ${PIPESTATUS[0]}" | tee -a "$out/gpu.log"
done
