"""Report statistics against scipy on known inputs."""

import math

import numpy as np
import pytest
from scipy import stats

from reports.stats import (
    blocked_rank_correlation,
    holm,
    holm_levels,
    iqm,
    mean_ci,
    minimum_detectable_effect,
    paired_power,
    paired_test,
    probability_of_improvement,
    seeds_for_effect,
    stratified_bootstrap_ci,
)


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


def test_holm_levels_are_the_levels_of_the_step_down_decisions():
    # m = 4, alpha 0.05: 0.005 < 0.05/4 rejected; 0.01 < 0.05/3 rejected; 0.03 >= 0.05/2 stops
    levels = holm_levels([0.01, 0.04, 0.03, 0.005])
    assert levels.tolist() == pytest.approx([0.05 / 3, 0.05 / 2, 0.05 / 2, 0.05 / 4])
    # a later p below its own step level is not rejected once the procedure stopped
    # (0.045 is below alpha/1, the level of a third step, but the first step already failed)
    assert holm_levels([0.03, 0.04, 0.045, np.nan]).tolist()[:3] == pytest.approx([0.05 / 3] * 3)
    assert math.isnan(holm_levels([0.03, np.nan])[1])


def test_holm_level_intervals_agree_with_holm_verdicts_where_plain_intervals_do_not():
    """Three paired comparisons, each with p ~ 0.03: each plain 95% interval excludes 0, but Holm
    rejects none. At the Holm levels every interval contains 0, as the verdicts say."""
    deltas = [
        np.array([0.010, 0.020, 0.030, 0.012]),
        np.array([0.011, 0.021, 0.029, 0.013]),
        np.array([0.012, 0.019, 0.031, 0.011]),
    ]
    p = [stats.ttest_1samp(d, 0).pvalue for d in deltas]
    assert all(0.01 < v < 0.05 for v in p)
    assert all(mean_ci(d)[1] > 0 for d in deltas)  # the plain interval excludes 0
    assert (holm(p) >= 0.05).all()
    for d, level in zip(deltas, holm_levels(p)):
        _, low, high = mean_ci(d, 1 - level)
        assert low < 0 < high
    strong = np.array([0.10, 0.11, 0.12, 0.105])  # with one clear effect, its interval excludes 0
    p2 = [stats.ttest_1samp(strong, 0).pvalue] + p[:1]
    levels = holm_levels(p2)
    assert holm(p2)[0] < 0.05 and mean_ci(strong, 1 - levels[0])[1] > 0


def test_iqm_by_hand():
    # 8 values: drop the 2 lowest and 2 highest, mean of 3, 4, 5, 6
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)


def test_probability_of_improvement_by_hand():
    # pairs (x > y): 3 > 1, 3 > 2, 4 > 1, 4 > 2, 2 = 2 (half), 2 > 1 -> 5.5 of 6... over 3 x 2 = 6 pairs
    assert probability_of_improvement([2, 3, 4], [1, 2]) == pytest.approx(5.5 / 6)
    assert probability_of_improvement([1, 1], [2, 2]) == 0.0


def test_stratified_bootstrap_resamples_within_tasks_and_is_seeded():
    a, b = np.array([0.0, 1.0, 2.0]), np.array([10.0, 11.0, 12.0])
    mean_of_both = lambda x, y: float(np.mean(np.concatenate([x, y])))  # noqa: E731
    low, high = stratified_bootstrap_ci([a, b], mean_of_both, seed=0)
    assert (low, high) == stratified_bootstrap_ci([a, b], mean_of_both, seed=0)
    # every resample keeps 3 values of each task, so the mean stays within [5, 7] (not [0, 12])
    assert 5.0 <= low <= 6.0 <= high <= 7.0
    assert all(math.isnan(v) for v in stratified_bootstrap_ci([a, b[:1]], mean_of_both, seed=0))


def test_blocked_rank_correlation_ranks_within_blocks():
    # within each block y falls as x rises; across blocks the levels differ wildly
    x = [1, 2, 3, 101, 102, 103, 51, 52, 53]
    y = [30, 20, 10, -1, -2, -3, 7, 6, 5]
    blocks = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rho, p, n = blocked_rank_correlation(x, y, blocks, seed=0, permutations=2000)
    assert rho == pytest.approx(-1.0) and n == 9
    assert p == pytest.approx(1 / 2001 + 2 * (1 / 6) ** 3, abs=0.02)  # exact: 2 of 216 within-block orders
    rho, p, _ = blocked_rank_correlation(x, [1, 2, 3] * 3, blocks, seed=0, permutations=200)
    assert rho == pytest.approx(1.0)
    assert math.isnan(blocked_rank_correlation([1, 2], [2, 1], [0, 0], seed=0)[0])


@pytest.mark.parametrize(
    "n, level", [(3, 0.05), (5, 0.05), (10, 0.0125), (20, 0.005), (50, 0.001), (2, 0.05)]
)
def test_power_arithmetic_equals_statsmodels_ttest_power(n, level):
    from statsmodels.stats.power import TTestPower

    compared = 0
    for effect_size in (0.1, 0.2, 0.5, 1.0, 2.5):
        theirs = TTestPower().power(effect_size, n, level, alternative="two-sided")
        if math.isnan(theirs):  # statsmodels' NaN far in the lower tail (see the test below)
            continue
        assert paired_power(1.2 * effect_size, 1.2, n, level) == pytest.approx(theirs, abs=1e-10)
        compared += 1
    assert compared >= 3
    expected = TTestPower().solve_power(
        effect_size=None, nobs=n, alpha=level, power=0.8, alternative="two-sided"
    )
    assert minimum_detectable_effect(1.2, n, level) == pytest.approx(1.2 * expected, rel=1e-6)


def test_the_mde_has_the_power_it_claims_where_statsmodels_solves_short():
    """At 5 seeds and level 0.005 statsmodels' power is NaN beyond an effect of 3.1 sd (scipy's
    noncentral t cdf far in its lower tail), and its solver stops at a power of 0.78: ours keeps
    that negligible tail at 0 and reaches 0.80, as a simulation of the paired t-test says."""
    mde = minimum_detectable_effect(1.2, 5, 0.005)
    assert paired_power(mde, 1.2, 5, 0.005) == pytest.approx(0.8, abs=1e-9)
    changes = np.random.default_rng(0).normal(mde, 1.2, (200_000, 5))
    t = changes.mean(1) / (changes.std(1, ddof=1) / math.sqrt(5))
    assert (np.abs(t) > stats.t.ppf(1 - 0.0025, 4)).mean() == pytest.approx(0.8, abs=0.005)


def test_seeds_for_an_effect_are_the_fewest_that_reach_it():
    n = seeds_for_effect(0.01, 0.012, 0.005)
    assert minimum_detectable_effect(0.012, n, 0.005) <= 0.01 < minimum_detectable_effect(0.012, n - 1, 0.005)
    assert math.isnan(minimum_detectable_effect(0.0, 5, 0.05)) and math.isnan(
        minimum_detectable_effect(1.0, 1, 0.05)
    )
