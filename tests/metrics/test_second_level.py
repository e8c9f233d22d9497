"""MAC's second bootstrap level (`metrics.seven.inner_correlation_replicates`), the paired test's sd.

The debiased MAC is the noise-corrected statistic minus its bootstrap bias, and that bias
estimate moves with the sample, so the estimate varies less than the corrected replicates do;
the paired test takes its sd from a second level instead (`metrics.debias.second_level_se`,
by hand in test_paired_correlations.py). These tests pin what the level is made of: row 0 is
the first level's corrected statistic on each outer replicate, the rows below it the same
statistic on translated replicates, and the estimand is the uncorrected statistic on the outer
replicate. Whether the test it feeds is calibrated is measured on the simulator
(benchmarks/interval_coverage.py, docs/statistics.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metrics import seven as S
from metrics.analyze import analyze
from metrics.debias import CI_METHOD_PAIRED_TWO_LEVEL

H = 0.05
EXAMPLE = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"


def _group(n_boot: int = 60, seed: int = 0, tasks: int = 4, markers: int = 6):
    """A group's MICs, accuracies and cMFGs (point first, then replicates) and its metrics."""
    rng = np.random.default_rng(seed)
    mic0 = 0.5 + 0.1 * rng.standard_normal((tasks, markers))
    acc0 = 0.6 + 0.1 * rng.standard_normal(tasks)
    mic = np.concatenate([mic0[None], mic0 + 0.03 * rng.standard_normal((n_boot, tasks, markers))])
    acc = np.concatenate([acc0[None], acc0 + 0.02 * rng.standard_normal((n_boot, tasks))])
    cmfg = 0.5 * acc[:, ::-1] + 0.1
    metrics = {}
    for name, values in (("MAC", acc), ("MCC", cmfg)):
        metrics.update(S.marker_task_correlation(mic, values, name, False, scales=(H, H)))
        metrics[name] = metrics[f"{name}-S-all"]
    return metrics, mic, acc, cmfg, np.ones(markers, dtype=bool)


def _attach(metrics, mic, acc, cmfg, shared, second_level):
    S.attach_rank_corrections(metrics, mic, acc, cmfg, shared, False, H, second_level)
    S.attach_pearson_corrections(metrics, mic, acc, cmfg, shared, second_level=second_level)


def test_off_unless_asked_and_only_for_mac():
    metrics, *data = _group()
    _attach(metrics, *data, second_level=False)
    assert all(m.second_level is None for m in metrics.values())
    metrics, *data = _group()
    _attach(metrics, *data, second_level=True)
    assert {n for n, m in metrics.items() if m.second_level is not None} == {
        "MAC", "MAC-S-all", "MAC-P-all"
    }  # fmt: skip
    # Below INNER_MIN_REPLICATES first-level replicates there is no second level.
    metrics, *data = _group(n_boot=S.INNER_MIN_REPLICATES - 1)
    _attach(metrics, *data, second_level=True)
    assert all(m.second_level is None for m in metrics.values())


@pytest.mark.parametrize("name", ["MAC-S-all", "MAC-P-all"])
def test_row_0_is_the_first_levels_corrected_statistic(name):
    metrics, mic, acc, cmfg, shared = _group(n_boot=60)
    _attach(metrics, mic, acc, cmfg, shared, second_level=True)
    m = metrics[name]
    values, estimand = m.second_level
    k, c = min(S.INNER_K, 60), min(S.INNER_C, 59)
    assert values.shape == (1 + c, k) and estimand.shape == (k,)
    np.testing.assert_allclose(values[0], m.corrected[1 : k + 1], rtol=1e-12, atol=1e-15)
    # The estimand on replicate j: the statistic at scale h without the noise correction (S),
    # the plug-in Pearson (P), each computed on that replicate alone.
    method = name.split("-")[1]
    for j in (0, 17, k - 1):
        one = S.marker_task_correlation(
            mic[j + 1][None], acc[j + 1][None], "MAC", False, (method,), scales=(H, H)
        )
        assert estimand[j] == pytest.approx(one[name].values[0], rel=1e-12)


def test_rows_below_are_translated_replicates():
    # Row j of outer replicate k: the corrected Pearson on x*_k + (x*_c - x_hat), c = 1 + (k + j)
    # mod B, with the first level's noise terms (task values translated alike).
    metrics, mic, acc, cmfg, shared = _group(n_boot=60)
    _attach(metrics, mic, acc, cmfg, shared, second_level=True)
    values, _ = metrics["MAC-P-all"].second_level
    x = np.moveaxis(mic, 1, 2)  # [R, S, T]
    y = np.broadcast_to(acc[:, None, :], x.shape)
    noise = S.replicate_noise(x, y)
    n_boot = len(mic) - 1
    for k, j in ((0, 1), (5, 20), (59, 3)):
        c = 1 + (k + j) % n_boot
        xt = x[k + 1] + (x[c] - x[0])
        yt = np.broadcast_to(acc[k + 1] + (acc[c] - acc[0]), xt.shape)
        r = S.pearson_without_noise(xt, yt, noise, S.PEARSON_VAR_FLOOR)
        assert values[j, k] == pytest.approx(S.fisher_mean(r), rel=1e-12)


def test_analysis_comparing_groups_takes_macs_sd_from_the_second_level():
    res = analyze(EXAMPLE, bootstrap=60, compare=True)
    methods = dict(res.comparisons.select("metric", "ci_method").iter_rows())
    assert methods["MAC"].endswith(", normal" + CI_METHOD_PAIRED_TWO_LEVEL)
    assert methods["MAC-P-all"].endswith(", normal" + CI_METHOD_PAIRED_TWO_LEVEL)
    assert not methods["MCC"].endswith(CI_METHOD_PAIRED_TWO_LEVEL)
