"""Statistics of a run's results, each with the unit it treats as independent.

- Per comparison (a strategy against `none` in one data set, regime and classifier): the seeds are
  the units; Student-t intervals, paired t-tests, Holm's correction (statsmodels) over the table,
  and intervals at the level at which Holm's step-down procedure tested each comparison, so that an
  interval and its verdict never disagree.
- Across tasks (rliable's aggregates, Agarwal et al. 2021, computed with scipy): the interquartile
  mean and the probability of improvement, with stratified-bootstrap intervals that resample seeds
  within each task.
- Power: the minimum detectable effect of a paired t-test (80 % power at the level it was tested
  at, from the paired spread), and the seeds that bring it below a target; the noncentral t
  distribution (scipy), checked against statsmodels' TTestPower by the tests.
- Association (quality against gain): Spearman's rho of ranks taken within blocks, with a
  permutation test that permutes within blocks.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

BOOTSTRAP_RESAMPLES = 2000


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): a Student-t interval for the mean; NaN bounds with fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    sem = float(values.std(ddof=1) / math.sqrt(len(values)))
    if sem == 0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * sem
    return mean, mean - half, mean + half


def paired_test(treatment, control) -> float:
    """Two-sided paired t-test p-value of treatment vs control (pairs in the same order).

    NaN when it cannot be tested: fewer than 2 pairs, or differences with no spread (accuracies
    are counts, so equal non-zero differences happen; the t statistic is then infinite and its
    p-value meaningless). 1.0 when every difference is 0.
    """
    diff = np.round(np.asarray(treatment, dtype=float) - np.asarray(control, dtype=float), 6)
    if len(diff) < 2:
        return math.nan
    if np.all(diff == diff[0]):
        return 1.0 if diff[0] == 0 else math.nan
    return float(stats.ttest_rel(treatment, control).pvalue)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and do not count as tests)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        adjusted[valid] = multipletests(p[valid], method="holm")[1]
    return adjusted


def holm_levels(p_values, alpha: float = 0.05) -> np.ndarray:
    """The significance level at which Holm's step-down procedure decided each comparison:
    alpha / (m - i + 1) for the i-th smallest p among the rejected ones, alpha / (m - r) for every
    comparison not rejected (r rejections), NaN where untestable. A t-interval at confidence
    1 - level then excludes 0 exactly when Holm rejects (the interval of the same decision)."""
    p = np.asarray(p_values, dtype=float)
    levels = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    rejected = 0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        if rejected == rank and p[index] * (m - rank) < alpha:
            levels[index] = alpha / (m - rank)
            rejected += 1
        else:
            levels[index] = alpha / (m - rejected)
    return levels


POWER = 0.8


def paired_power(effect: float, sd: float, n: int, level: float) -> float:
    """The power of a two-sided paired t-test at ``level`` with ``n`` pairs to detect a mean change
    ``effect`` when the changes have standard deviation ``sd``."""
    if n < 2 or sd <= 0:
        return math.nan
    df, noncentrality = n - 1, effect / sd * math.sqrt(n)
    critical = stats.t.ppf(1 - level / 2, df)
    # P(T > c) + P(T < -c) under the noncentral t; the far lower tail as P(T > c) at -noncentrality,
    # where scipy's cdf can return NaN for a probability below 1e-16
    lower = stats.nct.sf(critical, df, -noncentrality)
    return float(stats.nct.sf(critical, df, noncentrality) + (0.0 if math.isnan(lower) else lower))


def minimum_detectable_effect(sd: float, n: int, level: float, power: float = POWER) -> float:
    """The smallest mean change that a two-sided paired t-test at ``level`` with ``n`` pairs detects
    with probability ``power``, for changes with standard deviation ``sd`` (in the unit of ``sd``).
    NaN with fewer than 2 pairs or no spread."""
    if n < 2 or not sd > 0 or math.isnan(level):
        return math.nan
    high = sd
    while paired_power(high, sd, n, level) < power:
        high *= 2
    return float(
        optimize.brentq(lambda effect: paired_power(effect, sd, n, level) - power, 0.0, high, xtol=1e-12)
    )


def seeds_for_effect(
    effect: float, sd: float, level: float, power: float = POWER, most: int = 1000
) -> int | None:
    """The fewest seeds (pairs) whose minimum detectable effect is at most ``effect``; None beyond
    ``most``."""
    for n in range(2, most + 1):
        if minimum_detectable_effect(sd, n, level, power) <= effect:
            return n
    return None


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean, 25% cut at each end)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def probability_of_improvement(x, y) -> float:
    """P(X > Y) + P(X = Y)/2 from the Mann-Whitney U statistic of two samples."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(stats.mannwhitneyu(x, y, alternative="two-sided").statistic) / (len(x) * len(y))


def stratified_bootstrap_ci(samples: list, statistic, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``statistic(*samples)`` resampling each sample (a task's seeds)
    independently: rliable's stratified bootstrap. NaNs when a sample has fewer than 2 values."""
    samples = [np.asarray(s, dtype=float) for s in samples]
    if not samples or any(len(s) < 2 for s in samples):
        return math.nan, math.nan
    if all(np.all(s == s[0]) for s in samples):
        value = statistic(*samples)
        return value, value
    result = stats.bootstrap(
        tuple(samples),
        statistic,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=level,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _ranks_within(values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values))
    for block in np.unique(blocks):
        where = blocks == block
        ranks[where] = stats.rankdata(values[where])
    return ranks


def blocked_rank_correlation(x, y, blocks, seed: int, permutations: int = 10_000) -> tuple[float, float, int]:
    """(rho, p, n): Pearson correlation of x and y ranked within each block (e.g. a seed, whose
    points share an evaluator and N), with a two-sided p-value from permuting y within blocks.
    NaNs with fewer than 3 points or no within-block variation."""
    x, y, blocks = (np.asarray(v) for v in (x, y, blocks))
    keep = ~(np.isnan(x.astype(float)) | np.isnan(y.astype(float)))
    x, y, blocks = x[keep].astype(float), y[keep].astype(float), blocks[keep]
    rx, ry = _ranks_within(x, blocks), _ranks_within(y, blocks)
    if len(x) < 3 or np.std(rx) == 0 or np.std(ry) == 0:
        return math.nan, math.nan, len(x)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(blocks == b) for b in np.unique(blocks)]
    extreme = 0
    for _ in range(permutations):
        shuffled = ry.copy()
        for group in groups:
            shuffled[group] = ry[rng.permutation(group)]
        extreme += abs(np.corrcoef(rx, shuffled)[0, 1]) >= abs(rho) - 1e-12
    return rho, (extreme + 1) / (permutations + 1), len(x)
