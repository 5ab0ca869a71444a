"""Unit tests of stages/learner that pin down what the rest of the unit tests leave loose: the interpretation
figures, the distributed helpers on one process, the loop's bookkeeping and the schedules' edges. Each was written
against a mutant that the rest of the unit tests let survive (tools/mutation.sh)."""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from stages.core import evaluation
from stages.core import progress as progress_module
from stages.core.devices import Compute
from stages.core.errors import UserError
from stages.learner import distributed
from stages.learner import interpret as interpretation
from stages.learner import lr_find as lr_finder
from stages.learner.learner import DataLoaders, Learner, loader

CPU = Compute(torch.device("cpu"), mixed=False)
GPU = Compute(torch.device("cuda"), mixed=True)  # never computes here: only its device type is read

# --- interpret ---------------------------------------------------------------------------------------------------


def test_most_confused_keeps_class_names_when_a_class_never_occurs():
    """Classes index the confusion matrix even when one is neither an actual nor a predicted class."""
    rows = interpretation.most_confused(np.array([2, 2, 2]), np.array([0, 0, 2]), ["a", "b", "c"], min_val=1)
    assert rows == [{"actual": "c", "predicted": "a", "count": 2}]


@pytest.fixture
def figures(monkeypatch):
    """The figures the interpretation saves, by file name, instead of PNG files."""
    saved = {}
    monkeypatch.setattr(evaluation, "save_figure", lambda fig, path: saved.__setitem__(path.name, fig))
    yield saved
    plt.close("all")


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_plot_images_lays_out_a_titled_grid_without_axes(figures, tmp_path):
    """Five images in three columns: two rows of 3.2 x 3.4 inch cells, every axis hidden, the last cell empty."""
    images = np.random.default_rng(0).random((5, 4, 4, 3))
    names = ["one", "two", "three", "four", "five"]
    interpretation.plot_images(tmp_path / "grid.png", images, names, heading="Heading")
    fig = figures["grid.png"]
    assert tuple(fig.get_size_inches()) == pytest.approx((9.6, 6.8))
    assert titles(fig) == names + [""] and not any(ax.axison for ax in fig.axes)
    assert all(ax.title.get_fontsize() == 8 for ax in fig.axes[:5])
    assert np.array_equal(fig.axes[4].images[0].get_array(), images[4]) and not fig.axes[5].images
    assert fig.get_suptitle() == "Heading" and fig._suptitle.get_fontsize() == 10
    with plt.rc_context({"font.size": 14}):  # a user's matplotlibrc does not change the heading
        interpretation.plot_images(tmp_path / "rc.png", images, names, heading="Heading")
    assert figures["rc.png"]._suptitle.get_fontsize() == 10


def test_plot_images_narrows_to_the_images_it_has(figures, tmp_path):
    """Fewer images than columns: one row of just those; none at all still makes one (empty) cell."""
    interpretation.plot_images(tmp_path / "two.png", np.zeros((2, 4, 4, 3)), ["a", "b"], heading="h", columns=4)
    assert tuple(figures["two.png"].get_size_inches()) == pytest.approx((6.4, 3.4))
    interpretation.plot_images(tmp_path / "none.png", np.zeros((0, 4, 4, 3)), [], heading="h")
    assert len(figures["none.png"].axes) == 1 and tuple(figures["none.png"].get_size_inches()) == pytest.approx(
        (3.2, 3.4)
    )
    interpretation.plot_images(tmp_path / "six.png", np.zeros((6, 4, 4, 3)), list("abcdef"), heading="h")
    assert len(figures["six.png"].axes) == 6 and tuple(figures["six.png"].get_size_inches()) == pytest.approx(
        (9.6, 6.8)
    )


def test_plot_top_losses_uses_fastais_heading_in_three_columns(figures, tmp_path):
    """fastai's ``plot_top_losses``: the heading names the four parts of each title."""
    interpretation.plot_top_losses(tmp_path / "top.png", np.zeros((4, 4, 4, 3)), ["w / x / 1.00 / 0.50"] * 4)
    fig = figures["top.png"]
    assert fig.get_suptitle() == "Prediction / Actual / Loss / Probability"
    assert len(fig.axes) == 6 and titles(fig)[:4] == ["w / x / 1.00 / 0.50"] * 4


