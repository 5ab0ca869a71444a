"""Settings that cannot change a result, so they are environment variables rather than params (a change reruns
nothing):

- ``PIPELINE_WORKERS``: worker processes for generating the stand-in, presizing, and loading batches for a GPU
  (on the CPU the training process loads them itself: ``Compute.loader_workers``); default the number of CPUs, at
  most 8. Results are the same for every value.
- ``PIPELINE_PROGRESS``: ``auto`` (bars on a terminal, a line every ``PIPELINE_PROGRESS_SECONDS`` otherwise),
  ``bar``, ``lines`` or ``off``.
- ``PIPELINE_PROGRESS_SECONDS``: how often a log gets a progress line (default 30).
"""

from __future__ import annotations

import os

from stages.core.errors import UserError

PROGRESS_MODES = ("auto", "bar", "lines", "off")


def _integer(name: str, default: int, low: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < low:
        raise UserError(f"environment: {name}={raw!r} is not allowed; expected an integer >= {low}")
    return int(raw)


def workers() -> int:
    return _integer("PIPELINE_WORKERS", min(os.cpu_count() or 1, 8), low=0)


def progress_mode() -> str:
    mode = os.environ.get("PIPELINE_PROGRESS", "auto").strip() or "auto"
    if mode not in PROGRESS_MODES:
        raise UserError(
            f"environment: PIPELINE_PROGRESS={mode!r} is not allowed; expected one of {list(PROGRESS_MODES)}"
        )
    return mode


def progress_seconds() -> int:
    return _integer("PIPELINE_PROGRESS_SECONDS", 30, low=1)
