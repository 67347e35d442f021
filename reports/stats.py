"""Statistics across seeds: t confidence intervals, paired t-tests, Holm's correction."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


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
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted
