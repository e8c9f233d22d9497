"""The seven stability metrics of docs/method.md §4, vectorized over a leading replicate axis.

Each function takes arrays whose first axis indexes replicates (length 1 for the point estimate)
and returns `Metric`s whose `values` hold one value per replicate, so the bootstrap computes every
metric from the same replicates. A metric undefined for the data is `None` with a reason.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numba as nb
import numpy as np

from metrics import kernels as akernels
from metrics import special

SIG_LEVEL = 0.05
CLIP = 0.9999
# Rank resolution h of the Spearman variants' estimand (docs/statistics.md, "Rank correlations
# and near-ties"): markers closer than about h count as partly tied. In confidence units.
RANK_RESOLUTION = 0.05
# Smallest smoothing scale, as a share of h, when a pair's noise exceeds h (the noise is then
# only partly taken out; the bootstrap bias correction handles the rest).
RANK_FLOOR = 0.5


@dataclass
class Metric:
    """One metric: a value per replicate, or a reason it is undefined.

    `corrected`, when set, is a noise-corrected version of the statistic (point first, then
    replicates, like `values`): the debiased estimate and interval are built on it, while
    `values[0]` stays the plug-in number. `reaches_zero`: the data are consistent with a
    population value of 0 (see `attach_noise_corrections`), so the interval extends to 0.
    `anchor`, set with `corrected` for the rank correlations, the Pearson variants of MAC and
    MCC and the CVs: the statistic's value
    in the bootstrap's world (the estimand evaluated on the sample: for a CV its plug-in value),
    against which the replicates' error is taken to debias `corrected[0]`
    (`metrics.debias.debias`). `lower_allowance`: how far the interval's lower end extends below
    the corrected replicates' spread (an estimate's residual bias that the bootstrap does not
    see: `mode4_residual_bias`). `bias_shift`:
    a constant already taken out of `corrected` (Mode 4's residual bias, estimated per group);
    paired comparisons add it back, as the two groups' estimates of it differ by noise.
    `inner`, set with `anchor` on MRC (at a rank resolution h > 0): a second bootstrap level
    (`inner_mrc_replicates`), (values [1 + C, K], anchors [K]): for K of the
    replicates, the corrected statistic on the replicate itself (row 0) and on C replicates of
    it, and the estimand on the replicate; `metrics.debias.debias` takes the interval's width
    from it (a symmetric bootstrap-t). `second_level`, the same structure for MAC and MAC-P-all
    (`inner_correlation_replicates`), set only when the analysis compares groups: the paired
    test's standard error (`metrics.debias.paired_difference`), not the metric's own interval.
    """

    values: np.ndarray | None
    n: int | None = None
    reason: str | None = None
    extra: dict = field(default_factory=dict)
    corrected: np.ndarray | None = None
    reaches_zero: bool = False
    anchor: float | None = None
    lower_allowance: float = 0.0
    bias_shift: float = 0.0
    inner: tuple[np.ndarray, np.ndarray] | None = None
    second_level: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def undefined(cls, reason: str, **extra) -> Metric:
        return cls(values=None, reason=reason, extra=extra)


def fisher_mean(r: np.ndarray, axis: int = -1) -> np.ndarray:
    """tanh(mean(atanh(clip(r, -0.9999, 0.9999)))) over the finite entries along `axis`."""
    z = np.arctanh(np.clip(r, -CLIP, CLIP))
    with np.errstate(invalid="ignore"), _quiet():
        return np.tanh(np.nanmean(z, axis=axis))


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties sharing their average rank (1-based), as
    ``scipy.stats.rankdata(a, axis=-1)``: a slice holding a NaN is all NaN.

    Average ranks are halves of integers, so they equal scipy's bit for bit. One compiled pass
    over the rows (`metrics.kernels.average_ranks_rows`; its numpy reference beside it).
    """
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[-1]
    if n == 0:
        return a.copy()
    rows = np.ascontiguousarray(a).reshape(-1, n)
    ranks = np.empty(rows.shape)
    akernels.average_ranks_rows(rows, ranks)
    return ranks.reshape(a.shape)


def correlate(x: np.ndarray, y: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Pearson or Spearman correlation along the last axis, with scipy's two-sided p-values.

    Spearman is Pearson on average ranks; both p-values use the t distribution with n - 2
    degrees of freedom (equal to scipy's exact Pearson p-value). Constant input gives NaN.
    """
    return _with_p_values(correlation(x, y, method), x.shape[-1])


def correlation(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """`correlate`'s r alone (clipped to [-1, 1]): the metrics need only whether p < SIG_LEVEL
    (`significant`), not the p-values, whose incomplete beta costs more than r on [B, ...]."""
    if method == "spearman":
        # Values that tie mathematically may differ in the last bits, depending on the order
        # their sums ran in: rank on values rounded to 12 decimals (all inputs lie in [0, 1]).
        x = average_ranks(np.round(x, 12))
        y = average_ranks(np.round(y, 12))
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    sxx, syy = (xc * xc).sum(-1), (yc * yc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / np.sqrt(sxx * syy)
    r = np.where(_constant_slices(x, sxx) | _constant_slices(y, syy), np.nan, r)
    return np.clip(r, -1.0, 1.0)


def _constant_slices(a: np.ndarray, centred_ss: np.ndarray) -> np.ndarray:
    """The slices of `a` (last axis) that are constant to 12 decimals, given their centred sums
    of squares: values that are equal mathematically may differ in the last bits, depending on
    the order their sums ran in (a MIC of 0.75 in three tasks), and a correlation with that
    noise is a number that changes with row order. A correlation with such a slice is NaN, as
    with constant input (the Spearman path ranks values rounded to 12 decimals for the same
    reason). Only the slices whose sum of squares allows it are rounded and checked."""
    out = np.asarray(centred_ss <= a.shape[-1] * 1e-24)  # NaN: not constant (r is NaN anyway)
    if out.any():
        idx = np.nonzero(out)
        vals = np.broadcast_to(a, (*out.shape, a.shape[-1]))[idx]
        out[idx] = np.ptp(np.round(vals, 12), axis=-1) == 0
    return out


def _with_p_values(r: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(r, two-sided p-values of r over n points: t with n - 2 degrees of freedom)."""
    df = n - 2
    if df <= 0:
        return r, np.full(r.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = r * np.sqrt(df / np.maximum(1.0 - r * r, 1e-300))
        # scipy.stats.t.sf(x, df) is stdtr(df, -x); metrics.special's keeps scipy's imports
        # (0.2 s for scipy.special, 0.8 s for scipy.stats) out of every analysis.
        p = 2.0 * special.stdtr(df, -np.abs(t))
    return r, np.where(np.isnan(r), np.nan, p)


def significant(r: np.ndarray, n: int) -> np.ndarray:
    """``p < SIG_LEVEL`` for the p-values `_with_p_values` gives r over n points, without
    computing them: p falls as |r| grows, so only the |r| within 1e-9 (relative) of the critical
    value need the exact p-value (the rest are settled by the comparison; NaN is not
    significant)."""
    r = np.asarray(r, dtype=np.float64)
    if n - 2 <= 0:
        return np.zeros(r.shape, dtype=bool)
    lo, hi = _critical_r(n)
    a = np.abs(r)
    sig = np.array(a > hi)  # an array also for a scalar r (assigned into below)
    near = (a > lo) & ~sig
    if near.any():
        sig[near] = _with_p_values(r[near], n)[1] < SIG_LEVEL
    return sig


@functools.lru_cache(maxsize=64)
def _critical_r(n: int) -> tuple[float, float]:
    """A bracket (lo, hi) of the |r| at which `_with_p_values`' p over n points crosses
    SIG_LEVEL: bisection on the exact p, widened by 1e-9 relative, over which p changes by
    ~5e-9 relative; the p-value's own error is 1e-15 at a few points and ~1e-10 at n = 1e6
    (here n is a number of tasks or markers). The first call for an n costs ~60 p-values of
    one element (milliseconds; seconds from n ~ 1e6)."""
    lo, hi = 0.0, 1.0
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _with_p_values(np.array([mid]), n)[1][0] < SIG_LEVEL:
            hi = mid
        else:
            lo = mid
    return lo * (1.0 - 1e-9), hi * (1.0 + 1e-9)


def smoothed_ranks(x: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """Smoothed ranks along the last axis: r_k = 1 + sum over l != k of Phi((x_k - x_l) / s_kl).

    As s -> 0 these are the average ranks (a tie counts 1/2 each way); two values further apart
    than about 3 s count as fully ordered. A NaN makes its slice NaN, as `average_ranks`.

    Args:
        x: [..., n] values.
        scale: s_kl, broadcastable to [..., n, n] (positive).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    lead = x.shape[:-1]
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (*lead, n, n))
    # The kernel walks [R, G, n] values with [G, n, n] scales: the scales may broadcast over the
    # first axis (replicates) only, as every caller's do; anything else is expanded.
    if s.ndim >= 3 and s.strides[0] == 0:
        xs, ss = x.reshape(lead[0], -1, n), np.ascontiguousarray(s[0]).reshape(-1, n, n)
    else:
        xs, ss = x.reshape(1, -1, n), np.ascontiguousarray(s).reshape(-1, n, n)
    if not ss.flags.writeable:
        # A read-only view (np.broadcast_to's, already contiguous) is another signature of the
        # kernel for numba: a second cached kernel to load (~8 ms) in every analysis.
        ss = ss.copy()
    out = np.empty(xs.shape, dtype=np.float64)
    _smoothed_ranks_kernel(np.ascontiguousarray(xs), ss, out)
    return out.reshape(x.shape)


@nb.njit(cache=True, parallel=True)
def _smoothed_ranks_kernel(x: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """out[r, g, k] = 1 + sum over l != k of Phi((x[r,g,k] - x[r,g,l]) / scale[g,k,l]); a NaN
    makes its slice NaN. Each pair once: Phi(-z) = 1 - Phi(z), and the scales are symmetric.
    (One compiled pass: the numpy form built B x T x S x S temporaries, ~1 s per group at
    B = 1,000, 10 tasks, 40 markers.)"""
    R, G, n = x.shape
    for r in nb.prange(R):  # replicates are independent; each thread writes its own rows
        for g in range(G):
            bad = False
            for k in range(n):
                if np.isnan(x[r, g, k]):
                    bad = True
            if bad:
                for k in range(n):
                    out[r, g, k] = np.nan
                continue
            for k in range(n):
                out[r, g, k] = 1.0
            for k in range(n):
                for m in range(k + 1, n):
                    p = _phi((x[r, g, k] - x[r, g, m]) / scale[g, k, m])
                    out[r, g, k] += p
                    out[r, g, m] += 1.0 - p


# The standard normal CDF Phi and density phi at z = -_PHI_EDGE + i / _PHI_STEPS (`_phi`).
# numba compiles them into the kernels as constants; its cache is keyed on this file, so the
# tables must stay in it (moved to another module, a changed table would leave stale kernels).
_PHI_EDGE = 8.5
_PHI_STEPS = 64
_PHI_Z = -_PHI_EDGE + np.arange(int(2 * _PHI_EDGE * _PHI_STEPS) + 1) / _PHI_STEPS
_PHI_CDF = special.ndtr(_PHI_Z)
_PHI_PDF = np.exp(-0.5 * _PHI_Z * _PHI_Z) / math.sqrt(2.0 * math.pi)


@nb.njit(inline="always", cache=True)
def _phi(z: float) -> float:
    """Phi(z) to ~1e-16 (absolute) without a libm call (the C library's erfc took 85 % of the
    smoothed ranks' time): the Taylor series about the nearest of _PHI_Z (|d| <= 1/128), whose
    k-th derivative is phi times a Hermite polynomial, to d^6 (truncation < 1e-17). Beyond
    +-_PHI_EDGE it is 0 or 1, where Phi(z) < 1e-17 is lost against the ranks (>= 1) anyway."""
    if z > -_PHI_EDGE and z < _PHI_EDGE:
        i = np.int64((z + _PHI_EDGE) * _PHI_STEPS + 0.5)
        zi = _PHI_Z[i]
        d = z - zi
        z2 = zi * zi
        # (-1)^k He_k(zi) / (k + 1)! for k = 0 .. 5 (probabilists' Hermite polynomials)
        c1 = -zi / 2.0
        c2 = (z2 - 1.0) / 6.0
        c3 = -zi * (z2 - 3.0) / 24.0
        c4 = (z2 * z2 - 6.0 * z2 + 3.0) / 120.0
        c5 = -zi * (z2 * z2 - 10.0 * z2 + 15.0) / 720.0
        poly = 1.0 + d * (c1 + d * (c2 + d * (c3 + d * (c4 + d * c5))))
        return _PHI_CDF[i] + _PHI_PDF[i] * d * poly
    if z >= _PHI_EDGE:
        return 1.0
    if z <= -_PHI_EDGE:
        return 0.0
    return np.nan


def rank_scales(h: float, var: np.ndarray | None = None) -> np.ndarray:
    """Per-pair smoothing scales [..., n, n] for `smoothed_ranks` at resolution h.

    An estimate d^ ~ N(d, v) of a difference gives E Phi(d^ / s) = Phi(d / sqrt(s^2 + v)), so
    s = sqrt(h^2 - v) makes the noisy sample's smoothed ranks unbiased for the resolution-h ranks
    of the true values (exact for Gaussian errors); v = var_k + var_l of the two values. Where
    v exceeds h^2 - (RANK_FLOOR h)^2, s stays at RANK_FLOOR h.

    Args:
        h: the rank resolution (> 0).
        var: [..., n] sampling variances of the values (None: no noise, s = h).
    """
    if var is None:
        return np.asarray(h, dtype=np.float64)
    v = np.nan_to_num(var)[..., :, None] + np.nan_to_num(var)[..., None, :]
    return np.sqrt(np.maximum(h * h - v, (RANK_FLOOR * h) ** 2))


def _corr_family(
    r: np.ndarray, n: int, name: str, parity: bool, what: str, mean: str = "fisher"
) -> dict[str, Metric]:
    """`name-all` and `name-sig` (+ count) from correlations [R, K] over n points each."""
    finite = np.isfinite(r[0])
    out: dict[str, Metric] = {}
    if not finite.any():
        reason = f"every {what} has a constant MIC row or column (correlation undefined)"
        return {f"{name}-all": Metric.undefined(reason), f"{name}-sig": Metric.undefined(reason)}
    agg = fisher_mean if mean == "fisher" else _nanmean
    out[f"{name}-all"] = Metric(agg(r, axis=-1), n=int(finite.sum()))
    sig = significant(r, n) & np.isfinite(r)
    n_sig = int(sig[0].sum())
    if n_sig == 0:
        if parity:  # the seed reports -1 for an empty significant set
            out[f"{name}-sig"] = Metric(np.full(r.shape[0], -1.0), n=0, extra={"n_sig": 0})
        else:
            out[f"{name}-sig"] = Metric.undefined(
                f"no {what} is significant at p < {SIG_LEVEL}", n_sig=0
            )
    else:
        out[f"{name}-sig"] = Metric(
            agg(np.where(sig, r, np.nan), axis=-1), n=n_sig, extra={"n_sig": n_sig}
        )
    return out


def _nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    with _quiet():
        return np.nanmean(x, axis=axis)


def mrc(
    shared_mic: np.ndarray,
    parity: bool,
    mean: str = "fisher",
    prefix: str = "MRC-S",
    scales: np.ndarray | float | None = None,
) -> dict[str, Metric]:
    """Marker rank correlation: Spearman between the shared-MIC columns of every task pair.

    Args:
        shared_mic: [R, T, S] MICs of the shared markers.
        parity: an empty significant set is -1 (the seed) instead of undefined.
        mean: "fisher" (the MIC study) or "plain" (MarCon).
        scales: None for ordinary ranks, else smoothed ranks (`smoothed_ranks`) with these
            scales, broadcastable to [T, S, S] (a task's marker pairs).
    """
    _, T, S = shared_mic.shape
    if T < 2:
        return {
            f"{prefix}-all": Metric.undefined("needs at least 2 tasks"),
            f"{prefix}-sig": Metric.undefined("needs at least 2 tasks"),
        }
    if S < 2:
        reason = f"needs at least 2 shared markers (found {S})"
        return {
            f"{prefix}-all": Metric.undefined(reason),
            f"{prefix}-sig": Metric.undefined(reason),
        }
    i, j = np.triu_indices(T, k=1)
    if scales is None:
        r = correlation(shared_mic[:, i, :], shared_mic[:, j, :], "spearman")
    else:
        ranks = smoothed_ranks(shared_mic, np.broadcast_to(scales, (T, S, S)))
        r = correlation(ranks[:, i, :], ranks[:, j, :], "pearson")
    return _corr_family(r, S, prefix, parity, "task pair", mean)


def marker_task_correlation(
    shared_mic: np.ndarray,
    task_values: np.ndarray,
    name: str,
    parity: bool,
    methods=("S", "P"),
    mean: str = "fisher",
    scales: tuple | None = None,
) -> dict[str, Metric]:
    """MAC / MCC: per shared marker, correlation across tasks of its MIC with a task property.

    Args:
        shared_mic: [R, T, S].
        task_values: [R, T] accuracy (MAC) or cMFG (MCC).
        name: "MAC" or "MCC".
        scales: None for ordinary ranks in the Spearman variants, else (MIC scales
            broadcastable to [S, T, T], task-value scales broadcastable to [T, T]) for
            `smoothed_ranks` across tasks.
    """
    _, T, S = shared_mic.shape
    out: dict[str, Metric] = {}
    keys = [f"{name}-{m}-{k}" for m in methods for k in ("all", "sig")]
    if T < 2:
        return {k: Metric.undefined("needs at least 2 tasks") for k in keys}
    if S < 1:
        return {k: Metric.undefined("no shared marker (valid in every task)") for k in keys}
    if not np.isfinite(task_values[0]).all():
        return {
            k: Metric.undefined(
                "the task value is undefined for some task (no decisiveness scores?)"
            )
            for k in keys
        }
    x = np.moveaxis(shared_mic, 1, 2)  # [R, S, T]
    y = np.broadcast_to(task_values[:, None, :], x.shape)
    for m in methods:
        if m == "S" and scales is not None:
            rx = smoothed_ranks(x, np.broadcast_to(scales[0], (S, T, T)))
            ry = smoothed_ranks(y, np.broadcast_to(scales[1], (T, T)))
            r = correlation(rx, ry, "pearson")
        else:
            r = correlation(x, y, "spearman" if m == "S" else "pearson")
        out.update(_corr_family(r, T, f"{name}-{m}", parity, "marker", mean))
    return out


def cv(
    values: np.ndarray, mask: np.ndarray, axis: int, noise: np.ndarray | None = None
) -> np.ndarray:
    """Coefficient of variation (sample std, ddof 1, / mean) of `values` where `mask`, along axis.

    With `noise` (the sampling variance of each value, broadcastable), the variance is
    noise-corrected: E[s^2] = s_true^2 + mean(noise) for independent errors, so
    sqrt(max(0, s^2 - mean(noise))) / mean.
    """
    x = np.where(mask, values, np.nan)
    with _quiet():
        k = np.sum(mask, axis=axis)
        mean = np.nanmean(x, axis=axis)
        var = np.nanvar(x, axis=axis, ddof=1)
        if noise is not None:
            v = np.where(mask & np.isfinite(x), np.broadcast_to(noise, x.shape), np.nan)
            var = np.maximum(var - np.nanmean(v, axis=axis), 0.0)
        out = np.sqrt(var) / mean
    return np.where((k >= 2) & (mean != 0), out, np.nan)


def cv_metrics(
    mic: np.ndarray, usable: np.ndarray, shared: np.ndarray, noise: np.ndarray | None = None
) -> dict[str, Metric]:
    """I-AvgCV, I-AvgCV (shared) and C-AvgCV.

    Args:
        mic: [R, T, M] MICs.
        usable: [T, M] valid markers with a defined MIC.
        shared: [M] shared markers.
        noise: [T, M] or [R, T, M] (one per replicate) sampling variance of each MIC
            (noise-corrected CVs, see `cv`).
    """
    _, T, M = mic.shape
    out: dict[str, Metric] = {}
    for name, mask in (("I-AvgCV", usable), ("I-AvgCV (shared)", usable & shared[None, :])):
        per_task = cv(mic, np.broadcast_to(mask, mic.shape), axis=2, noise=noise)  # [R, T]
        ok = np.isfinite(per_task[0])
        if not ok.any():
            out[name] = Metric.undefined("no task has 2 or more markers with a positive mean MIC")
        else:
            out[name] = Metric(_nanmean(np.where(ok, per_task, np.nan), axis=1), n=int(ok.sum()))
    if T < 2:
        out["C-AvgCV"] = Metric.undefined("needs at least 2 tasks")
    elif not shared.any():
        out["C-AvgCV"] = Metric.undefined("no shared marker (valid in every task)")
    else:
        per_marker = cv(
            mic[:, :, shared],
            np.ones((1, T, int(shared.sum())), dtype=bool),
            axis=1,
            noise=None if noise is None else noise[..., shared],
        )  # [R, S]
        ok = np.isfinite(per_marker[0])
        if not ok.any():
            out["C-AvgCV"] = Metric.undefined("every shared marker has a zero mean MIC")
        else:
            out["C-AvgCV"] = Metric(
                _nanmean(np.where(ok, per_marker, np.nan), axis=1), n=int(ok.sum())
            )
    return out


def mae_metrics(mae: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Metric]:
    """I-AvgMAE and C-AvgMAE in modes 1-4 from cells [R, A, B] (mean, std, n) per mode.

    A cell counts when it scored at least one row. Extras: `std` (of the cell MAEs across cells),
    `pooled_std` = sqrt(Σ(n_k - 1) s_k² / Σ(n_k - 1)) over cells, `cells`.
    """
    out: dict[str, Metric] = {}
    for mode, (mean, std, n) in mae.items():
        T = mean.shape[1]
        diag = np.eye(T, dtype=bool)
        for prefix, sel in (("I", diag), ("C", ~diag)):
            name = f"{prefix}-AvgMAE (Mode {mode})"
            if prefix == "C" and T < 2:
                out[name] = Metric.undefined("needs at least 2 tasks")
                continue
            ok = sel & (n[0] > 0) & np.isfinite(mean[0])
            if not ok.any():
                out[name] = Metric.undefined(
                    "no evaluation row has a marker valid in its reference task"
                )
                continue
            vals = _nanmean(np.where(ok, mean, np.nan).reshape(mean.shape[0], -1), axis=1)
            nk, sk = n[0][ok], std[0][ok]
            use = (nk > 1) & np.isfinite(sk)
            den = np.sum(nk[use] - 1)
            pooled = float(np.sqrt(np.sum((nk[use] - 1) * sk[use] ** 2) / den)) if den > 0 else None
            cells = mean[0][ok]
            out[name] = Metric(
                vals,
                n=int(round(float(nk.sum()))),
                extra={
                    "std": float(np.std(cells, ddof=1)) if len(cells) > 1 else None,
                    "pooled_std": pooled,
                    "cells": int(ok.sum()),
                },
            )
        if mode == 1:
            out["I-AvgMAE"] = out["I-AvgMAE (Mode 1)"]
            out["C-AvgMAE"] = out["C-AvgMAE (Mode 1)"]
    return out


def seven_metrics(
    mic: np.ndarray,
    usable: np.ndarray,
    shared: np.ndarray,
    accuracy: np.ndarray,
    cmfg: np.ndarray,
    mae: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
    parity: bool,
    rank_resolution: float = 0.0,
) -> dict[str, Metric]:
    """All seven metrics and their variants for one (model, prompt).

    Args:
        mic: [R, T, M] MICs over the group's tasks.
        usable: [T, M] markers valid with a defined MIC.
        shared: [M] markers usable in every task.
        accuracy, cmfg: [R, T].
        mae: mode -> (mean, std, n), each [R, T, T].
        parity: the seed's conventions.
        rank_resolution: 0 for the ordinary Spearman variants (the plug-in values), h > 0 for
            Spearman on smoothed ranks at resolution h without noise correction (the estimand
            evaluated on noiseless values: the simulator's population values).
    """
    out = mae_metrics(mae)
    shared_mic = mic[:, :, shared]
    h = rank_resolution if rank_resolution > 0 else None
    out.update(mrc(shared_mic, parity, scales=h))
    for name, values in (("MAC", accuracy), ("MCC", cmfg)):
        out.update(
            marker_task_correlation(
                shared_mic, values, name, parity, scales=None if h is None else (h, h)
            )
        )
    out.update(cv_metrics(mic, usable, shared))
    out["MRC"] = out["MRC-S-all"]
    out["MAC"] = out["MAC-S-all"]
    out["MCC"] = out["MCC-S-all"]
    return out


def consistent_with_zero(d: np.ndarray, level: float = 0.95) -> bool:
    """Whether the data cannot reject that every population entry of `d` is 0.

    Args:
        d: [R, K] differences, point estimate first, then bootstrap replicates.
        level: 1 - the test's size.

    The statistic is S = Σ d_k^2; its null distribution is that of the centred replicates,
    S*_b = Σ (d*_bk - d_k)^2, which keeps the correlation between entries (two Mode 4 cells share
    a reference MIC). Not rejected when S <= the level quantile of S*. Unweighted on purpose:
    dividing by each entry's estimated variance made the test anti-conservative at 300 items
    per task (rare markers' variances are noisy; measured coverage of a true 0: 0.88 -> 0.96).
    """
    point, reps = d[0], d[1:]
    with _quiet():
        v = np.nanvar(reps, axis=0, ddof=1)
    ok = np.isfinite(point) & np.isfinite(v) & (v > 0)
    if not ok.any() or len(reps) < 2:
        return False
    s_obs = float(np.sum(point[ok] ** 2))
    s_star = np.nansum((reps[:, ok] - point[ok]) ** 2, axis=1)
    return s_obs <= float(np.quantile(s_star, level))


def attach_noise_corrections(
    metrics: dict[str, Metric],
    mic: np.ndarray,
    eval_mean: np.ndarray,
    usable: np.ndarray,
    shared: np.ndarray,
    level: float = 0.95,
    noise: np.ndarray | None = None,
    items: np.ndarray | None = None,
) -> None:
    """Noise-corrected CVs and boundary tests for the CVs and Mode 4 MAEs (in place).

    * CVs: the sampling variance of each MIC is taken out of the spread (`cv` with `noise`);
      the corrected statistic is evaluated on the point estimate and on every replicate
      (`Metric.corrected`), each with its own noise estimate (`noise`: the estimator is a
      function of the data, noise term included, so the replicates re-estimate it; one noise
      array for all replicates left the noise term's own sampling error out of the se). With
      `items` (k per MIC), the point's noise carries k/(k-1) (its residuals are taken around
      the sample's own MIC); the replicates' do not (theirs are taken around the point MIC,
      the bootstrap world's truth), and the replicates' deviations are not rescaled: with
      Poisson item weights a MIC over ~10 items has a bootstrap variance ~1.03x its sampling
      variance (the count varies as the real one does). Its square root is
      still biased down (Jensen; the clip at 0 lifts units whose spread is within the noise):
      the bootstrap estimates that
      bias as the corrected replicates' mean minus the bootstrap world's CV, which is the
      plug-in CV of the sample (`Metric.anchor`; `metrics.debias.debias` takes it out and
      builds a normal interval around the result). Measured: C-AvgCV's estimate lay
      0.3-0.7 se below the truth before, within 0.17 se after.
    * Mode 4 MAEs: every |MIC - mean| term is unfolded from its noise (`mode4_unfolded`); the
      unfolding's residual bias b (`mode4_residual_bias`) is half taken out of the estimate and
      the replicates (a constant shift), and the interval's lower end extends by the other half
      (`Metric.lower_allowance`): b is itself noisy and larger where the estimate is low, so the
      full shift under-covered (measured 0.81-0.89) and a lower end extended by all of b with
      no shift over-covered (0.99).
    * A CV and a Mode 4 MAE are 0 exactly when the MICs they compare are equal; |.| and the
      standard deviation are biased up there by about the noise, which no bias correction
      removes. `Metric.reaches_zero` records that the data are consistent with that boundary
      (`consistent_with_zero` on the differences): the interval then extends to 0.

    Args:
        metrics: the group's metrics (modified in place).
        mic: [R, T, M] MICs, point estimate first.
        eval_mean: [R, T, M] mean confidence of each marker's evaluation rows, point first.
        usable: [T, M]; shared: [M].
        level: the intervals' level.
        noise: [R, T, M] each MIC's sampling variance as estimated on the point estimate and on
            each replicate (`metrics.resample.GroupReplicates.mic_noise`); None: the
            replicates' variance of each MIC, the same for all (the noise's own error ignored).
        items: [T, M] items with a row of each MIC's cell (`GroupReplicates.mic_items`); None:
            no small-sample factor.
    """
    if noise is None:
        with _quiet():
            noise = np.nan_to_num(np.nanvar(mic[1:], axis=0, ddof=1))  # [T, M]
    else:
        noise = np.nan_to_num(noise)
    if items is not None and noise.ndim == 3:
        # The point's noise: residuals around the sample's own MIC leave (k-1)/k of the
        # sampling variance. Not the replicates': theirs are taken around the point MIC, the
        # bootstrap world's truth, so they estimate that world's noise as they are.
        f = np.where(items >= 2, items / np.maximum(items - 1, 1), 1.0)
        noise = np.concatenate([noise[:1] * f, noise[1:]])
    for name, m in cv_metrics(mic, usable, shared, noise=noise).items():
        metric = metrics.get(name)
        if metric is not None and metric.values is not None and m.values is not None:
            metric.corrected = m.values
            # The bootstrap world's CV: the replicates are drawn from the sample, whose spread
            # is the plug-in one (noise included), so their error is taken against it.
            metric.anchor = float(metric.values[0])
    R, T, _ = mic.shape
    with _quiet():
        within = np.where(usable, mic, np.nan)
        d_task = within - np.nanmean(within, axis=2, keepdims=True)  # I-AvgCV: markers in a task
        d_shared = np.where(usable & shared, d_task, np.nan)
        across = mic[:, :, shared] - np.nanmean(mic[:, :, shared], axis=1, keepdims=True)
    tests = {
        "I-AvgCV": d_task.reshape(R, -1),
        "I-AvgCV (shared)": d_shared.reshape(R, -1),
        "C-AvgCV": across.reshape(R, -1),
    }
    for name, diff in tests.items():
        metric = metrics.get(name)
        if metric is not None and metric.values is not None and diff.shape[1]:
            metric.reaches_zero = consistent_with_zero(diff, level)
    diag = np.eye(T, dtype=bool)
    unfolded = None
    for prefix, cells in (("I", diag), ("C", ~diag)):
        metric = metrics.get(f"{prefix}-AvgMAE (Mode 4)")
        if metric is not None and metric.values is not None:
            if unfolded is None:  # shared by I and C: the terms' noise and their unfolding
                zero_filled = _zero_filled_deviations(mic, eval_mean)
                sd = mode4_noise_sd(mic, eval_mean, zero_filled[2])
                unfolded = mode4_unfolded(mic, eval_mean, usable, sd)
            b = mode4_residual_bias(mic, eval_mean, usable, cells, sd=sd)
            b = max(b, 0.0) if np.isfinite(b) else 0.0  # max(nan, 0.0) is nan
            metric.corrected = unfolded[prefix] - b / 2
            metric.lower_allowance = b / 2
            metric.bias_shift = b / 2
            metric.reaches_zero = _mode4_consistent_with_zero(
                mic, eval_mean, usable, cells, level, zero_filled
            )


def replicate_noise(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The noise terms of `disattenuated_pearson`: what replicates add to the spreads of x and y
    along the last axis and to their covariance.

    x, y: [R, ..., n], the point estimate first, then bootstrap replicates.

    Returns:
        (nxx, nyy, nxy), each [...]: the mean over replicates of the sample variance of
        x*_r - mean of x* (y, and the cross term, likewise).
    """
    n = x.shape[-1]

    def replicate_mean(a):  # nanmean's copies cost more than the mean, and NaNs are rare
        return np.nanmean(a, axis=0) if np.isnan(a).any() else a.mean(axis=0)

    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        dx = _centred_last(x[1:] - replicate_mean(x[1:]))
        dy = _centred_last(y[1:] - replicate_mean(y[1:]))
        nxx = replicate_mean(_spread(dx, dx, n))
        nyy = replicate_mean(_spread(dy, dy, n))
        nxy = replicate_mean(_spread(dx, dy, n))
    return nxx, nyy, nxy


def _centred_last(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=-1, keepdims=True)


def _spread(ac: np.ndarray, bc: np.ndarray, n: int) -> np.ndarray:
    """Sample covariance along the last axis of centred arrays (each centred once, not once per
    product)."""
    return (ac * bc).sum(-1) / (n - 1)


def pearson_without_noise(
    x: np.ndarray, y: np.ndarray, noise: tuple[np.ndarray, np.ndarray, np.ndarray], floor: float
) -> np.ndarray:
    """Pearson correlation along the last axis of every slice of x, y with the noise terms
    `noise` (`replicate_noise`, broadcastable to x's leading axes without the last) taken out
    of its variances and covariance; a variance keeps `floor` times its raw value at least.

    Returns:
        r [...], clipped to [-1, 1]; NaN where x or y is constant along the last axis.
    """
    n = x.shape[-1]
    nxx, nyy, nxy = noise
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        xc, yc = _centred_last(x), _centred_last(y)
        vx, vy, cxy = _spread(xc, xc, n), _spread(yc, yc, n), _spread(xc, yc, n)
        constant = _constant_slices(x, vx * (n - 1)) | _constant_slices(y, vy * (n - 1))
        vx = np.maximum(vx - nxx, floor * vx)
        vy = np.maximum(vy - nyy, floor * vy)
        r = np.where(constant, np.nan, (cxy - nxy) / np.sqrt(vx * vy))
        return np.clip(r, -1.0, 1.0)


def disattenuated_pearson(x: np.ndarray, y: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """Pearson correlation along the last axis with the replicates' noise taken out.

    x, y: [R, ..., n], the point estimate first, then bootstrap replicates. The noise a
    replicate adds to the spread of x across the last axis is the mean, over replicates, of the
    sample variance of (x*_r - mean of x*); likewise for y and the cross term (x and y may share
    items: accuracy and MIC of one task; `replicate_noise`). Each replicate's (and the point's)
    variances and covariance lose these terms, as Spearman's correction for attenuation: the
    noise of the smoothed ranks shrinks their correlation. A variance is kept at `floor` times
    its raw value at least (the correction's factor is then at most 1 / floor on r, before the
    clip to [-1, 1]; `pearson_without_noise`).

    Returns:
        r [R, ...], clipped to [-1, 1] (`significant` tests it as `correlate`'s p-values would).
    """
    return pearson_without_noise(x, y, replicate_noise(x, y), floor)


# The rank correlations whose rank noise is taken out of their spread (`disattenuated_pearson`),
# and the floor of that correction.
RANK_DISATTENUATE = ("MAC", "MCC")
RANK_VAR_FLOOR = 0.7


def attach_rank_corrections(
    metrics: dict[str, Metric],
    mic: np.ndarray,
    accuracy: np.ndarray,
    cmfg: np.ndarray,
    shared: np.ndarray,
    parity: bool,
    rank_resolution: float,
    second_level: bool = False,
) -> None:
    """Resolution-h estimates of the Spearman variants of MRC, MAC and MCC (in place).

    The estimand is Spearman on smoothed ranks at resolution h (`smoothed_ranks`; markers closer
    than about h count as partly tied): an ordinary Spearman is a step function of the true MICs,
    whose value hinges on orders of markers a few thousandths apart that no sample resolves
    (docs/statistics.md). Each metric gets
    * `corrected`: the statistic with every pair's scale shrunk by its noise (`rank_scales`, the
      variances of the MICs, accuracies and cMFGs from the replicates), so that the smoothed
      ranks of the noisy values are unbiased for those of the true values, and the rank noise
      taken out of the correlation (`disattenuated_pearson`), on the point estimate and on every
      replicate;
    * `anchor`: the statistic at scale h on the point estimate (no noise correction), the
      bootstrap world's value of the estimand, on which the replicates are centred.

    Args:
        metrics: the group's metrics (modified in place).
        mic: [R, T, M] MICs, point estimate first; accuracy, cmfg: [R, T].
        shared: [M] shared markers.
        parity: the seed's conventions (an empty significant set is -1).
        rank_resolution: h (> 0; 0 leaves the metrics unchanged).
        second_level: also MAC's second bootstrap level for paired tests (`Metric.second_level`,
            `inner_correlation_replicates`); off unless the analysis compares groups.
    """
    _, T, _ = mic.shape
    S = int(shared.sum())
    if rank_resolution <= 0 or len(mic) < 3 or T < 2 or S < 1:
        return
    h = rank_resolution
    shared_mic = mic[:, :, shared]
    with _quiet():
        var_mic = np.nanvar(shared_mic[1:], axis=0, ddof=1)  # [T, S]
        var_acc = np.nanvar(accuracy[1:], axis=0, ddof=1)  # [T]
        var_cmfg = np.nanvar(cmfg[1:], axis=0, ddof=1)

    def pearson(a: np.ndarray, b: np.ndarray, name: str):
        """r, and the noise terms taken out of it (None: the plain Pearson)."""
        if name in RANK_DISATTENUATE:
            noise = replicate_noise(a, b)
            return pearson_without_noise(a, b, noise, RANK_VAR_FLOOR), noise
        return correlation(a, b, "pearson"), None

    corrected: dict[str, Metric] = {}
    levels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    anchor = mrc(shared_mic[:1], parity, scales=h)
    if S >= 2:
        ranks = smoothed_ranks(shared_mic, rank_scales(h, var_mic))  # [R, T, S]
        i, j = np.triu_indices(T, k=1)
        r, _ = pearson(ranks[:, i, :], ranks[:, j, :], "MRC")
        corrected.update(_corr_family(r, S, "MRC-S", parity, "task pair"))
    x_scales = rank_scales(h, var_mic.T)
    x_ranks = smoothed_ranks(np.moveaxis(shared_mic, 1, 2), x_scales)  # [R, S, T]
    for name, values, var in (("MAC", accuracy, var_acc), ("MCC", cmfg, var_cmfg)):
        anchor.update(
            marker_task_correlation(shared_mic[:1], values[:1], name, parity, ("S",), scales=(h, h))
        )
        if not np.isfinite(values[0]).all():
            continue
        y_scales = rank_scales(h, var)
        y_ranks = smoothed_ranks(values, y_scales)  # [R, T]
        r, noise = pearson(x_ranks, np.broadcast_to(y_ranks[:, None, :], x_ranks.shape), name)
        corrected.update(_corr_family(r, T, f"{name}-S", parity, "marker"))
        if (
            second_level
            and name in SECOND_LEVEL
            and noise is not None
            and len(mic) - 1 >= INNER_MIN_REPLICATES
        ):
            inner = inner_correlation_replicates(
                shared_mic, values, noise, RANK_VAR_FLOOR, scales=(x_scales, y_scales)
            )
            # The estimand on each outer replicate (the first K, as the level's row 0).
            outer = slice(1, inner.shape[1] + 1)
            estimand = marker_task_correlation(
                shared_mic[outer], values[outer], name, parity, ("S",), scales=(h, h)
            )[f"{name}-S-all"]
            if estimand.values is not None:
                levels[f"{name}-S-all"] = (inner, estimand.values)
    for name, m in corrected.items():
        if name.endswith("-sig"):
            # A set chosen by p < 0.05 of the smoothed ranks is not the plug-in's set (in parity
            # mode an empty one is the sentinel -1): the -sig variants stay uncorrected.
            continue
        target = metrics.get(name)
        a = anchor.get(name)
        if target is None or target.values is None or m.values is None:
            continue
        if a is None or a.values is None or not np.isfinite(a.values[0]):
            continue
        target.corrected = m.values
        target.anchor = float(a.values[0])
        target.second_level = levels.get(name)
    target = metrics.get("MRC-S-all")
    if S >= 2 and len(mic) - 1 >= INNER_MIN_REPLICATES and target is not None:
        if target.anchor is not None:
            target.inner = inner_mrc_replicates(shared_mic, h, var_mic, parity)


# The floor of the Pearson variants' noise correction (`attach_pearson_corrections`): a
# marker's MIC variance across tasks keeps at least this share of its raw value.
PEARSON_VAR_FLOOR = 0.85


def attach_pearson_corrections(
    metrics: dict[str, Metric],
    mic: np.ndarray,
    accuracy: np.ndarray,
    cmfg: np.ndarray,
    shared: np.ndarray,
    floor: float = PEARSON_VAR_FLOOR,
    second_level: bool = False,
) -> None:
    """Noise-corrected estimates of MAC-P-all and MCC-P-all (in place).

    A marker's Pearson correlation across tasks of its MIC with the task's accuracy (cMFG) is
    attenuated by the MICs' sampling noise: the noise adds to their spread across tasks, not
    to the covariance. The attenuation is larger for a model whose confidences are noisier, so
    two models with the same MICs differ by it. Each metric gets
    * `corrected`: the statistic with the noise taken out of every marker's correlation
      (`disattenuated_pearson`, Spearman's correction for attenuation, the noise terms from the
      replicates), on the point estimate and on every replicate;
    * `anchor`: the plug-in statistic of the sample, the bootstrap world's value of the estimand
      (the population Pearson of the true MICs), on which the replicates are centred.
    The -sig variants stay uncorrected: their marker set is chosen by the plug-in p-values.

    Args:
        metrics: the group's metrics (modified in place).
        mic: [R, T, M] MICs, point estimate first; accuracy, cmfg: [R, T].
        shared: [M] shared markers.
        floor: the least share of a variance the correction keeps (`disattenuated_pearson`).
        second_level: also MAC-P-all's second bootstrap level for paired tests
            (`Metric.second_level`); off unless the analysis compares groups.
    """
    _, T, _ = mic.shape
    S = int(shared.sum())
    if len(mic) < 3 or T < 2 or S < 1:
        return
    x = np.moveaxis(mic[:, :, shared], 1, 2)  # [R, S, T]
    for name, values in (("MAC", accuracy), ("MCC", cmfg)):
        target = metrics.get(f"{name}-P-all")
        if target is None or target.values is None or not np.isfinite(target.values[0]):
            continue
        if not np.isfinite(values[0]).all():
            continue
        y = np.broadcast_to(values[:, None, :], x.shape)
        noise = replicate_noise(x, y)
        r = pearson_without_noise(x, y, noise, floor)
        m = _corr_family(r, T, f"{name}-P", False, "marker")[f"{name}-P-all"]
        if m.values is None or not np.isfinite(m.values[0]):
            continue
        target.corrected = m.values
        target.anchor = float(target.values[0])
        if second_level and name in SECOND_LEVEL and len(mic) - 1 >= INNER_MIN_REPLICATES:
            # The estimand on a replicate is its plug-in value: the replicates themselves.
            inner = inner_correlation_replicates(mic[:, :, shared], values, noise, floor)
            target.second_level = (inner, target.values[1 : inner.shape[1] + 1])


# MRC's second bootstrap level (`inner_mrc_replicates`): K first-level replicates, each with C
# second-level ones (cost: K (1 + C) statistics); none below INNER_MIN_REPLICATES first-level
# replicates (the interval then keeps the replicates' width).
INNER_K = 100
INNER_C = 20
INNER_MIN_REPLICATES = 40


def inner_mrc_replicates(
    shared_mic: np.ndarray,
    h: float,
    var_mic: np.ndarray,
    parity: bool,
    n_outer: int | None = None,
    n_inner: int | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """A second bootstrap level for MRC at resolution h (its interval's width, `Metric.inner`).

    The replicates' spread of MRC understates the estimate's where true MICs are near-tied: the
    bootstrap's world takes the sample's MICs, which noise has pulled apart, as its truth, and
    a smoothed rank moves less with noise between values further apart. A second level measures
    how far that goes: for each of K first-level replicates x*_k, C replicates
    x*_k + (x*_c - x_hat) (the errors of C other first-level replicates, c = k + 1, ..., k + C
    cyclically: a translation bootstrap, which holds as a MIC's noise barely depends on its
    level), each through the same corrected statistic as the first level (`rank_scales` with
    the same variances), and the estimand at scale h on x*_k. No MIC is recomputed.

    Args:
        shared_mic: [R, T, S] MICs of the shared markers, point estimate first (S >= 2).
        h: the rank resolution.
        var_mic: [T, S] sampling variances of the MICs.
        parity: the seed's conventions.
        n_outer, n_inner: K and C (default INNER_K, INNER_C; at most R - 1 and R - 2).

    Returns:
        (values [1 + C, K], anchors [K]), or None when the estimand is undefined.
    """
    _, T, S = shared_mic.shape
    x = _translated(shared_mic, n_outer, n_inner)
    outer = x[0]
    ranks = smoothed_ranks(x.reshape(-1, T, S), rank_scales(h, var_mic)).reshape(x.shape)
    # Pearson of every task pair as one product of the standardized rank rows (`correlate`
    # would build [1 + C, K, pairs, S] copies and p-values nobody reads: ~40 % of the cost).
    u = ranks - ranks.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = u / np.sqrt((u * u).sum(axis=-1, keepdims=True))
    i, j = np.triu_indices(T, k=1)
    r = np.clip((u @ np.swapaxes(u, -1, -2))[..., i, j], -1.0, 1.0)
    anchor = mrc(outer, parity, scales=h)["MRC-S-all"]
    if anchor.values is None:
        return None
    return fisher_mean(r, axis=-1), anchor.values


def _translated(a: np.ndarray, n_outer: int | None, n_inner: int | None) -> np.ndarray:
    """The translation bootstrap's second level of replicates a [R, ...] (point first): for each
    of the first K replicates a*_k (row 0 of the result), C replicates a*_k + (a*_c - a_hat),
    c = k + 1, ..., k + C cyclically over the B = R - 1 replicates. Two groups scored on the
    same items get the same k and c, so their second levels are paired as their first are.

    Returns:
        [1 + C, K, ...], K = min(n_outer or INNER_K, B), C = min(n_inner or INNER_C, B - 1).
    """
    B = len(a) - 1
    K = min(INNER_K if n_outer is None else n_outer, B)
    C = min(INNER_C if n_inner is None else n_inner, B - 1)
    # The j-th second-level error of replicate k is first-level replicate k + j's (mod B).
    src = 1 + (np.arange(K)[None, :] + np.arange(1, C + 1)[:, None]) % B  # [C, K]
    outer = a[1 : K + 1]
    return np.concatenate([outer[None], outer[None] + (a[src] - a[0])])


# The metrics whose paired test takes its standard error from a second bootstrap level
# (`inner_correlation_replicates`; MAC's S-all and P-all variants).
SECOND_LEVEL = ("MAC",)


def inner_correlation_replicates(
    shared_mic: np.ndarray,
    values: np.ndarray,
    noise: tuple[np.ndarray, np.ndarray, np.ndarray],
    floor: float,
    scales: tuple[np.ndarray, np.ndarray] | None = None,
    n_outer: int | None = None,
    n_inner: int | None = None,
) -> np.ndarray:
    """A second bootstrap level of a noise-corrected marker-task correlation (MAC's `-all`
    variants; the paired test's standard error, `Metric.second_level`).

    The debiased estimate is the corrected statistic minus its bootstrap bias, and that bias
    estimate moves with the sample: the estimate varies less than the corrected statistic's
    replicates do (measured on paired nulls: sd of the debiased MAC and MAC-P-all differences
    0.78-0.91 of the replicates' sd, so the normal test rejected 1-4 % at alpha = 0.05; with
    this level 2-6 %, docs/statistics.md). For K first-level
    replicates, each with C translated ones (`_translated`, MICs and task values alike), this
    gives the corrected statistic with the first level's noise terms and scales (`noise`:
    `replicate_noise`; `scales`: the smoothed ranks' (MIC [S, T, T], task value [T, T]) scales,
    None for the Pearson variant): the debiased estimate of replicate k is then
    values[0, k] - mean(values[1:, k]) + the estimand on replicate k.

    Args:
        shared_mic: [R, T, S] MICs of the shared markers, point estimate first.
        values: [R, T] accuracy (or another task value), point first.
        noise: (nxx, nyy, nxy), each [S], of the first level.
        floor: the least share of a variance the correction keeps.
        scales: as above, or None.
        n_outer, n_inner: K and C (default INNER_K, INNER_C).

    Returns:
        values [1 + C, K]: the statistic on each replicate k (row 0) and on its C replicates.
    """
    _, T, S = shared_mic.shape
    x = np.moveaxis(_translated(shared_mic, n_outer, n_inner), -1, -2)  # [1 + C, K, S, T]
    y = _translated(values, n_outer, n_inner)  # [1 + C, K, T]
    if scales is not None:
        x = smoothed_ranks(x.reshape(-1, S, T), scales[0]).reshape(x.shape)
        y = smoothed_ranks(y.reshape(-1, T), scales[1]).reshape(y.shape)
    r = pearson_without_noise(x, np.broadcast_to(y[..., None, :], x.shape), noise, floor)
    return fisher_mean(r, axis=-1)


# The inverse of the folded normal's mean: u >= 0 with E|N(u, 1)| = r, tabulated on an even grid
# of r (a plain index, no search, at run time: the terms number B x T x T x M).
_FOLD_U = np.linspace(0.0, 13.0, 13001)
_FOLD_H = np.sqrt(2 / np.pi) * np.exp(-(_FOLD_U**2) / 2) + _FOLD_U * (
    1 - 2 * special.ndtr(-_FOLD_U)
)
_FOLD_DR = 0.002
_FOLD_R = np.arange(0.0, 12.0 + _FOLD_DR / 2, _FOLD_DR)
_FOLD_INV = np.interp(_FOLD_R, _FOLD_H, _FOLD_U)  # 0 below sqrt(2 / pi)


def unfold(x: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """The delta >= 0 whose folded normal mean E|N(delta, sd^2)| equals x (moment matching).

    |d| of an estimate d ~ N(delta, sd^2) overstates |delta| by up to sd sqrt(2/pi) (at
    delta = 0); this inverts that mean: 0 when x is at most sd sqrt(2/pi), x itself when x is
    12 or more sd from 0 (where the two agree to 1e-30). Where sd is 0 (no noise), x is
    returned unchanged.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        r = x / sd
        pos = np.minimum(r, 12.0) / _FOLD_DR
        i = np.minimum(pos.astype(np.int64), len(_FOLD_R) - 2)
        i = np.maximum(i, 0)
        lo = _FOLD_INV[i]
        u = lo + (pos - i) * (_FOLD_INV[i + 1] - lo)
        out = np.where(r >= 12.0, x, sd * u)
    return np.where((sd > 0) & np.isfinite(r), out, x)


def mode4_unfolded(
    mic: np.ndarray,
    eval_mean: np.ndarray,
    usable: np.ndarray,
    sd: np.ndarray | None = None,
    chunk: int = 64,
) -> dict[str, np.ndarray]:
    """I- and C-AvgMAE Mode 4 with every |MIC(m, A) - mean_B(m)| noise-corrected.

    Mode 4 averages |d| over (A, B, m), d = MIC(m, A) - mean confidence of m's evaluation rows in
    B. Where a true difference is near 0, |d| is biased up by about its noise, and the bootstrap
    sees a smaller bias than there is (its replicates start from the inflated |d|: measured,
    C-AvgMAE Mode 4 covered 0.83-0.93). Each term is replaced by `unfold(|d|, sd)`, sd from the
    replicates (`mode4_noise_sd`: var x + var y - 2 cov, each over the replicates that define
    it), on the point estimate and on every replicate with the same sd; cells and markers are
    kept exactly as the plug-in Mode 4 keeps them.

    Args:
        mic: [R, T, M] MICs, point estimate first; eval_mean: [R, T, M] likewise.
        usable: [T, M] markers valid in each reference task.
        sd: `mode4_noise_sd(mic, eval_mean)` when the caller has it (None: computed here).
        chunk: replicates per block (bounds memory at chunk x T x T x M).

    Returns:
        {"I": [R], "C": [R]}: the corrected statistics, point first.
    """
    R, T, _ = mic.shape
    sd = mode4_noise_sd(mic, eval_mean) if sd is None else sd
    d0 = mic[0][:, None, :] - eval_mean[0][None, :, :]
    keep = usable[:, None, :] & np.isfinite(d0)
    diag = np.eye(T, dtype=bool)
    has = keep.any(axis=2)
    out_i, out_c = np.full(R, np.nan), np.full(R, np.nan)
    _mode4_unfold_kernel(
        np.ascontiguousarray(mic, dtype=np.float64),
        np.ascontiguousarray(eval_mean, dtype=np.float64),
        keep, sd, diag & has, ~diag & has, _FOLD_INV, _FOLD_DR, out_i, out_c,
    )  # fmt: skip
    return {"I": out_i, "C": out_c}


@functools.cache
def _unfold_bias_table() -> tuple[np.ndarray, np.ndarray]:
    """(u, b(u)) with b(u) = E[unfold(|N(u, 1)|, 1)] - u, the unfolding's bias in units of sd.

    +0.50 at u = 0 (a term whose truth is 0 is unfolded to 0 only when |d| < sqrt(2 / pi)),
    falling through 0 near u = 0.76 to -0.10 at u = 1.5, and below 0.003 in size from u = 4.
    """
    z = np.linspace(-9.0, 9.0, 1801)
    w = np.exp(-(z**2) / 2)
    w /= w.sum()
    u = np.linspace(0.0, 12.0, 601)
    # unfold(|u + z|, 1) in one compiled pass: numpy's form made ~15 temporaries of 1e6 terms
    # (0.1-0.25 s of every `mic analyze --bootstrap`); the values are bit-identical (tested).
    folded = np.empty((len(u), len(z)))
    _fold_table_kernel(u, z, _FOLD_INV, _FOLD_DR, folded)
    return u, folded @ w - u


@nb.njit(cache=True)
def _fold_table_kernel(u, z, inv, dr, out):
    """out[a, j] = unfold(|u[a] + z[j]|, 1), in `unfold`'s operations and order (sd = 1 divides
    and multiplies exactly)."""
    last = len(inv) - 2
    for a in range(len(u)):
        for j in range(len(z)):
            x = abs(u[a] + z[j])
            if x >= 12.0:
                out[a, j] = x
                continue
            pos = x / dr
            i = min(int(pos), last)
            lo = inv[i]
            out[a, j] = lo + (pos - i) * (inv[i + 1] - lo)


def mode4_residual_bias(
    mic: np.ndarray,
    eval_mean: np.ndarray,
    usable: np.ndarray,
    cells: np.ndarray,
    grid_size: int = 61,
    iterations: int = 200,
    fit_terms: int = 2000,
    sd: np.ndarray | None = None,
) -> float:
    """The bias of the unfolded Mode 4 MAE (`mode4_unfolded`) over `cells`, estimated.

    The unfolding of a term |d|, d ~ N(delta, sd^2), is biased by sd b(delta / sd)
    (`_unfold_bias_table`: up by sd / 2 at delta = 0), which the bootstrap does not see. The
    deltas are unknown; an empirical-Bayes prior for them (the nonparametric maximum-likelihood
    mixture on a grid, fitted by EM to the point estimate's terms over the cells) gives each term
    a posterior, and the estimate is the posterior mean of sd b(delta / sd), averaged as Mode 4
    averages the terms (markers within a cell, then cells). Measured on `separated` at 300 items:
    0.0064 against a true bias of 0.0040 (the posterior mean of |delta| itself, an estimator of
    the metric, was 0.025 against a truth of 0.030: the prior is too coarse to replace the
    unfolding).

    Args:
        mic: [R, T, M] MICs, point estimate first; eval_mean: [R, T, M] likewise.
        usable: [T, M] markers valid in each reference task.
        cells: [T, T] the (A, B) cells of the metric (diagonal: I-, off-diagonal: C-AvgMAE).
        grid_size: points of the prior's grid (plus 0).
        iterations: EM steps.
        fit_terms: the prior is fitted on at most this many terms, evenly spaced in the
            (A, B, marker) order (the EM's cost; every term gets its posterior).
        sd: `mode4_noise_sd(mic, eval_mean)` when the caller has it (None: computed here).

    Returns:
        The estimated bias (0 when no term has noise).
    """
    sd = mode4_noise_sd(mic, eval_mean) if sd is None else sd
    d0 = mic[0][:, None, :] - eval_mean[0][None, :, :]
    keep = cells[:, :, None] & usable[:, None, :] & np.isfinite(d0)
    sel = keep & (sd > 0) & np.isfinite(sd)
    if not sel.any():
        return 0.0
    x, s = d0[sel], sd[sel]
    top = float(np.max(np.abs(x) + 3 * s))
    grid = np.unique(np.concatenate([np.linspace(-top, top, grid_size), [0.0]]))
    loglik = -0.5 * ((x[:, None] - grid[None, :]) / s[:, None]) ** 2
    lik = np.exp(loglik - loglik.max(axis=1, keepdims=True))  # a row's scale cancels
    w = np.full(len(grid), 1.0 / len(grid))
    fit = lik[np.unique(np.linspace(0, len(x) - 1, min(len(x), fit_terms)).astype(np.int64))]
    # Every grid point keeps a little prior weight: a term left out of the fit (fit_terms) whose
    # likelihood lives only where the fitted terms put none would otherwise get 0 / 0.
    floor = np.finfo(np.float64).tiny
    for _ in range(iterations):
        post = fit * w
        post /= post.sum(axis=1, keepdims=True)
        w = np.maximum(post.mean(axis=0), floor)
    post = lik * w
    post /= post.sum(axis=1, keepdims=True)
    u, b = _unfold_bias_table()
    per = np.zeros(sd.shape)
    per[sel] = s * (post * np.interp(np.abs(grid)[None, :] / s[:, None], u, b)).sum(axis=1)
    # Mode 4's average: markers within a cell, then the cells that have a term.
    n = keep.sum(axis=2)
    has = n > 0
    if not has.any():
        return 0.0
    return float(np.mean(per.sum(axis=2)[has] / n[has]))


def _zero_filled_deviations(
    mic: np.ndarray, eval_mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = MIC* - MIC [R, A, M], y = mean* - mean [R, B, M] (replicate minus point; a marker
    missing from a replicate counts as no deviation) and var(x - y) = var x + var y - 2 cov
    [A, B, M] over the replicates."""
    x = np.nan_to_num(mic[1:] - mic[0])
    y = np.nan_to_num(eval_mean[1:] - eval_mean[0])
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    denom = max(len(x) - 1, 1)
    var = (
        np.einsum("ram,ram->am", xc, xc)[:, None, :]
        + np.einsum("rbm,rbm->bm", yc, yc)[None, :, :]
        - 2 * np.einsum("ram,rbm->abm", xc, yc, optimize=True)
    ) / denom
    return x, y, var


def mode4_noise_sd(
    mic: np.ndarray, eval_mean: np.ndarray, zero_filled_var: np.ndarray | None = None
) -> np.ndarray:
    """[A, B, M] standard deviation of d = MIC(m, A) - mean_B(m) over the replicates.

    var x + var y - 2 cov(x, y), x and y the replicates' MICs and evaluation means, each over
    the replicates where it is defined (a replicate in which a rare marker has no weighted row
    has no value: counting it as no deviation would understate that marker's noise), the
    covariance over the replicates where both are. Where fewer than 2 replicates define a term,
    it falls back to counting the missing ones as no deviation.

    Args:
        mic: [R, T, M] MICs, point estimate first; eval_mean: [R, T, M] likewise.
        zero_filled_var: `_zero_filled_deviations(mic, eval_mean)[2]` when the caller has it.
    """
    x = mic[1:] - mic[0]
    y = eval_mean[1:] - eval_mean[0]
    fx, fy = np.isfinite(x), np.isfinite(y)
    nx, ny = fx.sum(axis=0), fy.sum(axis=0)  # [A, M], [B, M]
    nxy = np.einsum("ram,rbm->abm", fx.astype(np.float64), fy.astype(np.float64), optimize=True)
    with _quiet():
        xc = np.where(fx, x - np.nanmean(x, axis=0), 0.0)
        yc = np.where(fy, y - np.nanmean(y, axis=0), 0.0)
    var_x = np.einsum("ram,ram->am", xc, xc) / np.maximum(nx - 1, 1)
    var_y = np.einsum("rbm,rbm->bm", yc, yc) / np.maximum(ny - 1, 1)
    cov = np.einsum("ram,rbm->abm", xc, yc, optimize=True) / np.maximum(nxy - 1, 1)
    var = var_x[:, None, :] + var_y[None, :, :] - 2 * cov
    few = (nx[:, None, :] < 2) | (ny[None, :, :] < 2) | (nxy < 2)
    if few.any():  # the zero-filled estimate, as the boundary test counts them
        if zero_filled_var is None:
            zero_filled_var = _zero_filled_deviations(mic, eval_mean)[2]
        var = np.where(few, zero_filled_var, var)
    return np.sqrt(np.maximum(var, 0.0))


@nb.njit(cache=True)
def _mode4_unfold_kernel(mic, ev, keep, sd, cells_i, cells_c, inv, dr, out_i, out_c):
    """`mode4_unfolded`'s sums, one pass over replicates x cells x markers (`unfold` inline)."""
    R, T, M = mic.shape
    last = len(inv) - 2
    for r in range(R):
        si = sc = 0.0
        ni = nc = 0
        for a in range(T):
            for b in range(T):
                if not (cells_i[a, b] or cells_c[a, b]):
                    continue
                s = 0.0
                n = 0
                for m in range(M):
                    if not keep[a, b, m]:
                        continue
                    d = mic[r, a, m] - ev[r, b, m]
                    if not np.isfinite(d):
                        continue  # no row of the marker weighs in this replicate
                    x = abs(d)
                    sdv = sd[a, b, m]
                    v = x
                    if sdv > 0 and x < 12.0 * sdv:
                        pos = x / sdv / dr
                        i = min(int(pos), last)
                        v = sdv * (inv[i] + (pos - i) * (inv[i + 1] - inv[i]))
                    s += v
                    n += 1
                if n == 0:
                    continue
                if cells_i[a, b]:
                    si += s / n
                    ni += 1
                else:
                    sc += s / n
                    nc += 1
        if ni:
            out_i[r] = si / ni
        if nc:
            out_c[r] = sc / nc


def _mode4_consistent_with_zero(
    mic: np.ndarray,
    eval_mean: np.ndarray,
    usable: np.ndarray,
    cells: np.ndarray,
    level: float,
    zero_filled: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> bool:
    """`consistent_with_zero` for the Mode 4 differences d(A, B, m) = MIC(m, A) - mean_B(m)
    over the cells selected, without materializing replicates x A x B x markers.

    With x = MIC* - MIC and y = mean* - mean (replicate minus point; a marker missing from a
    replicate counts as no deviation), d* - d = x(A, m) - y(B, m), whose variance is
    var x + var y - 2 cov(x, y) (the two sides share items in parity mode; an entry without
    variance is left out), and Σ (x - y)^2 = Σ x^2 P + Σ y^2 Q - 2 Σ x y w with w the cells kept
    and P, Q their counts over B, A. `zero_filled`: `_zero_filled_deviations(mic, eval_mean)`
    when the caller has it.
    """
    d0 = mic[0][:, None, :] - eval_mean[0][None, :, :]  # [A, B, M]
    if len(mic) < 3:
        return False
    x, y, v = _zero_filled_deviations(mic, eval_mean) if zero_filled is None else zero_filled
    keep = cells[:, :, None] & usable[:, None, :] & np.isfinite(d0) & (v > 1e-300)
    if not keep.any():
        return False
    w = keep.astype(np.float64)  # unweighted: see `consistent_with_zero`
    s_obs = float(np.sum(np.where(keep, d0, 0.0) ** 2 * w))
    s_star = (
        np.einsum("ram,am->r", x * x, w.sum(axis=1))
        + np.einsum("rbm,bm->r", y * y, w.sum(axis=0))
        - 2 * np.einsum("ram,rbm,abm->r", x, y, w, optimize=True)
    )
    return s_obs <= float(np.quantile(s_star, level))
