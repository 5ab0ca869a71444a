"""Watching a stage run: progress for a terminal and for a log, settings that are not params, and dvclive's live
curves, which move into the stage's outputs only when it succeeds."""

from __future__ import annotations

import pandas as pd
import pytest

from stages.core import live, progress, settings
from stages.core.stage import UserError


def test_a_log_gets_whole_flushed_lines_not_bar_fragments(monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_PROGRESS", "lines")
    monkeypatch.setenv("PIPELINE_PROGRESS_SECONDS", "1")
    clock = iter(range(0, 100, 1))  # one second per item
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    assert list(progress.progress(range(4), "presize", unit="images")) == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "presize: 1/4 images (1s)" and len(lines) == 4 and "\r" not in "".join(lines)


def test_progress_can_be_silenced_and_a_bad_setting_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_PROGRESS", "off")
    assert list(progress.progress(range(3), "x")) == [0, 1, 2] and capsys.readouterr().err == ""
    monkeypatch.setenv("PIPELINE_PROGRESS", "loud")
    with pytest.raises(UserError, match="PIPELINE_PROGRESS='loud' is not allowed"):
        list(progress.progress(range(3), "x"))


def test_worker_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("PIPELINE_WORKERS", "3")
    assert settings.workers() == 3
    monkeypatch.delenv("PIPELINE_WORKERS")
    assert 1 <= settings.workers() <= 8
    monkeypatch.setenv("PIPELINE_WORKERS", "many")
    with pytest.raises(UserError, match="PIPELINE_WORKERS='many'"):
        settings.workers()


def records(n: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1 / e, "valid_loss": 2 / e, "accuracy": 0.5 + e / 100} for e in range(1, n + 1)]


def test_curves_are_live_while_training_and_move_into_the_output_on_success(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    with live.TrainingLog("train_x", error_rate=True) as log:
        for record in records(3):
            log(record)
            seen = pd.read_csv("dvclive/train_x/plots/metrics/accuracy.tsv", sep="\t")  # while it runs
            assert seen["step"].tolist() == list(range(1, record["epoch"] + 1))
        log.save(out)
    assert log.epochs == 3 and not (tmp_path / "dvclive").exists()
    saved = pd.read_csv(out / "plots/metrics/error_rate.tsv", sep="\t")
    assert saved["step"].tolist() == [1, 2, 3] and saved["error_rate"].iloc[-1] == pytest.approx(0.47)


def test_a_failed_run_leaves_its_partial_curves_for_a_look(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError), live.TrainingLog("train_x") as log:
        log(records(1)[0])
        raise RuntimeError("diverged")
    assert (tmp_path / "dvclive/train_x/plots/metrics/accuracy.tsv").is_file()
    with live.TrainingLog("train_x") as log:  # the next run starts clean
        assert not (tmp_path / "dvclive/train_x/plots/metrics/accuracy.tsv").exists()


def test_steps_count_on_across_fits_as_fine_tunes_two_phases(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with live.TrainingLog("train_x") as log:
        for record in records(1) + records(3):  # the frozen phase's epoch 1, then the unfrozen phase's 1 to 3
            log(record)
        log.save(tmp_path / "out")
    assert log.epochs == 4
    assert pd.read_csv(tmp_path / "out/plots/metrics/accuracy.tsv", sep="\t")["step"].tolist() == [1, 2, 3, 4]
