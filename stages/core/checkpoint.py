"""The one checkpoint writer and reader: weights (and what is needed to rebuild the model) in ``model.pt``,
the run's device and versions in ``run_info.json``, loaded back only with ``weights_only=True``."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from stages.core import atomic
from stages.core.errors import UserError

MODEL_FILE = "model.pt"
RUN_INFO_FILE = "run_info.json"


def save(folder: Path, checkpoint: dict, run_info: dict) -> None:
    """Write ``model.pt`` and ``run_info.json`` into ``folder`` (a stage's temporary output folder).

    No timings in run_info: they differ every run and would change the output's hash (benchmarks/ measures speed).
    """
    with atomic.output_file(Path(folder) / MODEL_FILE) as tmp:
        torch.save(checkpoint, tmp)
    atomic.write_json(Path(folder) / RUN_INFO_FILE, run_info)


def load(path: Path, rerun: str) -> dict:
    """The checkpoint at ``path``, never unpickling code; a missing or foreign file is one line naming
    ``rerun``, the stage that writes it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: cannot load ({reason}); rerun 'dvc repro {rerun}'") from None
