"""The rank correlations' estimand at a rank resolution h (metrics.seven.attach_rank_corrections).

Spearman on smoothed ranks: the ordinary ranks as h -> 0, a smooth function of the values, and
an unbiased noise correction for Gaussian errors. Coverage itself: tests/metrics/test_coverage.py
and benchmarks/interval_coverage.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from metrics import analyze
from metrics.debias import debias
from metrics.seven import average_ranks, disattenuated_pearson, rank_scales, smoothed_ranks
from metrics.simulate import population_values, sample, standard_populations


def test_smoothed_ranks_tend_to_average_ranks():
    x = np.array([[0.3, 0.1, 0.3, 0.7, 0.2], [0.5, 0.5, 0.5, 0.1, 0.9]])
    got = smoothed_ranks(x, 1e-9)
    assert np.array_equal(got, average_ranks(x))  # ties share their midrank
    # Far apart relative to h: the ordinary ranks; within h: partly tied.
    assert smoothed_ranks(np.array([0.1, 0.5, 0.9]), 0.05) == pytest.approx([1, 2, 3], abs=1e-12)
    close = smoothed_ranks(np.array([0.5, 0.51]), 0.05)
    assert 1.0 < close[0] < 1.5 < close[1] < 2.0
    assert np.isnan(smoothed_ranks(np.array([0.1, np.nan, 0.3]), 0.05)).all()


def test_smoothed_ranks_kernel_equals_the_formula():
    # The compiled pass against r_k = 1/2 + sum over all l of Phi((x_k - x_l) / s_kl) in numpy,
    # for the shapes the analysis passes: [R, T, S] with per-task scales, [R, T] with one
    # scale matrix, a scalar scale, and a NaN that blanks its slice only.
    from scipy import special

    def formula(x, scale):
        d = x[..., :, None] - x[..., None, :]
        with np.errstate(invalid="ignore"):
            r = 0.5 + special.ndtr(d / scale).sum(axis=-1)
        return np.where(np.isnan(x).any(axis=-1, keepdims=True), np.nan, r)

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (30, 4, 6))
    x[2, 1, 3] = np.nan
    per_task = np.broadcast_to(rank_scales(0.05, rng.uniform(0, 1e-3, (4, 6))), (4, 6, 6))
    y = rng.uniform(0, 1, (30, 4))
    one = rank_scales(0.05, rng.uniform(0, 1e-3, 4))
    for values, scale in ((x, per_task), (y, one), (x, 0.05), (x[:1], 0.05)):
        got, want = smoothed_ranks(values, scale), formula(values, scale)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.isnan(smoothed_ranks(x, 0.05)[2, 1]).all() and not np.isnan(x[2, 0]).any()


def test_phi_table_series_equals_the_normal_cdf():
    # The smoothed ranks' Phi (a table and a Taylor series, no libm call) against scipy's ndtr
    # over its range, at the table's points and midpoints, its edges and beyond, and NaN.
    import numba
    from scipy import special

    from metrics.seven import _PHI_EDGE, _PHI_STEPS, _phi

    @numba.njit
    def each(z):
        out = np.empty_like(z)
        for i in range(z.size):
            out[i] = _phi(z[i])
        return out

    grid = np.arange(-_PHI_EDGE - 1, _PHI_EDGE + 1, 0.5 / _PHI_STEPS)
    z = np.concatenate([grid, np.random.default_rng(5).uniform(-10, 10, 200_000)])
    z = np.concatenate([z, [_PHI_EDGE, -_PHI_EDGE, np.inf, -np.inf, 0.0]])
    np.testing.assert_allclose(each(z), special.ndtr(z), rtol=0, atol=2.3e-16)
    assert np.isnan(each(np.array([np.nan])))[0]


def test_smoothed_ranks_compile_one_kernel_for_read_only_scales():
    # np.broadcast_to's read-only views (the callers' scales) would be a second signature of the
    # kernel: one more cached kernel for every analysis to load.
    from metrics.seven import _smoothed_ranks_kernel

    x = np.random.default_rng(4).uniform(0, 1, (5, 3, 4))
    scale = np.broadcast_to(rank_scales(0.05, np.full((3, 4), 1e-4)), (3, 4, 4))
    assert not scale.flags.writeable
    got = smoothed_ranks(x, scale)
    assert np.array_equal(got, smoothed_ranks(x, np.array(scale)))
    assert [sig[1].mutable for sig in _smoothed_ranks_kernel.signatures] == [True]


def test_noise_corrected_scales_make_smoothed_ranks_unbiased():
    # E Phi(d^ / s) = Phi(d / sqrt(s^2 + v)): with s^2 = h^2 - v the noisy values' smoothed
    # ranks average to the true values' ranks at resolution h; with s = h they are too flat.
    rng = np.random.default_rng(5)
    x = np.array([0.40, 0.41, 0.43, 0.50, 0.52])
    var = np.array([0.02, 0.015, 0.03, 0.02, 0.01]) ** 2
    h = 0.05
    noisy = x + rng.normal(size=(200_000, 5)) * np.sqrt(var)
    target = smoothed_ranks(x, h)
    got = smoothed_ranks(noisy, rank_scales(h, var)).mean(axis=0)
    naive = smoothed_ranks(noisy, h).mean(axis=0)
    assert np.abs(got - target).max() < 0.005, (got, target)
    assert np.abs(naive - target).max() > 0.03, (naive, target)


def test_disattenuated_pearson_undoes_independent_noise():
    # Two vectors with correlation rho, observed with noise: the plain Pearson shrinks towards
    # 0, the corrected one (noise from replicates around the observation) does not on average.
    rng = np.random.default_rng(2)
    n, reps, sd = 12, 400, 0.6
    a = rng.normal(size=n)
    b = 0.8 * a + 0.6 * rng.normal(size=n)
    truth = np.corrcoef(a, b)[0, 1]
    plain, corrected = [], []
    for _ in range(300):
        xa = a + sd * rng.normal(size=n)
        xb = b + sd * rng.normal(size=n)
        ra = np.concatenate([xa[None], xa + sd * rng.normal(size=(reps, n))])
        rb = np.concatenate([xb[None], xb + sd * rng.normal(size=(reps, n))])
        plain.append(np.corrcoef(xa, xb)[0, 1])
        corrected.append(disattenuated_pearson(ra, rb)[0])
    assert np.mean(plain) < truth - 0.1
    assert abs(np.mean(corrected) - truth) < 0.05, (np.mean(corrected), truth)


def test_debias_anchor_generalizes_both_centrings():
    rng = np.random.default_rng(0)
    reps = rng.normal(0.3, 0.1, 500) ** 3
    theta = 0.05
    plain = debias(theta, reps)
    assert debias(theta, reps, anchor=theta) == plain  # the bootstrap bias correction
    centred = debias(theta, reps, already_debiased=True)
    assert debias(theta, reps, anchor=float(np.mean(reps)), already_debiased=True) == centred
    got = debias(theta, reps, anchor=0.02)
    q_lo, q_hi = np.quantile(reps, [0.025, 0.975])
    assert got.debiased == pytest.approx(theta - (np.mean(reps) - 0.02))
    assert got.ci == pytest.approx((theta - (q_hi - 0.02), theta - (q_lo - 0.02)))


def test_population_values_at_resolution_zero_are_the_ordinary_spearman():
    pop = standard_populations()["example"]
    exact = population_values(pop, rank_resolution=0.0)
    mic = pop.population_mic()
    rho = [spearmanr(mic[i], mic[j]).statistic for i in range(4) for j in range(i + 1, 4)]
    z = np.mean(np.arctanh(np.clip(rho, -0.9999, 0.9999)))
    assert exact["MRC"] == pytest.approx(np.tanh(z), abs=1e-12)
    smooth = population_values(pop, rank_resolution=0.05)
    assert smooth["MRC"] != exact["MRC"]  # markers within 0.001 of each other: partly tied
    assert smooth["I-AvgMAE"] == exact["I-AvgMAE"]  # only the Spearman variants change


def test_analysis_reports_the_resolution_and_keeps_the_plugin_value():
    run = sample(standard_populations()["example"], 200, seed=4)
    a = analyze(run, bootstrap=60, seed=1, rank_resolution=0.05).metrics_json
    b = analyze(run, bootstrap=60, seed=1, rank_resolution=0.0).metrics_json
    assert a["settings"]["rank_resolution"] == 0.05 and b["settings"]["rank_resolution"] == 0.0
    ma, mb = (d["models"]["model-0"]["default"]["metrics"] for d in (a, b))
    for name in ("MRC", "MAC", "MCC"):
        assert ma[name]["value"] == mb[name]["value"]  # the ordinary Spearman either way
        assert ma[name]["ci_method"].startswith("rank resolution 0.05"), ma[name]
        assert mb[name]["ci_method"].startswith("plug-in"), mb[name]
        assert ma[name]["ci"][0] <= ma[name]["debiased"] <= ma[name]["ci"][1]
    for name in ("MAC-P-all", "I-AvgMAE"):  # not rank correlations: unchanged
        assert ma[name] == mb[name]
    # MRC's interval keeps the replicates' orientation, and says so; MAC's is a basic interval.
    assert "replicates' spread shifted" in ma["MRC"]["ci_method"]
    # ... and its width comes from the second bootstrap level (B = 60 >= 40); MAC's does not.
    assert ma["MRC"]["ci_method"].endswith("width from a two-level bootstrap-t"), ma["MRC"]
    assert "two-level" not in ma["MAC"]["ci_method"]
    assert "basic" in ma["MAC"]["ci_method"] and "shifted" not in ma["MAC"]["ci_method"]
    # The -sig variants (a set chosen by p < 0.05) stay uncorrected; in parity mode an empty
    # set is the seed's -1 and must not be reported as a debiased estimate either.
    parity = analyze(run, bootstrap=60, seed=1, mode="parity", rank_resolution=0.05)
    mp = parity.metrics_json["models"]["model-0"]["default"]["metrics"]
    for metrics in (ma, mp):
        for name in ("MRC-S-sig", "MAC-S-sig", "MCC-S-sig"):
            entry = metrics[name]
            assert entry["ci_method"] is None or entry["ci_method"].startswith("plug-in"), entry


def test_rank_resolution_is_checked():
    run = sample(standard_populations()["example"], 40, seed=4)
    with pytest.raises(Exception, match="rank-resolution"):
        analyze(run, rank_resolution=-0.1)


def test_second_level_row_zero_is_the_first_levels_corrected_mrc():
    # The second level runs MRC's own corrected statistic: on each replicate itself (row 0) it
    # must reproduce the first level's corrected replicate, and the anchors are the estimand
    # (scale h, no correction) on the replicates.
    from metrics.seven import attach_rank_corrections, inner_mrc_replicates, mrc

    rng = np.random.default_rng(3)
    truth = rng.uniform(0.2, 0.8, (1, 4, 6))
    mic = truth + rng.normal(0, 0.02, (61, 4, 6))
    acc = rng.uniform(0.4, 0.9, (61, 4))
    shared = np.ones(6, dtype=bool)
    metrics = mrc(mic, False)
    metrics["MRC"] = metrics["MRC-S-all"]
    attach_rank_corrections(metrics, mic, acc, acc, shared, False, 0.05)
    m = metrics["MRC"]
    assert m.inner is not None
    values, anchors = m.inner
    assert values.shape == (21, 60) and anchors.shape == (60,)
    assert values[0] == pytest.approx(m.corrected[1:61], abs=1e-12)
    assert anchors == pytest.approx(mrc(mic[1:61], False, scales=0.05)["MRC-S-all"].values[:60])
    # Rows 1.. differ from row 0 (each is the replicate plus another replicate's error).
    assert np.abs(values[1:] - values[0]).max() > 1e-4
    var = np.var(mic[1:], axis=0, ddof=1)
    again = inner_mrc_replicates(mic, 0.05, var, False, n_outer=10, n_inner=5)
    assert again[0].shape == (6, 10)


def test_second_level_sets_the_interval_width():
    # A second level whose studentized errors are 1.5 standard errors where the first level's
    # would be 1 widens the interval 1.5-fold (and keeps its asymmetry); errors of 0.5 s.e.
    # narrow it. Without the second level the interval is the replicates' spread.
    rng = np.random.default_rng(5)
    reps = rng.normal(0.5, 0.05, 4000)
    base = debias(0.5, reps, anchor=0.5, reflect=False, bounds=(-1, 1))
    K, C = 400, 400

    def inner(spread):
        sd = 0.05
        errors = rng.normal(0, spread * sd, K)  # each replicate's estimate minus the estimand
        values = np.concatenate([(0.5 + errors)[None], rng.normal(0.5, sd, (C, K))])
        return values, np.full(K, 0.5)

    width = base.ci[1] - base.ci[0]
    wide = debias(0.5, reps, anchor=0.5, reflect=False, bounds=(-1, 1), inner=inner(1.5))
    narrow = debias(0.5, reps, anchor=0.5, reflect=False, bounds=(-1, 1), inner=inner(0.5))
    assert (wide.ci[1] - wide.ci[0]) / width == pytest.approx(1.5, rel=0.12)
    assert (narrow.ci[1] - narrow.ci[0]) / width == pytest.approx(0.5, rel=0.12)
    assert wide.debiased == base.debiased  # the estimate does not move
    # The asymmetry is kept: the lower and upper half-widths scale by one factor.
    lo, hi = base.debiased - base.ci[0], base.ci[1] - base.debiased
    wlo, whi = wide.debiased - wide.ci[0], wide.ci[1] - wide.debiased
    assert wlo / lo == pytest.approx(whi / hi, rel=1e-9)


def test_second_level_is_read_at_the_first_levels_monte_carlo_precision():
    # A normal statistic whose bootstrap is exact: the first level's replicates are N(0.5, 1)
    # (quantiles of the normal, no sampling noise), the second level's the same at C = 20
    # replicates each. Nothing needs correcting, so the factor must be 1. Read as if its s.e.
    # and mean had the first level's B replicates, the second level's studentized error (a
    # Student t with 19 degrees of freedom, times sqrt(1 + 1/20)) gave 1.09: intervals 9 % wider
    # than needed, the over-coverage of MRC in `near-constant` at 300 items.
    from metrics.debias import inner_width_factor
    from metrics.special import ndtri

    B, K, C = 4000, 20000, 20
    reps = 0.5 + ndtri((np.arange(B) + 0.5) / B)
    q_lo, q_hi = np.quantile(reps, [0.025, 0.975])
    se = float(np.std(reps, ddof=1))
    rng = np.random.default_rng(11)
    values = 0.5 + rng.standard_normal((1 + C, K))
    anchors = np.full(K, 0.5)
    factor = inner_width_factor((values, anchors), 0.5, 0.95, se, 0.5 - q_lo, q_hi - 0.5, B)
    assert factor == pytest.approx(1.0, abs=0.03)
    # The old reading (no Monte Carlo ratio) of the same second level, for the record.
    est = values[0] - (values[1:].mean(axis=0) - anchors)
    t = np.abs(est - 0.5) / values[1:].std(axis=0, ddof=1)
    assert np.quantile(t, 0.95) * se / ((q_hi - q_lo) / 2) > 1.06


def test_t_quantile_matches_scipy():
    from scipy.stats import t as student

    from metrics.debias import _t_quantile

    for df in (1, 2, 5, 19, 199, 1e5):
        for p in (0.6, 0.975, 0.9995):
            assert _t_quantile(p, df) == pytest.approx(student.ppf(p, df), rel=1e-9)


def test_the_second_level_sets_mrcs_reported_interval(monkeypatch):
    # A merge once dropped `inner` from the analysis' call of `debias`: the second level was
    # computed and named in ci_method, but the reported interval kept the replicates' width.
    # Scaling the second level's factor must scale the reported MRC interval around its estimate.
    import metrics.debias as debias_mod

    run = sample(standard_populations()["near-constant"], 150, seed=3)
    widths = {}
    for factor in (1.0, 2.0):
        monkeypatch.setattr(debias_mod, "inner_width_factor", lambda *a, f=factor, **k: f)
        m = analyze(run, bootstrap=60, seed=1).metrics_json["models"]["model-0"]["default"]
        mrc = m["metrics"]["MRC"]
        assert mrc["ci_method"].endswith("width from a two-level bootstrap-t")
        widths[factor] = (mrc["debiased"] - mrc["ci"][0], mrc["ci"][1] - mrc["debiased"])
    # Both half-widths scale with the factor (about the interval's centre, so not exactly 2x in
    # metrics.json's units), unless the doubled side reached MRC's bound 1.
    assert widths[2.0][0] > 1.5 * widths[1.0][0], widths
    assert widths[2.0][1] > 1.5 * widths[1.0][1] or mrc["ci"][1] == 1.0, widths
