"""The three special functions the analysis needs, without importing ``scipy.special``.

Importing ``scipy.special`` costs 0.1-0.2 s per process (its array-API layer imports
``numpy.f2py``), more than these functions cost over a whole analysis. They agree with scipy's
``ndtr``, ``ndtri`` and ``stdtr`` to a few units in the last place (tests/metrics/test_special.py
checks 1e-12 relative on a grid), not bit for bit: scipy uses Cephes' erf / ndtri and Boost's
Student t, these use the C library's erf / erfc, Python's ``statistics.NormalDist`` (Wichura's
AS 241) and a continued fraction of the incomplete beta function.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numba as nb
import numpy as np
import numpy.typing as npt

_SQRT1_2 = math.sqrt(0.5)
# Cephes' erfc returns 0 once x^2 / 2 exceeds log(DBL_MAX) (x < -37.68): scipy's ndtr is 0 (and
# 1) from there, where the C library would return subnormals.
_NDTR_UNDERFLOW = 7.09782712893383996843e2
_STANDARD = NormalDist()


def _ndtr_scalar(x: float) -> float:
    # Branches as Cephes' ndtr: erf near 0 (no cancellation there), erfc in the tails (keeps
    # the relative accuracy of small tail areas).
    if math.isnan(x):
        return math.nan
    z = x * _SQRT1_2
    if abs(z) < 1.0:
        return 0.5 + 0.5 * math.erf(z)
    if z * z > _NDTR_UNDERFLOW:
        return 1.0 if z > 0 else 0.0
    y = 0.5 * math.erfc(abs(z))
    return 1.0 - y if z > 0 else y


def _ndtri_scalar(p: float) -> float:
    if not 0.0 < p < 1.0:  # NaN fails the test too
        if p == 0.0:
            return -math.inf
        if p == 1.0:
            return math.inf
        return math.nan
    return _STANDARD.inv_cdf(p)


# The C library's erf / erfc as ufuncs: a builtin called per element, no Python frame (the
# module-level tables of metrics.seven call ndtr on 14,000 points in every process).
_erf_u = np.frompyfunc(math.erf, 1, 1)
_erfc_u = np.frompyfunc(math.erfc, 1, 1)
_ndtri_u = np.frompyfunc(_ndtri_scalar, 1, 1)


def _as_float(out: object) -> np.ndarray | np.float64:
    arr = np.asarray(out, dtype=np.float64)
    return arr if arr.ndim else np.float64(arr)


def ndtr(x: npt.ArrayLike) -> np.ndarray | np.float64:
    """Standard normal CDF, elementwise (as ``scipy.special.ndtr``).

    Args:
        x: Values (any shape; NaN gives NaN).

    Returns:
        Phi(x), float64 of x's shape (a NumPy scalar for a scalar).
    """
    z = np.asarray(x, dtype=np.float64) * _SQRT1_2
    az = np.abs(z)
    out = np.empty(z.shape)
    # The branches of `_ndtr_scalar`, on the elements each takes, with the same float operations
    # (so the same bits); NaN fails `az < 1` and comes out of erfc as NaN.
    near = az < 1.0
    out[near] = 0.5 + 0.5 * _erf_u(z[near]).astype(np.float64)
    tail = ~near
    zt = z[tail]
    with np.errstate(invalid="ignore", over="ignore"):
        y = 0.5 * _erfc_u(az[tail]).astype(np.float64)
        t = np.where(zt > 0, 1.0 - y, y)
        flat = zt * zt > _NDTR_UNDERFLOW
        t[flat] = (zt[flat] > 0).astype(np.float64)
    out[tail] = t
    return _as_float(out)


def ndtri(p: npt.ArrayLike) -> np.ndarray | np.float64:
    """Inverse standard normal CDF, elementwise (as ``scipy.special.ndtri``).

    Args:
        p: Probabilities (any shape). 0 gives -inf, 1 gives +inf, NaN or outside [0, 1] NaN.

    Returns:
        Phi^-1(p), float64 of p's shape (a NumPy scalar for a scalar).
    """
    # Comparing a NaN raises the FPU's invalid flag, which numpy reports as a RuntimeWarning
    # after the loop; NaN in gives NaN out quietly, as scipy's ndtri does.
    with np.errstate(invalid="ignore"):
        return _as_float(_ndtri_u(np.asarray(p, dtype=np.float64)))


# The continued fraction below converges in O(sqrt(a)) steps where it is used (x below the
# mean of the beta distribution). A converged step is 1 within rounding (an ulp is 2.2e-16),
# so the stop is a few ulps, not less.
_CF_EPS = 1e-15
_CF_TINY = 1e-300
_CF_MAX_STEPS = 10_000


def _beta_continued_fraction(a: float, b: float, x: np.ndarray) -> np.ndarray:
    """The continued fraction of I_x(a, b) (modified Lentz), elementwise over x, iterated until
    every element's last step changes it by less than `_CF_EPS`."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = np.where(np.abs(d) < _CF_TINY, _CF_TINY, d)
    d = 1.0 / d
    h = d.copy()
    for m in range(1, _CF_MAX_STEPS + 1):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),  # even step
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),  # odd step
        ):
            d = 1.0 + aa * d
            d = np.where(np.abs(d) < _CF_TINY, _CF_TINY, d)
            c = 1.0 + aa / c
            c = np.where(np.abs(c) < _CF_TINY, _CF_TINY, c)
            d = 1.0 / d
            step = d * c
            h = h * step
        if np.all(np.abs(step - 1.0) < _CF_EPS):
            break
    return h


