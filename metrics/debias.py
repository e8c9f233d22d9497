"""From a metric's bootstrap replicates to a debiased estimate, a standard error and an interval.

The seven metrics are nonlinear plug-in statistics: |MIC - c| and the CVs absorb the sampling noise
of the MICs (they are biased up), a Spearman of noisy MICs moves with the noise. The bootstrap
replicates carry the same bias again, so a percentile interval of the replicates sits on the
wrong side of the plug-in value and misses the population value (docs/statistics.md measures
it). What this module does instead (methods chosen by coverage on known-truth populations,
benchmarks/interval_coverage.py):

* MAE (Modes 1-3) and ECE: ``debiased = 2 theta_hat - mean(theta*)``, the bootstrap bias
  correction (Efron & Tibshirani, section 10.2), and the basic (reverse-percentile) interval
  ``[2 theta_hat - q_hi, 2 theta_hat - q_lo]``: the replicates' spread reflected around the plug-in
  value, i.e. centred on the bias-corrected estimate. ``ci_method``: "bootstrap bias-corrected,
  basic".
* Mode 4 MAE: noise-corrected first (`metrics.seven.attach_noise_corrections`: each
  |MIC - mean| is unfolded from its noise); the corrected value is the estimate and the
  interval is the corrected replicates' spread centred on it. "noise-corrected, basic spread".
  Mode 4 also estimates the unfolding's residual bias b: half of it is taken out of the
  estimate, and the interval's lower end extends by the other half
  (`metrics.seven.mode4_residual_bias`).
* CVs: noise-corrected (the MICs' sampling variance is taken out of their spread), then the
  bootstrap bias correction of that corrected statistic, its error measured against the
  bootstrap world's CV (the anchor a: the plug-in CV of the sample): debiased =
  theta_c - (mean(theta_c*) - a), interval debiased +- z se (the replicates are close to
  symmetric; their two tail quantiles are noisier than their sd). "noise-corrected, bootstrap
  bias-corrected, normal".
* Spearman variants of MRC, MAC, MCC: the estimand is Spearman on smoothed ranks at a rank
  resolution h (`metrics.seven.attach_rank_corrections`), a smooth functional of the true MICs.
  The estimate is the noise-corrected statistic theta_c; the bootstrap's error is measured
  against the bootstrap world's value of the estimand (the anchor a: the statistic at scale h on
  the sample): debiased = theta_c - (mean(theta*) - a), interval
  [theta_c - (q_hi - a), theta_c - (q_lo - a)], on the Fisher z scale for MAC and MCC.
  "rank resolution h, noise-corrected, bootstrap bias-corrected, basic". MRC keeps the
  replicates' orientation (near its bound 1) and, with B >= 40, takes the interval's width from
  a second bootstrap level (`inner_width_factor`: a symmetric bootstrap-t read at the first
  level's Monte Carlo precision; its replicates' spread understates the estimate's where true
  MICs are near-tied).
* Pearson variants of MAC and MCC, `-all` (`metrics.seven.attach_pearson_corrections`): the
  MICs' noise is taken out of each marker's correlation across tasks (Spearman's correction for
  attenuation, the noise terms from the replicates: without it a noisier model's correlations
  shrink more, and two models with the same MICs differ); the bootstrap's error is measured
  against the plug-in Pearson of the sample (the anchor), as for the Spearman variants, on the
  Fisher z scale. "noise-corrected (attenuation), bootstrap bias-corrected, basic".
* The `-sig` variants (a set chosen by p < 0.05) and every Spearman variant with h = 0: no bias
  correction (for an ordinary Spearman where markers' true MICs are nearly tied, the
  bootstrap's bias does not even share the sign of the estimate's: measured, bias correction,
  BC percentiles and Fisher-normal intervals all covered worse); the interval is the
  replicates' spread centred on the plug-in value, on the Fisher z scale for MAC and MCC.
  "plug-in, basic spread".
* A CV or Mode 4 MAE whose data cannot reject a population value of 0 gets an interval that
  reaches 0 (a bootstrap test of "every difference is 0": |.| and a standard deviation are
  biased up at 0 by about the noise, which no bias correction removes).
* The metric's range clips the estimate and interval (an MAE or a CV is >= 0, a correlation lies
  in [-1, 1]), and the debiased estimate always lies inside its interval (if the replicates are so
  skewed that their mean falls outside their own central quantiles, the interval is widened).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from metrics.seven import CLIP, Metric
from metrics.special import ndtr, ndtri, stdtr

# `ci_method` names: how the estimate was debiased, then how the interval was formed.
CI_METHOD = "bootstrap bias-corrected, basic"
CI_METHOD_CORRECTED = "noise-corrected, basic spread"
CI_METHOD_CV = "noise-corrected, bootstrap bias-corrected, normal"
# Metrics whose interval is the normal one around the debiased estimate (`debias`'s `normal`):
# the CVs, whose replicates are close to symmetric (skewness -0.02 to +0.10 on the simulator's
# populations). Measured at B = 200 (R = 100-200 runs per cell): coverage 0.005-0.05 higher
# than with the basic interval's quantiles in 21 of 32 cells, equal in the rest, for 2 % more
# width (docs/statistics.md).
NORMAL_INTERVAL = ("I-AvgCV", "C-AvgCV")
CI_METHOD_PLUGIN = "plug-in, basic spread"
# The Pearson variants of MAC and MCC (`metrics.seven.attach_pearson_corrections`).
CI_METHOD_PEARSON = "noise-corrected (attenuation), bootstrap bias-corrected, basic"
CI_METHOD_RANK = "rank resolution {h:g}, noise-corrected, bootstrap bias-corrected, basic"
# MRC's interval keeps the replicates' orientation (`RANK_UNREFLECTED`): not a basic interval.
CI_METHOD_RANK_KEPT = (
    "rank resolution {h:g}, noise-corrected, bootstrap bias-corrected, replicates' spread shifted"
)


# Appended where a second bootstrap level set the interval's width (`inner_width_factor`).
CI_METHOD_TWO_LEVEL = ", width from a two-level bootstrap-t"
# Appended where a paired test's standard error came from a second bootstrap level
# (`second_level_se`).
CI_METHOD_PAIRED_TWO_LEVEL = ", sd from a two-level bootstrap"
# The fewest outer replicates with a finite debiased difference `second_level_se` accepts.
SECOND_LEVEL_MIN = 20


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


# Rank correlations at a resolution h > 0 whose interval keeps the replicates' orientation
# (`debias`'s `reflect`).
RANK_UNREFLECTED = ("MRC",)


def on_fisher_scale(name: str) -> bool:
    """MAC and MCC (and variants, at any rank resolution): per-marker correlations over a few
    tasks, whose bootstrap distribution is skewed; corrected on the atanh scale (measured:
    better coverage there; MRC, whose population value can sit at 1, is not)."""
    return name.startswith(("MAC", "MCC"))


def is_correlation(name: str) -> bool:
    """MRC, MAC, MCC and their variants: corrected only through an anchor (`Metric.anchor`), never
    by the plain bootstrap bias correction (see the module docstring)."""
    return name.startswith(("MRC", "MAC", "MCC"))


def is_cv(name: str) -> bool:
    """I-AvgCV, I-AvgCV (shared) and C-AvgCV."""
    return name.startswith(NORMAL_INTERVAL)


def normal_paired_test(name: str) -> bool:
    """The metrics whose paired difference takes the normal test on the replicates' sd (MAC, MCC
    and their variants, the CVs; `paired_difference`); the others take the basic test."""
    return on_fisher_scale(name) or is_cv(name)


def difference_bounds(name: str) -> tuple[float, float]:
    """The range a difference of two values of the metric lies in ([-2, 2] for a correlation)."""
    lo, hi = metric_bounds(name)
    return lo - hi, hi - lo


def is_pearson(name: str) -> bool:
    """The Pearson variants of MAC and MCC (MAC-P-all, ...)."""
    return name.startswith(("MAC-P-", "MCC-P-"))


def metric_bounds(name: str) -> tuple[float, float]:
    """The range a metric's population value lies in (clips debiased estimates and intervals)."""
    if is_cv(name):
        return 0.0, np.inf
    if "MAE" in name or "ECE" in name:
        return 0.0, 1.0
    return -1.0, 1.0  # correlations (MRC, MAC, MCC and their variants)


