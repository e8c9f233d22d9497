"""The numba kernels of the analysis equal their plain numpy/polars references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metrics.core import compute_tables
from metrics.encode import encode, faithfulness_reference
from metrics.io import read_scored

EXAMPLE = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"


@pytest.fixture(scope="module")
def run():
    return read_scored(EXAMPLE)


@pytest.mark.parametrize("mode", ["heldout", "parity"])
@pytest.mark.parametrize("weighted", [False, True])
def test_tables_kernel_equals_numpy(run, mode, weighted):
    enc = encode(run, mode=mode, ignore_no_hedge=False)
    w = None
    if weighted:  # bootstrap-like integer weights, some responses dropped
        w = np.random.default_rng(1).poisson(1.0, size=len(enc.r_g)).astype(float)
    fast, valid = compute_tables(enc, w, parity=mode == "parity")
    slow, valid2 = compute_tables(enc, w, parity=mode == "parity", reference=True)
    np.testing.assert_array_equal(valid, valid2)
    for name in ("count", "n_present", "mic", "accuracy", "cmfg", "mfg"):
        np.testing.assert_allclose(
            getattr(fast, name), getattr(slow, name), rtol=1e-12, equal_nan=True
        )
    for name, arr in fast.variants.items():
        np.testing.assert_allclose(arr, slow.variants[name], rtol=1e-12, equal_nan=True)
    for mode_k in fast.mae:
        for a, b in zip(fast.mae[mode_k], slow.mae[mode_k]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14, equal_nan=True)
    assert np.isfinite(fast.mae[1][0]).any()


def test_faithfulness_kernel_equals_polars(run):
    enc = encode(run)
    f, c = faithfulness_reference(run.sentences, enc.r_nsent, len(enc.r_g))
    np.testing.assert_array_equal(np.isnan(f), np.isnan(enc.r_f))
    np.testing.assert_allclose(enc.r_f, f, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(enc.r_c, c, rtol=1e-12, equal_nan=True)
