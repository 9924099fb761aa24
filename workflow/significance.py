"""The significance test of the declared tables (:mod:`workflow.tables`).

Significance, against the row of the baseline in the same block and column
group, per metric, over the seeds both have (a seed fixes the split, so
seeds pair up; a seed with a NaN on either side, e.g. the accuracy of a loss
that cannot classify, is left out):

* an **exact paired sign-flip permutation test** (:func:`sign_flip_p_value`):
  statistic ``|mean(d)|`` of the paired differences ``d``; p is the share of
  the 2^n sign assignments at least as extreme, all enumerated up to
  EXACT_MAX_SEEDS seeds (a seeded Monte-Carlo with the +1 correction above).
  It makes no normality assumption and never returns p = 0: its smallest
  value is 2/2^n (0.25 with 3 seeds, 0.125 with 4, 0.0625 with 5), and
  all-zero differences give p = 1. Fewer than MIN_SEEDS (3) paired seeds:
  no test (NaN);
* **Holm** correction (:func:`holm`) over every comparison of the table
  (each row against the baseline, in every block, column group and
  metric): one family per table, so a table's markers hold together;
* ``*`` marks Holm-adjusted p < ALPHA (0.05). The CSV has the raw ``p``,
  ``p_holm``, ``n_paired`` and the mean paired difference ``diff`` (row -
  baseline) with its 95% Student-t interval ``diff_ci_low``/``diff_ci_high``.
  The caption (:func:`workflow.table_text.significance_note`) names the test, the seed count,
  the family size and the smallest p the seeds allow, and says when no
  marker can appear (always with 5 seeds or fewer).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
# The significance test: no test below MIN_SEEDS paired seeds; exact
# enumeration of the 2^n sign flips up to EXACT_MAX_SEEDS, else Monte-Carlo.
MIN_SEEDS = 3
EXACT_MAX_SEEDS = 16
MONTE_CARLO_RESAMPLES = 100_000


def mean_ci(
    values: np.ndarray, level: float = 0.95
) -> tuple[float, float, float, float]:
    """Mean, std (ddof 1), and the Student-t confidence interval of the mean."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if len(values) else float("nan")
    if len(values) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(values.std(ddof=1))
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * std / np.sqrt(len(values))
    return mean, std, mean - half, mean + half


def paired_differences(values: pd.Series, baseline: pd.Series) -> np.ndarray:
    """``values - baseline`` over the seeds both have (index = seed), seeds
    where either value is NaN left out (e.g. accuracy of a loss that cannot
    classify)."""
    common = values.index.intersection(baseline.index)
    d = values.loc[common].to_numpy(float) - baseline.loc[common].to_numpy(float)
    return d[~np.isnan(d)]


def smallest_p(n: int) -> float:
    """The smallest p-value :func:`sign_flip_p_value` can return for ``n``
    paired seeds (NaN below MIN_SEEDS: no test)."""
    if n < MIN_SEEDS:
        return float("nan")
    return 2.0 / 2**n if n <= EXACT_MAX_SEEDS else 1.0 / (MONTE_CARLO_RESAMPLES + 1)


def sign_flip_p_value(d, rtol: float = 1e-9) -> float:
    """Two-sided paired sign-flip permutation test of "the differences are
    symmetric about 0": statistic ``|mean(d)|``; p is the share of the 2^n
    sign assignments whose statistic is at least the observed one (ties
    within ``rtol`` of the mean absolute difference count as at least).

    Exact (every assignment enumerated) up to EXACT_MAX_SEEDS differences,
    so p >= 2/2^n and all-zero differences give p = 1; above, a seeded
    Monte-Carlo sample of MONTE_CARLO_RESAMPLES assignments with the +1
    correction, p = (1 + hits) / (1 + resamples). Fewer than MIN_SEEDS
    differences: NaN (no test). NaN differences are dropped first."""
    d = np.asarray(d, dtype=float)
    d = d[~np.isnan(d)]
    n = len(d)
    if n < MIN_SEEDS:
        return float("nan")
    observed = abs(d.mean())
    threshold = observed - rtol * np.abs(d).mean()
    if n <= EXACT_MAX_SEEDS:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        means = np.abs((1 - 2 * bits) @ d) / n
        return float(np.count_nonzero(means >= threshold) / 2**n)
    rng = np.random.default_rng(0)
    hits, left = 0, MONTE_CARLO_RESAMPLES
    while left:
        size = min(left, 10_000)
        signs = rng.choice([-1.0, 1.0], size=(size, n))
        hits += int(np.count_nonzero(np.abs(signs @ d) / n >= threshold))
        left -= size
    return (1 + hits) / (1 + MONTE_CARLO_RESAMPLES)


def paired_p_value(values: pd.Series, baseline: pd.Series) -> float:
    """Sign-flip test (:func:`sign_flip_p_value`) of the paired differences
    over the seeds both series have (index = seed); NaN below MIN_SEEDS."""
    return sign_flip_p_value(paired_differences(values, baseline))


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries (no test) stay NaN and
    are not counted in the family. The i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out
