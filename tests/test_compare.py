"""stages.compare on constructed predictions: pairing by image, the figures, and the words."""

import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import confint_proportions_2indep

from stages import compare


def predictions(outcomes: str, offset: int = 0) -> pd.DataFrame:
    """One row per image: 'r' right, 'w' wrong (actual is always 'cat')."""
    return pd.DataFrame(
        {
            "item": [f"img_{i + offset}" for i in range(len(outcomes))],
            "actual": "cat",
            "predicted": ["cat" if o == "r" else "dog" for o in outcomes],
        }
    )


def test_a_clear_improvement_is_beyond_chance_with_statsmodels_figures():
    # 60 images: both right on 30, only A on 2, only B on 14, neither on 14
    a = predictions("r" * 30 + "r" * 2 + "w" * 14 + "w" * 14)
    b = predictions("r" * 30 + "w" * 2 + "r" * 14 + "w" * 14)
    result = compare.compare_model(a, b, "predicted")
    assert (result["images"], result["right_only_in_a"], result["right_only_in_b"]) == (60, 2, 14)
    assert result["change"] == pytest.approx(12 / 60, abs=1e-6)
    assert result["mcnemar_p"] == pytest.approx(mcnemar([[30, 2], [14, 14]], exact=True).pvalue, abs=1e-12)
    assert result["beyond_chance"] and "beyond chance: B is better" in compare.verdict(result)
    low, high = result["change_low"], result["change_high"]
    assert low > 0 and high < 1 and low < result["change"] < high


def test_a_small_change_is_within_chance():
    a = predictions("r" * 50 + "w" * 10)
    b = predictions("r" * 49 + "w" + "r" + "w" * 9)
    result = compare.compare_model(a, b, "predicted")
    assert not result["beyond_chance"] and result["mcnemar_p"] == 1.0
    assert "within chance" in compare.verdict(result)


def test_uncorrelated_outcomes_give_newcombes_interval():
    # both right 40, only A 40, only B 10, neither 10: phi = 0
    a = predictions("r" * 40 + "r" * 40 + "w" * 10 + "w" * 10)
    b = predictions("r" * 40 + "w" * 40 + "r" * 10 + "w" * 10)
    result = compare.compare_model(a, b, "predicted")
    expected = confint_proportions_2indep(50, 100, 80, 100, method="newcomb", compare="diff")
    assert (result["change_low"], result["change_high"]) == pytest.approx(expected, abs=1e-6)


def test_images_are_paired_by_item_and_the_rest_is_reported():
    a = predictions("rrrrw")  # img_0..img_4
    b = predictions("rrww", offset=2)  # img_2..img_5
    result = compare.compare_model(a, b, "predicted")
    assert result["images"] == 3 and result["only_in_a"] == 2 and result["only_in_b"] == 1
    assert "on the 3 images both judged" in compare.verdict(result)
    assert compare.compare_model(a, predictions("rr", offset=10), "predicted")["status"].startswith("no images")
    relabelled = b.assign(actual="dog")
    assert "changed their true label" in compare.compare_model(a, relabelled, "predicted")["status"]
