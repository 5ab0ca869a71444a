"""dvclive as the training stages use it: one epoch logger, with curves you can watch while a stage runs.

dvclive writes into ``dvclive/<stage>/`` (git-ignored) as the epochs go:
``dvc plots show dvclive/<stage>/plots/metrics``
draws them mid-run, and ``dvclive/<stage>/metrics.json`` holds the latest values. When the stage succeeds the
curves are copied into its committed output (``<out>/plots/metrics/<key>.tsv``) and the live folder is removed; a
failed or killed run leaves its partial curves there for a look and the committed results untouched.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import chdir
from pathlib import Path

from dvclive import Live

LIVE_ROOT = Path("dvclive")
KEYS = ("train_loss", "valid_loss", "accuracy")


class TrainingLog:
    """The one per-epoch logger. ``with TrainingLog(stage) as log: learn.on_epoch = log; ...; log.save(out)``."""

    def __init__(self, stage: str, keys: tuple[str, ...] = KEYS, error_rate: bool = False):
        self.folder = (LIVE_ROOT / stage).resolve()
        self.keys, self.error_rate = keys, error_rate
        self.epochs = 0
        self.live: Live | None = None

    def __enter__(self) -> TrainingLog:
        # No dvc.yaml and no experiment of dvclive's own: dvc.yaml already declares every output. Live() also
        # looks for the repository from the working directory and, in a Git repository with no commit yet,
        # fails with "Empty git repo" (dvclive issue #522); created from outside any repository it is a plain
        # logger. It clears what an earlier run left in its folder.
        with tempfile.TemporaryDirectory() as neutral, chdir(neutral):
            self.live = Live(str(self.folder), dvcyaml=False, save_dvc_exp=False)
        return self

    def __call__(self, record: dict) -> None:
        """Log one epoch's record. Step N is the Nth epoch of the whole stage, counted across fits (fine_tune's
        frozen and unfrozen phases each count their epochs from 1), so the curves and metrics.json agree."""
        self.epochs += 1
        self.live.step = self.epochs
        for key in self.keys:
            self.live.log_metric(key, record[key])
        if self.error_rate:
            self.live.log_metric("error_rate", 1 - record["accuracy"])
        self.live.next_step()  # writes the curves and metrics.json now, for whoever is watching

    def save(self, out: Path) -> None:
        """Copy the curves into the stage's (temporary) output folder: ``<out>/plots/metrics/<key>.tsv``."""
        shutil.copytree(self.folder / "plots" / "metrics", Path(out) / "plots" / "metrics")

    def __exit__(self, kind, error, traceback) -> None:
        self.live.end()
        if kind is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            if LIVE_ROOT.is_dir() and not any(LIVE_ROOT.iterdir()):
                LIVE_ROOT.rmdir()
