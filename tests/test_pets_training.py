"""Chapter 5's training pieces: lr_find, freezing, discriminative rates, augmentation, interpretation."""

import math
import urllib.error

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from stages.core.devices import Compute
from stages.core.stage import UserError
from stages.learner import interpret as interpretation
from stages.learner import lr_find as lr_finder
from stages.learner.learner import DataLoaders, Learner, loader
from stages.learner.optimizer import BN_TYPES, param_groups
from stages.learner.schedule import discriminative_lrs
from stages.pets import augment
from stages.pets import model as pets_model
from stages.pets.learner import Limited, wants_pretrained

CPU = Compute(torch.device("cpu"), mixed=False)


def toy_regression(seed: int = 0):
    """y = 3x + 1 with noise: Adam learns it well with learning rates around 1e-2 to 1e-1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(512, 1, generator=g) * 2 - 1
    y = 3 * x + 1 + 0.05 * torch.randn(512, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))


def run_toy_sweep(model, num_it=100, optimizer=torch.optim.Adam):
    torch.manual_seed(0)
    data = toy_regression()
    learn = Learner(model, DataLoaders(data, data), nn.functional.mse_loss, CPU, opt_func=optimizer, wd=0.0)
    return learn.lr_find(1e-7, 10, num_it)


def test_lr_find_on_a_toy_regression_suggests_the_expected_decade():
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    lrs, losses = run_toy_sweep(model)
    suggestions = lr_finder.suggest(lrs, losses, 100)
    # Adam's step is about lr: below 1e-3 nothing moves in 100 steps, above 1 it overshoots.
    assert 1e-3 <= suggestions["valley"]["lr"] <= 1e-0
    assert 1e-3 <= suggestions["minimum"]["lr"] <= 1e-0
    assert suggestions["minimum"]["lr"] == pytest.approx(suggestions["minimum"]["point_lr"] / 10)


def test_sweep_follows_the_exponential_schedule_stops_on_divergence_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    before = [p.detach().clone() for p in model.parameters()]
    lrs, losses = run_toy_sweep(model, optimizer=torch.optim.SGD)
    assert lrs == pytest.approx([1e-7 * (10 / 1e-7) ** (i / 100) for i in range(len(lrs))])
    assert len(lrs) < 100 and losses[-1] > 4 * min(losses)  # plain SGD diverges here well before lr 10
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


def test_suggestion_functions_read_the_curve_as_fastai_does():
    lrs = torch.logspace(-7, 1, 60)
    losses = torch.cat([torch.full((10,), 5.0), torch.linspace(5.0, 1.0, 30), torch.linspace(1.1, 9.0, 20)])
    lr, idx = lr_finder.valley(lrs, losses)
    # The longest decreasing subsequence ends at 39 and has length 30 (one 5.0, then indices 11..39; index 10
    # equals 5.0 so cannot extend it). fastai takes start = end - length = 9, then start + int(30/3) + int(10/2).
    assert idx == 9 + 10 + 5
    assert lr_finder.minimum(lrs, losses) == (pytest.approx(float(lrs[39]) / 10), 39)
    steep_lr, steep_idx = lr_finder.steep(lrs, losses)
    assert 10 <= steep_idx < 39 and steep_lr == pytest.approx(float(lrs[steep_idx]))


def test_suggest_drops_nans_and_refuses_a_curve_too_short():
    lrs = list(np.logspace(-7, 1, 100))
    losses = list(np.linspace(5, 1, 100))
    losses[60] = math.nan
    result = lr_finder.suggest(lrs, losses, 100)
    assert result["minimum"]["point_lr"] == pytest.approx(lrs[59])
    with pytest.raises(UserError, match="too few to suggest"):
        lr_finder.suggest(lrs[:15], losses[:15], 100)


@pytest.fixture(scope="module")
def resnet():
    return pets_model.build("resnet18", pretrained=False, n_classes=5)


def test_freeze_keeps_batchnorm_trainable_in_frozen_groups(resnet):
    groups = pets_model.layer_groups(resnet)
    images = loader(
        TensorDataset(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)), 2, CPU, shuffle=False, seed=0
    )
    learn = Learner(resnet, DataLoaders(images, images), nn.CrossEntropyLoss(), CPU, splitter=pets_model.layer_groups)
    learn.freeze()
    for group in groups[:-1]:
        for module in group.modules():
            for param in module.parameters(recurse=False):
                assert param.requires_grad == isinstance(module, BN_TYPES)
    assert all(p.requires_grad for p in groups[-1].parameters())
    assert any(not p.requires_grad for p in groups[0].parameters())
    learn.unfreeze()
    assert all(p.requires_grad for p in resnet.parameters())


def test_layer_groups_are_fastais_resnet_split(resnet):
    stem_to_layer2, layer3_4, head = pets_model.layer_groups(resnet)
    assert len(stem_to_layer2) == 6 and len(layer3_4) == 2
    assert isinstance(head[0], pets_model.AdaptiveConcatPool2d) and head[-1].out_features == 5
    n_params = sum(1 for g in pets_model.layer_groups(resnet) for _ in g.parameters())
    assert n_params == sum(1 for _ in resnet.parameters())  # every parameter is in exactly one group


def test_discriminative_rates_are_geometric_and_monotone(resnet):
    lrs = discriminative_lrs(1e-5, 1e-3, 3)
    assert lrs == pytest.approx([1e-5, 1e-4, 1e-3])
    assert discriminative_lrs(None, 1e-3, 3) == pytest.approx([1e-4, 1e-4, 1e-3])
    groups = param_groups(pets_model.layer_groups(resnet), lrs, 0.01)
    rates = [g["lr"] for g in groups]
    assert rates == sorted(rates) and len(groups) == 6
    bn_params = {id(p) for m in resnet.modules() if isinstance(m, BN_TYPES) for p in m.parameters()}
    for group in groups:
        if group["weight_decay"] > 0:
            assert not any(id(p) in bn_params for p in group["params"])


def test_fine_tune_runs_both_phases_and_ends_unfrozen():
    torch.manual_seed(0)
    model = pets_model.build("resnet18", pretrained=False, n_classes=3)
    x, y = torch.randint(0, 256, (16, 3, 24, 24), dtype=torch.uint8), torch.arange(16) % 3
    data = DataLoader(TensorDataset(x, y), batch_size=4)
    epochs = []
    augmentation = augment.BatchAugment(augment.AugTransforms(16), seed=0, normalize=False)
    dls = DataLoaders(data, data, augmentation, lambda b: augment.resize_batch(b, 16, normalized=False))
    learn = Learner(model, dls, nn.CrossEntropyLoss(), CPU, splitter=pets_model.layer_groups, on_epoch=epochs.append)
    history = learn.fine_tune(epochs=2, base_lr=1e-3, freeze_epochs=1, lr_mult=100, pct_start=0.3, div=5.0)
    assert len(history) == 3 == len(epochs)
    assert all(p.requires_grad for p in model.parameters())
    # one optimiser for both phases, as fastai's, whose state unfreeze cleared (fastai's freeze_to): the head's Adam
    # counts only the unfrozen steps
    head_weight = model[1][-1].weight
    assert learn.opt.state[head_weight]["step"] == 2 * len(data)


def test_imagenet_weights_offline_is_one_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(pets_model, "get_model", offline)
    with pytest.raises(UserError, match=r"ImageNet weights for resnet34 .*pets_model.weights: none"):
        pets_model.build("resnet34", pretrained=True, n_classes=37)
    with pytest.raises(UserError, match="arch must be one of"):
        pets_model.build("vgg16", pretrained=False, n_classes=37)


def test_weights_auto_follows_the_data_switch():
    assert wants_pretrained("auto", "full") and not wants_pretrained("auto", "sample")
    assert wants_pretrained("imagenet", "sample") and not wants_pretrained("none", "full")


def test_most_confused_is_sorted_and_honours_min_val():
    classes = ["Birman", "Ragdoll", "pug"]
    actual = np.array([1, 1, 1, 0, 2, 2, 0])
    predicted = np.array([0, 0, 0, 1, 0, 2, 0])
    assert interpretation.most_confused(actual, predicted, classes, min_val=1) == [
        {"actual": "Ragdoll", "predicted": "Birman", "count": 3},
        {"actual": "Birman", "predicted": "Ragdoll", "count": 1},
        {"actual": "pug", "predicted": "Birman", "count": 1},
    ]
    assert len(interpretation.most_confused(actual, predicted, classes, min_val=2)) == 1


def test_top_losses_are_the_worst_images():
    outputs = torch.tensor([[5.0, 0.0], [0.0, 5.0], [-5.0, 5.0]])
    losses, index = interpretation.top_losses(outputs, torch.tensor([0, 0, 0]), k=2)
    assert index.tolist() == [2, 1] and losses[0] > losses[1]


def test_the_gpu_path_runs_on_the_cpu_with_precision_bf16():
    # compute.precision: bf16 runs, on the CPU, the code CUDA runs by default: bf16 autocast, channels-last.
    mixed = Compute.from_params({"device": "cpu", "precision": "bf16", "numerics": "portable", "cpu_threads": 2})
    assert (
        mixed.mixed
        and not Compute.from_params(
            {"device": "cpu", "precision": "auto", "numerics": "portable", "cpu_threads": 2}
        ).mixed
    )
    torch.manual_seed(0)
    model = pets_model.build("resnet18", pretrained=False, n_classes=3)
    x, y = torch.randint(0, 256, (16, 3, 24, 24), dtype=torch.uint8), torch.arange(16) % 3
    data = DataLoader(TensorDataset(x, y), batch_size=2)
    augmentation = augment.BatchAugment(augment.AugTransforms(16), seed=0, normalize=True)
    dls = DataLoaders(data, data, augmentation, lambda b: augment.resize_batch(b, 16, normalized=True))
    learn = Learner(model, dls, nn.CrossEntropyLoss(), mixed, splitter=pets_model.layer_groups)
    assert learn.model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    history = learn.fit_one_cycle(1, 1e-3)
    outputs, _, _ = learn.get_preds()
    assert outputs.dtype == torch.float32 and torch.isfinite(outputs).all() and math.isfinite(history[0]["train_loss"])


def _epochs_of_order(data, epochs: int = 3) -> list[list[int]]:
    return [torch.cat([xb for xb, _ in data]).tolist() for _ in range(epochs)]


def test_the_shuffle_is_the_same_for_any_number_of_loader_workers_and_for_epochs_cut_short():
    """PIPELINE_WORKERS promises the same results for every value, and a dry run's epochs cut short must not reorder
    the later ones. Sharing its generator with the DataLoader, torch's RandomSampler broke both: 0 workers trained on
    another order from the second epoch on, and an epoch cut short changed the next one's order, by how far the
    workers had prefetched."""
    dataset = TensorDataset(torch.arange(80), torch.zeros(80))
    orders = {n: _epochs_of_order(loader(dataset, 8, CPU, shuffle=True, seed=42, workers=n)) for n in (0, 1, 2)}
    assert orders[0] == orders[1] == orders[2]
    assert orders[0][0] != orders[0][1]  # each epoch its own shuffle
    # ... and it is the order every committed result was trained with (persistent workers, shared generator).
    committed = DataLoader(
        dataset,
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(42),
        num_workers=1,
        persistent_workers=True,
    )
    assert orders[0] == _epochs_of_order(committed)
    # Two batches an epoch (batches_per_epoch): each epoch starts as it would have in full.
    for n in (0, 1, 2):
        cut_short = _epochs_of_order(Limited(loader(dataset, 8, CPU, shuffle=True, seed=42, workers=n), 2))
        assert cut_short == [order[:16] for order in orders[0]], f"{n} workers"


def test_batches_load_in_worker_processes_only_for_a_gpu():
    # On the CPU the workers only took cores from the training threads; for a GPU they overlap its steps.
    assert CPU.loader_workers(4) == 0
    assert Compute(torch.device("cuda"), mixed=True).loader_workers(4) == 4


def test_data_goes_to_the_device_whole_only_on_a_gpu_with_four_times_its_size_free(monkeypatch):
    """The CPU's loader reads from memory already; a GPU takes the images when they fill at most a quarter of its free
    memory, leaving the rest to the model and its activations."""
    assert not CPU.holds(1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4_000, 80_000))
    gpu = Compute(torch.device("cuda"), mixed=True)
    assert gpu.holds(1_000) and not gpu.holds(1_001)
