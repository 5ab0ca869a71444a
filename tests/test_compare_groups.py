"""Recipe against recipe over seeds (stages.compare --a/--b): the statistics, checked by simulation and against
scipy, and the words."""

import numpy as np
import pytest
from scipy.stats import t as student_t
from scipy.stats import ttest_ind

from stages import compare
from stages.core import stats

IMAGES = 1478  # the real Pets validation set (20% of 7,390)


@pytest.mark.parametrize("df", [1.5, 3, 4.7, 8, 30, 500])
def test_student_t_quantile_matches_scipy(df):
    assert stats.student_t_quantile(0.975, df) == pytest.approx(student_t.ppf(0.975, df), abs=1e-7)


def test_without_per_image_outcomes_the_interval_is_welchs():
    a, b = [0.861, 0.868, 0.857, 0.866], [0.872, 0.881, 0.869, 0.876, 0.879]
    low, high = stats.seed_groups(a, b).interval()
    welch = ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((welch.low, welch.high), abs=1e-7)


def test_image_variance_is_the_spread_of_per_image_differences_beyond_the_seeds():
    # Runs that agree within each recipe: no seed noise, so the image part is the per-image differences' variance / n.
    a = np.array([[1, 1, 0, 0, 1, 0], [1, 1, 0, 0, 1, 0]])
    b = np.array([[1, 0, 1, 1, 1, 0], [1, 0, 1, 1, 1, 0]])
    d = (b.mean(0) - a.mean(0)).astype(float)
    assert stats.image_variance(a, b) == pytest.approx(d.var(ddof=1) / 6)
    # Seed noise alone (the same recipe, runs disagreeing at random) leaves about none.
    rng = np.random.default_rng(0)
    noisy = (rng.random((10, 4000)) < 0.85).astype(int)
    assert stats.image_variance(noisy[:5], noisy[5:]) < 0.05 * (noisy[:5].mean(0) - noisy[5:].mean(0)).var() / 4000


def test_fewer_than_two_runs_a_side_is_refused():
    with pytest.raises(ValueError, match="at least 2 runs"):
        stats.seed_groups([0.9], [0.8, 0.85])


def simulated_runs(rng, image_logits, runs, shift=0.0, seed_sd=0.05, disagreement_sd=0.6):
    """Per-image outcomes (runs, images) of one recipe: image difficulty, a per-run shift (the seed's luck on the
    whole set: a seed sd of about 0.7 points, as measured on Pets), and per-run per-image noise (two runs disagree on
    about one image in five)."""
    run_shift = rng.normal(0, seed_sd, (runs, 1))
    noise = rng.normal(0, disagreement_sd, (runs, image_logits.size))
    p = 1 / (1 + np.exp(-(image_logits + shift + run_shift + noise)))
    return (rng.random(p.shape) < p).astype(np.int8)


def claims(rng, shift_b: float, runs: int = 5) -> tuple[bool, float]:
    """One simulated comparison on a fresh validation sample: does the interval exclude zero, and the true difference
    of the recipes' accuracies on the image population."""
    images = rng.normal(2.4, 1.6, IMAGES)  # image difficulties drawn from the population, logit scale: about 87%
    a, b = simulated_runs(rng, images, runs), simulated_runs(rng, images, runs, shift=shift_b)
    comparison = stats.seed_groups(a.mean(1), b.mean(1), a, b)
    low, high = comparison.interval()
    return low > 0 or high < 0, low, high


def test_on_seed_only_differences_it_claims_a_difference_about_5_percent_of_the_time():
    rng = np.random.default_rng(1)
    outcomes = [claims(rng, 0.0)[0] for _ in range(400)]
    assert np.mean(outcomes) <= 0.08  # 5% expected; 400 draws give a standard error of 1.1 points


def test_it_finds_a_real_3_point_difference_with_5_seeds_a_side():
    rng = np.random.default_rng(2)
    # shift 0.3 on the logit scale moves the population accuracy by about 3 points (measured below)
    population = rng.normal(2.4, 1.6, 200_000)
    gain = np.mean(1 / (1 + np.exp(-(population + 0.3))) - 1 / (1 + np.exp(-population)))
    assert 0.025 < gain < 0.035
    results = [claims(rng, 0.3) for _ in range(200)]
    found = np.mean([claimed and low > 0 for claimed, low, _ in results])
    covered = np.mean([low <= gain <= high for _, low, high in results])
    assert found >= 0.9
    assert covered >= 0.9  # the interval is about the recipes, not only these images


def test_the_words_say_which_is_better_and_when_the_evidence_is_not_enough():
    def result(low, high, lower_is_better=False):
        return {
            "status": "compared", "mean_a": 0.86, "mean_b": 0.88, "seed_sd_a": 0.004, "seed_sd_b": 0.005,
            "difference": (low + high) / 2, "difference_low": low, "difference_high": high, "images": 1478,
            "image_variance": 1e-6, "lower_is_better": lower_is_better,
        }  # fmt: skip

    assert "B is better" in compare.group_verdict("mnist_linear_accuracy", result(0.01, 0.03))
    assert "B is worse" in compare.group_verdict("pets_error_rate", result(0.01, 0.03, lower_is_better=True))
    assert "B is better" in compare.group_verdict("pets_error_rate", result(-0.03, -0.01, lower_is_better=True))
    # every run of each group alike but the groups apart: no spread measured, no verdict
    assert "cannot tell" in compare.group_verdict("pets_top5_accuracy", result(0.01, 0.01))
    words = compare.group_verdict("pets_error_rate", result(-0.01, 0.02, lower_is_better=True))
    assert "not enough evidence" in words and "95% CI [-1.0, +2.0]" in words and "1478 validation images" in words
