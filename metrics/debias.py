"""From a metric's bootstrap replicates to a debiased estimate, a standard error and an interval.

The seven metrics are nonlinear plug-in statistics: |MIC - c| and the CVs absorb the sampling noise
of the MICs (they are biased up), a Spearman of noisy MICs shrinks towards 0. The bootstrap
replicates carry the same bias again, so a percentile interval of the replicates sits on the
wrong side of the plug-in value and misses the population value (docs/statistics.md measures
it). What this module does instead, per metric:

* ``debiased = 2 theta_hat - mean(theta*)``: the bootstrap bias correction (Efron & Tibshirani,
  section 10.2), which removes the O(1/n) bias term.
* ``ci`` = the basic (reverse-percentile) interval ``[2 theta_hat - q_hi, 2 theta_hat - q_lo]``:
  the replicates' spread around their own mean, reflected around the plug-in value, i.e. centred
  on the bias-corrected estimate. Its coverage on known-truth populations is in
  docs/statistics.md (benchmarks/coverage.py).
* The metric's range clips both (an MAE or a CV is >= 0, a correlation lies in [-1, 1]): a
  metric whose population value sits on the boundary (I-AvgMAE Mode 4 of a stable model is 0)
  gets an interval that reaches the boundary instead of crossing it.
* The debiased estimate always lies inside its interval (if the replicates are so skewed that
  their mean falls outside their own central quantiles, the interval is widened to include it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CI_METHOD = "basic"


@dataclass(frozen=True)
class Estimate:
    """One metric's debiased estimate and interval (``None`` fields: not computable)."""

    debiased: float | None
    se: float | None
    ci: tuple[float, float] | None
    ci_method: str | None
    n_replicates: int
    n_dropped: int
    degenerate: bool = False


def metric_bounds(name: str) -> tuple[float, float]:
    """The range a metric's population value lies in (clips debiased estimates and intervals)."""
    if "CV" in name:
        return 0.0, np.inf
    if "MAE" in name or "ECE" in name:
        return 0.0, 1.0
    return -1.0, 1.0  # correlations (MRC, MAC, MCC and their variants)


def debias(
    theta_hat: float,
    replicates: np.ndarray,
    level: float = 0.95,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> Estimate:
    """Bootstrap bias correction and basic interval of one statistic.

    Args:
        theta_hat: the plug-in value.
        replicates: the statistic on each bootstrap replicate (NaN replicates are dropped).
        level: confidence level.
        bounds: the statistic's range; the estimate and interval are clipped to it.

    Returns:
        The `Estimate` (all None when fewer than 2 replicates are finite).
    """
    reps = np.asarray(replicates, dtype=np.float64)
    ok = np.isfinite(reps)
    n_ok = int(ok.sum())
    if n_ok < 2 or not np.isfinite(theta_hat):
        return Estimate(None, None, None, None, n_ok, len(reps) - n_ok)
    reps = reps[ok]
    lo_b, hi_b = bounds
    alpha = (1.0 - level) / 2.0
    q_lo, q_hi = np.quantile(reps, [alpha, 1.0 - alpha])
    center = float(np.mean(reps))
    if q_hi - q_lo <= 0:  # every replicate equal: nothing to correct, a point interval
        v = float(np.clip(theta_hat, lo_b, hi_b))
        return Estimate(v, 0.0, (v, v), CI_METHOD, n_ok, len(replicates) - n_ok, True)
    debiased = float(np.clip(2.0 * theta_hat - center, lo_b, hi_b))
    low = float(np.clip(2.0 * theta_hat - q_hi, lo_b, hi_b))
    high = float(np.clip(2.0 * theta_hat - q_lo, lo_b, hi_b))
    low, high = min(low, debiased), max(high, debiased)
    se = float(np.std(reps, ddof=1))
    return Estimate(debiased, se, (low, high), CI_METHOD, n_ok, len(replicates) - n_ok)
