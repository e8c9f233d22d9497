"""metrics.special against scipy.special: ndtr, ndtri and stdtr to 1e-12 relative on a grid, the
edge values scipy returns, and an analysis that imports neither scipy.special nor scipy.stats."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import special as sp

from metrics import special

ROOT = Path(__file__).resolve().parents[2]


def _max_rel(got: np.ndarray, want: np.ndarray) -> float:
    """Largest relative difference; equal values (infinities too) count 0, and below 1e-290
    (subnormal: scipy's and ours may underflow a step apart) absolute agreement is enough."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    differ = ~np.isnan(want) & (got != want)
    g, w = got[differ], want[differ]
    assert np.isfinite(g).all() and np.isfinite(w).all()
    tiny = np.abs(w) < 1e-290
    assert np.all(np.abs(g[tiny]) < 1e-290)
    g, w = g[~tiny], w[~tiny]
    return float(np.max(np.abs(g - w) / np.abs(w), initial=0.0))


def test_ndtr_matches_scipy():
    x = np.concatenate([np.linspace(-40, 40, 16001), [0.0, -0.0, 1e-300, -1e-12, 8.3, -8.3]])
    assert _max_rel(special.ndtr(x), sp.ndtr(x)) <= 1e-12
    assert special.ndtr(np.inf) == 1.0 and special.ndtr(-np.inf) == 0.0
    assert np.isnan(special.ndtr(np.nan))
    assert isinstance(special.ndtr(0.3), np.float64)
    assert special.ndtr(np.zeros((2, 3))).shape == (2, 3)


def test_ndtr_is_the_scalar_formula_bit_for_bit():
    # The array form takes each element through the scalar's branch (erf near 0, erfc in the
    # tails, 0 / 1 past the underflow) with the same float operations: the module-level tables
    # of metrics.seven, built with it, keep their bits.
    edge = math.sqrt(2.0)  # |z| = 1: where erf hands over to erfc
    under = math.sqrt(2.0 * special._NDTR_UNDERFLOW)
    x = np.concatenate(
        [
            np.linspace(-40, 40, 40001),
            np.nextafter(edge, [0.0, 2.0]),
            -np.nextafter(edge, [0.0, 2.0]),
            [edge, -edge, under, -under, np.nextafter(-under, 0.0), np.nextafter(under, 0.0)],
            [0.0, -0.0, 1e-300, -1e-300, np.inf, -np.inf, np.nan],
        ]
    ).reshape(-1, 1)
    want = np.array([special._ndtr_scalar(float(v)) for v in x.ravel()]).reshape(x.shape)
    got = special.ndtr(x)
    assert got.shape == x.shape
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_ndtri_matches_scipy():
    p = np.concatenate(
        [np.linspace(0, 1, 10001), np.logspace(-300, -1, 600), 1 - np.logspace(-15, -1, 300)]
    )
    assert _max_rel(special.ndtri(p), sp.ndtri(p)) <= 1e-12
    assert special.ndtri(0.0) == -np.inf and special.ndtri(1.0) == np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN in, NaN out, quietly (as scipy's)
        assert np.isnan(special.ndtri(np.array([np.nan, -0.1, 1.1]))).all()
        assert np.isnan(special.ndtri(np.nan))
    assert float(special.ndtri(0.5)) == 0.0


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 8, 10, 17, 38, 39, 98, 100, 101, 200])
def test_stdtr_matches_scipy(df):
    # |t| >= 1e-4: below that, scipy's own df = 1 value drifts (3e-9 relative at t = 1e-8;
    # ours there agrees with 40-digit arithmetic to 1e-16).
    mag = np.logspace(-4, 3, 1500)
    t = np.concatenate([-mag, mag, np.linspace(-10, 10, 401), [0.0, 1e200, -1e200]])
    assert _max_rel(special.stdtr(df, t), sp.stdtr(df, t)) <= 1e-12


@pytest.mark.parametrize("df", [1, 2, 4, 39, 250, 1e4])
def test_stdtr_kernel_matches_numpy_reference(df):
    t = np.concatenate([np.linspace(-50, 50, 1001), [np.nan, 0.0, 1e-9, -1e200, 1e200]])
    got = special.stdtr(df, t.reshape(-1, 2))  # any shape; the kernel sees it flat
    want = special.stdtr_reference(df, t).reshape(-1, 2)
    # Not bit for bit: numpy's and the C library's log differ by an ulp, and a tail area of
    # exp(-170) carries 170 ulps of its exponent (~3e-14 relative).
    assert _max_rel(got, want) <= 1e-12


def test_stdtr_p_values_of_correlations():
    # The analysis' use: two-sided p of r over n points, far tails included (small p-values).
    r = np.concatenate([np.linspace(-0.9999, 0.9999, 2001), [np.nan]])
    for n in (4, 10, 41, 120):
        df = n - 2
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -np.abs(r * np.sqrt(df / (1.0 - r * r)))
        assert _max_rel(2 * special.stdtr(df, t), 2 * sp.stdtr(df, t)) <= 1e-12
    assert special.stdtr(5, np.full((3, 4), -1.0)).shape == (3, 4)
    with pytest.raises(ValueError, match="df must be finite and > 0"):
        special.stdtr(0, 1.0)
    with pytest.raises(ValueError, match="df must be finite and > 0"):
        special.stdtr(np.inf, 1.0)  # used to loop forever in the log-beta


def test_analysis_imports_no_scipy_special_stats_or_linalg(tmp_path):
    # The import is the point of the module: a plain analysis (intervals and p-values included)
    # must not pull either back in; nor scipy.linalg, which numba's BLAS probe imported
    # (metrics.compile_notice.load_blas_probe).
    code = (
        "import sys\n"
        "from metrics import analyze\n"
        f"analyze({str(ROOT / 'metrics' / 'data' / 'example')!r}, bootstrap=20, "
        f"out={str(tmp_path)!r})\n"
        "print(sorted(m for m in sys.modules if m in ('scipy.special', 'scipy.stats', "
        "'scipy.linalg')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "metrics.json").exists()
