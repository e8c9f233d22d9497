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

from metrics import kernels as akernels
from metrics.encode import Encoded
from metrics.seven import Metric, _quiet, correlation, cv_metrics

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


@dataclass(frozen=True)
class MarconSums:
    """Weighted sums behind MarCon's metrics for one group; leading axis = point, replicates.

    n_ref, k_ref: [R, T, M] reference (response, marker) pairs and how many were correct;
    n_resp, k_resp: [R, T] reference responses and correct ones; n_ev, k_ev: [R, T, M] the same
    pairs on the evaluation side. Every metric is a function of these, so the bootstrap only
    needs them per replicate.
    """

    n_ref: np.ndarray
    k_ref: np.ndarray
    n_resp: np.ndarray
    k_resp: np.ndarray
    n_ev: np.ndarray
    k_ev: np.ndarray

    def join(self, other: MarconSums) -> MarconSums:
        return MarconSums(
            *(
                np.concatenate([getattr(self, f), getattr(other, f)])
                for f in self.__dataclass_fields__
            )
        )


def _rows(enc: Encoded, mt: MarconTables, g: int, role: np.ndarray):
    """Pairs and responses of group g in a role (reference or evaluation responses)."""
    resp = np.flatnonzero((enc.r_g == g) & role)
    local = np.full(len(enc.r_g), -1, dtype=np.int64)
    local[resp] = np.arange(len(resp))
    sel = local[mt.pair_r] >= 0
    return resp, local[mt.pair_r[sel]], mt.pair_r[sel], mt.pair_m[sel]


def marcon_sums(enc: Encoded, mt: MarconTables, g: int) -> MarconSums:
    """The point estimate's sums (unit weights), shape [1, ...]."""
    T, M = enc.n_tasks, enc.n_markers

    def pairs(role):
        _, _, pr, pm = _rows(enc, mt, g, role)
        cell = enc.r_t[pr].astype(np.int64) * M + pm
        n = np.bincount(cell, minlength=T * M).astype(np.float64).reshape(1, T, M)
        k = np.bincount(cell, weights=enc.r_correct[pr], minlength=T * M).reshape(1, T, M)
        return n, k

    n_ref, k_ref = pairs(enc.r_ref)
    n_ev, k_ev = pairs(enc.r_eval)
    ref = np.flatnonzero((enc.r_g == g) & enc.r_ref)
    n_resp = np.bincount(enc.r_t[ref], minlength=T).astype(np.float64)[None]
    k_resp = np.bincount(enc.r_t[ref], weights=enc.r_correct[ref], minlength=T)[None]
    return MarconSums(n_ref, k_ref, n_resp, k_resp, n_ev, k_ev)


