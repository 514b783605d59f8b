"""The report's statistics against known answers: scipy's own functions and Holm's method by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from hreg.report.stats import MIN_PAIRS, holm, holm_correct, paired, t_interval


def test_t_interval_is_scipys_student_t_interval_of_the_mean():
    values = [97.1, 97.4, 96.9, 97.8, 97.2]
    interval = t_interval(values)
    sem = stats.sem(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values), scale=sem)
    assert interval.n == 5 and interval.mean == pytest.approx(97.28)
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert t_interval([1.0]).n == 1 and math.isnan(t_interval([1.0]).low)
    assert t_interval([math.nan, 2.0, 2.0]) == t_interval([2.0, 2.0])


def test_a_known_paired_difference_is_found_with_scipys_interval_and_p_value():
    baseline = {f"seed={s}": v for s, v in enumerate([96.0, 96.5, 95.8, 96.2, 96.4])}
    shift = [2.1, 1.8, 2.0, 2.2, 1.9]  # the known difference: +2.0 points on average
    other = {seed: value + d for (seed, value), d in zip(baseline.items(), shift)}
    comparison = paired("augment", baseline, other)
    reference = stats.ttest_rel(list(other.values()), list(baseline.values()))
    assert comparison.difference.mean == pytest.approx(2.0)
    assert comparison.p == pytest.approx(reference.pvalue) and comparison.p < 1e-5
    assert (comparison.difference.low, comparison.difference.high) == pytest.approx(tuple(reference.confidence_interval()))


def test_only_seeds_both_configurations_ran_are_paired():
    baseline = {"seed=0": 1.0, "seed=1": 2.0, "seed=2": 3.0, "seed=3": 4.0}
    other = {"seed=1": 2.5, "seed=2": 3.0, "seed=3": 4.9, "seed=9": 0.0}
    comparison = paired("l1", baseline, other)
    assert comparison.difference.n == 3
    assert comparison.p == pytest.approx(stats.ttest_rel([2.5, 3.0, 4.9], [2.0, 3.0, 4.0]).pvalue)


def test_fewer_than_three_pairs_give_no_test():
    comparison = paired("l1", {"seed=0": 1.0, "seed=1": 2.0}, {"seed=0": 3.0, "seed=1": 5.0})
    assert MIN_PAIRS == 3 and not comparison.testable and not comparison.significant()
    assert math.isnan(comparison.p) and comparison.difference.mean == pytest.approx(2.5)


def test_holm_by_hand():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept monotone: 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, math.nan, 0.9]) == pytest.approx([1.0, math.nan, 1.0], nan_ok=True)


# No subnormals: a CPU run earlier in the same worker flushes them (hreg/device.py), and Hypothesis then refuses.
@given(st.lists(st.floats(0, 1, allow_subnormal=False), min_size=1, max_size=12))
def test_holm_never_lowers_a_p_value_and_keeps_their_order(pvalues):
    adjusted = holm(pvalues)
    assert all(p <= a <= 1 for p, a in zip(pvalues, adjusted))
    ranked = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    assert [adjusted[i] for i in ranked] == sorted(adjusted)


def test_holm_correct_sets_each_comparisons_corrected_p():
    baseline = {f"seed={s}": float(s) for s in range(5)}
    comparisons = holm_correct([paired("a", baseline, {k: v + 1 + 0.1 * (v % 2) for k, v in baseline.items()}),
                                paired("b", baseline, {k: v + 0.1 * (-1) ** v for k, v in baseline.items()})])
    assert [c.p_holm for c in comparisons] == pytest.approx(holm([c.p for c in comparisons]))
    assert comparisons[0].significant() and not comparisons[1].significant()
