"""The params blocks chapter 4 reads: ``mnist`` (the digits and their split), ``mnist_models`` (one block per model)
and ``baseline`` (pixel similarity's distances)."""

from __future__ import annotations

from typing import Any

from stages.core.schema import DOWNLOAD, SEED, Schema, integer, number
from stages.mnist import DISTANCES


def digits(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) >= 2 and len(set(v)) == len(v)
    ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 9 for d in v)
    return None if ok else "a list of two or more different digits 0-9"


def distances(v: Any) -> str | None:
    ok = isinstance(v, list) and v and all(d in DISTANCES for d in v) and len(set(v)) == len(v)
    return None if ok else f"a non-empty list of {' and/or '.join(map(repr, DISTANCES))}"


def _training(**extra) -> dict:
    """What every model's block has, after its own keys."""
    return {**extra, "batch_size": integer(1), "lr": number(above=0), "epochs": integer(1), "seed": SEED}


SCHEMA = Schema(
    {
        "mnist": {"download": DOWNLOAD, "digits": digits, "valid_pct": number(above=0, below=1), "seed": SEED},
        "mnist_models": {
            "linear": _training(init_std=number(above=0)),
            "simple_net": _training(hidden=integer(1)),
            "resnet18": _training(pct_start=number(above=0, below=1)),
        },
        "baseline": {"distances": distances},
    }
)