def test_show_batch_shows_channels_last_images_clamped_to_the_displayable_range(figures, tmp_path, caplog):
    """Augmented images (N, 3, H, W) can leave [0, 1]: clamped first (no matplotlib clipping warning), four to a row."""
    batch = torch.linspace(-0.5, 1.5, 5 * 3 * 2 * 2).reshape(5, 3, 2, 2)
    with caplog.at_level("WARNING"):
        interpretation.show_batch(tmp_path / "batch.png", batch, list("abcde"))
    assert caplog.records == []
    fig = figures["batch.png"]
    assert fig.get_suptitle() == "show_batch: augmented training images"
    assert len(fig.axes) == 8 and tuple(fig.get_size_inches()) == pytest.approx((12.8, 6.8))
    shown = fig.axes[1].images[0].get_array()
    assert shown.shape == (2, 2, 3)
    assert np.array_equal(shown, batch[1].clamp(0, 1).permute(1, 2, 0).numpy())
    assert titles(fig)[:5] == list("abcde")


# --- distributed -------------------------------------------------------------------------------------------------


def test_only_rank_0_gets_the_real_context():
    """Rank 0 writes outputs and logs; any other rank gets a stand-in that yields None."""
    context = nullcontext("real")
    assert distributed.World(0, 2).is_main and not distributed.World(1, 2).is_main
    assert distributed.World(0, 2).main_only(context) is context
    with distributed.World(1, 2).main_only(context) as value:
        assert value is None


def test_one_process_is_the_single_world_with_the_compute(monkeypatch):
    """Without torchrun (no WORLD_SIZE, or 1) there is no process group: rank 0 of 1."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group(CPU) as world:
        assert world == distributed.World(0, 1, CPU)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with distributed.process_group(CPU) as world:
        assert world == distributed.World(0, 1, CPU)


@pytest.fixture
def torchrun_rank_1(monkeypatch):
    """torchrun's variables for the second of two processes, and a process group that only records its calls."""
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "PIPELINE_PROGRESS": "lines"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    calls = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    return calls


def test_cpu_processes_join_over_gloo_and_only_rank_0_shows_progress(torchrun_rank_1):
    """Several CPU processes: gloo, this process's rank, no progress display but rank 0's, the group left at the end."""
    with distributed.process_group(CPU) as world:
        assert world == distributed.World(1, 2, CPU)
        assert torchrun_rank_1 == [("init", "gloo")]
        assert distributed.os.environ["PIPELINE_PROGRESS"] == "off"
    assert torchrun_rank_1 == [("init", "gloo"), "destroy"]


def test_gpu_processes_join_over_nccl_each_on_its_local_gpu(torchrun_rank_1, monkeypatch):
    """Several CUDA processes: NCCL, and GPU LOCAL_RANK each (two processes on two GPUs fit)."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    with distributed.process_group(GPU) as world:
        assert world.compute.device == torch.device("cuda", 1) and world.compute.mixed
        assert (world.rank, world.size) == (1, 2)
    assert chosen == [torch.device("cuda", 1)] and torchrun_rank_1 == [("init", "nccl"), "destroy"]


def test_torchrun_refuses_a_device_other_than_cuda_or_the_cpu(torchrun_rank_1):
    """Apple's MPS has no process-group backend here: one error line, and no group is joined."""
    with pytest.raises(UserError) as err, distributed.process_group(Compute(torch.device("mps"), mixed=False)):
        pass
    assert str(err.value) == "torchrun: several processes need CUDA or the CPU, not mps"
    assert torchrun_rank_1 == []


def dataset(n: int = 12) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))


def test_one_process_keeps_its_loader():
    """On one process the loader is used as it is."""
    data = DataLoader(dataset(), batch_size=4)
    assert distributed.sharded(data, distributed.SINGLE, seed=0) is data


def test_each_process_loads_its_own_share_of_every_batch():
    """Two processes: batches of half the size, from a distributed sampler of this rank and the seed."""
    data = DataLoader(dataset(), batch_size=4, drop_last=True)
    share = distributed.sharded(data, distributed.World(1, 2, CPU), seed=7)
    sampler = share.sampler
    assert isinstance(sampler, DistributedSampler) and share.batch_size == 2 and share.drop_last
    assert (sampler.num_replicas, sampler.rank, sampler.seed, sampler.shuffle, sampler.drop_last) == (
        2,
        1,
        7,
        True,
        True,
    )
    other = distributed.sharded(data, distributed.World(0, 2, CPU), seed=7)
    mine, theirs = {int(y) for _, yb in share for y in yb}, {int(y) for _, yb in other for y in yb}
    assert mine | theirs == set(range(12)) and not mine & theirs