def debias(
    theta_hat: float,
    replicates: np.ndarray,
    level: float = 0.95,
    bounds: tuple[float, float] = (-np.inf, np.inf),
    *,
    already_debiased: bool = False,
    method: str | None = None,
    fisher: bool = False,
    reaches_lower: bool = False,
    anchor: float | None = None,
    reflect: bool = True,
    lower_allowance: float = 0.0,
    inner: tuple[np.ndarray, np.ndarray] | None = None,
    normal: bool = False,
) -> Estimate:
    """Bootstrap bias correction and basic interval of one statistic.

    Args:
        theta_hat: the plug-in value.
        replicates: the statistic on each bootstrap replicate (NaN replicates are dropped).
        level: confidence level.
        bounds: the statistic's range; the estimate and interval are clipped to it.
        already_debiased: `theta_hat` is a noise-corrected statistic (see
            `metrics.seven.attach_noise_corrections`): keep it as the estimate and centre the
            replicates' spread on it, [theta_hat - (q_hi - mean), theta_hat + (mean - q_lo)],
            instead of correcting its bias a second time.
        method: the `ci_method` to report (default: from `already_debiased`).
        fisher: a correlation: correct and reflect on the atanh scale, where its sampling
            distribution is close to symmetric, and map back with tanh.
        reaches_lower: the data are consistent with the population value sitting on the lower
            bound (a test, see `metrics.seven.consistent_with_zero`): the interval extends to it.
        anchor: the bootstrap world's value of the estimand (see `metrics.seven.Metric`): the
            replicates' error is taken against it, debiased = theta_hat - (mean - anchor) and
            the interval [theta_hat - (q_hi - anchor), theta_hat - (q_lo - anchor)]. Overrides
            `already_debiased` (None: anchor = theta_hat, or the replicates' mean when
            `already_debiased`).
        reflect: the basic interval (the replicates' spread reflected around the estimate);
            False keeps the spread's orientation, [debiased - (mean - q_lo), debiased + (q_hi -
            mean)]: right where the estimate's skew matches the replicates' (a correlation near
            its bound of 1).
        lower_allowance: the interval's lower end moves down by this much (before the clip to
            `bounds`): a residual bias of the estimate the replicates do not carry
            (`metrics.seven.Metric.lower_allowance`; not used with `fisher`).
        inner: a second bootstrap level (`metrics.seven.Metric.inner`; with `anchor`): the
            interval keeps its shape (the replicates' quantiles about their mean) and takes its
            width from a symmetric bootstrap-t (`inner_width_factor`, its critical value
            brought from the second level's C replicates to the first level's B).
        normal: the interval is debiased +- z se (se the replicates' standard deviation, z the
            normal quantile of `level`) instead of the replicates' quantiles: for a statistic
            whose replicates are close to symmetric, it does not carry the noise of two tail
            quantiles (`NORMAL_INTERVAL`).

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
    if fisher:
        back = debias(
            float(np.arctanh(np.clip(theta_hat, -CLIP, CLIP))),
            np.arctanh(np.clip(reps, -CLIP, CLIP)),
            level,
            already_debiased=already_debiased,
            method=method,
            anchor=None if anchor is None else float(np.arctanh(np.clip(anchor, -CLIP, CLIP))),
            reflect=reflect,
            normal=normal,
            inner=None
            if inner is None
            else (
                np.arctanh(np.clip(inner[0], -CLIP, CLIP)),
                np.arctanh(np.clip(inner[1], -CLIP, CLIP)),
            ),
        )
        if back.ci is None:
            return back
        return Estimate(
            float(np.tanh(back.debiased)),
            float(np.std(reps, ddof=1)),
            (float(np.tanh(back.ci[0])), float(np.tanh(back.ci[1]))),
            back.ci_method + " (Fisher z)",
            back.n_replicates,
            len(replicates) - n_ok,
            back.degenerate,
        )
    alpha = (1.0 - level) / 2.0
    q_lo, q_hi = np.quantile(reps, [alpha, 1.0 - alpha])
    center = float(np.mean(reps))
    if q_hi - q_lo <= 0:  # every replicate equal: nothing to correct, a point interval
        v = float(np.clip(theta_hat, lo_b, hi_b))
        label = method or (CI_METHOD_CORRECTED if already_debiased else CI_METHOD)
        return Estimate(v, 0.0, (v, v), label, n_ok, len(replicates) - n_ok, True)
    if anchor is None:
        anchor = center if already_debiased else theta_hat
    est = theta_hat - (center - anchor)
    debiased = float(np.clip(est, lo_b, hi_b))
    se = float(np.std(reps, ddof=1))
    if normal:
        z = float(ndtri(1.0 - alpha))
        low = est - z * se
        high = est + z * se
    elif reflect:
        low = theta_hat - (q_hi - anchor)
        high = theta_hat - (q_lo - anchor)
    else:
        low = est - (center - q_lo)
        high = est + (q_hi - center)
    if inner is not None:
        # A second level sets the width: both half-widths about est scale by one factor.
        factor = inner_width_factor(inner, anchor, level, se, est - low, high - est, n_ok)
        low, high = est - factor * (est - low), est + factor * (high - est)
    low = float(np.clip(low, lo_b, hi_b))
    high = float(np.clip(high, lo_b, hi_b))
    if lower_allowance > 0:
        low = float(np.clip(low - lower_allowance, lo_b, hi_b))
    if reaches_lower:
        low = lo_b
    low, high = min(low, debiased), max(high, debiased)
    method = method or (CI_METHOD_CORRECTED if already_debiased else CI_METHOD)
    return Estimate(debiased, se, (low, high), method, n_ok, len(replicates) - n_ok)


def inner_width_factor(
    inner: tuple[np.ndarray, np.ndarray],
    theta: float,
    level: float,
    se: float,
    below: float,
    above: float,
    n_replicates: int,
) -> float:
    """How much wider (or narrower) the interval must be: a symmetric bootstrap-t at two levels.

    The second level (`metrics.seven.inner_mrc_replicates`) gives, for K first-level
    replicates k, the debiased estimate est_k = T_k - (mean_k - a_k) (T_k the replicate's
    statistic, mean_k its C replicates' mean, a_k the estimand on the replicate) and its
    standard error s_k (the C replicates' sd). In the first level's world the estimand is
    `theta` (the anchor), so |est_k - theta| / s_k is the studentized error, and its `level`
    quantile t is the symmetric bootstrap-t's critical value (Hall 1988): an interval
    est +- t se. Its half-width t se over the replicates' mean half-width (below + above) / 2
    is the factor; the replicates' asymmetry (below vs above) is kept. Studentizing is what
    corrects the width: where the standard error depends on the estimand's own position (near
    ties, near the bound 1), the first level's s.e. misjudges the estimate's spread as the
    second level's misjudges the first's.

    The two levels differ in Monte Carlo precision, and t is brought to the first level's
    (`_monte_carlo_ratio`): s_k and mean_k come from C (= 20) replicates, se and the first
    level's mean from B, so the second level's studentized error has heavier tails (a
    Student t with C - 1 degrees of freedom where the statistic is normal) and the variance of
    a C-replicate mean on top. Uncorrected, that alone widened the interval by about 8 % at
    C = 20, B = 200 where nothing needed correcting (docs/statistics.md).

    Args:
        inner: (values [1 + C, K], anchors [K]), as `metrics.seven.Metric.inner`.
        theta: the first level's anchor (the estimand in its world).
        level: confidence level.
        se: the first level's standard error (its B replicates' sd).
        below, above: the interval's half-widths below and above the estimate.
        n_replicates: B, the first level's finite replicates.

    Returns:
        The factor (1 where fewer than 10 replicates define it).
    """
    values, anchors = inner
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: dropped below
        est = values[0] - (np.nanmean(values[1:], axis=0) - anchors)
        sd = np.nanstd(values[1:], axis=0, ddof=1)
        t = np.abs(est - theta) / sd
    ok = np.isfinite(t)
    t = t[ok]
    half = (below + above) / 2
    if len(t) < 10 or not half > 0:
        return 1.0
    n_inner = float(np.median(np.isfinite(values[1:, ok]).sum(axis=0)))
    ratio = _monte_carlo_ratio(level, n_replicates, n_inner)
    return float(ratio * np.quantile(t, level) * se / half)


@lru_cache(maxsize=64)  # a handful of (level, B, C) per process; ~0.25 ms each uncached
def _monte_carlo_ratio(level: float, n_first: float, n_second: float) -> float:
    """The second level's studentized-error quantile, brought to the first level's precision.

    For a normal statistic (sd sigma), an estimate bias-corrected with the mean of n replicates
    and studentized by their sd is sqrt(1 + 1 / n) times a Student t with n - 1 degrees of
    freedom: its `level` quantile of |t| is sqrt(1 + 1 / n) t_{n-1}((1 + level) / 2). The ratio
    of that at n = B (the first level: the quantile its interval needs) to n = C (what the
    second level measures) is 0.92 at B = 200, C = 20, level 0.95.
    """
    p = (1.0 + level) / 2.0

    def quantile(n: float) -> float:
        return math.sqrt(1.0 + 1.0 / n) * _t_quantile(p, n - 1.0)

    if not (n_first >= 3 and n_second >= 3):  # below: no sd worth the name, no correction
        return 1.0
    return quantile(n_first) / quantile(n_second)


def _t_quantile(p: float, df: float) -> float:
    """Student t quantile for p in (0.5, 1): Cornish-Fisher expansion in 1 / df (Abramowitz &
    Stegun 26.7.5) as the start, then Newton steps on `metrics.special.stdtr` (scipy's
    ``stats.t.ppf`` to ~1e-12; the analysis path does not import scipy.stats)."""
    z = float(ndtri(p))
    z2 = z * z
    g = (
        z * (z2 + 1) / 4,
        z * ((5 * z2 + 16) * z2 + 3) / 96,
        z * (((3 * z2 + 19) * z2 + 17) * z2 - 15) / 384,
        z * ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) / 92160,
    )
    t = z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for _ in range(50):
        pdf = math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))
        step = (float(stdtr(df, t)) - p) / pdf
        t -= step
        if abs(step) < 1e-13 * max(1.0, abs(t)):
            break
    return t


@dataclass(frozen=True)
class Difference:
    """A paired difference a - b of one metric between two groups on shared items."""

    plugin: float
    debiased: float
    ci: tuple[float, float]
    p_value: float
    ci_method: str


def second_level_se(a: Metric, b: Metric) -> float | None:
    """The sd of the debiased difference a - b from both groups' second bootstrap level
    (`metrics.seven.Metric.second_level`: values [1 + C, K], estimand on each outer replicate
    [K]), or None when either group has none, their shapes differ, or fewer than
    SECOND_LEVEL_MIN outer replicates give a finite difference.

    For outer replicate k, with D = values_a - values_b (the two groups' second levels share
    their item draws, so D is paired as the first level is) and E the estimands' difference:
    est*_k = D[0, k] - mean_c D[c, k] + E_k, the debiased difference as the bootstrap's world
    computes it. Its variance over k, less the Monte Carlo variance of the C-replicate mean
    (mean over k of var_c D[c, k] / C), is the estimate's variance; a non-positive result
    gives None (the caller keeps the first level's sd).
    """
    if a.second_level is None or b.second_level is None:
        return None
    (va, ea), (vb, eb) = a.second_level, b.second_level
    if va.shape != vb.shape or ea.shape != eb.shape or va.shape[1] != ea.shape[0]:
        return None
    d = va - vb
    inner = d[1:]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        n_inner = np.isfinite(inner).sum(axis=0)
        est = d[0] - np.nanmean(inner, axis=0) + (ea - eb)
        mc = np.nanvar(inner, axis=0, ddof=1) / n_inner
    ok = np.isfinite(est) & np.isfinite(mc) & (n_inner >= 2)
    if ok.sum() < SECOND_LEVEL_MIN:
        return None
    var = float(np.var(est[ok], ddof=1) - np.mean(mc[ok]))
    return math.sqrt(var) if var > 0 else None


def paired_difference(
    a: Metric, b: Metric, level: float = 0.95, name: str = ""
) -> Difference | None:
    """Debiased difference, interval (basic, or normal for MAC, MCC and the CVs) and two-sided
    p-value of a - b.

    The two groups' replicates come from the same item draws (the counter RNG is keyed by the
    item), so d*_r = a*_r - b*_r is the paired bootstrap distribution of the difference. As for
    one metric: debiased = 2 D - mean(d*) (D the difference of the
    statistics the metric's interval is built on: noise-corrected for the CVs, which are not
    corrected a second time, nor are the correlations), interval [debiased - (q_hi - mean), debiased + (mean - q_lo)],
    and the p-value that inverts it: the share of reflected replicates
    debiased + mean(d*) - d*_r on either side of 0, doubled (with the +1 of a bootstrap test).
    The rank correlations at a resolution h > 0 and the Pearson variants' `-all` (noise-corrected
    statistics, `Metric.anchor` set) take the replicates' error against the difference of the
    two anchors instead (as `debias` with `anchor`). For MAC, MCC (and their variants) and the
    CVs the interval is debiased +- z sd(d*) and the p-value 2 Phi(-|debiased| / sd(d*)): MAC's
    and MCC's replicates are long-tailed, and the basic interval's quantiles were narrower than
    the spread the estimate has; the CVs' single-group intervals are normal already, and their
    basic paired test over-rejected a null. MRC keeps the basic test: its null was calibrated
    with it, and its skewed replicates (a correlation near 1 against one that is not) make the
    sd a poor yardstick — the planted study's clear MRC difference had p = 0.001 with the basic
    test and p_holm 0.20 with the normal one (docs/statistics.md, "Paired comparisons").
    MAC and MAC-P-all, when both groups carry a second bootstrap level (`Metric.second_level`,
    set when the analysis compares groups), take the sd from it instead of sd(d*)
    (`second_level_se`): their debiased difference varies less than d* (its bias estimate moves
    with the sample), which made their test conservative.

    Returns:
        The `Difference`, or None when either metric has no finite replicates.
    """
    if a.values is None or b.values is None:
        return None
    noise = a.corrected is not None and b.corrected is not None
    # Without Mode 4's residual-bias shift (`Metric.bias_shift`): each group estimates its own,
    # and their difference is noise (measured: a null's rejection rate 0.11 with it, 0.03 without).
    xa = a.corrected + a.bias_shift if noise else a.values
    xb = b.corrected + b.bias_shift if noise else b.values
    corrected = noise or is_correlation(name)
    d0 = float(xa[0] - xb[0])
    reps = xa[1:] - xb[1:]
    reps = reps[np.isfinite(reps)]
    if len(reps) < 2 or not np.isfinite(d0):
        return None
    center = float(np.mean(reps))
    # The CVs' anchors are not used here: under a null both groups carry the same bias, and its
    # two estimates would only add noise to the difference.
    ranked = noise and is_correlation(name) and a.anchor is not None and b.anchor is not None
    # The value the replicates' errors are taken against (see `debias`'s `anchor`).
    anchor = (a.anchor - b.anchor) if ranked else center if corrected else d0
    est = d0 - (center - anchor)
    alpha = (1.0 - level) / 2.0
    method = (
        CI_METHOD_PEARSON
        if ranked and is_pearson(name)
        else "resolution-h ranks, noise-corrected, bootstrap bias-corrected, basic"
        if ranked
        else CI_METHOD_CORRECTED
        if noise
        else CI_METHOD_PLUGIN
        if corrected
        else CI_METHOD
    )
    if normal_paired_test(name):
        # The CVs: their single-group interval is already the normal one (B tail quantiles are
        # noisier than the sd); on simulated paired nulls of I-AvgCV the basic test at B = 200
        # rejected 0.065-0.068 where est / sd(d*) rejected 0.052-0.057 (4,500 runs on fresh
        # seeds; C-AvgCV follows by analogy; docs/statistics.md).
        # A difference of MAC or MCC (per-marker correlations over a few tasks): its replicates
        # are long-tailed (a marker whose correlation flips to +-1 in some replicates) and their
        # central quantiles are narrower than their spread, so the basic interval and the
        # p-value that inverts it were too narrow where z = est / sd(d*) was closer to nominal
        # (measured under the null with rare markers on the common set, R = 400: MCC-P-all
        # 0.087 vs 0.078 — 0.059 at R = 800 —, MCC 0.073 vs 0.043; at threshold 20, 0.113 vs
        # 0.058 and 0.105 vs 0.035). The normal interval and test on the replicates' sd instead.
        se = float(np.std(reps, ddof=1))
        method = method.replace(", basic spread", ", normal").replace(", basic", ", normal")
        two_level = second_level_se(a, b)
        if two_level is not None:
            # MAC, MAC-P-all: the debiased difference varies less than d* (its bias estimate
            # moves with the sample); its own sd from the second level (`second_level_se`).
            se = two_level
            method += CI_METHOD_PAIRED_TWO_LEVEL
        z = float(ndtri(1.0 - alpha))
        if se > 0:
            p_value = float(2.0 * ndtr(-abs(est) / se))
        else:  # every replicate equal: as the basic test, the floor 2/(B + 1) unless est is 0
            p_value = 1.0 if est == 0 else 2.0 / (len(reps) + 1)
        low, high = est - z * se, est + z * se
    else:
        q_lo, q_hi = np.quantile(reps, [alpha, 1.0 - alpha])
        reflected = d0 - (reps - anchor)
        below = (1 + np.sum(reflected <= 0)) / (len(reps) + 1)
        above = (1 + np.sum(reflected >= 0)) / (len(reps) + 1)
        p_value = float(2 * min(below, above))
        low, high = d0 - (q_hi - anchor), d0 - (q_lo - anchor)
    # One clip for both tests: the difference's range ([-2, 2] for a correlation).
    lo_b, hi_b = difference_bounds(name)
    return Difference(
        plugin=float(a.values[0] - b.values[0]),
        debiased=float(np.clip(est, lo_b, hi_b)),
        ci=(float(np.clip(low, lo_b, hi_b)), float(np.clip(high, lo_b, hi_b))),
        p_value=min(1.0, p_value),
        ci_method=method,
    )
