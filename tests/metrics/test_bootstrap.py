"""Bootstrap kernels and intervals: references, agreement with scipy, determinism, pairing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
from scipy import stats

from engine.errors import UserError
from metrics.bootstrap import (
    bca_interval,
    bootstrap_mean,
    item_weights_reference,
    kernels,
    mean_acceleration,
    mean_replicates,
    percentile_interval,
    replicate_weight_totals,
    replicate_weight_totals_reference,
    weighted_group_sums,
    weighted_group_sums_reference,
)

REPO = Path(__file__).resolve().parents[2]


def _dataset(seed: int, n_items: int = 60, n_groups: int = 5, k: int = 3, n_strata: int = 3):
    """Items with 0-4 rows each, random groups, keys and strata; CSR layout."""
    g = np.random.default_rng(seed)
    rows = g.integers(0, 5, n_items)
    ptr = np.r_[0, np.cumsum(rows)]
    keys = g.choice(2**62, size=n_items, replace=False).astype(np.uint64)
    strata = g.integers(0, n_strata, n_items).astype(np.uint64) * np.uint64(0x1234567)
    groups = g.integers(0, n_groups, ptr[-1])
    values = g.normal(size=(ptr[-1], k))
    return ptr, keys, strata, groups, values


def _permute_items(ptr, keys, strata, groups, values, perm):
    """The same dataset with items in the order ``perm`` (rows move with their item)."""
    rows = [np.arange(ptr[i], ptr[i + 1]) for i in perm]
    row_idx = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    new_ptr = np.r_[0, np.cumsum([r.size for r in rows])]
    return new_ptr, keys[perm], strata[perm], groups[row_idx], values[row_idx]


# ----------------------------------------------------------------------------- kernels == references


@pytest.fixture(params=["serial", "threads"])
def threads(request, monkeypatch):
    """Run the kernels serially or over the thread pool (small jobs default to serial)."""
    if request.param == "threads":
        monkeypatch.setattr(kernels, "PARALLEL_MIN_WORK", 0)
    return request.param


@pytest.mark.parametrize("scheme", ["poisson", "multinomial"])
@pytest.mark.parametrize("n_boot", [0, 1, 37])
def test_kernels_equal_numpy_references_exactly(scheme, n_boot, threads):
    ptr, keys, strata, groups, values = _dataset(1)
    args = (ptr, keys, strata, groups, values, 2024, n_boot, scheme)
    fast = weighted_group_sums(*args, n_groups=7)
    ref = weighted_group_sums_reference(*args, n_groups=7)
    assert fast.shape == ref.shape == (n_boot, 7, 3)
    assert np.array_equal(fast, ref)
    totals = replicate_weight_totals(keys, strata, 2024, n_boot, scheme)
    assert np.array_equal(
        totals, replicate_weight_totals_reference(keys, strata, 2024, n_boot, scheme)
    )


def test_kernel_one_dimensional_values_no_strata_and_empty_items():
    ptr = np.array([0, 2, 2, 3, 3])  # items 1 and 3 have no rows
    keys = np.array([5, 9, 2, 7], dtype=np.uint64)
    values = np.array([1.5, -2.0, 4.0])
    out = weighted_group_sums(ptr, keys, None, np.array([0, 1, 1]), values, 3, 20)
    ref = weighted_group_sums_reference(ptr, keys, None, np.array([0, 1, 1]), values, 3, 20)
    assert out.shape == (20, 2, 1) and np.array_equal(out, ref)
    # out equals the explicit weight matrix applied to rows
    w = item_weights_reference(keys, None, 3, np.arange(20))
    assert np.array_equal(out[:, 0, 0], w[:, 0] * 1.5)
    assert np.array_equal(out[:, 1, 0], w[:, 0] * -2.0 + w[:, 2] * 4.0)


def test_multinomial_weights_are_an_exact_resample_per_stratum():
    ptr, keys, strata, *_ = _dataset(2, n_items=200)
    w = item_weights_reference(keys, strata, 11, np.arange(300), "multinomial")
    for s in np.unique(strata):
        in_s = strata == s
        assert np.all(w[:, in_s].sum(axis=1) == in_s.sum())
    # each draw is uniform over the stratum: mean weight 1, variance (1 - 1/n_s)
    assert abs(w.mean() - 1.0) < 1e-12
    pois = item_weights_reference(keys, strata, 11, np.arange(300), "poisson")
    assert abs(pois.mean() - 1.0) < 4 * np.sqrt(1.0 / pois.size)


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("scheme", ["poisson", "multinomial"])
def test_item_order_does_not_matter(scheme):
    data = _dataset(3, n_items=80)
    base = weighted_group_sums(*data, 99, 64, scheme, n_groups=5)
    perm = np.random.default_rng(0).permutation(80)
    shuffled = weighted_group_sums(*_permute_items(*data, perm), 99, 64, scheme, n_groups=5)
    np.testing.assert_allclose(shuffled, base, rtol=1e-12, atol=1e-12 * np.abs(base).max())


def test_poisson_sums_add_up_across_shards():
    data = _dataset(4, n_items=90)
    whole = weighted_group_sums(*data, 5, 64, n_groups=5)
    shards = np.array_split(np.random.default_rng(1).permutation(90), 3)
    total = sum(weighted_group_sums(*_permute_items(*data, s), 5, 64, n_groups=5) for s in shards)
    np.testing.assert_allclose(total, whole, rtol=1e-12, atol=1e-12 * np.abs(whole).max())


def test_thread_count_does_not_matter(tmp_path, monkeypatch):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 numba threads")
    monkeypatch.setattr(kernels, "PARALLEL_MIN_WORK", 0)  # force the prange kernels
    data = _dataset(5, n_items=300, n_groups=4, k=2)
    np.savez(tmp_path / "data.npz", *data)
    script = textwrap.dedent(
        f"""
        import numpy as np, numba
        from metrics.bootstrap import kernels, weighted_group_sums
        assert numba.config.NUMBA_NUM_THREADS == 1
        kernels.PARALLEL_MIN_WORK = 0
        d = np.load({str(tmp_path / "data.npz")!r})
        arrays = [d[f"arr_{{i}}"] for i in range(5)]
        out = [weighted_group_sums(*arrays, 8, 100, s, n_groups=4) for s in ("poisson", "multinomial")]
        np.save({str(tmp_path / "one_thread.npy")!r}, np.stack(out))
        """
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=REPO, timeout=300)
    one_thread = np.load(tmp_path / "one_thread.npy")
    schemes = ("poisson", "multinomial")
    here = np.stack([weighted_group_sums(*data, 8, 100, s, n_groups=4) for s in schemes])
    assert numba.get_num_threads() >= 2
    np.testing.assert_allclose(here, one_thread, rtol=1e-12, atol=0)
    monkeypatch.setattr(kernels, "PARALLEL_MIN_WORK", 10**30)  # and the serial kernels
    serial = np.stack([weighted_group_sums(*data, 8, 100, s, n_groups=4) for s in schemes])
    np.testing.assert_allclose(serial, one_thread, rtol=1e-12, atol=0)


def test_same_seed_same_draws_other_seed_other_draws():
    data = _dataset(6)
    a = weighted_group_sums(*data, 1, 16)
    assert np.array_equal(a, weighted_group_sums(*data, 1, 16))
    assert not np.allclose(a, weighted_group_sums(*data, 2, 16))


# ----------------------------------------------------------------------------- pairing


def test_pairing_a_model_against_itself_gives_exactly_zero():
    g = np.random.default_rng(7)
    keys = g.choice(2**62, size=500, replace=False).astype(np.uint64)
    x = g.random(500)
    a = mean_replicates(x, n_boot=500, seed=3, item_keys=keys)
    # the same items listed in another order are the same items: identical draws
    perm = g.permutation(500)
    b = mean_replicates(x[perm], n_boot=500, seed=3, item_keys=keys[perm])
    np.testing.assert_allclose(a - b, 0.0, rtol=0, atol=1e-15)
    assert np.array_equal(a - mean_replicates(x, n_boot=500, seed=3, item_keys=keys), np.zeros(500))


def test_pairing_detects_a_planted_difference():
    g = np.random.default_rng(8)
    n = 500
    keys = g.choice(2**62, size=n, replace=False).astype(np.uint64)
    difficulty = g.normal(0.0, 1.0, n)  # shared per item: what pairing cancels
    model_a = difficulty + g.normal(0.0, 0.3, n)
    model_b = difficulty + 0.1 + g.normal(0.0, 0.3, n)
    rep_a = mean_replicates(model_a, n_boot=2000, seed=4, item_keys=keys)
    rep_b = mean_replicates(model_b, n_boot=2000, seed=4, item_keys=keys)
    diff = rep_b - rep_a
    ci = percentile_interval(diff, 0.95, theta_hat=model_b.mean() - model_a.mean())
    assert ci.low > 0.0
    assert ci.low < 0.1 < ci.high
    # without pairing (different seeds) the same difference is not resolved
    unpaired = rep_b - mean_replicates(model_a, n_boot=2000, seed=5, item_keys=keys)
    assert percentile_interval(unpaired, 0.95).low < 0.0


# ----------------------------------------------------------------------------- intervals vs scipy


def _scipy_ci(x, method, seed, n_boot):
    res = stats.bootstrap(
        (x,), np.mean, n_resamples=n_boot, batch=n_boot, vectorized=True, method=method, rng=seed
    )
    return res.confidence_interval.low, res.confidence_interval.high


@pytest.mark.parametrize("scheme", ["poisson", "multinomial"])
@pytest.mark.parametrize("method", ["BCa", "percentile"])
@pytest.mark.parametrize("data", ["binary", "lognormal"])
def test_endpoints_agree_with_scipy_within_monte_carlo_error(method, data, scheme):
    g = np.random.default_rng(10)
    x = (g.random(200) < 0.3).astype(float) if data == "binary" else g.lognormal(0.0, 1.0, 200)
    n_seeds, n_boot = 24, 2000
    ours = np.array(
        [
            (r.low, r.high)
            for r in (
                bootstrap_mean(x, n_boot=n_boot, seed=s, method=method, scheme=scheme)
                for s in range(n_seeds)
            )
        ]
    )
    theirs = np.array([_scipy_ci(x, method, 1000 + s, n_boot) for s in range(n_seeds)])
    # Monte Carlo standard error of the difference of the two seed-averages (independent draws)
    se = np.sqrt(ours.var(axis=0, ddof=1) / n_seeds + theirs.var(axis=0, ddof=1) / n_seeds)
    gap = np.abs(ours.mean(axis=0) - theirs.mean(axis=0))
    assert np.all(se > 0)
    assert np.all(gap <= 3 * se), (gap, se)


def test_intervals_on_scipys_own_distribution_reproduce_scipy():
    g = np.random.default_rng(11)
    x = g.gamma(0.7, size=150)
    for method in ("BCa", "percentile"):
        res = stats.bootstrap((x,), np.mean, n_resamples=3000, batch=3000, vectorized=True,
                              method=method, rng=12)  # fmt: skip
        dist = res.bootstrap_distribution
        if method == "BCa":
            d = x - x.mean()
            a = mean_acceleration(x.size, d.sum(), (d * d).sum(), (d**3).sum())
            ci = bca_interval(x.mean(), dist, a)
        else:
            ci = percentile_interval(dist)
        np.testing.assert_allclose([ci.low, ci.high], res.confidence_interval, rtol=1e-12)


def test_coverage_matches_scipy():
    """Coverage of the true mean on skewed small samples (where 95% is not reached)."""
    g = np.random.default_rng(12)
    n_datasets, n, n_boot = 300, 25, 1000
    true_mean = np.exp(0.5)  # lognormal(0, 1)
    covered = {m: np.zeros((n_datasets, 2), bool) for m in ("BCa", "percentile")}
    for d in range(n_datasets):
        x = g.lognormal(0.0, 1.0, n)
        for m in covered:
            ours = bootstrap_mean(x, n_boot=n_boot, seed=d, method=m)
            lo, hi = _scipy_ci(x, m, 10_000 + d, n_boot)
            covered[m][d] = (ours.low <= true_mean <= ours.high, lo <= true_mean <= hi)
    for m, c in covered.items():
        ours, theirs = c.mean(axis=0)
        # paired Monte Carlo standard error of the coverage difference (same datasets)
        diff = c[:, 0].astype(float) - c[:, 1]
        se = max(diff.std(ddof=1) / np.sqrt(n_datasets), 1.0 / n_datasets)
        assert abs(ours - theirs) <= 3 * se, (m, ours, theirs, se)
        assert 0.75 < ours < 0.97  # sanity: a real interval, under-covering as expected


def test_nan_replicates_are_dropped_and_counted():
    reps = np.array([[1.0, np.nan], [2.0, np.nan], [np.nan, np.nan], [4.0, np.nan], [3.0, 5.0]])
    ci = percentile_interval(reps, 0.5)
    assert ci.n_valid.tolist() == [4, 1] and ci.n_dropped.tolist() == [1, 4]
    np.testing.assert_allclose(ci.low[0], np.quantile([1.0, 2.0, 3.0, 4.0], 0.25))
    np.testing.assert_allclose(ci.high[0], np.quantile([1.0, 2.0, 3.0, 4.0], 0.75))
    assert ci.degenerate.tolist() == [False, True] and ci.low[1] == ci.high[1] == 5.0
    bca = bca_interval(np.array([2.5, 5.0]), reps, np.array([0.0, 0.1]), 0.5)
    assert bca.n_dropped.tolist() == [1, 4] and bca.degenerate.tolist() == [False, True]
    assert np.isfinite(bca.low[0]) and bca.low[1] == bca.high[1] == 5.0


def test_degenerate_groups_collapse_and_are_flagged():
    res = bootstrap_mean(np.full(40, 0.1), n_boot=200, seed=1)
    assert res.degenerate and res.low == res.high == res.theta_hat == pytest.approx(0.1)
    reps = np.column_stack([np.full(100, 0.3), np.linspace(1.0, 2.0, 100)])
    theta = np.array([0.3, 1.5])
    ci = bca_interval(
        theta, reps, mean_acceleration([10, 10], [3.0, 15.0], [0.9, 30.0], [0.27, 70.0])
    )
    assert ci.degenerate.tolist() == [True, False]
    assert ci.low[0] == ci.high[0] == 0.3
    assert not np.isnan(ci.low[1])


def test_bootstrap_mean_result_fields():
    x = np.random.default_rng(2).normal(3.0, 1.0, 400)
    res = bootstrap_mean(x, n_boot=1000, seed=9, keep_distribution=True)
    assert res.low < res.theta_hat < res.high and res.method == "bca" and res.n_items == 400
    assert res.bootstrap_distribution.shape == (1000,)
    assert res.standard_error == pytest.approx(1.0 / np.sqrt(400), rel=0.15)
    off = bootstrap_mean(x, n_boot=0, seed=9)
    assert np.isnan(off.low) and np.isnan(off.high) and not off.degenerate


# ----------------------------------------------------------------------------- acceleration


def _jackknife_acceleration(x):
    n = x.size
    loo = np.array([np.delete(x, i).mean() for i in range(n)])
    u = (n - 1) * (loo.mean() - loo)
    return (np.sum(u**3) / n**3) / 6.0 / (np.sum(u**2) / n**2) ** 1.5


def test_closed_form_acceleration_equals_jackknife_loop():
    g = np.random.default_rng(13)
    groups = [
        g.lognormal(size=50),
        g.random(7) < 0.4,
        g.normal(5.0, 2.0, 120),
        g.exponential(size=2),
    ]
    groups = [np.asarray(x, float) for x in groups]
    n = [x.size for x in groups]
    s1, s2, s3 = ([np.sum(x**p) for x in groups] for p in (1, 2, 3))
    closed = mean_acceleration(n, s1, s2, s3)
    loop = np.array([_jackknife_acceleration(x) for x in groups])
    np.testing.assert_allclose(closed, loop, rtol=1e-9, atol=1e-12)
    assert np.isnan(mean_acceleration(5, 5.0, 5.0, 5.0))  # all equal: degenerate
    assert np.isnan(mean_acceleration(1, 2.0, 4.0, 8.0))  # one value: degenerate


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"n_boot": -1}, "n_boot"),
        ({"n_boot": 2.5}, "n_boot"),
        ({"level": 1.5}, "level"),
        ({"level": 0.0}, "level"),
        ({"method": "studentized"}, "method"),
        ({"scheme": "bayesian"}, "scheme"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_options_raise_one_clear_user_error(kwargs, option):
    args = {"n_boot": 10, "seed": 1} | kwargs
    with pytest.raises(UserError, match=option):
        bootstrap_mean(np.arange(5.0), **args)


def test_key_check_folds_strata_without_false_alarms():
    """The Poisson scheme's quick check folds (stratum, key) into one value: a key shared by two
    strata, and two distinct pairs that fold to the same value, are accepted (the fallback's
    exact check decides); a key repeated in one stratum is refused."""
    from metrics.bootstrap.kernels import _FOLD

    ptr, keys, strata, groups, values = _dataset(15)
    want = weighted_group_sums(ptr, keys, strata, groups, values, 1, 8)
    shared = keys.copy()
    first = np.flatnonzero(strata != strata[0])[0]
    shared[first] = keys[0]  # same key, other stratum: two items
    assert strata[1] != strata[0]  # seed 15: two strata, so item 1 is another item's pair
    with np.errstate(over="ignore"):
        folded = keys.copy()  # item 1's pair folds onto item 0's
        folded[1] = keys[0] ^ (strata[0] * _FOLD) ^ (strata[1] * _FOLD)
    for case in (shared, folded):
        for scheme in ("poisson", "multinomial"):
            got = weighted_group_sums(ptr, case, strata, groups, values, 1, 8, scheme)
            assert got.shape == want.shape and np.isfinite(got).all()
    dup = keys.copy()
    same = np.flatnonzero(strata == strata[0])[1]
    dup[same] = keys[0]
    with pytest.raises(UserError, match=f"items 0 and {same} share key"):
        weighted_group_sums(ptr, dup, strata, groups, values, 1, 8)


def test_bad_arrays_raise_user_errors():
    ptr, keys, strata, groups, values = _dataset(14)
    with pytest.raises(UserError, match="scheme"):
        weighted_group_sums(ptr, keys, strata, groups, values, 1, 4, "exact")
    short = ptr.copy()
    short[-1] -= 1
    with pytest.raises(UserError, match="item_ptr"):
        weighted_group_sums(short, keys, strata, groups, values, 1, 4)
    with pytest.raises(UserError, match="item_keys"):
        weighted_group_sums(ptr, keys[:-1], strata, groups, values, 1, 4)
    dup = keys.copy()
    dup[1], strata[1] = dup[0], strata[0]
    with pytest.raises(UserError, match="share key"):
        weighted_group_sums(ptr, dup, strata, groups, values, 1, 4)
    bad = values.copy()
    bad[3, 1] = np.nan
    with pytest.raises(UserError, match="non-finite"):
        weighted_group_sums(ptr, keys, None, groups, bad, 1, 4)
    with pytest.raises(UserError, match="row_group"):
        weighted_group_sums(ptr, keys, None, groups, values, 1, 4, n_groups=2)
    with pytest.raises(UserError, match="level"):
        percentile_interval(np.ones((5, 2)), level=1.0)