def test_a_batch_that_does_not_split_evenly_is_refused():
    """A batch of 5 over 2 processes would change the effective batch size: one error line."""
    with pytest.raises(UserError) as err:
        distributed.sharded(DataLoader(dataset(), batch_size=5), distributed.World(0, 2, CPU), seed=0)
    assert str(err.value) == "params.yaml: batch_size 5 does not split evenly over 2 processes"


def bn_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_batchnorm_is_synchronised_only_across_several_gpus():
    """SyncBatchNorm on several CUDA processes; gloo on the CPU has none, and one process needs none."""
    synced = distributed.prepare(bn_model(), distributed.World(0, 2, GPU))
    assert isinstance(synced[1], nn.SyncBatchNorm)
    for world in (distributed.World(0, 2, CPU), distributed.World(0, 1, GPU)):
        model = bn_model()
        assert distributed.prepare(model, world) is model and type(model[1]) is nn.BatchNorm2d


def test_wrap_uses_ddp_on_several_processes_with_the_gpu_of_this_process(monkeypatch):
    """One process trains the model itself; several wrap it in DDP, on CUDA pinned to this process's GPU."""
    made = []
    monkeypatch.setattr(
        nn.parallel, "DistributedDataParallel", lambda model, device_ids: made.append(device_ids) or "ddp"
    )
    model = bn_model()
    assert distributed.wrap(model, distributed.World(0, 1, CPU)) is model and made == []
    assert distributed.wrap(model, distributed.World(0, 2, CPU)) == "ddp" and made == [None]
    gpu1 = Compute(torch.device("cuda", 1), mixed=True)
    assert distributed.wrap(model, distributed.World(1, 2, gpu1)) == "ddp" and made == [None, [1]]


class Wrapped:
    """A loader inside a wrapper, as pets' ``Limited`` holds one."""

    def __init__(self, loader):
        self.loader = loader


def test_a_new_epoch_reshuffles_a_distributed_sampler_directly_or_through_a_wrapper():
    """The sampler is told the epoch, whether the loader is used directly or through a wrapper."""
    data = dataset()
    for world_rank in (0, 1):
        share = distributed.sharded(DataLoader(data, batch_size=4), distributed.World(world_rank, 2, CPU), seed=0)
        distributed.start_epoch(share, 3)
        assert share.sampler.epoch == 3
        distributed.start_epoch(Wrapped(share), 5)
        assert share.sampler.epoch == 5
    distributed.start_epoch(DataLoader(data, batch_size=4), 2)  # not distributed: nothing to tell


# --- lr_find -----------------------------------------------------------------------------------------------------


def test_the_smoothed_loss_is_fastais_debiased_moving_average():
    """beta 0.98, started at 0 and debiased: the first value is the first loss, the second 2.0101 after 1 then 3."""
    smooth = lr_finder.SmoothedLoss()
    assert smooth.add(2.0) == pytest.approx(2.0)
    smooth = lr_finder.SmoothedLoss()
    smooth.add(1.0)
    assert smooth.add(3.0) == pytest.approx((0.98 * 0.02 + 0.02 * 3) / (1 - 0.98**2))
    assert smooth.best == pytest.approx(1.0) and smooth.count == 2


def test_the_sweep_diverges_beyond_four_times_the_best_loss_or_at_nan():
    """Exactly 4x the best is not yet divergence; above it, or a NaN, is."""
    smooth = lr_finder.SmoothedLoss()
    smooth.add(1.0)
    assert not smooth.diverged(4.0) and smooth.diverged(4.001) and smooth.diverged(4.5)
    assert smooth.diverged(math.nan) and not smooth.diverged(1.0)


@pytest.mark.parametrize(
    ("losses", "index"),
    [
        ([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], 2),  # one run of 6 from index 0: start -1, sections 2, -1 + 2 + 1
        ([1.0, 2.0, 3.0, 4.0], 0),  # no decrease at all: the first point
        ([5.0, 5.0, 4.0, 3.0, 6.0, 2.0, 7.0, 8.0], 2),  # run 5, 4, 3, 2 ends at 5: start 1, sections 4/3
        ([2.0, 1.0, 3.0, 4.0, 5.0], -1),  # a run of 2 ending at 1: start -1 and sections 2/3 give index -1
    ],
)
def test_valley_reads_short_curves_as_fastais_code_does(losses, index):
    """fastai's valley index (``start = end - length``, then a third and a sixth of the run), worked out by hand."""
    lrs = torch.logspace(-3, 0, len(losses))
    assert lr_finder.valley(lrs, torch.tensor(losses)) == (float(lrs[index]), index)


