"""The MarCon preset (`--preset marcon`): the predecessor study's metrics (docs/method.md §4).

A marker's confidence in a task is the accuracy of the responses carrying it (a response counts
once per distinct marker it carries), built on the reference split and scored on the evaluation
split:

- ECE with markers as bins, for reference task A and evaluation task B:
  sum over markers m valid in A of (n_m / N) |acc_B(m) - conf_A(m)|, N = sum of n_m.
- ECE with 10 equal-width bins: each evaluation (response, marker) pair gets c = conf_A(m) and
  y = correct; sum over bins of (n_b / N) |mean y - mean c| (ties at an edge go up).
- The debiased value beside each (Kumar, Liang & Ma 2019, "Verified uncertainty calibration"):
  the plug-in squared error of a bin overstates (E[y] - c)^2 by Var(y-bar) = p(1-p)/n_b; the
  debiased l2 calibration error is sqrt(max(0, sum_b (n_b/N) [(y_b - c_b)^2 - y_b(1-y_b)/(n_b-1)]))
  over bins with n_b >= 2.
- I-AvgECE / C-AvgECE: mean over diagonal / off-diagonal cells. MAC: Pearson between a shared
  marker's confidence across tasks and the tasks' accuracy, plain mean over markers. MRC: Spearman
  between the shared-marker columns of every task pair, plain mean. I-AvgCV / C-AvgCV as for MICs.
- NumECE needs a verbalized numeric confidence per response, which a scored run does not carry:
  reported as undefined with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrics.encode import Encoded
from metrics.seven import Metric, correlate, cv_metrics

N_BINS = 10


@dataclass(frozen=True)
class MarconTables:
    """(response, marker) pairs and marker confidences for every group."""

    pair_r: np.ndarray
    pair_m: np.ndarray
    conf: np.ndarray  # [G, T, M] accuracy of reference responses carrying m
    count: np.ndarray  # [G, T, M] reference responses carrying m
    valid: np.ndarray  # [G, T, M]


def marcon_tables(enc: Encoded, threshold: int) -> MarconTables:
    G, T, M = enc.n_groups, enc.n_tasks, enc.n_markers
    pairs = np.unique(enc.s_r * M + enc.s_m)
    pair_r, pair_m = pairs // M, pairs % M
    ref = enc.r_ref[pair_r]
    cell = (enc.r_g[pair_r].astype(np.int64) * T + enc.r_t[pair_r]) * M + pair_m
    n = np.bincount(cell[ref], minlength=G * T * M).reshape(G, T, M).astype(float)
    k = np.bincount(cell[ref], weights=enc.r_correct[pair_r][ref], minlength=G * T * M).reshape(
        G, T, M
    )
    conf = np.full_like(n, np.nan)
    np.divide(k, n, out=conf, where=n > 0)
    return MarconTables(pair_r, pair_m, conf, n, n >= threshold)


def _ece_cells(enc: Encoded, mt: MarconTables, g: int, tasks: np.ndarray) -> dict[str, np.ndarray]:
    """ECE of every (A, B) cell of one group: markers-as-bins and 10-bin, plug-in and debiased."""
    T = len(tasks)
    out = {
        k: np.full((T, T), np.nan) for k in ("marker", "marker_debiased", "bins", "bins_debiased")
    }
    sel = enc.r_eval[mt.pair_r] & (enc.r_g[mt.pair_r] == g)
    pr, pm = mt.pair_r[sel], mt.pair_m[sel]
    pt = enc.r_t[pr]
    y = enc.r_correct[pr].astype(float)
    for ia, a in enumerate(tasks):
        usable = mt.valid[g, a] & ~np.isnan(mt.conf[g, a])
        for ib, b in enumerate(tasks):
            rows = (pt == b) & usable[pm]
            if not rows.any():
                continue
            c = mt.conf[g, a, pm[rows]]
            yy = y[rows]
            for key, bins in (
                ("marker", pm[rows]),
                ("bins", np.minimum(np.floor(c * N_BINS + 1e-9), N_BINS - 1).astype(np.int64)),
            ):
                nb = np.bincount(bins)
                has = nb > 0
                ybar = np.bincount(bins, weights=yy)[has] / nb[has]
                cbar = np.bincount(bins, weights=c)[has] / nb[has]
                w = nb[has] / nb.sum()
                out[key][ia, ib] = float(np.sum(w * np.abs(ybar - cbar)))
                corr = np.where(nb[has] >= 2, ybar * (1 - ybar) / np.maximum(nb[has] - 1, 1), 0.0)
                out[f"{key}_debiased"][ia, ib] = float(
                    np.sqrt(max(np.sum(w * ((ybar - cbar) ** 2 - corr)), 0.0))
                )
    return out


def marcon_metrics(enc: Encoded, mt: MarconTables, g: int, tasks: np.ndarray) -> dict[str, Metric]:
    """MarCon's metrics for one (model, prompt)."""
    out: dict[str, Metric] = {}
    cells = _ece_cells(enc, mt, g, tasks)
    T = len(tasks)
    diag = np.eye(T, dtype=bool)
    names = {
        "marker": "",
        "marker_debiased": " (debiased)",
        "bins": " (10 bins)",
        "bins_debiased": " (10 bins, debiased)",
    }
    for key, suffix in names.items():
        for prefix, sel in (("I", diag), ("C", ~diag)):
            name = f"{prefix}-AvgECE{suffix}"
            vals = cells[key][sel]
            vals = vals[np.isfinite(vals)]
            if prefix == "C" and T < 2:
                out[name] = Metric.undefined("needs at least 2 tasks")
            elif len(vals) == 0:
                out[name] = Metric.undefined(
                    "no evaluation response carries a marker valid in its reference task"
                )
            else:
                out[name] = Metric(np.array([vals.mean()]), n=len(vals))
    out["NumECE"] = Metric.undefined(
        "needs a verbalized numeric confidence per response, which scored runs do not carry"
    )
    conf = mt.conf[g][tasks]  # [T, M]
    usable = mt.valid[g][tasks] & ~np.isnan(conf)
    shared = usable.all(axis=0) if T else np.zeros(enc.n_markers, dtype=bool)
    acc = np.array(
        [enc.r_correct[enc.r_ref & (enc.r_g == g) & (enc.r_t == t)].mean() for t in tasks],
        dtype=float,
    )
    S = int(shared.sum())
    if T < 2:
        out["MAC"] = out["MRC"] = Metric.undefined("needs at least 2 tasks")
    else:
        if S < 1:
            out["MAC"] = Metric.undefined("no shared marker (valid in every task)")
        else:
            r, _ = correlate(conf[:, shared].T, np.broadcast_to(acc, (S, T)), "pearson")
            ok = np.isfinite(r)
            out["MAC"] = (
                Metric(np.array([r[ok].mean()]), n=int(ok.sum()))
                if ok.any()
                else Metric.undefined("every shared marker has a constant confidence across tasks")
            )
        if S < 2:
            out["MRC"] = Metric.undefined(f"needs at least 2 shared markers (found {S})")
        else:
            i, j = np.triu_indices(T, k=1)
            r, _ = correlate(conf[i][:, shared], conf[j][:, shared], "spearman")
            ok = np.isfinite(r)
            out["MRC"] = (
                Metric(np.array([r[ok].mean()]), n=int(ok.sum()))
                if ok.any()
                else Metric.undefined("every task pair has a constant marker-confidence column")
            )
    out.update(cv_metrics(conf[None], usable, shared))
    return out
