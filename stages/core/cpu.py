"""CPU results that do not depend on the machine.

On the CPU, torch picks each kernel by the instruction sets it finds: ATen's vectorised loops (AVX2 or AVX-512),
oneDNN's convolutions (AVX2, AVX-512, AMX), MKL's matrix products, numpy's SIMD loops. Kernels of different
widths add in different orders, so the same training ends with different last bits on different machines, and a
few epochs turn those into different metrics. The pipeline therefore caps every one of them at AVX2
(x86-64-v3, which nearly every x86-64 CPU since 2013-2015 has) and runs MKL on its conditional numerical
reproducibility branch, before numpy or torch is loaded (``stages/__init__.py`` calls ``pin_instruction_sets``).
The number of intra-op threads also decides the order of sums, so it is a param (``compute.cpu_threads``).
A user's own setting of these variables is overridden on purpose: it must not change a result.

That is ``compute.numerics: portable``, the default. ``native`` lifts every cap (``use_numerics``, which a stage runs
after reading its params and before it loads numpy or torch): each library then dispatches to the widest kernels the
CPU has (AVX-512, AMX), which is faster on a modern server, and the results are that machine's own.

No cap reaches one function: ``Tensor.sqrt`` on the CPU (also ``pow(0.5)`` and ``_foreach_sqrt``) goes through MKL's
vector math, which is not correctly rounded (one value in six is one bit off) and whose last bit follows the CPU's
own reciprocal-square-root estimate, which Intel and AMD CPUs compute differently. The pipeline never calls it:
``exact_sqrt`` below, and the fused AdamW (stages/learner/optimizer.py). README: Reproducibility says how every
other kernel a stage uses was checked.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch must not load before the caps are set
    import torch

PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN: convolutions, batch norm, pooling
    "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN's older name for the same cap
    "MKL_CBWR": "COMPATIBLE",  # MKL's reproducible branch that Intel and AMD CPUs alike run
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's dispatch targets above AVX2
}


# Speed only, no result: torch backs every CPU buffer of 2 MB or more with 2 MB pages (transparent huge pages, where
# the kernel offers them). A fresh batch-sized buffer then costs a few page faults instead of thousands: the
# 460-pixel augmentation runs in about 0.8x the time. A user's own setting is kept.
HUGE_PAGES = {"THP_MEM_ALLOC_ENABLE": "1"}


# The environment's values of PINNED before the caps replaced them, kept in the environment itself: a stage started by
# a process that had already pinned (a notebook that imported stages, then ran dvc repro) inherits the caps, and must
# still find the user's own values under them.
USERS_OWN = "PIPELINE_CAPS_BEFORE"


def users_own() -> dict[str, str | None]:
    return json.loads(os.environ.get(USERS_OWN, "{}"))


def pin_instruction_sets() -> None:
    """Set the caps for this process and every process it starts; they must precede numpy and torch. (Also asks for
    huge pages, which must precede torch's first large buffer.)"""
    os.environ.setdefault(USERS_OWN, json.dumps({name: os.environ.get(name) for name in PINNED}))
    os.environ.update(PINNED)
    for name, value in HUGE_PAGES.items():
        os.environ.setdefault(name, value)


def use_numerics(mode: str) -> None:
    """``compute.numerics``: ``portable`` keeps the caps; ``native`` lifts them (a user's own setting of one of those
    variables comes back), for this process and those it starts. Either must come before numpy and torch load: a
    library reads its variable once, when it loads."""
    from stages.core.errors import UserError

    wanted = dict(PINNED) if mode == "portable" else {name: users_own().get(name) for name in PINNED}
    if any(os.environ.get(name) != value for name, value in wanted.items()) and pinned_late():
        raise UserError(
            f"compute.numerics: {mode} cannot apply in this process, which loaded {' and '.join(pinned_late())} "
            "first; run the stage as its own process (python -m stages.<name>)"
        )
    for name, value in wanted.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pinned_late() -> list[str]:
    """Libraries that were loaded before the caps were set (an import order bug if not empty)."""
    return [name for name in ("numpy", "torch") if name in sys.modules]


def exact_sqrt(values: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root of a CPU tensor (numpy's, IEEE 754's): the same bits on every CPU, where
    ``Tensor.sqrt`` is not (see above)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.sqrt(values.numpy()))


def use_threads(count: int | str) -> None:
    """The intra-op thread count every reduction is split by: ``compute.cpu_threads``, not the machine's cores; or
    ``auto`` (with ``native`` numerics only), torch's own choice, one per physical core."""
    if count == "auto":
        return
    import torch

    torch.set_num_threads(count)
