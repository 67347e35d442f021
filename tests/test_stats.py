"""Report statistics against scipy on known inputs."""
import math

import numpy as np
import pytest
from scipy import stats

from reports.stats import holm, mean_ci, paired_test


def test_mean_ci_matches_scipy_t_interval():
    values = [0.91, 0.93, 0.90, 0.95, 0.92]
    mean, low, high = mean_ci(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(expected, rel=1e-12)


def test_mean_ci_of_one_value_has_no_interval():
    mean, low, high = mean_ci([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)


def test_paired_test_matches_scipy_ttest_rel():
    a, b = [0.91, 0.93, 0.90, 0.95], [0.89, 0.92, 0.90, 0.91]
    assert paired_test(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)


def test_paired_test_edge_cases():
    assert paired_test([1, 2, 3], [1, 2, 3]) == 1.0
    assert math.isnan(paired_test([2, 3, 4], [1, 2, 3]))  # no spread: untestable
    assert math.isnan(paired_test([1], [2]))


def test_holm_on_known_values():
    # classic example: p = 0.01, 0.04, 0.03, 0.005 -> sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 (monotone)
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_agrees_with_bonferroni_for_the_smallest_and_ignores_nan():
    p = np.array([0.2, np.nan, 0.001, 0.04])
    adjusted = holm(p)
    assert math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.001 * 3)
    assert adjusted[3] == pytest.approx(0.04 * 2) and adjusted[0] == pytest.approx(0.2)
