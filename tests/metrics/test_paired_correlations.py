"""Paired differences of the correlations (MRC, MAC, MCC) and CVs: a normal test on the replicates' sd.

`metrics.debias.paired_difference`. A difference of per-marker correlations over a few tasks has
long-tailed replicates (a marker's correlation flips towards +-1 in a few of them): their central
quantiles are narrower than 1.96 sd, so the basic interval and the p-value that inverts it
rejected a true null too often (benchmarks/interval_coverage.py, docs/statistics.md), while
est / sd was calibrated. The CVs' paired difference uses the same normal test, as their
single-group interval does: at B = 200 the basic test rejected a simulated null 0.063-0.065 of
the time where est / sd rejected 0.051 (docs/statistics.md). These tests pin the construction
and its null rejection rate on replicates of that shape.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from metrics.debias import paired_difference
from metrics.seven import Metric


def _long_tailed(rng, n: int) -> np.ndarray:
    """Replicate differences: mostly N(0, 1), 4 % far out (a correlation that flipped)."""
    far = rng.random(n) < 0.04
    return np.where(far, rng.choice([-8.0, 8.0], size=n), rng.normal(size=n))


def _pair(estimate: float, reps: np.ndarray) -> tuple[Metric, Metric]:
    """Two groups whose corrected difference is `estimate` at the point and `reps` after;
    anchors chosen so that the debiased difference is `estimate` (no bias correction)."""
    b = Metric(values=np.zeros(1 + len(reps)), corrected=np.zeros(1 + len(reps)), anchor=0.0)
    corrected = np.concatenate([[estimate], reps])
    a = Metric(values=corrected.copy(), corrected=corrected, anchor=float(np.mean(reps)))
    return a, b


@pytest.mark.parametrize("name", ["MCC-P-all", "I-AvgCV", "I-AvgCV (shared)", "C-AvgCV"])
def test_correlation_and_cv_differences_are_a_normal_test_on_the_replicates_sd(name):
    rng = np.random.default_rng(7)
    reps = _long_tailed(rng, 400)
    a, b = _pair(0.9, reps)
    d = paired_difference(a, b, 0.95, name)
    se = np.std(reps, ddof=1)
    assert d.debiased == pytest.approx(0.9)
    assert d.p_value == pytest.approx(2 * stats.norm.sf(0.9 / se), rel=1e-9)
    assert d.ci == pytest.approx((0.9 - 1.959964 * se, 0.9 + 1.959964 * se), rel=1e-6)
    assert d.ci_method.endswith(", normal")


def test_null_rejection_with_long_tailed_replicates_is_nominal():
    # Under the null the estimate varies with the replicates' sd (measured in the comparison
    # study: sd of est / se 0.97-1.02 for MCC and MCC-P-all). Rejections at alpha = 0.05 over
    # N independent nulls are Binomial(N, 0.05) when the test is calibrated; the bound is its
    # upper 0.999 quantile. The basic interval's quantiles (|q| ~ 2.6 where 1.96 sd ~ 3.7)
    # reject about one in eight of them (147 of 1,200 here before the change).
    rng = np.random.default_rng(11)
    n = 400
    rejected = 0
    for _ in range(n):
        reps = _long_tailed(rng, 200)
        est = rng.normal(0.0, np.std(reps, ddof=1))
        a, b = _pair(est, reps)
        for name in ("MCC-P-all", "MAC", "MRC"):
            rejected += paired_difference(a, b, 0.95, name).p_value < 0.05
    bound = stats.binom.ppf(0.999, 3 * n, 0.05)
    assert rejected <= bound, (rejected, bound)
    assert rejected >= stats.binom.ppf(0.001, 3 * n, 0.05)


def test_other_metrics_keep_the_basic_interval():
    rng = np.random.default_rng(5)
    reps = _long_tailed(rng, 400)
    a, b = _pair(0.5, reps)
    d = paired_difference(a, b, 0.95, "I-AvgMAE (Mode 2)")
    assert not d.ci_method.endswith(", normal")
