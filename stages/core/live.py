"""dvclive as the stages use it: per-epoch curves and a summary, logged the same way by every training stage."""

from __future__ import annotations

import tempfile
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from dvclive import Live

EpochLogger = Callable[[dict], None]


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


def epoch_logger(live: Live, keys: tuple[str, ...] = ("train_loss", "valid_loss", "accuracy"),
                 error_rate: bool = False) -> EpochLogger:  # fmt: skip
    """The one per-epoch logger: each key of the epoch record becomes a curve (plots/metrics/<key>.tsv)."""

    def log_epoch(record: dict) -> None:
        for key in keys:
            live.log_metric(key, record[key])
        if error_rate:
            live.log_metric("error_rate", 1 - record["accuracy"])
        live.next_step()

    return log_epoch
