"""Bootstrap confidence intervals from replicate statistics: percentile and BCa.

Replicates are laid out with the replicate axis first: ``replicates[b, ...]``; every function is
vectorized over the trailing axes (one interval per group, marker, metric, ...).

Conventions, chosen to match ``scipy.stats.bootstrap`` (scipy 1.17, ``_resampling.py``):

* quantiles use scipy's default ``'linear'`` rule (Hyndman-Fan type 7) on the sorted replicates;
* the BCa bias correction is ``z0 = ndtri((#{theta_b < theta_hat} + #{theta_b <= theta_hat})
  / (2 B))``, i.e. ties with ``theta_hat`` count one half (scipy's ``_percentile_of_score``);
* the BCa levels are ``ndtr(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = ndtri(alpha)`` and
  ``z = -ndtri(alpha)``, ``alpha = (1 - level) / 2``; ``ndtr`` and ``ndtri`` are
  ``metrics.special``'s (scipy's to an ulp or two, without importing ``scipy.special``).

Differences from scipy, on purpose:

* NaN replicates (e.g. a Poisson replicate that drew no item of a group: 0 / 0) are dropped and
  counted, per statistic, instead of poisoning the interval;
* a degenerate statistic (no valid replicate, or replicates with zero spread, or a NaN
  acceleration, which is what an all-equal group gives) returns ``[theta_hat, theta_hat]`` and is
  flagged, instead of a warning and NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.errors import UserError
from metrics.bootstrap._validate import check_level
from metrics.special import ndtr, ndtri

__all__ = [
    "Interval",
    "bca_interval",
    "bias_correction",
    "mean_acceleration",
    "percentile_interval",
]

# Replicates whose spread is within this many ulps of their magnitude count as constant: a ratio
# of sums over an all-equal group is equal to the value only up to rounding.
_DEGENERATE_ULPS = 64


@dataclass(frozen=True)
class Interval:
    """Confidence intervals for a batch of statistics (arrays of the statistics' shape).

    Attributes:
        low: Lower endpoints.
        high: Upper endpoints.
        n_valid: Replicates used per statistic (non-NaN).
        n_dropped: NaN replicates dropped per statistic.
        degenerate: True where the interval was collapsed to ``[theta_hat, theta_hat]`` (no valid
            replicate, zero replicate spread or, for BCa, a NaN acceleration).
        method: ``"percentile"`` or ``"bca"``.
        level: The confidence level.
    """

    low: np.ndarray
    high: np.ndarray
    n_valid: np.ndarray
    n_dropped: np.ndarray
    degenerate: np.ndarray
    method: str
    level: float


def _as_replicates(replicates: npt.ArrayLike) -> np.ndarray:
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.ndim == 0:
        raise UserError(
            "bootstrap replicates must have a replicate axis first, got a scalar",
            "pass an array shaped [n_boot, ...]",
        )
    return reps


def _quantile_sorted(sorted_reps: np.ndarray, n_valid: np.ndarray, p: np.ndarray) -> np.ndarray:
    """scipy's 'linear' quantile of the first ``n_valid`` entries of each sorted column.

    ``p`` broadcasts against the statistic shape; columns with ``n_valid == 0`` give NaN.
    """
    shape = sorted_reps.shape[1:]
    n = np.broadcast_to(n_valid, shape).astype(np.float64)
    p = np.broadcast_to(np.asarray(p, dtype=np.float64), shape)
    n_safe = np.maximum(n, 1.0)
    # As scipy.stats.quantile (method='linear'): 1-based position jg = p n + (1 - p).
    with np.errstate(invalid="ignore"):
        jg = p * n_safe + (1.0 - p)
        jp1 = np.floor(jg)
        j = jp1 - 1.0
        g = np.where(j < 0, 0.0, jg % 1.0)
        j = np.clip(j, 0.0, n_safe - 1.0)
        jp1 = np.clip(jp1, 0.0, n_safe - 1.0)
    bad = ~np.isfinite(jg)
    j_idx = np.where(bad, 0, j).astype(np.int64)
    jp1_idx = np.where(bad, 0, jp1).astype(np.int64)
    lower = np.take_along_axis(sorted_reps, j_idx[None, ...], axis=0)[0]
    upper = np.take_along_axis(sorted_reps, jp1_idx[None, ...], axis=0)[0]
    out = (1.0 - g) * lower + g * upper
    return np.where(bad | (n == 0), np.nan, out)


def _spread_is_zero(sorted_reps: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """True where the valid replicates are all equal (within rounding) or there are none."""
    lo = sorted_reps[0]
    last = np.maximum(n_valid - 1, 0).astype(np.int64)
    hi = np.take_along_axis(sorted_reps, last[None, ...], axis=0)[0]
    scale = np.maximum(np.abs(lo), np.abs(hi))
    with np.errstate(invalid="ignore"):
        flat = (hi - lo) <= _DEGENERATE_ULPS * np.finfo(np.float64).eps * scale
    return (n_valid == 0) | flat


def _sorted_and_counts(reps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sorted_reps = np.sort(reps, axis=0)  # NaN sort last
    n_valid = np.count_nonzero(~np.isnan(reps), axis=0)
    n_dropped = reps.shape[0] - n_valid
    return sorted_reps, np.asarray(n_valid), np.asarray(n_dropped)


def _disabled(shape: tuple[int, ...], method: str, level: float) -> Interval:
    """The result for ``n_boot == 0`` (bootstrap disabled): NaN endpoints, nothing flagged."""
    nan = np.full(shape, np.nan)
    zeros = np.zeros(shape, dtype=np.int64)
    return Interval(nan, nan.copy(), zeros, zeros.copy(), np.zeros(shape, bool), method, level)


def percentile_interval(
    replicates: npt.ArrayLike,
    level: float = 0.95,
    *,
    theta_hat: npt.ArrayLike | None = None,
) -> Interval:
    """Percentile interval along axis 0, dropping NaN replicates.

    Args:
        replicates: Replicate statistics, shape ``[n_boot, ...]``.
        level: Confidence level in (0, 1).
        theta_hat: Point estimates (shape ``replicates.shape[1:]``); degenerate statistics are
            reported as ``[theta_hat, theta_hat]``. Without it, as their common replicate value
            (NaN if no replicate is valid).

    Returns:
        An :class:`Interval` with ``method="percentile"``.
    """
    level = check_level(level)
    reps = _as_replicates(replicates)
    if reps.shape[0] == 0:
        return _disabled(reps.shape[1:], "percentile", level)
    sorted_reps, n_valid, n_dropped = _sorted_and_counts(reps)
    alpha = (1.0 - level) / 2.0
    low = _quantile_sorted(sorted_reps, n_valid, np.asarray(alpha))
    high = _quantile_sorted(sorted_reps, n_valid, np.asarray(1.0 - alpha))
    degenerate = _spread_is_zero(sorted_reps, n_valid)
    fill = sorted_reps[0] if theta_hat is None else np.asarray(theta_hat, dtype=np.float64)
    low = np.where(degenerate, fill, low)
    high = np.where(degenerate, fill, high)
    return Interval(low, high, n_valid, n_dropped, degenerate, "percentile", level)


def bias_correction(theta_hat: npt.ArrayLike, replicates: npt.ArrayLike) -> np.ndarray:
    """BCa bias correction ``z0`` with scipy's tie rule, ignoring NaN replicates.

    ``z0 = ndtri((#{theta_b < theta_hat} + #{theta_b <= theta_hat}) / (2 B_valid))``: a replicate
    equal to ``theta_hat`` counts one half, as in ``scipy.stats._resampling._percentile_of_score``.

    Args:
        theta_hat: Point estimates, shape ``replicates.shape[1:]``.
        replicates: Replicate statistics, shape ``[n_boot, ...]``.

    Returns:
        ``z0`` per statistic (NaN where no replicate is valid, +-inf where all replicates lie on
        one side of ``theta_hat``).
    """
    reps = _as_replicates(replicates)
    theta = np.asarray(theta_hat, dtype=np.float64)
    n_valid = np.count_nonzero(~np.isnan(reps), axis=0)
    below = np.count_nonzero(reps < theta, axis=0) + np.count_nonzero(reps <= theta, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ndtri(below / (2.0 * n_valid))


def bca_interval(
    theta_hat: npt.ArrayLike,
    replicates: npt.ArrayLike,
    acceleration: npt.ArrayLike,
    level: float = 0.95,
) -> Interval:
    """Bias-corrected and accelerated (BCa) interval along axis 0, dropping NaN replicates.

    Args:
        theta_hat: Point estimates, shape ``replicates.shape[1:]``.
        replicates: Replicate statistics, shape ``[n_boot, ...]``.
        acceleration: Jackknife acceleration ``a`` per statistic (broadcastable), e.g. from
            :func:`mean_acceleration`. NaN marks a degenerate statistic.
        level: Confidence level in (0, 1).

    Returns:
        An :class:`Interval` with ``method="bca"``. As in scipy, an endpoint is NaN when the
        adjusted level is undefined (all valid replicates strictly on one side of
        ``theta_hat``); such a statistic is not flagged degenerate.
    """
    level = check_level(level)
    reps = _as_replicates(replicates)
    theta = np.asarray(theta_hat, dtype=np.float64)
    if theta.shape != reps.shape[1:]:
        raise UserError(
            f"bca_interval: theta_hat has shape {theta.shape}, expected {reps.shape[1:]}",
            "pass one point estimate per statistic (the replicate axis comes first)",
        )
    accel = np.broadcast_to(np.asarray(acceleration, dtype=np.float64), theta.shape)
    if reps.shape[0] == 0:
        return _disabled(theta.shape, "bca", level)
    sorted_reps, n_valid, n_dropped = _sorted_and_counts(reps)
    z0 = bias_correction(theta, reps)
    z_alpha = float(ndtri((1.0 - level) / 2.0))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        num1 = z0 + z_alpha
        alpha_1 = ndtr(z0 + num1 / (1.0 - accel * num1))
        num2 = z0 - z_alpha
        alpha_2 = ndtr(z0 + num2 / (1.0 - accel * num2))
    low = _quantile_sorted(sorted_reps, n_valid, alpha_1)
    high = _quantile_sorted(sorted_reps, n_valid, alpha_2)
    degenerate = _spread_is_zero(sorted_reps, n_valid) | np.isnan(accel)
    low = np.where(degenerate, theta, low)
    high = np.where(degenerate, theta, high)
    return Interval(low, high, n_valid, n_dropped, degenerate, "bca", level)


def mean_acceleration(
    n: npt.ArrayLike, s1: npt.ArrayLike, s2: npt.ArrayLike, s3: npt.ArrayLike
) -> np.ndarray:
    """Jackknife acceleration of a mean from per-group power sums, without a leave-one-out loop.

    Derivation. With ``xbar = s1 / n``, the leave-one-out means are
    ``theta_(i) = (s1 - x_i) / (n - 1)`` and their average is
    ``theta_dot = (n s1 - s1) / (n (n - 1)) = xbar``. So

        theta_dot - theta_(i) = xbar - (n xbar - x_i) / (n - 1) = (x_i - xbar) / (n - 1).

    scipy (and Efron & Tibshirani eq. 14.15) uses ``U_i = (n - 1)(theta_dot - theta_(i)) =
    x_i - xbar`` and ``a = (1/6) [sum U^3 / n^3] / [sum U^2 / n^2]^(3/2)``; the powers of ``n``
    cancel, ``(n^2)^(3/2) = n^3``, leaving

        a = M3 / (6 M2^(3/2)),   M2 = sum (x_i - xbar)^2,   M3 = sum (x_i - xbar)^3,

    and the central sums follow from the raw ones:

        M2 = s2 - s1^2 / n,
        M3 = s3 - 3 xbar s2 + 3 xbar^2 s1 - n xbar^3 = s3 - 3 s1 s2 / n + 2 s1^3 / n^2.

    Numerical note: the raw-sum forms cancel when the spread is tiny against the mean; the
    acceleration is shift-invariant, so sum ``x - c`` for a typical value ``c`` in that case.

    Args:
        n: Number of values per group (>= 2 for a defined acceleration).
        s1: Per-group sum of x.
        s2: Per-group sum of x**2.
        s3: Per-group sum of x**3.

    Returns:
        float64 array of accelerations (broadcast shape). NaN where ``n < 2`` or all values are
        equal (``M2`` is zero up to rounding): those groups are degenerate.
    """
    n = np.asarray(n, dtype=np.float64)
    s1 = np.asarray(s1, dtype=np.float64)
    s2 = np.asarray(s2, dtype=np.float64)
    s3 = np.asarray(s3, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        xbar = s1 / n
        m2 = s2 - s1 * xbar
        m3 = s3 - 3.0 * xbar * s2 + 2.0 * s1 * xbar * xbar
        flat = (m2 <= _DEGENERATE_ULPS * np.finfo(np.float64).eps * np.abs(s2)) | (n < 2)
        accel = m3 / (6.0 * np.power(np.where(flat, 1.0, m2), 1.5))
    return np.where(flat, np.nan, accel)
