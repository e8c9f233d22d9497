"""The analysis bootstrap: replicate tensors equal a brute-force recomputation with the same item
weights; intervals are deterministic, paired, and refuse bad options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.approx import diff

from engine.errors import UserError
from metrics import analyze
from metrics.bootstrap.kernels import item_weights_reference
from metrics.core import compute_tables
from metrics.encode import encode
from metrics.io import read_scored
from metrics.resample import EVAL_DOMAIN, group_replicates, mic_acceleration, response_keys
from metrics.synthetic import make_scored_run

EXAMPLE = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"


def _write(d: Path, resp: pl.DataFrame, sent: pl.DataFrame) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    resp.write_parquet(d / "responses.parquet")
    sent.write_parquet(d / "sentences.parquet")
    return d


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    resp, sent = make_scored_run(n_models=2, n_tasks=3, n_items=80, n_markers=6, seed=5)
    return read_scored(_write(tmp_path_factory.mktemp("small"), resp, sent))


@pytest.mark.parametrize("mode", ["heldout", "parity"])
@pytest.mark.parametrize("scheme", ["poisson", "multinomial"])
def test_replicates_equal_brute_force(small, mode, scheme):
    parity = mode == "parity"
    enc = encode(small, mode=mode)
    point, valid = compute_tables(enc, threshold=3, parity=parity)
    keys, strata = response_keys(small.responses)
    g, n_boot, seed = 1, 5, 11
    reps = group_replicates(enc, g, keys, strata, seed=seed, n_boot=n_boot, scheme=scheme, parity=parity,
                            valid=valid, point=point)  # fmt: skip
    ref = np.flatnonzero((enc.r_g == g) & enc.r_ref)
    ev = np.flatnonzero((enc.r_g == g) & enc.r_eval)
    w_ref = item_weights_reference(keys[ref], strata[ref], seed, range(n_boot), scheme)
    ev_strata = strata[ev] if parity else strata[ev] ^ EVAL_DOMAIN
    w_ev = item_weights_reference(keys[ev], ev_strata, seed, range(n_boot), scheme)
    for b in range(n_boot):
        w = np.zeros(len(enc.r_g))
        w[ref] = w_ref[b]
        w[ev] = w_ev[b]
        if parity:
            np.testing.assert_array_equal(w_ref[b], w_ev[b])  # same items, same draws
        tb, _ = compute_tables(enc, w, threshold=3, parity=parity, valid=valid, reference=True)
        np.testing.assert_allclose(reps.mic[b], tb.mic[g], rtol=1e-10, equal_nan=True)
        np.testing.assert_allclose(reps.accuracy[b], tb.accuracy[g], rtol=1e-10, equal_nan=True)
        np.testing.assert_allclose(reps.cmfg[b], tb.cmfg[g], rtol=1e-10, equal_nan=True)
        for mode_k in (1, 3, 4):
            np.testing.assert_allclose(
                reps.mae[mode_k][b], tb.mae[mode_k][0][g], rtol=1e-9, atol=1e-12, equal_nan=True
            )
        assert np.isfinite(reps.mae[1][b]).any()


def test_mic_acceleration_equals_leave_one_item_out(small):
    enc = encode(small, mode="parity")
    a = mic_acceleration(enc, 0)
    # Literal jackknife for a few cells: leave each reference item of the task out in turn.
    point, _ = compute_tables(enc, threshold=1, parity=True)
    checked = 0
    for t in range(enc.n_tasks):
        items = np.flatnonzero((enc.r_g == 0) & enc.r_ref & (enc.r_t == t))
        for m in range(enc.n_markers):
            if not np.isfinite(a[t, m]):
                continue
            loo = []
            for i in items:
                w = np.ones(len(enc.r_g))
                w[i] = 0
                tb, _ = compute_tables(enc, w, threshold=1, parity=True, reference=True)
                loo.append(tb.mic[0, t, m])
            loo = np.array(loo)
            u = loo.mean() - loo
            want = np.sum(u**3) / (6 * np.sum(u**2) ** 1.5)
            np.testing.assert_allclose(a[t, m], want, rtol=1e-9, atol=1e-15)
            checked += 1
            break
    assert checked == enc.n_tasks


def test_intervals_are_written_and_bracket_the_estimate(tmp_path):
    res = analyze(EXAMPLE, out=tmp_path, bootstrap=200, seed=3)
    block = res.metrics_json["models"]["model-0"]["default"]
    assert res.metrics_json["settings"]["bootstrap"] == 200
    for name in ("I-AvgMAE", "C-AvgMAE", "MRC", "MAC", "MCC", "I-AvgCV", "C-AvgCV"):
        e = block["metrics"][name]
        # The interval is for the population value, centred on the bias-corrected estimate.
        assert e["ci"][0] <= e["debiased"] <= e["ci"][1], (name, e)
    assert block["metrics"]["I-AvgMAE (Mode 2)"]["ci"] is not None
    t = next(iter(block["tasks"].values()))
    assert t["accuracy_ci"][0] < t["accuracy"] < t["accuracy_ci"][1]
    mic = pl.read_parquet(tmp_path / "mic.parquet").filter(pl.col("shared"))
    assert mic["ci_lo"].null_count() == 0
    assert ((mic["ci_lo"] <= mic["mic"]) & (mic["mic"] <= mic["ci_hi"])).all()


def test_same_result_with_one_or_two_threads_and_shuffled_split_files(tmp_path):
    code = (
        "import json, sys; from metrics import analyze; "
        "r = analyze(sys.argv[1], bootstrap=64, seed=9, scheme=sys.argv[2]); "
        "print(json.dumps(r.metrics_json['models']))"
    )
    outs = []
    for threads in ("1", "2"):
        env = {**os.environ, "NUMBA_NUM_THREADS": threads}
        proc = subprocess.run([sys.executable, "-c", code, str(EXAMPLE), "poisson"], env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        outs.append(json.loads(proc.stdout))
    assert diff(outs[0], outs[1], rel=1e-12) == []
    # Rows shuffled and responses scattered over three files: same intervals.
    resp = pl.read_parquet(EXAMPLE / "responses.parquet")
    sent = pl.read_parquet(EXAMPLE / "sentences.parquet")
    rng = np.random.default_rng(0)
    resp = resp[rng.permutation(resp.height)]
    sent = sent[rng.permutation(sent.height)]
    d = tmp_path / "shuffled"
    (d / "responses").mkdir(parents=True)
    (d / "sentences").mkdir(parents=True)
    for i in range(3):
        resp[i::3].write_parquet(d / "responses" / f"p{i}.parquet")
        sent[i::3].write_parquet(d / "sentences" / f"p{i}.parquet")
    other = analyze(d, bootstrap=64, seed=9).metrics_json["models"]
    assert diff(outs[0], other, rel=1e-12) == []


def test_pairing_self_difference_is_exactly_zero_and_planted_difference_is_found(tmp_path):
    resp, sent = make_scored_run(n_models=1, n_tasks=3, n_items=300, n_markers=8, seed=2)
    rng = np.random.default_rng(4)
    noisy = sent.with_columns(
        pl.lit("model-noisy").alias("model"),
        (pl.col("confidence") + pl.Series(rng.normal(0, 0.25, sent.height)))
        .clip(0, 1)
        .alias("confidence"),
    )
    twin = sent.with_columns(pl.lit("model-twin").alias("model"))
    resp_all = pl.concat([resp, resp.with_columns(pl.lit("model-noisy").alias("model")),
                          resp.with_columns(pl.lit("model-twin").alias("model"))])  # fmt: skip
    run = _write(tmp_path / "run", resp_all, pl.concat([sent, noisy, twin]))
    res = analyze(run, bootstrap=300, seed=1, compare=True, threshold=5)
    cmp = res.comparisons
    twin_rows = cmp.filter((pl.col("model_b") == "model-twin") & (pl.col("model_a") == "model-0"))
    boot = twin_rows.filter(pl.col("test") == "paired bootstrap")
    assert boot.height > 10
    assert (
        (boot["ci_lo"] == 0).all() and (boot["ci_hi"] == 0).all() and (boot["p_value"] == 1).all()
    )
    mc = twin_rows.filter(pl.col("test") == "McNemar exact")
    assert (mc["p_value"] == 1).all()
    planted = cmp.filter(
        (pl.col("model_a") == "model-0")
        & (pl.col("model_b") == "model-noisy")
        & (pl.col("metric") == "I-AvgMAE")
    ).row(0, named=True)
    # Every replicate difference is below 0: the smallest p-value B = 300 replicates can give.
    assert planted["diff"] < 0 and planted["ci_hi"] < 0
    assert planted["p_value"] == pytest.approx(2 / 301)
    assert set(cmp.columns) >= {"p_holm", "p_bh", "ci_lo", "ci_hi", "n_shared_items"}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"bootstrap": -1}, "bootstrap"),
        ({"bootstrap": 10, "level": 1.5}, "level"),
        ({"bootstrap": 10, "ci_method": "studentized"}, "method"),
        ({"bootstrap": 10, "scheme": "wild"}, "scheme"),
        ({"compare": True}, "--compare"),
    ],
)
def test_bad_options(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        analyze(EXAMPLE, **kwargs)


def test_compare_without_shared_items(tmp_path):
    resp, sent = make_scored_run(n_models=2, n_tasks=2, n_items=40, n_markers=5, seed=1)
    other = pl.col("model") == "model-1"
    resp = resp.with_columns(
        pl.when(other).then(pl.col("item_id") + "-b").otherwise(pl.col("item_id")).alias("item_id")
    )
    sent = sent.with_columns(
        pl.when(other).then(pl.col("item_id") + "-b").otherwise(pl.col("item_id")).alias("item_id")
    )
    with pytest.raises(
        UserError, match="model-0/default with model-1/default: they share no items"
    ):
        analyze(_write(tmp_path / "r", resp, sent), bootstrap=10, compare=True, threshold=2)


def test_item_ids_repeated_across_splits_are_distinct_items(tmp_path):
    # The same ids in train and test (as when a loader numbers each split from 0): in parity mode
    # both splits are resampled together, so the split must be part of an item's key.
    resp, sent = make_scored_run(
        n_models=1, n_tasks=2, n_items=60, n_markers=5, seed=3, tasks_without_test=2
    )
    test = pl.col("split").replace_strict({"train": "test"}, return_dtype=pl.String)
    resp = pl.concat([resp, resp.with_columns(test)])
    sent = pl.concat([sent, sent.with_columns(test)])
    res = analyze(_write(tmp_path / "r", resp, sent), mode="parity", bootstrap=20, threshold=2)
    assert res.metrics_json["models"]["model-0"]["default"]["metrics"]["I-AvgMAE"]["ci"] is not None


def test_each_replicate_estimates_its_own_mic_noise(small):
    # The CVs subtract each MIC's sampling variance, itself estimated from the sample: every
    # replicate re-estimates it from its own item weights, Σ w_i e_i² / (Σ w_i n_i)² with
    # e_i = s_i - MIC n_i (s_i, n_i: an item's sum and count of the cell's confidences).
    enc = encode(small, mode="heldout")
    point, valid = compute_tables(enc, threshold=3, parity=False)
    keys, strata = response_keys(small.responses)
    g, n_boot, seed = 0, 4, 3
    reps = group_replicates(enc, g, keys, strata, seed=seed, n_boot=n_boot, scheme="poisson",
                            parity=False, valid=valid, point=point)  # fmt: skip
    ref = np.flatnonzero((enc.r_g == g) & enc.r_ref)
    w_ref = item_weights_reference(keys[ref], strata[ref], seed, range(n_boot), "poisson")
    rows = np.isin(enc.s_r, ref) & ~np.isnan(enc.s_conf)
    T, M = enc.n_tasks, enc.n_markers
    s = np.zeros((len(enc.r_g), T, M))
    n = np.zeros((len(enc.r_g), T, M))
    np.add.at(s, (enc.s_r[rows], enc.r_t[enc.s_r[rows]], enc.s_m[rows]), enc.s_conf[rows])
    np.add.at(n, (enc.s_r[rows], enc.r_t[enc.s_r[rows]], enc.s_m[rows]), 1.0)
    s, n = s[ref], n[ref]
    with np.errstate(invalid="ignore", divide="ignore"):
        mic = s.sum(0) / n.sum(0)
        e2 = (s - mic * n) ** 2
        want_point = e2.sum(0) / n.sum(0) ** 2
        want = np.einsum("bi,itm->btm", w_ref, e2) / np.einsum("bi,itm->btm", w_ref, n) ** 2
    np.testing.assert_allclose(reps.point_mic_noise, want_point, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(reps.mic_noise, want, rtol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(reps.mic_items, (n > 0).sum(0))
    cells = np.isfinite(want_point) & (want_point > 0)
    assert cells.sum() > 5
    # Not one array for all replicates: the noise term varies as the sample does.
    x = reps.mic_noise[:, cells]
    assert np.all(np.nanmax(x, axis=0) > np.nanmin(x, axis=0))
