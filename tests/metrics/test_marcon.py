"""MarCon preset on a hand-worked example (one marker per response, tau = 1).

X train: a+ a- b+ b+  -> conf_X(a) = .5, conf_X(b) = 1 ; accuracy .75
X test:  a+ a+ b-     -> acc(a) = 1 (n 2), acc(b) = 0 (n 1)
Y train: a- a- b+ b-  -> conf_Y(a) = 0,  conf_Y(b) = .5 ; accuracy .25
Y test:  a+ b+

ECE markers as bins (sum of n_m/N |acc - conf|):
  (X,X) 2/3*|1-.5| + 1/3*|0-1| = 2/3      (Y,Y) 1/2*|1-0| + 1/2*|1-.5| = .75
  (X->Y) 1/2*|1-.5| + 1/2*|1-1| = .25      (Y->X) 2/3*|1-0| + 1/3*|0-.5| = 5/6
10 bins: in each cell every marker's confidence lands in its own bin, so the values are equal.
Debiased (X,X): a: n 2, y-bar 1 -> correction 0 ; b: n 1 -> none ; sqrt(2/3*.25 + 1/3*1) = sqrt(.5)
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from metrics import analyze

ROWS = [
    ("X", "train", "a", True), ("X", "train", "a", False), ("X", "train", "b", True), ("X", "train", "b", True),
    ("X", "test", "a", True), ("X", "test", "a", True), ("X", "test", "b", False),
    ("Y", "train", "a", False), ("Y", "train", "a", False), ("Y", "train", "b", True), ("Y", "train", "b", False),
    ("Y", "test", "a", True), ("Y", "test", "b", True),
]  # fmt: skip


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    long = pl.DataFrame(
        [
            {
                "model": "m",
                "task": t,
                "split": s,
                "item_id": f"{t}{i}",
                "correct": c,
                "n_sentences": 1,
                "sentence_idx": 0,
                "marker": mk,
                "confidence": 0.5,
                "decisiveness": 0.5,
            }
            for i, (t, s, mk, c) in enumerate(ROWS)
        ]  # fmt: skip
    )
    path = tmp_path_factory.mktemp("marcon") / "long.csv"
    long.write_csv(path)
    return analyze(path, preset="marcon", threshold=1)


def m(res, name):
    return res.metrics_json["models"]["m"]["default"]["metrics"][name]


def test_ece(res):
    assert m(res, "I-AvgECE")["value"] == pytest.approx((2 / 3 + 0.75) / 2)
    assert m(res, "C-AvgECE")["value"] == pytest.approx((0.25 + 5 / 6) / 2)
    assert m(res, "I-AvgECE (10 bins)")["value"] == pytest.approx((2 / 3 + 0.75) / 2)
    # (Y,Y) debiased: a n1, b n1 -> no correction: sqrt(.5*1 + .5*.25)
    assert m(res, "I-AvgECE (debiased)")["value"] == pytest.approx(
        (math.sqrt(0.5) + math.sqrt(0.625)) / 2
    )
    assert m(res, "NumECE")["value"] is None and "verbalized" in m(res, "NumECE")["reason"]


def test_mac_mrc_cv(res):
    # a: (.5, 0), b: (1, .5) against accuracy (.75, .25): Pearson +1 each, plain mean 1.
    assert m(res, "MAC")["value"] == pytest.approx(1.0)
    assert m(res, "MRC")["value"] == pytest.approx(1.0)
    # CV of (.5, 1) and (0, .5): .471405 and 1.414214; both I (per task) and C (per marker).
    assert m(res, "I-AvgCV")["value"] == pytest.approx((0.471405 + 1.414214) / 2, abs=1e-6)
    assert m(res, "C-AvgCV")["value"] == pytest.approx((1.414214 + 0.471405) / 2, abs=1e-6)
