"""Training that must work, not only run: the Pets recipe learns a constructed easy set far below chance, torchrun's
two processes average their gradients, and a training split that makes no batch is refused instead of looping."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import easy_pets
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from stages.core.devices import Compute
from stages.core.stage import UserError
from stages.learner.learner import DataLoaders, Learner, loader
from stages.pets.learner import pets_learner

ROOT = Path(__file__).resolve().parents[1]
CPU = Compute(torch.device("cpu"), mixed=False)
EASY_RECIPE = {
    "arch": "resnet18",
    "weights": "none",
    "size": 16,
    "min_scale": 0.75,
    "batch_size": 16,
    "batches_per_epoch": "all",
    "label_smoothing": 0.0,
    "seed": 0,
}


def test_the_pets_recipe_learns_an_easy_set_far_below_chance(tmp_path, monkeypatch):
    """fine_tune as train_pets runs it (fastai's head, frozen then unfrozen, augmentation) must get the four colours
    nearly all right: a recipe that trains near chance, such as the tiny build's, proves nothing about learning."""
    classes = easy_pets.write(tmp_path / "data/pets")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    learn = pets_learner(EASY_RECIPE, pretrained=False, compute=CPU, classes=classes)
    history = learn.fine_tune(4, 1e-2, freeze_epochs=1)
    error = 1 - history[-1]["accuracy"]
    assert error <= 0.1 < easy_pets.CHANCE_ERROR, history


def test_torchrun_averages_gradients_one_step_on_two_processes_equals_one_on_the_whole_batch(tmp_path):
    """Each of two processes steps on half the batch; with gradients averaged (DistributedDataParallel) the weights
    after the step are those of one process stepping on the whole batch. Without averaging, each process would
    step on its own half's gradient."""
    script = str(ROOT / "tests/ddp_one_step.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single = subprocess.run(
        [sys.executable, script, str(tmp_path / "one.pt")], env=env, capture_output=True, text=True, timeout=300
    )
    assert single.returncode == 0, single.stderr
    launcher = shutil.which("torchrun")
    double = subprocess.run(
        [launcher, "--standalone", "--nproc_per_node", "2", script, str(tmp_path / "two.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stdout[-2000:] + double.stderr[-2000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    torch.manual_seed(0)
    start = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).state_dict()
    for name in one:
        assert not torch.equal(one[name], start[name]), f"{name} did not move: the step did nothing"
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("wrapped", [False, True], ids=["loader", "cut-short-epochs"])
def test_a_training_split_smaller_than_one_batch_is_one_error_not_a_hang(wrapped):
    """Training drops the last, smaller batch, so 5 items in batches of 8 make none: lr_find's sweep cycled such a
    loader for ever. The Learner refuses it when it is made, naming the counts."""
    from stages.pets.learner import Limited

    data = TensorDataset(torch.randn(5, 2), torch.randn(5, 1))
    train = loader(data, 8, CPU, shuffle=True, seed=0, drop_last=True)
    if wrapped:
        train = Limited(train, 3)
    with pytest.raises(UserError, match=r"the training data makes no batch: 5 images, fewer than one batch of 8"):
        Learner(
            nn.Linear(2, 1),
            DataLoaders(train, loader(data, 8, CPU, shuffle=False, seed=0)),
            nn.functional.mse_loss,
            CPU,
        )


def test_an_empty_validation_split_is_one_error():
    data = TensorDataset(torch.randn(16, 2), torch.randn(16, 1))
    empty = TensorDataset(torch.randn(0, 2), torch.randn(0, 1))
    train, valid = (
        loader(data, 8, CPU, shuffle=True, seed=0, drop_last=True),
        loader(empty, 8, CPU, shuffle=False, seed=0),
    )
    with pytest.raises(UserError, match=r"the validation data makes no batch: 0 images"):
        Learner(nn.Linear(2, 1), DataLoaders(train, valid), nn.functional.mse_loss, CPU)


def test_images_held_on_the_device_train_bit_for_bit_as_the_loader_gives_them(tmp_path, monkeypatch):
    """On a GPU with room, the presized images go to the device whole and the loader batches indices
    (stages/pets/data.py's ``OnDevice``). Forced on the CPU here, that path must train exactly as the loader's:
    the same images, in the same order, through the same augmentation, to the same weights and predictions."""
    from stages.pets import data

    easy_pets.write(tmp_path / "data/pets", per_class=16)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    recipe = {**EASY_RECIPE, "batch_size": 8}

    def trained(on_device: bool):
        monkeypatch.setattr(Compute, "holds", lambda self, nbytes: on_device)
        learn = pets_learner(recipe, pretrained=False, compute=CPU, classes=sorted(easy_pets.COLOURS))
        assert isinstance(learn.dls.train.dataset, data.OnDevice) == on_device
        assert isinstance(learn.dls.valid.dataset, data.OnDevice) == on_device
        assert learn.dls.valid.dataset.presize == 24  # train_pets records it beside the weights
        learn.fine_tune(1, 1e-2, freeze_epochs=1)
        return learn.model.state_dict(), learn.last_preds

    (loaded, loaded_preds), (held, held_preds) = trained(False), trained(True)
    assert all(torch.equal(loaded[name], held[name]) for name in loaded)
    assert torch.equal(loaded_preds[0], held_preds[0]) and loaded_preds[2] == held_preds[2]
