"""How sure a figure is: 95% intervals for an accuracy, and for the change in accuracy between two models judged on
the same images, with the exact McNemar test of that change. Written from the formulas (Wilson 1927; Newcombe
1998, method 10; McNemar 1947) so that each is a few lines a reviewer can check; tests compare them with
statsmodels and scipy.
"""

from __future__ import annotations

import math
import statistics
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


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 <= p < 1) of Student's t with ``df`` >= 1 degrees of freedom, which Welch's method makes
    fractional (never below the smaller group's runs less one): Newton's method on the distribution function (the
    density integrated by Simpson's rule), from the normal quantile. The t's is never below it, and the distribution
    function is concave above zero, so every step stays below the root and closes in on it: a handful of steps, where
    bisection took fifty."""
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def density(t: float) -> float:
        return scale * (1 + t * t / df) ** (-(df + 1) / 2)

    def cdf(t: float, steps: int = 2000) -> float:
        h = t / steps
        weights = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
        return 0.5 + h / 3 * (density(0) + weights + density(t))

    t = statistics.NormalDist().inv_cdf(p)
    for _ in range(100):
        step = (p - cdf(t)) / density(t)
        t += step
        if abs(step) < 1e-10:
            break
    return t


@dataclass(frozen=True)
class GroupComparison:
    """Recipe B against recipe A, each trained several times (seeds): ``a`` and ``b`` hold one figure per run.

    The difference of the group means varies with the seeds (estimated from the spread within each group, as in
    Welch's test) and with the validation images (``image_variance``: how much the per-image difference between the
    recipes varies from image to image, beyond what the seeds alone explain; see ``image_variance``). The interval
    is Student's t with Welch-Satterthwaite degrees of freedom on the sum of the two."""

    a: tuple[float, ...]
    b: tuple[float, ...]
    image_variance: float | None = None  # None: no per-image outcomes (top-5 from summaries alone, say)
    images: int = 0

    @property
    def difference(self) -> float:
        return statistics.fmean(self.b) - statistics.fmean(self.a)

    @property
    def seed_sd(self) -> tuple[float, float]:
        """Each group's seed-to-seed standard deviation."""
        return statistics.stdev(self.a), statistics.stdev(self.b)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        parts = [(statistics.variance(group) / len(group), len(group) - 1) for group in (self.a, self.b)]
        if self.image_variance:
            parts.append((self.image_variance, self.images - 1))
        return welch_interval(self.difference, parts, level)


def welch_interval(centre: float, parts: list[tuple[float, float]], level: float = 0.95) -> tuple[float, float]:
    """``centre`` plus or minus Student's t times the root of the summed variances, ``parts`` being ``(variance,
    degrees of freedom)`` pairs, with Welch-Satterthwaite degrees of freedom. No variance at all (every run gave the
    same figure, and no image varies): the centre itself."""
    variance = sum(v for v, _ in parts)
    if variance == 0:
        return centre, centre
    df = variance**2 / sum(v * v / d for v, d in parts if v)
    half = student_t_quantile(1 - (1 - level) / 2, df) * math.sqrt(variance)
    return centre - half, centre + half


def image_variance(correct_a, correct_b) -> float:
    """The validation sample's share of the variance of the difference in accuracy between two groups of runs.

    ``correct_a`` is (runs of A, images), ``correct_b`` (runs of B, images): 1 where the run classified the image
    right, on the same images in the same order. The difference of the recipes on image i, averaged over each
    group's runs, varies across images for two reasons: the recipes differ more on some images than on others (what
    another validation sample would change), and each run's own luck (already in the seed variance). The second part,
    the per-image variance across runs over the runs, is subtracted; what is left, over the image count, is the
    variance a fresh sample of images would add to the difference (a method-of-moments estimate, never negative)."""
    import numpy as np

    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    n = a.shape[1]
    per_image = b.mean(0) - a.mean(0)
    runs_noise = a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b)
    return max(0.0, float(per_image.var(ddof=1) - runs_noise.mean())) / n


def seed_groups(a, b, correct_a=None, correct_b=None) -> GroupComparison:
    """Compare the figures of two groups of runs (at least two runs each), with their per-image outcomes when known."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(
            f"each group needs at least 2 runs (seeds) for its seed-to-seed variance; got {len(a)} and {len(b)}"
        )
    if correct_a is None or correct_b is None:
        return GroupComparison(tuple(map(float, a)), tuple(map(float, b)))
    return GroupComparison(
        tuple(map(float, a)), tuple(map(float, b)), image_variance(correct_a, correct_b), len(correct_a[0])
    )