def test_steep_is_the_steepest_descent_per_unit_of_log_learning_rate():
    """The slope is taken between neighbours and against log(lr), so unevenly spaced rates are compared fairly."""
    uneven = torch.tensor([1e-3, 1e-2, 1e-1, 1.1e-1])
    assert lr_finder.steep(uneven, torch.tensor([1.0, 0.9, 0.3, 0.25])) == (pytest.approx(1e-1), 2)
    even = torch.logspace(-3, 0, 4)
    assert lr_finder.steep(even, torch.tensor([1.0, 0.5, 0.45, 0.1])) == (pytest.approx(1e-3), 0)


def test_suggest_needs_two_points_after_trimming_and_reports_each_points_loss():
    """Trimming the first tenth and the last 5 points may leave just 2: enough; fewer is one error line."""
    lrs, losses = [1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000], [3.0, 2.0, 1.0, 0.5, 0.7, 0.9, 1.1, 1.3]
    result = lr_finder.suggest(lrs, losses, num_it=10)  # keeps indices 1 and 2
    assert result["minimum"] == {"lr": pytest.approx(1e-3), "point_lr": pytest.approx(1e-2), "point_loss": 1.0}
    assert set(result) == {"valley", "minimum", "steep"}
    assert all(set(r) == {"lr", "point_lr", "point_loss"} for r in result.values())
    with pytest.raises(UserError) as err:
        lr_finder.suggest(lrs[:7], losses[:7], num_it=100)
    assert str(err.value) == (
        "lr_find stopped after 7 of 100 iterations, too few to suggest a learning rate: lower lr_find.start_lr, "
        "or set fine_tune.base_lr to a number"
    )


class Counting:
    """A batch transform that counts the batches it sees."""

    def __init__(self):
        self.calls = 0

    def __call__(self, xb):
        self.calls += 1
        return xb


def constant_loss(out, yb):
    """A loss that never changes, so a sweep never diverges and runs its full length."""
    return out.sum() * 0 + 1.0


def regression(n: int = 12) -> TensorDataset:
    x = torch.linspace(-1, 1, n)[:, None]
    return TensorDataset(x, 2 * x)


def tiny_learner(**options) -> Learner:
    data = loader(regression(), 4, CPU, shuffle=False, seed=0)
    dls = DataLoaders(data, data, train_tfm=options.pop("train_tfm", None))
    return Learner(nn.Linear(1, 1), dls, options.pop("loss_func", constant_loss), CPU, **options)


def test_lr_find_defaults_to_fastais_sweep_and_uses_the_training_transform(monkeypatch, capsys):
    """1e-7 to 10 over 100 batches (the training transform applied to each), shown as progress in batches."""
    monkeypatch.setenv("PIPELINE_PROGRESS", "lines")
    monkeypatch.setenv("PIPELINE_PROGRESS_SECONDS", "1")
    clock = iter(range(1000))
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    counting = Counting()
    lrs, losses = tiny_learner(train_tfm=counting).lr_find()
    assert len(lrs) == len(losses) == 100 and counting.calls == 100
    assert lrs[0] == 1e-7 and lrs[-1] == pytest.approx(1e-7 * 1e8 ** (99 / 100))
    assert capsys.readouterr().err.splitlines()[0] == "lr_find: 1/100 batches (1s)"


def test_fit_sets_the_constant_rate_again_when_the_optimiser_already_exists(capsys):
    """A second ``fit`` keeps the optimiser (and its state) but trains at its own rate; epochs are named."""
    learn = tiny_learner(loss_func=nn.functional.mse_loss, name="linear")
    learn.fit(1, 0.1)
    learn.fit(1, 0.01)
    assert [group["lr"] for group in learn.opt.param_groups] == [0.01, 0.01]
    assert capsys.readouterr().out.splitlines()[1].startswith("linear epoch 1: train_loss ")


def test_fine_tune_defaults_are_fastais_signature():
    """fastai 2.8: ``fine_tune(epochs, base_lr=2e-3, freeze_epochs=1, lr_mult=100, pct_start=0.3, div=5.0, ...)``,
    its frozen phase at ``pct_start=0.99``. The pipeline passes every value from params.yaml; a caller in Python who
    leaves them out gets fastai's."""
    import inspect

    defaults = {
        name: p.default
        for name, p in inspect.signature(Learner.fine_tune).parameters.items()
        if p.default is not p.empty
    }
    assert defaults == {
        "base_lr": 2e-3, "freeze_epochs": 1, "lr_mult": 100, "pct_start": 0.3, "div": 5.0, "freeze_lr": None,
        "freeze_pct_start": 0.99,
    }  # fmt: skip


