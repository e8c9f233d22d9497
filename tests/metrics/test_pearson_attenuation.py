"""The Pearson variants of MAC and MCC: the MICs' noise taken out of the correlation.

`metrics.seven.attach_pearson_corrections`; the coverage and the paired tests' null rejection
are measured in benchmarks/interval_coverage.py (docs/statistics.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from metrics import analyze
from metrics.debias import CI_METHOD_PEARSON, debias, paired_difference
from metrics.seven import attach_pearson_corrections, fisher_mean, marker_task_correlation
from metrics.simulate import sample, standard_populations


def _noisy_group(rng, true_mic, sd, reps):
    """[1 + reps, T, M] MICs: a noisy observation first, then replicates around it."""
    point = true_mic + sd * rng.normal(size=true_mic.shape)
    return np.concatenate([point[None], point + sd * rng.normal(size=(reps, *true_mic.shape))])


def _mac_p_all(mic, accuracy):
    metrics = marker_task_correlation(mic, accuracy, "MAC", False, ("P",))
    attach_pearson_corrections(metrics, mic, accuracy, accuracy, np.ones(mic.shape[2], bool))
    return metrics["MAC-P-all"]


def test_noise_attenuates_the_plugin_pearson_and_the_correction_recovers_it():
    # 8 tasks, 5 markers whose true MICs follow the task accuracy (plus a spread of their own):
    # MIC noise pulls the plug-in Pearson towards 0, more for the noisier model (sd 0.03 vs
    # 0.01), so two models with the same true MICs differ. The reported estimate (the corrected
    # statistic, its bootstrap bias taken against the plug-in anchor) recovers the truth.
    rng = np.random.default_rng(7)
    T, M, reps = 8, 5, 200
    acc = np.linspace(0.4, 0.9, T)
    true_mic = 0.2 + 0.3 * acc[:, None] + 0.08 * rng.normal(size=(T, M))
    truth = float(fisher_mean(np.array([np.corrcoef(true_mic[:, m], acc)[0, 1] for m in range(M)])))
    accuracy = np.broadcast_to(acc, (1 + reps, T)).copy()
    plain = {0.01: [], 0.03: []}
    debiased = {0.01: [], 0.03: []}
    for _ in range(100):
        for sd in plain:
            m = _mac_p_all(_noisy_group(rng, true_mic, sd, reps), accuracy)
            assert m.anchor == m.values[0]  # the plug-in: the bootstrap world's estimand
            est = debias(
                m.corrected[0], m.corrected[1:], bounds=(-1, 1), fisher=True, anchor=m.anchor
            )
            assert est.ci[0] <= est.debiased <= est.ci[1]
            plain[sd].append(m.values[0])
            debiased[sd].append(est.debiased)
    assert np.mean(plain[0.03]) < truth - 0.015, (np.mean(plain[0.03]), truth)
    assert np.mean(plain[0.01]) - np.mean(plain[0.03]) > 0.01  # the noisier model loses more
    for sd in debiased:  # measured: within 0.007 (the plug-in: 0.004 and 0.025 low)
        assert abs(np.mean(debiased[sd]) - truth) < 0.012, (sd, np.mean(debiased[sd]), truth)


def test_paired_difference_of_pearson_variants_uses_the_correction():
    rng = np.random.default_rng(3)
    T, M, reps = 6, 4, 100
    acc = np.linspace(0.5, 0.9, T)
    true_mic = 0.3 * acc[:, None] + 0.03 * rng.normal(size=(T, M))
    accuracy = np.broadcast_to(acc, (1 + reps, T)).copy()
    a = _mac_p_all(_noisy_group(rng, true_mic, 0.05, reps), accuracy)
    b = _mac_p_all(_noisy_group(rng, true_mic, 0.02, reps), accuracy)
    d = paired_difference(a, b, name="MAC-P-all")
    assert d.ci_method == CI_METHOD_PEARSON.replace(", basic", ", normal")
    centre = np.mean(a.corrected[1:] - b.corrected[1:])
    expect = (a.corrected[0] - b.corrected[0]) - (centre - (a.anchor - b.anchor))
    assert d.debiased == pytest.approx(expect)
    assert d.plugin == pytest.approx(a.values[0] - b.values[0])


def test_analysis_names_the_pearson_method_and_keeps_sig_uncorrected():
    run = sample(standard_populations()["example"], 200, seed=4)
    for h in (0.05, 0.0):  # the Pearson variants' correction does not depend on h
        m = analyze(run, bootstrap=60, seed=1, rank_resolution=h).metrics_json
        metrics = m["models"]["model-0"]["default"]["metrics"]
        for name in ("MAC-P-all", "MCC-P-all"):
            entry = metrics[name]
            assert entry["ci_method"] == CI_METHOD_PEARSON + " (Fisher z)", entry
            assert entry["ci"][0] <= entry["debiased"] <= entry["ci"][1]
        for name in ("MAC-P-sig", "MCC-P-sig"):  # a set chosen by p < 0.05: plug-in
            entry = metrics[name]
            assert entry["ci_method"] is None or entry["ci_method"].startswith("plug-in"), entry
