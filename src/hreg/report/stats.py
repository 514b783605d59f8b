"""Which differences between configurations are real: confidence intervals and paired tests over seeds.

A configuration's runs differ only by seed; its mean comes with a Student t 95% confidence
interval. Two configurations run with the same seeds (same seed: same initial weights and
split) are compared pair by pair: the mean of the per-seed differences, its t
interval, and the paired t-test's p-value (scipy's ``ttest_rel``), corrected for the number
of comparisons by Holm's method. Below ``MIN_PAIRS`` pairs no test is made: with two seeds
the interval spans almost anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.95
#: The fewest seeds (pairs) for which the report gives an interval and a test.
MIN_PAIRS = 3


@dataclass(frozen=True)
class Interval:
    """A mean with its ``LEVEL`` confidence interval (NaN bounds below two values)."""

    mean: float
    low: float
    high: float
    n: int


def t_interval(values: list[float]) -> Interval:
    """The mean of ``values`` (NaNs left out) and its Student t interval."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    if max(values) == min(values):
        return Interval(mean, mean, mean, len(values))
    from scipy import stats  # here: every run loads hreg.report (its callback), only a report needs scipy

    low, high = stats.ttest_1samp(values, 0.0).confidence_interval(LEVEL)
    return Interval(mean, float(low), float(high), len(values))


@dataclass(frozen=True)
class Comparison:
    """A configuration against the baseline, paired by seed: ``difference`` is its mean minus the baseline's."""

    label: str
    difference: Interval
    p: float
    #: ``p`` corrected for the number of comparisons (Holm); set by ``holm_correct``.
    p_holm: float = math.nan

    @property
    def testable(self) -> bool:
        return self.difference.n >= MIN_PAIRS

    def significant(self, alpha: float = 1 - LEVEL) -> bool:
        return self.testable and self.p_holm < alpha


def paired(label: str, baseline: dict[str, float], other: dict[str, float]) -> Comparison:
    """``other`` against ``baseline`` on the seeds both have (values keyed by seed, NaNs left out)."""
    seeds = sorted(s for s in baseline.keys() & other.keys()
                   if not (math.isnan(baseline[s]) or math.isnan(other[s])))
    differences = [other[s] - baseline[s] for s in seeds]
    if len(seeds) < MIN_PAIRS:
        return Comparison(label, t_interval(differences), math.nan)
    if max(differences) == min(differences):  # no spread: the t statistic is undefined
        p = 1.0 if differences[0] == 0 else 0.0
        return Comparison(label, t_interval(differences), p)
    from scipy import stats

    result = stats.ttest_rel([other[s] for s in seeds], [baseline[s] for s in seeds])
    low, high = result.confidence_interval(LEVEL)
    return Comparison(label, Interval(math.fsum(differences) / len(seeds), float(low), float(high), len(seeds)),
                      float(result.pvalue))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order (NaNs stay NaN and do not count)."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def holm_correct(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons with ``p_holm`` set over the whole family."""
    return [Comparison(c.label, c.difference, c.p, p) for c, p in zip(comparisons, holm([c.p for c in comparisons]))]
