"""dvclive as the stages use it: a logger of metrics, per-epoch curves and confusion records, nothing more."""

from __future__ import annotations

import tempfile
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Iterator

from dvclive import Live


@contextmanager
def live_logger(directory: Path) -> Iterator[Live]:
    """A ``Live`` writing under ``directory`` that never touches Git or DVC itself.

    The stage's outputs are already tracked by dvc.yaml, so no dvc.yaml of dvclive's and no experiment of its
    own. ``Live()`` also looks for the repository from the working directory and, in a Git repository with no
    commit yet, fails with "Empty git repo" (dvclive issue #522); creating it from outside any repository
    keeps it a plain logger.
    """
    directory = Path(directory).resolve()
    with tempfile.TemporaryDirectory() as neutral, chdir(neutral):
        live = Live(str(directory), dvcyaml=False, save_dvc_exp=False)
    with live:
        yield live
