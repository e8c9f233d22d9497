"""Property tests: row order and file split change nothing; duplicated responses leave MICs alone;
the vectorized correlations equal scipy's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.approx import diff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from metrics import analyze
from metrics.seven import (
    SIG_LEVEL,
    _critical_r,
    _with_p_values,
    correlate,
    fisher_mean,
    significant,
)
from metrics.synthetic import make_scored_run

SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _write(d: Path, resp: pl.DataFrame, sent: pl.DataFrame) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    resp.write_parquet(d / "responses.parquet")
    sent.write_parquet(d / "sentences.parquet")
    return d


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    shuffle_seed=st.integers(0, 10_000),
    n_files=st.integers(2, 4),
    mode=st.sampled_from(["heldout", "parity"]),
)
def test_row_order_and_file_split_do_not_matter(
    tmp_path_factory, seed, shuffle_seed, n_files, mode
):
    resp, sent = make_scored_run(n_models=2, n_tasks=3, n_items=60, n_markers=8, seed=seed)
    base = analyze(_write(tmp_path_factory.mktemp("a"), resp, sent), mode=mode, threshold=3)
    # Shuffle rows, then scatter them over several long-table files.
    rng = np.random.default_rng(shuffle_seed)
    long = sent.join(resp, on=["model", "task", "split", "prompt", "item_id"])
    long = long[rng.permutation(long.height)]
    d = tmp_path_factory.mktemp("b")
    # A response's rows must stay in one file (a long table repeats its columns on each row).
    item_file = rng.integers(0, n_files, size=resp.height)
    owner = resp.select("model", "task", "item_id").with_columns(pl.Series("f", item_file))
    long = long.join(owner, on=["model", "task", "item_id"])
    paths = []
    for i in range(n_files):
        part = long.filter(pl.col("f") == i).drop("f")
        if part.height:
            part.write_parquet(d / f"part{i}.parquet")
            paths.append(d / f"part{i}.parquet")
    # Responses without any sentence row cannot travel in a long table: the generator has none.
    other = analyze(paths, mode=mode, threshold=3)
    assert diff(base.metrics_json["models"], other.metrics_json["models"], rel=1e-12) == []
    a = base.mic_table.sort("model", "task", "marker")
    b = other.mic_table.sort("model", "task", "marker")
    assert a.drop(pl.col(pl.Float64)).equals(b.drop(pl.col(pl.Float64)))
    for c in ("mic", "mic_c", "mic_i", "mf"):
        np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_duplicating_every_response_leaves_mics_unchanged(tmp_path_factory, seed):
    resp, sent = make_scored_run(n_models=1, n_tasks=3, n_items=40, n_markers=6, seed=seed)
    dup = pl.col("item_id") + "-copy"
    resp2 = pl.concat([resp, resp.with_columns(dup)])
    sent2 = pl.concat([sent, sent.with_columns(dup)])
    # Parity: every response in both roles, so no item split can separate a copy from its original.
    a = analyze(_write(tmp_path_factory.mktemp("a"), resp, sent), mode="parity", threshold=1)
    b = analyze(_write(tmp_path_factory.mktemp("b"), resp2, sent2), mode="parity", threshold=1)
    ta = a.mic_table.sort("task", "marker")
    tb = b.mic_table.sort("task", "marker")
    assert (tb["count"] == 2 * ta["count"]).all()
    for c in ("mic", "mic_c", "mic_i", "mic_f", "mic_uf", "mf"):
        np.testing.assert_allclose(ta[c].to_numpy(), tb[c].to_numpy(), rtol=1e-12)
    ma = a.metrics_json["models"]["model-0"]["default"]
    mb = b.metrics_json["models"]["model-0"]["default"]
    for t in ma["tasks"]:
        assert ma["tasks"][t]["accuracy"] == np.float64(mb["tasks"][t]["accuracy"]) or np.isclose(
            ma["tasks"][t]["accuracy"], mb["tasks"][t]["accuracy"], rtol=1e-12
        )


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 12), seed=st.integers(0, 10_000), ties=st.booleans())
def test_correlate_matches_scipy(n, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, n))
    y = x + rng.normal(size=(4, n))
    if ties:
        x = np.round(x)
        y = np.round(y)
    for method, ref in (("spearman", stats.spearmanr), ("pearson", stats.pearsonr)):
        r, p = correlate(x, y, method)
        for k in range(4):
            if np.ptp(x[k]) == 0 or np.ptp(y[k]) == 0:
                assert np.isnan(r[k])
                continue
            want = ref(x[k], y[k])
            np.testing.assert_allclose(r[k], want[0], rtol=1e-10, atol=1e-12)
            if abs(want[0]) < 1 - 1e-9:  # at |r| = 1 the p-value is rounding noise in both
                np.testing.assert_allclose(p[k], want[1], rtol=1e-7, atol=1e-12)
            else:
                assert p[k] < 1e-6 and want[1] < 1e-6


@pytest.mark.parametrize("n", [2, 3, 4, 6, 41, 1000, 100_000])
def test_significant_equals_the_p_value_test(n):
    """`significant` (a comparison with the critical |r|, exact p-values only next to it) says
    what ``p < SIG_LEVEL`` of the p-values says: at the crossing's neighbours, at the bracket's
    ends and just outside them, both signs, NaN, and for a scalar."""
    rng = np.random.default_rng(n)
    r = rng.uniform(-1, 1, 20_000)
    if n > 2:
        lo, hi = _critical_r(n)
        mid = 0.5 * (lo + hi)
        near = mid + np.arange(-2000, 2001) * np.spacing(mid) * 1e3  # inside the bracket
        edges = [
            lo,
            hi,
            np.nextafter(lo, 0),
            np.nextafter(hi, 2),
            mid * (1 - 2e-9),
            mid * (1 + 2e-9),
        ]
        r = np.concatenate([r, near, -near, edges, np.negative(edges), [0.0, 1.0, -1.0]])
        r_p = _with_p_values(near, n)[1]
        assert (r_p < SIG_LEVEL).any() and (r_p >= SIG_LEVEL).any()  # the crossing is inside
        for x in (mid, -hi, lo):
            assert significant(x, n) == (_with_p_values(np.array([x]), n)[1][0] < SIG_LEVEL)
    r = np.concatenate([r, [np.nan]])
    want = _with_p_values(r, n)[1] < SIG_LEVEL
    np.testing.assert_array_equal(significant(r, n), want)
    assert significant(r.reshape(-1, 1), n).shape == (r.size, 1)


def test_values_equal_but_for_their_last_bits_correlate_as_constant():
    """A MIC of 0.75 in three tasks may come out 0.75 +- an ulp, by the order its sums ran in
    (found by the row-order property test: MCC-P-all's n and value changed with row order).
    Pearson on that noise is NaN, as on constant input, plain and noise-corrected; a real
    spread of 1e-9 is kept."""
    from metrics.seven import disattenuated_pearson

    third = 0.75
    noisy = np.array([third, np.nextafter(third, 1), np.nextafter(third, 0)])
    y = np.array([0.475, 0.7666666666666667, 0.43333333333333335])
    x = np.stack([noisy, third + np.array([0.0, 1e-9, -1e-9]), [0.2, 0.5, 0.4]])
    r, p = correlate(x, np.broadcast_to(y, x.shape), "pearson")
    assert np.isnan(r[0]) and np.isnan(p[0])
    assert r[1] == pytest.approx(stats.pearsonr(x[1], y)[0], abs=1e-6)
    assert np.isfinite(r[2])
    for a, b in ((x, np.broadcast_to(y, x.shape)), (np.broadcast_to(y, x.shape), x)):
        reps = np.stack([a, a + 1e-3 * np.arange(3), a - 1e-3 * np.arange(3)])
        reps[:, 0] = a[0]  # the noisy slice stays noise-only in every replicate
        other = np.stack([b, b, b])
        got = disattenuated_pearson(reps, other) if a is x else disattenuated_pearson(other, reps)
        assert np.isnan(got[:, 0]).all() and np.isfinite(got[:, 2]).all()


def test_fisher_mean_clips_and_skips_nan():
    assert fisher_mean(np.array([1.0, 1.0])) == np.float64(np.tanh(np.arctanh(0.9999)))
    np.testing.assert_allclose(
        fisher_mean(np.array([0.5, np.nan, -0.2])),
        np.tanh((np.arctanh(0.5) + np.arctanh(-0.2)) / 2),
    )
