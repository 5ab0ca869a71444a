"""Chapter 4's training pieces: the hand-written lesson, the shared loop, one-cycle, devices, models."""

import numpy as np
import pytest
import torch

from stages.core import devices
from stages.core.devices import Compute
from stages.core.stage import UserError
from stages.learner import schedule
from stages.learner.learner import decode
from stages.mnist import linear_by_hand
from stages.mnist import models as mnist_models
from stages.mnist import recipes as mnist_recipes
from stages.mnist.data import Digits

CPU = Compute(torch.device("cpu"), mixed=False)


def test_mnist_loss_is_the_books():
    # The book's example: targets [1, 0, 1], predictions [0.9, 0.4, 0.2] already squashed -> 0.433
    preds = torch.tensor([0.9, 0.4, 0.2]).logit()
    assert linear_by_hand.mnist_loss(preds, torch.tensor([1, 0, 1])).item() == pytest.approx(0.4333, abs=1e-4)
    # Confident and right costs almost nothing; confident and wrong costs almost 1.
    assert linear_by_hand.mnist_loss(torch.tensor([[20.0]]), torch.tensor([[1.0]])).item() < 1e-6
    assert linear_by_hand.mnist_loss(torch.tensor([[20.0]]), torch.tensor([[0.0]])).item() > 0.999


def test_softmax_loss_by_hand_equals_torchs_cross_entropy():
    preds, targets = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    expected = torch.nn.functional.cross_entropy(preds, targets)
    assert linear_by_hand.softmax_loss(preds, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_batch_accuracy():
    preds = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    targets = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    assert linear_by_hand.batch_accuracy(preds, targets).item() == 0.5
    assert linear_by_hand.batch_accuracy(torch.eye(3), torch.tensor([0, 2, 2])).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="binary targets"):
        linear_by_hand.batch_accuracy(preds, targets[:, 0])


def _linear_problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 784, generator=g, dtype=torch.float64), (torch.rand(16, 1, generator=g) > 0.5).double()
    w = (torch.randn(784, 1, generator=g, dtype=torch.float64) * 0.05).requires_grad_()
    b = torch.zeros(1, dtype=torch.float64).requires_grad_()
    return x, y, w, b


def test_calc_grad_matches_autograd_and_a_finite_difference():
    x, y, w, b = _linear_problem()
    model = lambda xb: linear_by_hand.linear1(xb, w, b)  # noqa: E731
    linear_by_hand.calc_grad(x, y, model, loss_fn=linear_by_hand.mnist_loss)
    expected_w, expected_b = torch.autograd.grad(linear_by_hand.mnist_loss(model(x), y), [w, b])
    torch.testing.assert_close(w.grad, expected_w)
    eps = 1e-6
    for index in [(0, 0), (400, 0), (783, 0)]:
        with torch.no_grad():
            w[index] += eps
            up = linear_by_hand.mnist_loss(model(x), y)
            w[index] -= 2 * eps
            down = linear_by_hand.mnist_loss(model(x), y)
            w[index] += eps
        assert w.grad[index].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-4, abs=1e-9)
    with torch.no_grad():
        b += eps
        up = linear_by_hand.mnist_loss(model(x), y)
        b -= 2 * eps
        down = linear_by_hand.mnist_loss(model(x), y)
        b += eps
    assert b.grad.item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-4)


def test_step_moves_against_the_gradient_and_zeroes_it():
    x, y, w, b = _linear_problem()
    model = lambda xb: linear_by_hand.linear1(xb, w, b)  # noqa: E731
    before_loss = linear_by_hand.calc_grad(x, y, model, loss_fn=linear_by_hand.mnist_loss).item()
    w0, b0, gw, gb = w.detach().clone(), b.detach().clone(), w.grad.clone(), b.grad.clone()
    linear_by_hand.step([w, b], lr=1.0)
    torch.testing.assert_close(w.detach(), w0 - gw)
    torch.testing.assert_close(b.detach(), b0 - gb)
    assert w.grad.abs().sum() == 0 and b.grad.abs().sum() == 0
    assert linear_by_hand.mnist_loss(model(x), y).item() < before_loss


