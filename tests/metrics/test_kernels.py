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


def _random_rows(rng: np.random.Generator, sizes: list[int]):
    """Rows of responses with the given row counts, shuffled, 1-3 markers per sentence."""
    s_r, sidx, marker = [], [], []
    for r, k in enumerate(sizes):
        n_sent = max(1, k // 2)
        for _ in range(k):
            s_r.append(r)
            sidx.append(int(rng.integers(0, n_sent)))
            marker.append(int(rng.integers(0, 3)))
    perm = rng.permutation(len(s_r))
    return (np.array(s_r, np.int64)[perm], np.array(sidx, np.int32)[perm],
            np.array(marker, np.uint32)[perm])  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_sentence_rows_equals_polars(seed):
    """Duplicates and distinct sentences per response, for short (pairwise scan) and long
    (sorted) responses alike."""
    import polars as pl

    from metrics import kernels

    rng = np.random.default_rng(seed)
    sizes = [1, 3, kernels.SMALL_RESPONSE, kernels.SMALL_RESPONSE + 1, 500, 0, 7]
    s_r, sidx, marker = _random_rows(rng, sizes)
    df = pl.DataFrame({"r": s_r, "s": sidx, "m": marker})
    ptr, order = kernels.by_response(s_r, len(sizes))
    first, n_seen = kernels.sentence_rows(ptr, order, sidx, marker)
    dup = df.with_row_index().filter(pl.struct("r", "s", "m").is_duplicated())
    if dup.height:
        assert first in set(dup["index"].to_list())
        # Without duplicates: the distinct sentences of each response.
        keep = df.with_row_index().unique(subset=["r", "s", "m"], keep="first").sort("index")
        s_r, sidx, marker = (keep[c].to_numpy() for c in ("r", "s", "m"))
        df = keep.drop("index")
        ptr, order = kernels.by_response(s_r.astype(np.int64), len(sizes))
        first, n_seen = kernels.sentence_rows(ptr, order, sidx, marker)
    assert first == -1
    expect = np.zeros(len(sizes), np.int64)
    counts = df.group_by("r").agg(pl.col("s").n_unique())
    expect[counts["r"].to_numpy()] = counts["s"].to_numpy()
    np.testing.assert_array_equal(n_seen, expect)


def test_faithfulness_of_long_responses_equals_polars():
    """Long responses (sorted, not insertion-scanned) in shuffled row order."""
    import polars as pl

    from metrics import kernels

    rng = np.random.default_rng(5)
    sizes = [kernels.SMALL_RESPONSE + 1, 400, 3]
    s_r, sidx, _ = _random_rows(rng, sizes)
    n = len(sizes)
    # One confidence and decisiveness per sentence, repeated over its rows; some missing.
    per_sentence = rng.random((n, 1000, 2))
    per_sentence[rng.random((n, 1000)) < 0.1, 0] = np.nan
    conf, dec = per_sentence[s_r, sidx, 0], per_sentence[s_r, sidx, 1]
    n_sentences = np.array([sidx[s_r == r].max() + 1 for r in range(n)], np.int64)
    ptr, order = kernels.by_response(s_r, n)
    f, c = kernels.faithfulness(ptr, order, sidx, conf, dec, n_sentences)
    ref = pl.DataFrame({"_r": s_r, "sentence_idx": sidx, "confidence": conf, "decisiveness": dec})
    f_ref, c_ref = faithfulness_reference(
        ref.with_columns(pl.col("confidence").fill_nan(None)), n_sentences, n
    )
    np.testing.assert_array_equal(f, f_ref)
    np.testing.assert_array_equal(c, c_ref)


@pytest.mark.parametrize("n", [1, 2, 4, 41, 64, 65, 300])
def test_average_ranks_kernel_equals_numpy_and_scipy(n):
    from scipy.stats import rankdata

    from metrics.kernels import average_ranks_reference
    from metrics.seven import average_ranks

    rng = np.random.default_rng(n)
    # Few distinct values: many ties, the case the run bookkeeping must get right; -0.0 ties 0.0.
    a = rng.integers(0, max(2, n // 3), size=(50, 3, n)).astype(float) / 7
    a[0, 0, 0] = -0.0
    a[1, 2, n // 2] = np.nan  # that slice only: all NaN
    got = average_ranks(a)
    assert np.array_equal(got, average_ranks_reference(a), equal_nan=True)
    assert np.array_equal(got, rankdata(a, axis=-1, nan_policy="propagate"), equal_nan=True)
    assert np.isnan(got[1, 2]).all() and not np.isnan(got[1, 1]).any()
    assert average_ranks(a[:, :, :0]).shape == (50, 3, 0)
