"""The 95% intervals and the McNemar test, against statsmodels and scipy, and by simulation."""

import numpy as np
import pytest
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from stages.core import stats


@pytest.mark.parametrize(("k", "n"), [(194, 200), (0, 20), (20, 20), (301, 370), (1, 3)])
def test_wilson_matches_statsmodels(k, n):
    assert stats.wilson(k, n) == pytest.approx(proportion_confint(k, n, alpha=0.05, method="wilson"), abs=1e-12)


def test_published_proportions_carry_value_interval_and_counts():
    figure = stats.with_interval(194, 200)
    assert figure == {"value": 0.97, "low": 0.936106, "high": 0.98618, "successes": 194, "n": 200}


@pytest.mark.parametrize(
    ("both", "only_a", "only_b", "neither"),
    [(150, 12, 25, 13), (180, 3, 9, 8), (10, 0, 7, 3), (40, 40, 10, 10), (5, 0, 0, 0)],
)
def test_mcnemar_exact_matches_statsmodels_and_scipy(both, only_a, only_b, neither):
    comparison = stats.PairedComparison(both + only_a + only_b + neither, both, only_a, only_b, neither)
    # statsmodels' table: rows A right/wrong, columns B right/wrong
    expected = mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue
    assert comparison.mcnemar_p() == pytest.approx(expected, abs=1e-12)
    if only_a + only_b:
        assert comparison.mcnemar_p() == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue, abs=1e-12)


def test_paired_interval_reduces_to_newcombes_independent_interval_when_outcomes_are_uncorrelated():
    # both * neither == only_a * only_b: phi is 0, and method 10 is Newcombe's hybrid score for two proportions.
    comparison = stats.PairedComparison(100, both=40, only_a=40, only_b=10, neither=10)
    assert comparison.change == pytest.approx(-0.3)
    expected = confint_proportions_2indep(50, 100, 80, 100, method="newcomb", compare="diff")
    assert comparison.change_interval() == pytest.approx(expected, abs=1e-12)


def test_paired_interval_is_narrower_for_correlated_models_and_stays_in_bounds():
    correlated = stats.PairedComparison(200, both=160, only_a=5, only_b=15, neither=20)
    low, high = correlated.change_interval()
    assert low < correlated.change < high and -1 <= low and high <= 1
    independent_like = confint_proportions_2indep(175, 200, 165, 200, method="newcomb", compare="diff")
    assert high - low < independent_like[1] - independent_like[0]
    assert stats.PairedComparison(10, 0, 0, 10, 0).change_interval()[1] == 1.0


def test_paired_interval_covers_the_true_change_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    n, trials, covered = 200, 2000, 0
    # A right with p 0.80, B right with p 0.85, outcomes correlated through a shared difficulty.
    probabilities = np.array([0.72, 0.08, 0.13, 0.07])  # both, only A, only B, neither
    truth = (probabilities[0] + probabilities[2]) - (probabilities[0] + probabilities[1])
    for counts in rng.multinomial(n, probabilities, size=trials):
        low, high = stats.PairedComparison(n, *counts.tolist()).change_interval()
        covered += low <= truth <= high
    assert 0.93 <= covered / trials <= 0.975


def test_paired_counts_from_outcomes():
    comparison = stats.paired([True, True, False, False, True], [True, False, True, False, True])
    assert (comparison.both, comparison.only_a, comparison.only_b, comparison.neither) == (2, 1, 1, 1)
    assert comparison.accuracy_a == comparison.accuracy_b == 0.6 and comparison.mcnemar_p() == 1.0