def test_one_cycle_has_fastais_shape():
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.1, betas=(0.9, 0.99))
    sched = schedule.one_cycle(opt, max_lr=0.1, total_steps=100, pct_start=0.25)
    lrs, moms = [], []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["betas"][0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1 / 25)
    peak = int(np.argmax(lrs))
    assert peak in (24, 25) and max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert lrs[-1] == pytest.approx(0.1 / 1e5, rel=0.05)  # fastai anneals to max_lr / div_final
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))
    assert int(np.argmin(moms)) == peak  # momentum moves opposite to the learning rate
    assert moms[0] == pytest.approx(0.95) and min(moms) == pytest.approx(0.85, abs=1e-3) and moms[-1] > 0.94


def test_device_auto_falls_back_and_bad_names_are_errors():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert devices.pick("auto").type == expected
    assert devices.pick("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="'cuda' is not available"):
            devices.pick("cuda")
    assert CPU.run_info()["mixed_precision"] == "off"


def test_models_take_28x28_digits():
    assert mnist_models.simple_net(1, 30)(torch.rand(5, 28, 28)).shape == (5, 1)
    resnet = mnist_models.resnet18_for_digits(3).eval()
    assert resnet(torch.rand(2, 1, 28, 28)).shape == (2, 3)


def test_decode_follows_the_books_convention():
    assert decode(torch.tensor([[3.0], [-2.0]])).tolist() == [0, 1]  # > 0 means "a 3": class 0
    assert decode(torch.tensor([[0.1, 0.9, 0.0]])).tolist() == [1]


def _toy_digits(n_classes: int, n: int = 120) -> Digits:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % n_classes
    images = torch.rand(n, 28, 28, generator=g) * 0.3
    for c in range(n_classes):  # each class lights up its own band of rows: easy to learn
        images[labels == c, 4 + 8 * c : 10 + 8 * c] += 0.7
    cut = n * 2 // 3
    return Digits(images[:cut], labels[:cut], images[cut:], labels[cut:], [str(c) for c in range(n_classes)])


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", ["linear", "simple_net"])
def test_recipes_learn_and_are_identical_twice_on_cpu(name, n_classes):
    cfg = {
        "linear": {"init_std": 0.1, "batch_size": 16, "lr": 1.0, "epochs": 5, "seed": 3},
        "simple_net": {"hidden": 8, "batch_size": 16, "lr": 0.5, "epochs": 8, "seed": 3},
    }[name]
    digits = _toy_digits(n_classes)
    runs = [mnist_recipes.RECIPES[name](digits, cfg, CPU, lambda record: None) for _ in range(2)]
    assert runs[0].history[-1]["accuracy"] >= 0.9
    assert runs[0].outputs.shape == (40, 1 if n_classes == 2 else n_classes)
    without_time = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.history] for run in runs]
    assert without_time[0] == without_time[1]
    torch.testing.assert_close(runs[0].outputs, runs[1].outputs, rtol=0, atol=0)


def test_one_cycle_too_short_to_warm_up_is_a_clear_error():
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(UserError, match="smaller batch_size or more epochs"):
        schedule.one_cycle(opt, max_lr=0.1, total_steps=4, pct_start=0.25)


def test_resnet18_recipe_runs_with_one_cycle():
    cfg = {"batch_size": 8, "lr": 0.01, "pct_start": 0.25, "epochs": 1, "seed": 0}
    epochs = []
    result = mnist_recipes.train_resnet18(_toy_digits(3, 96), cfg, CPU, epochs.append)
    assert len(epochs) == 1 and result.outputs.shape == (32, 3)
    assert "conv1.weight" in result.state_dict


def test_saved_weights_load_with_weights_only(tmp_path):
    result = mnist_recipes.train_linear(
        _toy_digits(2), {"init_std": 0.1, "batch_size": 16, "lr": 1.0, "epochs": 1, "seed": 0}, CPU, lambda r: None
    )
    torch.save(result.state_dict, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.testing.assert_close(loaded["weights"], result.state_dict["weights"])