def marcon_replicate_sums(
    enc: Encoded, mt: MarconTables, g: int, keys, strata, *, seed, n_boot, scheme, parity,
    group_sums,
) -> MarconSums:  # fmt: skip
    """The sums on every bootstrap replicate ([B, ...]), resampling responses with the same
    counter RNG as the seven metrics (evaluation items on their own stream in held-out mode)."""
    from metrics.resample import EVAL_DOMAIN

    T, M = enc.n_tasks, enc.n_markers
    out = {}
    for side, role in (("ref", enc.r_ref), ("ev", enc.r_eval)):
        resp, item, pr, pm = _rows(enc, mt, g, role)
        group = enc.r_t[pr].astype(np.int64) * M + pm
        value = enc.r_correct[pr].astype(np.float64)
        if side == "ref":  # one pseudo-row per response for accuracy
            item = np.concatenate([item, np.arange(len(resp))])
            group = np.concatenate([group, T * M + enc.r_t[resp].astype(np.int64)])
            value = np.concatenate([value, enc.r_correct[resp].astype(np.float64)])
        ptr, order = akernels.by_response(item, len(resp))
        values = np.stack([np.ones(len(order)), value[order]], axis=1)
        st = strata[resp] if parity or side == "ref" else strata[resp] ^ EVAL_DOMAIN
        sums = group_sums(
            ptr, keys[resp], st, group[order], values, seed, n_boot, scheme, T * M + T
        )
        out[side] = sums
    ref, ev = out["ref"], out["ev"]
    return MarconSums(
        ref[:, : T * M, 0].reshape(n_boot, T, M),
        ref[:, : T * M, 1].reshape(n_boot, T, M),
        ref[:, T * M :, 0],
        ref[:, T * M :, 1],
        ev[:, : T * M, 0].reshape(n_boot, T, M),
        ev[:, : T * M, 1].reshape(n_boot, T, M),
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _ece_cells(sums: MarconSums, usable: np.ndarray) -> dict[str, np.ndarray]:
    """ECE of every (A, B) cell [R, T, T]: markers-as-bins and 10-bin, plug-in and debiased.

    Every evaluation pair of marker m scored against reference task A has c = conf_A(m), so a
    bin's sums are sums over the markers that fall in it.
    """
    conf = _ratio(sums.k_ref, sums.n_ref)  # [R, T, M]
    R, T, M = conf.shape
    out = {
        k: np.full((R, T, T), np.nan)
        for k in ("marker", "marker_debiased", "bins", "bins_debiased")
    }
    for a in range(T):
        for b in range(T):
            use = usable[a][None, :] & (sums.n_ev[:, b] > 0) & np.isfinite(conf[:, a])  # [R, M]
            n = np.where(use, sums.n_ev[:, b], 0.0)
            k = np.where(use, sums.k_ev[:, b], 0.0)
            c = np.where(use, conf[:, a], 0.0)
            total = n.sum(axis=1)
            ok = total > 0
            bins = np.minimum(np.floor(c * N_BINS + 1e-9), N_BINS - 1).astype(np.int64)
            onehot = bins[:, :, None] == np.arange(N_BINS)  # [R, M, 10]
            for key, (nb, kb, cb) in (
                ("marker", (n, k, n * c)),
                ("bins", tuple(np.einsum("rm,rmb->rb", x, onehot) for x in (n, k, n * c))),
            ):
                has = nb > 0
                ybar = _ratio(kb, nb)
                cbar = _ratio(cb, nb)
                w = np.where(has, nb, 0.0) / np.where(ok, total, 1.0)[:, None]
                gap = np.where(has, np.abs(ybar - cbar), 0.0)
                out[key][:, a, b] = np.where(ok, np.sum(w * gap, axis=1), np.nan)
                corr = np.where(has & (nb >= 2), ybar * (1 - ybar) / np.maximum(nb - 1, 1), 0.0)
                sq = np.where(has, (ybar - cbar) ** 2 - corr, 0.0)
                out[f"{key}_debiased"][:, a, b] = np.where(
                    ok, np.sqrt(np.maximum(np.sum(w * sq, axis=1), 0.0)), np.nan
                )
    return out


def marcon_metrics(
    enc: Encoded, mt: MarconTables, g: int, tasks: np.ndarray, sums: MarconSums | None = None
) -> dict[str, Metric]:
    """MarCon's metrics for one (model, prompt).

    Args:
        sums: point and replicate sums (`marcon_sums(...).join(marcon_replicate_sums(...))`);
            None: the point estimate only.
    """
    if sums is None:
        sums = marcon_sums(enc, mt, g)
    sub = MarconSums(  # the group's tasks only
        *(
            x[:, tasks]
            for x in (sums.n_ref, sums.k_ref, sums.n_resp, sums.k_resp, sums.n_ev, sums.k_ev)
        )
    )
    R = sub.n_ref.shape[0]
    out: dict[str, Metric] = {}
    usable = mt.valid[g][tasks] & ~np.isnan(mt.conf[g][tasks])  # [T, M], fixed at the point
    cells = _ece_cells(sub, usable)
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
            ok = sel & np.isfinite(cells[key][0])
            if prefix == "C" and T < 2:
                out[name] = Metric.undefined("needs at least 2 tasks")
            elif not ok.any():
                out[name] = Metric.undefined(
                    "no evaluation response carries a marker valid in its reference task"
                )
            else:
                vals = np.where(ok, cells[key], np.nan).reshape(R, -1)
                with np.errstate(invalid="ignore"), _quiet():
                    out[name] = Metric(np.nanmean(vals, axis=1), n=int(ok.sum()))
    out["NumECE"] = Metric.undefined(
        "needs a verbalized numeric confidence per response, which scored runs do not carry"
    )
    conf = np.where(usable, _ratio(sub.k_ref, sub.n_ref), np.nan)  # [R, T, M]
    shared = usable.all(axis=0) if T else np.zeros(enc.n_markers, dtype=bool)
    acc = _ratio(sub.k_resp, sub.n_resp)  # [R, T]
    S = int(shared.sum())
    if T < 2:
        out["MAC"] = out["MRC"] = Metric.undefined("needs at least 2 tasks")
    else:
        if S < 1:
            out["MAC"] = Metric.undefined("no shared marker (valid in every task)")
        else:
            x = np.moveaxis(conf[:, :, shared], 1, 2)  # [R, S, T]
            r = correlation(x, np.broadcast_to(acc[:, None, :], x.shape), "pearson")
            ok = np.isfinite(r[0])
            out["MAC"] = (
                Metric(_mean_where(r, ok), n=int(ok.sum()))
                if ok.any()
                else Metric.undefined("every shared marker has a constant confidence across tasks")
            )
        if S < 2:
            out["MRC"] = Metric.undefined(f"needs at least 2 shared markers (found {S})")
        else:
            i, j = np.triu_indices(T, k=1)
            cs = conf[:, :, shared]
            r = correlation(cs[:, i], cs[:, j], "spearman")
            ok = np.isfinite(r[0])
            out["MRC"] = (
                Metric(_mean_where(r, ok), n=int(ok.sum()))
                if ok.any()
                else Metric.undefined("every task pair has a constant marker-confidence column")
            )
    out.update(cv_metrics(conf, usable, shared))
    return out


def _mean_where(r: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Mean over the entries finite at the point estimate, per replicate (NaN-skipping)."""
    with _quiet():
        return np.nanmean(np.where(ok, r, np.nan), axis=-1)
