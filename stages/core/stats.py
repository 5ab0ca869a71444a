"""How sure a figure is: 95% intervals for an accuracy, and for the change in accuracy between two models judged on
the same images, with the exact McNemar test of that change. Written from the formulas (Wilson 1927; Newcombe
1998, method 10; McNemar 1947) so that each is a few lines a reviewer can check; tests compare them with
statsmodels and scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``successes / n``: never outside [0, 1], good at 0 and 1."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def with_interval(successes: int, n: int, digits: int = 6) -> dict:
    """A proportion as the metric files publish it: the value, its 95% Wilson interval, and the counts."""
    low, high = wilson(successes, n)
    value = successes / n if n else 0.0
    return {
        "value": round(value, digits),
        "low": round(low, digits),
        "high": round(high, digits),
        "successes": int(successes),
        "n": int(n),
    }


@dataclass(frozen=True)
class PairedComparison:
    """Two classifiers on the same ``n`` images: ``only_a`` right only for A, ``only_b`` right only for B."""

    n: int
    both: int
    only_a: int
    only_b: int
    neither: int

    @property
    def accuracy_a(self) -> float:
        return (self.both + self.only_a) / self.n

    @property
    def accuracy_b(self) -> float:
        return (self.both + self.only_b) / self.n

    @property
    def change(self) -> float:
        return (self.only_b - self.only_a) / self.n

    def change_interval(self, z: float = Z95) -> tuple[float, float]:
        """Newcombe's (1998) method 10 for the difference of paired proportions: each accuracy's Wilson interval,
        combined with the correlation phi between the two classifiers' outcomes."""
        n, pb, pa = self.n, self.accuracy_b, self.accuracy_a
        lb, ub = wilson(self.both + self.only_b, n, z)
        la, ua = wilson(self.both + self.only_a, n, z)
        margins = (
            (self.both + self.only_b)
            * (self.only_a + self.neither)
            * (self.both + self.only_a)
            * (self.only_b + self.neither)
        )
        phi = (self.both * self.neither - self.only_a * self.only_b) / math.sqrt(margins) if margins else 0.0
        below = (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2
        above = (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2
        return max(-1.0, self.change - math.sqrt(max(below, 0.0))), min(1.0, self.change + math.sqrt(max(above, 0.0)))

    def mcnemar_p(self) -> float:
        """Exact McNemar test: under "no change" each discordant image is a fair coin, so the two-sided p-value is
        twice the binomial tail of the smaller discordant count (at most 1)."""
        discordant, k = self.only_a + self.only_b, min(self.only_a, self.only_b)
        if discordant == 0:
            return 1.0
        tail = sum(math.comb(discordant, i) for i in range(k + 1)) / 2**discordant
        return min(1.0, 2 * tail)


def paired(correct_a, correct_b) -> PairedComparison:
    """Count the four outcomes of two aligned sequences of booleans (was image i classified right?)."""
    pairs = list(zip(correct_a, correct_b, strict=True))
    return PairedComparison(
        n=len(pairs),
        both=sum(a and b for a, b in pairs),
        only_a=sum(a and not b for a, b in pairs),
        only_b=sum(b and not a for a, b in pairs),
        neither=sum(not a and not b for a, b in pairs),
    )
