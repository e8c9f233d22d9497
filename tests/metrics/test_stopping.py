"""Precision-based stopping (metrics.stopping): the decision and a small simulated study.

The coverage of the stopped intervals over many studies is benchmarks/planning.py's fourth check.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine.errors import UserError
from metrics import analyze
from metrics.simulate import Population, sample
from metrics.stopping import Chosen, WidthSmoother, stop_decision, stopping_study, take


@pytest.fixture(scope="module")
def result():
    return analyze(sample(Population.example(), 300, 4), bootstrap=200, seed=4)


def test_decision_per_task_follows_the_widest_shared_mic(result):
    table = result.mic_table.filter(pl.col("shared") & pl.col("valid"))
    widest = table.group_by("task").agg((pl.col("ci_hi") - pl.col("ci_lo")).max().alias("w"))
    w = dict(zip(widest.get_column("task"), widest.get_column("w")))
    middle = float(np.median(list(w.values())))
    decision, chosen = stop_decision(result, middle)
    assert decision.widths == pytest.approx(w)
    assert decision.stop == {t: w[t] <= middle for t in w}
    assert len(chosen) == table.height
    assert any(decision.stop.values())
    assert stop_decision(result, 1.0)[0].stop == {t: True for t in w}
    assert not any(stop_decision(result, 1e-6)[0].stop.values())


def test_decision_by_metric_stops_every_task_together(result):
    ci = result.metrics_json["models"]["model-0"]["default"]["metrics"]["I-AvgMAE"]["ci"]
    width = ci[1] - ci[0]
    assert all(stop_decision(result, width * 1.01, "I-AvgMAE")[0].stop.values())
    assert not any(stop_decision(result, width * 0.99, "I-AvgMAE")[0].stop.values())
    with pytest.raises(UserError, match="--metric 'nope' is not a metric"):
        stop_decision(result, 0.1, "nope")
    with pytest.raises(UserError, match="--target-width 0 must be positive"):
        stop_decision(result, 0)


def test_smoother_widens_a_lucky_narrow_wave_only():
    s = WidthSmoother()
    # Widths falling like 1/sqrt(n): nothing to widen.
    for n in (100, 200, 400):
        c = s.widen(
            Chosen("t", "m", 0.5, 0.5 - 0.1 / np.sqrt(n / 100), 0.5 + 0.1 / np.sqrt(n / 100)), n
        )
    assert c.hi - c.lo == pytest.approx(0.2 / 2)
    # A wave whose interval came out half as wide as the trend: widened towards the trend,
    # about its centre.
    lucky = s.widen(Chosen("t", "m", 0.5, 0.48, 0.52), 800)
    assert 0.04 < lucky.hi - lucky.lo < 0.2 / np.sqrt(8)
    assert lucky.center == 0.5 and 0.5 - lucky.lo == pytest.approx(lucky.hi - 0.5)


def test_take_keeps_sentences_with_their_responses():
    run = sample(Population.example(), 40, 1)
    keep = np.arange(run.responses.height) % 3 == 0
    part = take(run, keep)
    assert part.responses.height == keep.sum()
    rows = np.bincount(run.sentences.get_column("_r").to_numpy(), minlength=len(keep))
    got = np.bincount(part.sentences.get_column("_r").to_numpy(), minlength=keep.sum())
    assert np.array_equal(got, rows[keep])


def test_stopping_study_stops_early_and_covers():
    """A loose width stops at the second wave (the first a task may stop at: the smoother needs
    two), a tight one runs to the item limit; without the smoother a loose width stops at the
    first; the final MIC intervals cover the truth at a rough level (4 studies)."""
    pop = Population.example()
    loose = stopping_study(pop, 0.5, wave=100, max_items=400, reps=2, n_boot=100)
    tight = stopping_study(pop, 1e-4, wave=100, max_items=300, reps=2, n_boot=100)
    assert loose.get_column("reached").all() and loose.get_column("items").max() == 200
    raw = stopping_study(pop, 0.5, wave=100, max_items=400, reps=1, n_boot=100, smooth=False)
    assert raw.get_column("reached").all() and raw.get_column("items").max() == 100
    assert not tight.get_column("reached").any() and tight.get_column("items").min() == 300
    both = pl.concat([loose, tight])
    assert both.get_column("covered").mean() > 0.8
