"""Debiased metrics and their intervals against known truths (metrics.simulate).

Seeded and small (R runs of a few hundred items): they guard the methods against regressions; the
full coverage table is benchmarks/interval_coverage.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from metrics import analyze
from metrics.simulate import (
    Population,
    comparison_study,
    coverage_study,
    population_values,
    sample,
    standard_populations,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"
MAE = [f"{p}-AvgMAE (Mode {m})" for m in (1, 2, 3, 4) for p in ("I", "C")]
CVS = ["I-AvgCV", "I-AvgCV (shared)", "C-AvgCV"]


def tiny() -> Population:
    """Two tasks, one marker, one sentence per response, kappa 3: every confidence is Beta(2, 1)
    (level 2/3) or Beta(1, 2) (level 1/3), whose E|a - C| has a closed form."""
    return Population(
        mic=np.array([[2 / 3], [1 / 3]]),
        marker_freq=np.array([1.0]),
        accuracy=np.array([0.8, 0.4]),
        faithfulness=np.array([0.9, 0.85]),
        no_hedge_level=np.array([1 / 3, 2 / 3]),
        hedge_rate=0.5,
        sentences=(1.0,),
        multi_marker=0.0,
        concentration=3.0,
        missing=0.0,
    )


def test_tiny_population_values_by_hand():
    # C ~ Beta(2, 1): E|a - C| = 2a^3/3 - a + 2/3; Beta(1, 2) is its mirror image.
    def g(a):
        return 2 * a**3 / 3 - a + 2 / 3

    own = g(2 / 3)  # a task's rows scored with its own MICs: 16/81 for both kinds
    other = g(1 / 3)  # with the other task's MICs: 29/81
    assert own == pytest.approx(16 / 81) and other == pytest.approx(29 / 81)
    truth = population_values(tiny())
    for mode in (1, 2, 3):  # one row per response: the three modes agree
        assert truth[f"I-AvgMAE (Mode {mode})"] == pytest.approx(16 / 81, abs=1e-12)
        assert truth[f"C-AvgMAE (Mode {mode})"] == pytest.approx(29 / 81, abs=1e-12)
    assert truth["I-AvgMAE (Mode 4)"] == 0.0
    assert truth["C-AvgMAE (Mode 4)"] == pytest.approx(1 / 3, abs=1e-12)
    # MICs (2/3, 1/3) in each task and across tasks: sd sqrt(2)/6 over mean 1/2.
    for name in CVS:
        assert truth[name] == pytest.approx(np.sqrt(2) / 3, abs=1e-12)
    assert truth["MRC"] == pytest.approx(-0.9999)  # the two columns are reversed (clipped)
    assert truth["MAC"] == pytest.approx(0.0, abs=1e-12)  # marker +1, <no_hedge> -1


def test_samples_converge_to_the_population_values():
    pop = standard_populations()["near-constant"]
    res = analyze(sample(pop, 40_000, seed=3))
    got = res.metrics_json["models"]["model-0"]["default"]["metrics"]
    truth = population_values(pop)
    for name in [*MAE, *CVS]:
        # A plug-in |difference| at a true 0 shrinks only like 1/sqrt(n): looser for Mode 4.
        tol = 0.01 if "Mode 4" in name else 0.004
        assert got[name]["value"] == pytest.approx(truth[name], abs=tol), name


def test_population_checks_its_fields():
    with pytest.raises(Exception, match="faithfulness"):
        Population.example(faithfulness=np.full(4, 0.5))


@pytest.fixture(scope="module")
def study() -> pl.DataFrame:
    return coverage_study(standard_populations()["example"], 300, 24, n_boot=200, seed=11)


def test_coverage_does_not_regress(study):
    cov = dict(study.group_by("metric").agg(pl.col("covered").mean()).iter_rows())
    # Measured with these seeds: every MAE mode and CV >= 0.875 (the plug-in percentile
    # intervals of before covered I-AvgMAE Mode 4, whose truth is 0, in 0-5 % of runs).
    for name in [*MAE, *CVS]:
        assert cov[name] >= 0.8, (name, cov[name])
    for name in ("MRC", "MAC"):  # rank correlations: see docs/statistics.md
        assert cov[name] >= 0.5, (name, cov[name])


def test_every_debiased_estimate_lies_inside_its_interval(study):
    inside = (pl.col("ci_lo") <= pl.col("debiased")) & (pl.col("debiased") <= pl.col("ci_hi"))
    assert study.filter(~inside).height == 0


def test_bundled_example_debiased_inside_interval():
    res = analyze(EXAMPLE, bootstrap=1000, seed=0)
    checked = 0
    for prompts in res.metrics_json["models"].values():
        for block in prompts.values():
            for name, e in block["metrics"].items():
                if e["value"] is None:
                    continue
                assert e["ci"] is not None and e["ci_method"], name
                assert e["ci"][0] <= e["debiased"] <= e["ci"][1], (name, e)
                assert e["se"] >= 0
                checked += 1
    assert checked >= 40


def test_marcon_preset_gets_intervals():
    plain = analyze(EXAMPLE, preset="marcon", seed=2).metrics_json
    boot = analyze(EXAMPLE, preset="marcon", bootstrap=100, seed=2).metrics_json
    for model, prompts in boot["models"].items():
        for name, e in prompts["default"]["metrics"].items():
            want = plain["models"][model]["default"]["metrics"][name]["value"]
            if want is None:
                continue
            assert e["value"] == pytest.approx(want, rel=1e-12), name  # value unchanged
            assert e["ci"][0] <= e["debiased"] <= e["ci"][1], name


def test_null_rejection_rate_and_power():
    pop = Population.example(zipf=0.3)  # every marker far above the threshold: one marker set
    null = comparison_study(pop, pop, 300, 12, n_boot=200, seed=5, threshold=2)
    part = null.filter(pl.col("metric").is_in([*MAE, *CVS]))
    rate = (part["p_value"] < 0.05).mean()
    mc = 3 * np.sqrt(0.05 * 0.95 / part.height)
    assert abs(rate - 0.05) <= mc, (rate, part.height)
    # Noisier confidences: every MAE mode but Mode 4 (a difference of means) moves.
    noisy = Population(**{**pop.__dict__, "concentration": 12.0})
    alt = comparison_study(noisy, pop, 300, 6, n_boot=200, seed=5, threshold=2)
    power = alt.filter(pl.col("metric") == "I-AvgMAE").get_column("p_value") < 0.05
    assert power.mean() >= 0.8


def test_each_test_is_in_the_family_once():
    res = analyze(EXAMPLE, bootstrap=50, compare=True)
    metrics = set(res.comparisons.get_column("metric").to_list())
    assert {"MRC", "MAC", "MCC", "I-AvgMAE", "C-AvgMAE"} <= metrics
    aliases = {"MRC-S-all", "MAC-S-all", "MCC-S-all", "I-AvgMAE (Mode 1)", "C-AvgMAE (Mode 1)"}
    assert not metrics & aliases
    assert res.comparisons.get_column("same_markers").dtype == pl.Boolean
