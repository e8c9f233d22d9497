"""Hand-worked examples: every number below is derived in the comments, not by running the code.

Two tasks X and Y, markers p ("probably"), s ("surely"), may ("maybe"), nh (<no_hedge>), tau = 2.

Task X (train)                                         f(r) = 1 - sum|d-c| / n_sentences
  x1 correct, 2 sentences: s0 [p]    c .55 d .45       gaps .1 + .1 -> f .9,  c(r) .725
                           s1 [nh]   c .90 d 1.0
  x2 wrong,   1 sentence:  s0 [p, s] c .80 d .80        (multi-marker)  f 1.0, c(r) .80
  x3 correct, 2 sentences: s0 [s]    c 1.0 d .90       s1 missing conf -> f .95, c(r) 1.0
                           s1 [may]  c --  d .50
  x4 wrong,   1 sentence:  s0 [p]    c .75 d .55       f .8,  c(r) .75
  x5 correct, 1 sentence:  s0 [nh]   c .65 d .65       f 1.0, c(r) .65
Task Y (train)
  y1 correct: [p]  c .50 d .50  -> f 1.0, c .50
  y2 correct: [s]  c .72 d .92  -> f .8,  c .72
  y3 wrong, 2 sentences: [p] c .32 d .62 ; [s] c .90 d .90 -> f 1-.3/2 = .85, c .61
  y4 wrong:   [nh] c 0.0 d 1.0  -> f 0,   c 0      (parity drops it from cMFG)
  y5 correct: [nh] c 1.0 d 1.0  -> f 1.0, c 1.0    (parity: outside every bin)
  y6 correct: [may] c .20 d .30 -> f .9,  c .20

Rows per marker (count includes missing confidences):
  X: p {.55,.8,.75} MIC .7 ; s {.8,1.0} MIC .9 ; nh {.9,.65} MIC .775 ; may {--} count 1: invalid
  Y: p {.5,.32} MIC .41   ; s {.72,.9} MIC .81 ; nh {0,1} MIC .5      ; may {.2} count 1: invalid
Shared (valid in both): p, s, nh.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from metrics import analyze

NH = "<no_hedge>"

RESPONSES = [
    # task, item, correct, n_sentences
    ("X", "x1", True, 2), ("X", "x2", False, 1), ("X", "x3", True, 2), ("X", "x4", False, 1),
    ("X", "x5", True, 1),
    ("Y", "y1", True, 1), ("Y", "y2", True, 1), ("Y", "y3", False, 2), ("Y", "y4", False, 1),
    ("Y", "y5", True, 1), ("Y", "y6", True, 1),
]  # fmt: skip
SENTENCES = [
    # task, item, sentence_idx, marker, confidence, decisiveness
    ("X", "x1", 0, "p", 0.55, 0.45), ("X", "x1", 1, NH, 0.9, 1.0),
    ("X", "x2", 0, "p", 0.8, 0.8), ("X", "x2", 0, "s", 0.8, 0.8),
    ("X", "x3", 0, "s", 1.0, 0.9), ("X", "x3", 1, "may", None, 0.5),
    ("X", "x4", 0, "p", 0.75, 0.55), ("X", "x5", 0, NH, 0.65, 0.65),
    ("Y", "y1", 0, "p", 0.5, 0.5), ("Y", "y2", 0, "s", 0.72, 0.92),
    ("Y", "y3", 0, "p", 0.32, 0.62), ("Y", "y3", 1, "s", 0.9, 0.9),
    ("Y", "y4", 0, NH, 0.0, 1.0), ("Y", "y5", 0, NH, 1.0, 1.0), ("Y", "y6", 0, "may", 0.2, 0.3),
]  # fmt: skip
# Held-out test rows (one sentence each, correct, no decisiveness).
TEST_SENTENCES = [
    ("X", "xt1", "p", 0.5), ("X", "xt2", NH, 0.9), ("X", "xt3", "s", 0.6),
    ("Y", "yt1", "p", 0.61), ("Y", "yt2", NH, 0.3),
]  # fmt: skip


def write_run(path, with_test: bool = False):
    resp = [
        {"model": "m", "task": t, "split": "train", "item_id": i, "correct": c, "n_sentences": n}
        for t, i, c, n in RESPONSES
    ]
    sent = [
        {"model": "m", "task": t, "split": "train", "item_id": i, "sentence_idx": k, "marker": mk,
         "raw_marker": mk, "confidence": c, "decisiveness": d}
        for t, i, k, mk, c, d in SENTENCES
    ]  # fmt: skip
    if with_test:
        for t, i, mk, c in TEST_SENTENCES:
            resp.append(
                {
                    "model": "m",
                    "task": t,
                    "split": "test",
                    "item_id": i,
                    "correct": True,
                    "n_sentences": 1,
                }
            )
            sent.append({"model": "m", "task": t, "split": "test", "item_id": i, "sentence_idx": 0,
                         "marker": mk, "raw_marker": mk, "confidence": c, "decisiveness": None})  # fmt: skip
    path.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(resp).write_parquet(path / "responses.parquet")
    pl.DataFrame(
        sent, schema_overrides={"decisiveness": pl.Float64, "confidence": pl.Float64}
    ).write_parquet(path / "sentences.parquet")
    return path


def metric(res, name):
    return res.metrics_json["models"]["m"]["default"]["metrics"][name]


def mic_row(res, task, marker):
    rows = res.mic_table.filter((pl.col("task") == task) & (pl.col("marker") == marker)).to_dicts()
    assert len(rows) == 1
    return rows[0]


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("hand") / "run")
    return analyze(run, mode="parity", threshold=2, out=tmp_path_factory.mktemp("out"))


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("hand") / "run", with_test=True)
    return analyze(run, mode="heldout", threshold=2)


def test_mic_table_counts_validity_and_variants(parity):
    p = mic_row(parity, "X", "p")
    assert p["count"] == 3 and p["valid"] and p["shared"]
    assert p["mic"] == pytest.approx(0.7)
    # Correct responses carrying p in X: x1 (.55). Wrong: x2 (.8), x4 (.75) -> .775.
    assert p["mic_c"] == pytest.approx(0.55)
    assert p["mic_i"] == pytest.approx(0.775)
    # f(x1)=.9, f(x2)=1, f(x4)=.8 are all >= .75: MIC-F = MIC, MIC-UF undefined.
    assert p["mic_f"] == pytest.approx(0.7)
    assert p["mic_uf"] is None
    # MF = mean |d - c| over p's rows: |.45-.55|, |.8-.8|, |.55-.75| -> (.1 + 0 + .2)/3 = .1
    assert p["mf"] == pytest.approx(0.1)
    # The multi-marker sentence of x2 counts for both p and s.
    assert mic_row(parity, "X", "s")["mic"] == pytest.approx(0.9)
    assert mic_row(parity, "X", "s")["count"] == 2
    # may in X: one row whose confidence is missing: counted, below tau, MIC undefined.
    may = mic_row(parity, "X", "may")
    assert may["count"] == 1 and may["n_present"] == 0 and not may["valid"] and may["mic"] is None
    assert mic_row(parity, "Y", "may")["mic"] == pytest.approx(0.2)
    assert not mic_row(parity, "Y", "may")["shared"]
    assert mic_row(parity, "X", NH)["mic"] == pytest.approx(0.775)
    assert mic_row(parity, "Y", NH)["mic"] == pytest.approx(0.5)
    assert mic_row(parity, "Y", "p")["mic"] == pytest.approx(0.41)
    assert mic_row(parity, "Y", "s")["mic"] == pytest.approx(0.81)
    assert sorted(parity.metrics_json["models"]["m"]["default"]["shared_markers"]) == sorted(
        [NH, "p", "s"]
    )


def test_task_accuracy_and_cmfg_parity_quirks(parity):
    tasks = parity.metrics_json["models"]["m"]["default"]["tasks"]
    assert tasks["X"]["accuracy"] == pytest.approx(3 / 5)
    assert tasks["Y"]["accuracy"] == pytest.approx(4 / 6)
    # Parity X: bins (digitize) 6:{x5 1.0} 7:{x1 .9, x4 .8} 8:{x2 1.0 -- c=.8 sits on the edge,
    # ties go up}; x3 has c = 1.0 and falls outside. Empty bins count 0: (1 + .85 + 1)/10.
    assert tasks["X"]["cmfg"] == pytest.approx(0.285)
    assert tasks["X"]["mfg"] == pytest.approx(4.65 / 5)
    # Parity Y: y4 (f=0, c=0) dropped, y5 (c=1) outside; bins 2:.9 5:1.0 6:.85 7:.8 -> 3.55/10.
    assert tasks["Y"]["cmfg"] == pytest.approx(0.355)
    # MFG over the responses left after the f=0/c=0 drop: (1+.8+.85+1+.9)/5.
    assert tasks["Y"]["mfg"] == pytest.approx(0.91)


def test_cmfg_default_mode(heldout):
    tasks = heldout.metrics_json["models"]["m"]["default"]["tasks"]
    # Default X: c = 1.0 joins the last bin; mean over non-empty bins 6:1.0 7:.85 8:1.0 9:.95.
    assert tasks["X"]["cmfg"] == pytest.approx(3.8 / 4)
    assert tasks["X"]["mfg"] == pytest.approx(0.93)
    # Default Y keeps y4 (f=0, c=0 -> bin 0) and y5 (bin 9); one response per bin:
    # (1 + .8 + .85 + 0 + 1 + .9)/6.
    assert tasks["Y"]["cmfg"] == pytest.approx(4.55 / 6)
    assert tasks["Y"]["mfg"] == pytest.approx(4.55 / 6)
    # Test responses (no decisiveness) do not enter reference accuracy.
    assert tasks["X"]["n_items"] == 5 and tasks["X"]["n_eval_items"] == 3


def test_mae_parity(parity):
    # Parity scores all rows, <no_hedge> left out of MAE.
    # (X,X): p rows .55 .8 .75 vs .7 -> .15 .1 .05 ; s rows .8 1.0 vs .9 -> .1 .1 ; mean .1
    # (Y,Y): p .5 .32 vs .41 -> .09 .09 ; s .72 .9 vs .81 -> .09 .09 ; mean .09
    # (X->Y): p .5 .32 vs .7 -> .2 .38 ; s .72 .9 vs .9 -> .18 0 ; may invalid in X ; mean .19
    # (Y->X): p .55 .8 .75 vs .41 -> .14 .39 .34 ; s .8 1.0 vs .81 -> .01 .19 ; mean 1.07/5
    i1 = metric(parity, "I-AvgMAE (Mode 1)")
    assert i1["value"] == pytest.approx((0.1 + 0.09) / 2)
    assert i1["n"] == 5 + 4 and i1["cells"] == 2
    assert metric(parity, "I-AvgMAE")["value"] == i1["value"]
    assert metric(parity, "C-AvgMAE (Mode 1)")["value"] == pytest.approx((0.19 + 0.214) / 2)
    # Pooled std over the diagonal: cell X errors (.15,.1,.05,.1,.1) var = .005/4 = .00125;
    # cell Y errors all .09: var 0 -> sqrt((4*.00125 + 3*0) / (4 + 3)).
    assert i1["pooled_std"] == pytest.approx(math.sqrt(4 * 0.00125 / 7))
    # Mode 2, per-response means. (X,X): x1 .15 | x2 (.1+.1)/2 | x3 .1 | x4 .05 -> .1 ;
    # (Y,Y): y1 .09 y2 .09 y3 .09 -> .09.
    assert metric(parity, "I-AvgMAE (Mode 2)")["value"] == pytest.approx(0.095)
    # Mode 3, per-marker means. (X,X): p .1 s .1 ; (Y,Y): .09 .09 ; (X->Y): p .29 s .09 -> .19 ;
    # (Y->X): p (.14+.39+.34)/3 = .29, s .1 -> .195.
    assert metric(parity, "I-AvgMAE (Mode 3)")["value"] == pytest.approx(0.095)
    assert metric(parity, "C-AvgMAE (Mode 3)")["value"] == pytest.approx((0.19 + 0.195) / 2)
    # Mode 4, |MIC(m,A) - mean conf of m in B|. Diagonal: 0. (X->Y): p |.7-.41|, s |.9-.81| -> .19;
    # (Y->X): p |.41-.7|, s |.81-.9| -> .19.
    assert metric(parity, "I-AvgMAE (Mode 4)")["value"] == pytest.approx(0.0, abs=1e-12)
    assert metric(parity, "C-AvgMAE (Mode 4)")["value"] == pytest.approx(0.19)


def test_mae_heldout_includes_no_hedge(heldout):
    # MICs from train rows (as above); test rows scored, <no_hedge> included.
    # (X,X): xt1 p .5 vs .7 -> .2 ; xt2 nh .9 vs .775 -> .125 ; xt3 s .6 vs .9 -> .3 ; mean .625/3
    # (Y,Y): yt1 p .61 vs .41 -> .2 ; yt2 nh .3 vs .5 -> .2 ; mean .2
    # (X->Y): .61 vs .7 -> .09 ; .3 vs .775 -> .475 ; mean .2825
    # (Y->X): .5 vs .41 -> .09 ; .9 vs .5 -> .4 ; .6 vs .81 -> .21 ; mean .7/3
    assert metric(heldout, "I-AvgMAE")["value"] == pytest.approx((0.625 / 3 + 0.2) / 2)
    assert metric(heldout, "C-AvgMAE")["value"] == pytest.approx((0.2825 + 0.7 / 3) / 2)
    assert metric(heldout, "I-AvgMAE")["n"] == 5


def test_mrc_mac_mcc(parity, heldout):
    # Shared MICs X (p .7, s .9, nh .775) and Y (.41, .81, .5) have the same ranks: Spearman 1,
    # clipped to .9999 by the Fisher mean; with n = 3 the p-value is 0 -> significant.
    assert metric(parity, "MRC")["value"] == pytest.approx(0.9999)
    assert metric(parity, "MRC-S-sig")["value"] == pytest.approx(0.9999)
    assert metric(parity, "MRC-S-sig")["n_sig"] == 1
    # Accuracy rises X .6 -> Y .667 while every shared MIC falls: each marker's correlation is
    # -1 over 2 tasks; p-values need 3 tasks, so no marker is significant.
    assert metric(parity, "MAC")["value"] == pytest.approx(-0.9999)
    assert metric(parity, "MAC-P-all")["value"] == pytest.approx(-0.9999)
    assert metric(parity, "MAC")["n"] == 3
    # Parity reports -1 for an empty significant set; the default mode says why it is undefined.
    assert metric(parity, "MAC-S-sig")["value"] == -1.0
    assert metric(heldout, "MAC-S-sig")["value"] is None
    assert "significant" in metric(heldout, "MAC-S-sig")["reason"]
    # cMFG parity .285 -> .355 rises: MCC -1. Default .95 -> .758 falls: MCC +1.
    assert metric(parity, "MCC")["value"] == pytest.approx(-0.9999)
    assert metric(heldout, "MCC")["value"] == pytest.approx(0.9999)


def test_cv_metrics(parity):
    # I-AvgCV: X MICs (.7, .9, .775): mean .791667, sample std .101036 -> CV .127625
    #          Y MICs (.41, .81, .5): mean .573333, sample std .209841 -> CV .366001 ; mean .246813
    x = np.array([0.7, 0.9, 0.775])
    y = np.array([0.41, 0.81, 0.5])
    expect = (x.std(ddof=1) / x.mean() + y.std(ddof=1) / y.mean()) / 2
    assert expect == pytest.approx(0.246813, abs=1e-6)
    assert metric(parity, "I-AvgCV")["value"] == pytest.approx(expect)
    assert metric(parity, "I-AvgCV (shared)")["value"] == pytest.approx(expect)
    # C-AvgCV over shared markers across tasks: p (.7,.41) .369479, s (.9,.81) .074433,
    # nh (.775,.5) .305026 -> .249646
    assert metric(parity, "C-AvgCV")["value"] == pytest.approx(0.249646, abs=1e-6)


def test_ignore_no_hedge_changes_shared_set(tmp_path):
    run = write_run(tmp_path / "run")
    res = analyze(run, mode="parity", threshold=2, ignore_no_hedge=True)
    shared = res.metrics_json["models"]["m"]["default"]["shared_markers"]
    assert shared == ["p", "s"]
    # C-AvgCV over p and s only: (.369479 + .074433)/2
    assert metric(res, "C-AvgCV")["value"] == pytest.approx((0.369479 + 0.074433) / 2, abs=1e-6)
    # MRC needs 2 shared markers: (p .7 < s .9) and (.41 < .81): Spearman 1 again.
    assert metric(res, "MRC")["value"] == pytest.approx(0.9999)


def test_undefined_metrics_carry_reasons(tmp_path):
    # Keep only task X: nothing cross-distribution can be defined.
    run = write_run(tmp_path / "run")
    for name in ("responses", "sentences"):
        df = pl.read_parquet(run / f"{name}.parquet").filter(pl.col("task") == "X")
        df.write_parquet(run / f"{name}.parquet")
    res = analyze(run, mode="parity", threshold=2, out=tmp_path / "out")
    for name in ("C-AvgMAE", "MRC", "MAC", "MCC", "C-AvgCV"):
        entry = metric(res, name)
        assert entry["value"] is None and "2 tasks" in entry["reason"], (name, entry)
    assert metric(res, "I-AvgMAE")["value"] == pytest.approx(0.1)
    text = (tmp_path / "out" / "metrics.json").read_text()
    assert "NaN" not in text
    doc = json.loads(text)
    assert doc["version"] == 1 and doc["settings"]["mode"] == "parity"


def test_heldout_auto_split_is_recorded_and_stable(tmp_path):
    run = write_run(tmp_path / "run")  # train only: both tasks get a seeded 50/50 item split
    a = analyze(run, threshold=1, seed=3)
    b = analyze(run, threshold=1, seed=3)
    assert a.metrics_json["settings"]["auto_split"] == {"m/default": ["X", "Y"]}
    assert a.metrics_json == b.metrics_json
    tasks = a.metrics_json["models"]["m"]["default"]["tasks"]
    # 5 items -> 3 reference + 2 evaluation; 6 items -> 3 + 3.
    assert (tasks["X"]["n_items"], tasks["X"]["n_eval_items"]) == (3, 2)
    assert (tasks["Y"]["n_items"], tasks["Y"]["n_eval_items"]) == (3, 3)