def test_fine_tune_names_its_two_phases_and_skips_the_frozen_one_when_asked(capsys):
    learn = tiny_learner(loss_func=nn.functional.mse_loss)
    history = learn.fine_tune(2, 0.01, freeze_epochs=1, pct_start=0.5)
    shown = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if " epoch " in line]
    assert len(history) == 3 and shown == ["frozen epoch 1", "unfrozen epoch 1", "unfrozen epoch 2"]
    history = tiny_learner(loss_func=nn.functional.mse_loss).fine_tune(2, 0.01, freeze_epochs=0, pct_start=0.5)
    shown = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if " epoch " in line]
    assert len(history) == 2 and shown == ["unfrozen epoch 1", "unfrozen epoch 2"]


def test_train_one_epoch_returns_the_image_weighted_mean_of_its_batch_losses():
    """The epoch's train_loss: each batch's loss (taken before its step) weighted by its images, over the images."""
    from stages.learner.learner import train_one_epoch

    data = loader(regression(10), 4, CPU, shuffle=False, seed=0)  # batches of 4, 4 and 2
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(0.5), model.bias.fill_(0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # no step changes anything: each loss is computable up front
    expected = [nn.functional.mse_loss(model(xb), yb).item() * len(yb) for xb, yb in data]
    mean = train_one_epoch(model, data, loss_func=nn.functional.mse_loss, opt=opt, compute=CPU, tfm=None)
    assert mean == pytest.approx(sum(expected) / 10, rel=1e-6)


def test_the_loop_reads_losses_and_outputs_from_the_device_once_per_pass_not_once_per_batch(monkeypatch):
    """A read from the device (``.item()``, ``.cpu()``, ``.tolist()``) waits for every GPU step queued before it; once
    a batch, it stalls the GPU every batch. The loop's own reads are counted on the CPU, where its code is the same."""
    from stages.learner import learner as loop

    reads = []

    def counted(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename == loop.__file__:
                reads.append(name)
            return real(self, *args, **kwargs)

        return read

    for name in ("item", "cpu", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    data = loader(regression(10), 2, CPU, shuffle=False, seed=0)  # five batches
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loop.train_one_epoch(model, data, loss_func=nn.functional.mse_loss, opt=opt, compute=CPU, tfm=None)
    assert reads == ["tolist"]
    reads.clear()
    outputs, targets, _ = loop.evaluate(model, data, loss_func=nn.functional.mse_loss, compute=CPU, tfm=None)
    assert sorted(reads) == ["cpu", "tolist"] and outputs.shape == targets.shape == (10, 1)


def test_last_preds_is_the_last_epochs_validation_pass_bit_for_bit():
    """train_pets and the MNIST models the Learner trains take their final metrics from ``last_preds`` instead of a
    second validation pass: it must be the last epoch's pass, bit for bit what get_preds gives, not an earlier one."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    x = torch.randn(32, 4)
    data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
    learn = Learner(net, DataLoaders(data, data), nn.CrossEntropyLoss(), CPU)
    assert learn.last_preds is None  # nothing before a fit
    first = learn.fit(1, 0.1)
    after_first = learn.last_preds
    history = learn.fit(2, 0.1)
    outputs, targets, loss = learn.last_preds
    fresh = learn.get_preds()
    assert torch.equal(outputs, fresh[0]) and torch.equal(targets, fresh[1]) and loss == fresh[2]
    assert loss == history[-1]["valid_loss"] != first[-1]["valid_loss"]
    assert not torch.equal(outputs, after_first[0])  # the second fit replaced it


def test_last_preds_is_cleared_when_a_fit_starts():
    """A fit cut short (an error, an interrupt) must not leave the pass of the weights from before it."""
    torch.manual_seed(0)
    x = torch.randn(16, 4)
    data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)

    def failing_loss(outputs, targets):
        raise RuntimeError("cut short")

    learn = Learner(nn.Linear(4, 2), DataLoaders(data, data), nn.CrossEntropyLoss(), CPU)
    learn.fit(1, 0.1)
    assert learn.last_preds is not None
    learn.loss_func = failing_loss
    with pytest.raises(RuntimeError, match="cut short"):
        learn.fit(1, 0.1)
    assert learn.last_preds is None
