"""The params blocks the learner reads: ``lr_find`` (the sweep and the suggestion fine_tune takes), ``fine_tune``
(fastai's schedule) and ``interpret`` (most confused, top losses)."""

from __future__ import annotations

from stages.core.schema import Schema, choice, integer, number, number_or
from stages.learner import LR_SUGGESTIONS


def lr_range(tree: dict) -> list[str]:
    start, end = tree["lr_find"]["start_lr"], tree["lr_find"]["end_lr"]
    return [f"lr_find.start_lr: {start} is not allowed; expected below lr_find.end_lr"] if start >= end else []


SCHEMA = Schema(
    {
        "lr_find": {
            "start_lr": number(above=0),
            "end_lr": number(above=0),
            "num_it": integer(6),
            "suggestion": choice(*LR_SUGGESTIONS),
        },
        "fine_tune": {
            "epochs": integer(1),
            "freeze_epochs": integer(0),
            "base_lr": number_or("auto", above=0),
            "lr_mult": number(at_least=1),
            "pct_start": number(above=0, below=1),
            "div": number(above=0),
            "freeze_lr": number_or("base", above=0),
            "freeze_pct_start": number(above=0, below=1),
        },
        "interpret": {"min_val": integer(1), "top_losses": integer(0, 100)},
    },
    rules=((frozenset({"lr_find"}), lr_range),),
)
