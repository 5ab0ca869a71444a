"""Do the stages' training steps give the same bits on other x86-64 CPUs? A developer's check, not a test.

Runs two training steps of each resnet at the stages' shapes (forward, gradients, the project's fused AdamW, then an
evaluation forward) natively and under QEMU's user-mode emulation of other CPUs (another vendor, other cache sizes,
other feature sets, all under the stages' AVX2 cap), and compares the hashes of every weight and output. This is how
README: Reproducibility's "how the rest was checked" was done. QEMU's square root differs from the hardware's in the
last bit, so only code that never calls torch's square root can be checked this way: the stages' code, since the fix.

    apt-get install -t bookworm-backports qemu-user     # QEMU 10 (Debian 12's 7.2 lacks the newer CPU models)
    ./with-env python tools/cross_cpu_check.py          # minutes per CPU model: QEMU emulates every instruction
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPUS = ["SapphireRapids-v3", "Haswell-v4", "EPYC-Genoa-v1", "EPYC-Rome-v2"]


def step_hashes(model_name: str) -> dict[str, str]:
    """Two training steps and an evaluation of one model, as hashes."""
    sys.path.insert(0, str(ROOT))
    import torch

    import stages  # noqa: F401  the caps, before torch
    from stages.core import cpu
    from stages.learner.optimizer import adam, param_groups
    from stages.mnist.models import resnet18_for_digits
    from stages.pets import model as pets_model

    cpu.use_threads(2)
    torch.manual_seed(0)
    if model_name == "mnist":
        model, x, n_classes = resnet18_for_digits(2), torch.rand(64, 1, 28, 28), 2
        groups = [model]
    else:
        model, x, n_classes = pets_model.build("resnet18", False, 37), torch.rand(64, 3, 64, 64), 37
        groups = pets_model.layer_groups(model)
    y = torch.randint(0, n_classes, (64,))
    opt = adam(param_groups(groups, [1e-3] * len(groups), weight_decay=0.01))
    digest = lambda t: hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]  # noqa: E731
    hashes = {}
    for step in range(2):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        hashes[f"loss {step}"] = digest(loss)
        hashes |= {f"grad {step} {name}": digest(p.grad) for name, p in model.named_parameters()}
        opt.step()
    hashes |= {f"weight {name}": digest(p) for name, p in model.named_parameters()}
    model.eval()
    hashes["eval output"] = digest(model(x))
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist", "pets"], choices=["mnist", "pets"])
    parser.add_argument("--cpus", nargs="+", default=CPUS, help="QEMU CPU models (qemu-x86_64 -cpu help)")
    parser.add_argument("--hashes", choices=["mnist", "pets"], help=argparse.SUPPRESS)  # the step itself
    args = parser.parse_args()
    if args.hashes:
        print(json.dumps(step_hashes(args.hashes)))
        return
    differ = False
    for model_name in args.models:
        command = [sys.executable, __file__, "--hashes", model_name]
        native = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        for cpu_model in args.cpus:
            emulated = subprocess.run(["qemu-x86_64", "-cpu", cpu_model, *command], capture_output=True, text=True)
            if emulated.returncode:
                sys.exit(f"error: qemu-x86_64 -cpu {cpu_model} failed: {emulated.stderr.strip().splitlines()[-1]}")
            other = json.loads(emulated.stdout)
            changed = [key for key in native if other.get(key) != native[key]]
            differ |= bool(changed)
            verdict = "same bits" if not changed else f"{len(changed)} of {len(native)} differ, first: {changed[0]}"
            print(f"{model_name} on {cpu_model}: {verdict}", flush=True)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