def _log_beta(a: float, b: float) -> float:
    """log B(a, b) for a >= b > 0 from Gamma itself: lgamma's ulp on values in the hundreds
    would cost ~1e-13 relative in every tail area. Beyond Gamma's range (a + b >= 170),
    Gamma(a) / Gamma(a + b) steps down to it: each step multiplies by (a - 1) / (a - 1 + b)."""
    ratio = 1.0
    while a + b >= 170.0:
        a -= 1.0
        ratio *= a / (a + b)
    return math.log(ratio * math.gamma(a) * math.gamma(b) / math.gamma(a + b))


def _betainc(
    a: float, b: float, x: np.ndarray, y: np.ndarray, log_x: np.ndarray, log_y: np.ndarray
) -> np.ndarray:
    """Regularized incomplete beta I_x(a, b) for scalar a, b > 0, x in [0, 1], with y = 1 - x
    and both logs computed without cancellation by the caller (no NaN)."""
    # x rounds to 1 while y is still informative (t near 0): the ends are decided on y too.
    out = np.where(y <= 0.0, 1.0, 0.0)
    inner = (x > 0.0) & (y > 0.0)
    if not inner.any():
        return out
    xi, yi, lxi, lyi = x[inner], y[inner], log_x[inner], log_y[inner]
    log_beta = _log_beta(max(a, b), min(a, b))
    # Below the switch point the fraction converges fast for I_x(a, b); above it, for
    # I_{1-x}(b, a), and I_x(a, b) = 1 - I_{1-x}(b, a).
    direct = xi < (a + 1.0) / (a + b + 2.0)
    res = np.empty_like(xi)
    if direct.any():
        xd = xi[direct]
        front = np.exp(a * lxi[direct] + b * lyi[direct] - log_beta) / a
        res[direct] = front * _beta_continued_fraction(a, b, xd)
    if (~direct).any():
        xs = yi[~direct]
        front = np.exp(b * lyi[~direct] + a * lxi[~direct] - log_beta) / b
        res[~direct] = 1.0 - front * _beta_continued_fraction(b, a, xs)
    out[inner] = res
    return out


@nb.njit(inline="always", cache=True)
def _lentz_step(aa: float, c: float, d: float) -> tuple[float, float]:
    """One term of the modified Lentz recurrence: the new (c, 1 / d), kept away from 0."""
    d = 1.0 + aa * d
    if abs(d) < _CF_TINY:
        d = _CF_TINY
    c = 1.0 + aa / c
    if abs(c) < _CF_TINY:
        c = _CF_TINY
    return c, 1.0 / d


@nb.njit(cache=True)
def _continued_fraction(a: float, b: float, x: float) -> float:
    """`_beta_continued_fraction` for one x, stopped when its own step converges."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _CF_TINY:
        d = _CF_TINY
    d = 1.0 / d
    h = d
    for m in range(1, _CF_MAX_STEPS + 1):
        m2 = 2 * m
        c, d = _lentz_step(m * (b - m) * x / ((qam + m2) * (a + m2)), c, d)  # even term
        h *= d * c
        c, d = _lentz_step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)), c, d)  # odd term
        step = d * c
        h *= step
        if abs(step - 1.0) < _CF_EPS:
            break
    return h


@nb.njit(cache=True)
def _stdtr_kernel(df: float, log_beta: float, t: np.ndarray, out: np.ndarray) -> None:
    """out[i] = P(T <= t[i]) with df degrees of freedom; log_beta = log B(df / 2, 1 / 2). The
    steps of `stdtr_reference`, one element at a time (each stops when it has converged)."""
    a, b = 0.5 * df, 0.5
    switch = (a + 1.0) / (a + b + 2.0)
    for i in range(t.size):
        ti = t[i]
        if np.isnan(ti):
            out[i] = np.nan
            continue
        t2 = ti * ti
        lower = 0.0  # |t| beyond 1e154: t^2 is inf and the tail area 0
        if not np.isinf(t2):
            x = df / (df + t2)
            y = t2 / (df + t2)
            if y <= 0.0:
                lower = 0.5
            elif x > 0.0:
                log_x = -math.log1p(t2 / df)
                log_y = math.log(y)
                if x < switch:
                    front = math.exp(a * log_x + b * log_y - log_beta) / a
                    lower = 0.5 * front * _continued_fraction(a, b, x)
                else:
                    front = math.exp(b * log_y + a * log_x - log_beta) / b
                    lower = 0.5 * (1.0 - front * _continued_fraction(b, a, y))
        out[i] = lower if ti <= 0.0 else 1.0 - lower


def _check_df(df: float) -> None:
    if not (df > 0 and math.isfinite(df)):  # an infinite df never ended the log-beta's loop
        raise ValueError(f"stdtr: df must be finite and > 0, got {df!r}")


def stdtr(df: float, t: npt.ArrayLike) -> np.ndarray | np.float64:
    """Student t CDF with `df` degrees of freedom, elementwise over t (as ``scipy.special.stdtr``).

    P(T <= t) = I_x(df / 2, 1 / 2) / 2 for t <= 0 with x = df / (df + t^2), and 1 minus that at
    -t for t > 0: the lower tail keeps its relative accuracy (small p-values). One compiled
    pass: the numpy form (`stdtr_reference`) steps every element as long as the slowest, 4x
    scipy's time on the analysis' [B, markers] correlation arrays.

    Args:
        df: Degrees of freedom, finite and > 0 (one value for all t); scipy's to 1e-12 relative
            up to ~1e5 (the analysis passes tasks or markers minus 2).
        t: Values (any shape; NaN gives NaN).

    Returns:
        The CDF at t, float64 of t's shape (a NumPy scalar for a scalar).
    """
    _check_df(df)
    t = np.asarray(t, dtype=np.float64)
    flat = np.ascontiguousarray(t).ravel()
    out = np.empty(flat.shape)
    _stdtr_kernel(float(df), _log_beta(max(0.5 * df, 0.5), min(0.5 * df, 0.5)), flat, out)
    return _as_float(out.reshape(t.shape))


def stdtr_reference(df: float, t: npt.ArrayLike) -> np.ndarray | np.float64:
    """`stdtr` in plain numpy (the tests' reference for the compiled pass): every element steps
    the continued fraction until the slowest has converged. Arguments and result as `stdtr`.
    """
    _check_df(df)
    t = np.asarray(t, dtype=np.float64)
    flat = t.ravel()
    out = np.full(flat.shape, np.nan)
    ok = ~np.isnan(flat)
    tt = flat[ok]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # t^2 overflows to inf for |t| > 1e154: x is then 0 and the tail area 0, as it should
        # be. 1 - x is formed directly (near t = 0 it is tiny and 1 - x would cancel), and
        # log x by log1p (df / 2 times its rounding error would show in large-df tails).
        t2 = tt * tt
        x = df / (df + t2)
        y = np.where(np.isinf(t2), 1.0, t2 / (df + t2))
        log_x = -np.log1p(t2 / df)
        log_y = np.log(y)
    lower = 0.5 * _betainc(0.5 * df, 0.5, x, y, log_x, log_y)
    out[ok] = np.where(tt <= 0.0, lower, 1.0 - lower)
    return _as_float(out.reshape(t.shape))
