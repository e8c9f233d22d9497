"""Weighted summary tables of an encoded run: MIC tensors, task accuracy and cMFG, MAE cells.

Every quantity is a ratio of weighted sums over responses (weights w, one per response: all 1 for
the point estimate, a bootstrap replicate's draws otherwise), so the same code serves both. Shapes:
G groups (model, prompt), T tasks, M markers. MAE cells are [G, A, B]: MICs of reference task A
scoring the evaluation rows of task B.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numba as nb
import numpy as np

from metrics import kernels
from metrics.encode import FAITHFUL_CUTOFF, Encoded

MAE_MODES = (1, 2, 3, 4)
N_BINS = 10


@dataclass(frozen=True)
class Tables:
    """Summary tables for one weight vector (see module docstring for shapes)."""

    count: np.ndarray  # [G,T,M] rows of the marker (confidence present or not)
    n_present: np.ndarray  # [G,T,M] rows with confidence present
    mic: np.ndarray  # [G,T,M] NaN where undefined
    variants: dict[str, np.ndarray]  # mic_c, mic_i, mic_f, mic_uf, mf -> [G,T,M]
    accuracy: np.ndarray  # [G,T] over reference responses
    n_items: np.ndarray  # [G,T] reference responses
    cmfg: np.ndarray  # [G,T]
    mfg: np.ndarray  # [G,T]
    mae: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # mode -> (mean, std, n) each [G,A,B]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean_std(s0: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof 1, frequency weights) from Σw, Σwx, Σwx²."""
    mean = _ratio(s1, s0)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s1 * mean) / (s0 - 1)
    var = np.where(s0 > 1, np.maximum(var, 0.0), np.nan)
    return mean, np.sqrt(var)


def compute_tables(
    enc: Encoded,
    weights: np.ndarray | None = None,
    *,
    threshold: int = 10,
    parity: bool = False,
    valid: np.ndarray | None = None,
    reference: bool = False,
) -> tuple[Tables, np.ndarray]:
    """Compute the summary tables.

    Args:
        enc: the encoded run.
        weights: one weight per response (None: all 1).
        threshold: marker count threshold tau (a marker is valid in a task with >= tau rows).
        parity: reproduce the seed's conventions (cMFG quirks, `<no_hedge>` left out of MAE).
        valid: [G,T,M] validity to use instead of the count rule (a bootstrap keeps the
            point estimate's marker sets fixed).
        reference: use the plain numpy implementation (np.bincount) instead of the numba
            kernels; the tests compare the two.

    Returns:
        (tables, valid): the tables and the [G,T,M] validity mask they used.
    """
    G, T, M = enc.n_groups, enc.n_tasks, enc.n_markers
    R = len(enc.r_g)
    w = np.ones(R) if weights is None else np.asarray(weights, dtype=np.float64)

    if reference:
        count, n_present, mic, variants, unweighted = _mic_numpy(enc, w)
    else:
        k = kernels.mic_sums(
            enc.s_r, enc.s_m, enc.s_conf, enc.s_dec, enc.r_g, enc.r_t, enc.r_ref,
            enc.r_correct, enc.r_f, w, G, T, M, FAITHFUL_CUTOFF,
        )  # fmt: skip
        count, n_present = k[kernels.COUNT], k[kernels.N_PRESENT]
        mic = _ratio(k[kernels.S_CONF], n_present)
        variants = {
            "mic_c": _ratio(k[kernels.S_C], k[kernels.N_C]),
            "mic_i": _ratio(k[kernels.S_I], k[kernels.N_I]),
            "mic_f": _ratio(k[kernels.S_F], k[kernels.N_F]),
            "mic_uf": _ratio(k[kernels.S_UF], k[kernels.N_UF]),
            "mf": _ratio(k[kernels.S_MF], k[kernels.N_MF]),
        }
        unweighted = count if weights is None else None
    if valid is None:
        if unweighted is None:
            unweighted = kernels.mic_sums(
                enc.s_r, enc.s_m, enc.s_conf, enc.s_dec, enc.r_g, enc.r_t, enc.r_ref,
                enc.r_correct, enc.r_f, np.ones(R), G, T, M, FAITHFUL_CUTOFF,
            )[kernels.COUNT]  # fmt: skip
        valid = unweighted >= threshold

    # ---- per task: accuracy, cMFG, MFG over reference responses -------------------------------
    gt = enc.r_g.astype(np.int64) * T + enc.r_t
    ref = enc.r_ref
    wt = np.bincount(gt[ref], weights=w[ref], minlength=G * T)
    accuracy = _ratio(np.bincount(gt[ref], weights=(w * enc.r_correct)[ref], minlength=G * T), wt)
    n_items = np.bincount(gt[ref], minlength=G * T)
    cmfg, mfg = _cmfg(enc, w, gt, G * T, parity, compiled=not reference)

    mae = (_mae_numpy if reference else _mae_kernel)(enc, w, mic, valid, parity)
    tables = Tables(
        count=count,
        n_present=n_present,
        mic=mic,
        variants=variants,
        accuracy=accuracy.reshape(G, T),
        n_items=n_items.reshape(G, T),
        cmfg=cmfg.reshape(G, T),
        mfg=mfg.reshape(G, T),
        mae=mae,
    )
    return tables, valid


def _mic_numpy(enc: Encoded, w: np.ndarray):
    """MIC sums with np.bincount: the reference of `kernels.mic_sums`."""
    G, T, M = enc.n_groups, enc.n_tasks, enc.n_markers
    ref_row = enc.r_ref[enc.s_r]
    r = enc.s_r[ref_row]
    wr = w[r]
    conf = enc.s_conf[ref_row]
    dec = enc.s_dec[ref_row]
    cell = (enc.r_g[r].astype(np.int64) * T + enc.r_t[r]) * M + enc.s_m[ref_row]
    size = G * T * M

    def sums(mask: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = np.bincount(cell[mask], weights=wr[mask], minlength=size)
        s = np.bincount(cell[mask], weights=wr[mask] * values[mask], minlength=size)
        return n.reshape(G, T, M), s.reshape(G, T, M)

    count = np.bincount(cell, weights=wr, minlength=size).reshape(G, T, M)
    present = ~np.isnan(conf)
    n_present, s_conf = sums(present, conf)
    mic = _ratio(s_conf, n_present)
    correct = enc.r_correct[r]
    f = enc.r_f[r]
    variants = {
        "mic_c": _ratio(*sums(present & correct, conf)[::-1]),
        "mic_i": _ratio(*sums(present & ~correct, conf)[::-1]),
        "mic_f": _ratio(*sums(present & (f >= FAITHFUL_CUTOFF), conf)[::-1]),
        "mic_uf": _ratio(*sums(present & (f < FAITHFUL_CUTOFF), conf)[::-1]),
    }
    both = present & ~np.isnan(dec)
    gap = np.where(both, np.abs(dec - np.where(present, conf, 0.0)), 0.0)
    variants["mf"] = _ratio(*sums(both, gap)[::-1])
    unweighted = np.bincount(cell, minlength=size).reshape(G, T, M)
    return count, n_present, mic, variants, unweighted


@nb.njit(cache=True)
def _cmfg_sums(r_ref, r_f, r_c, w, gt, size, n_bins):
    """The default mode's weighted sums of `_cmfg` in one pass over the responses (no
    response-length temporaries): per (group, task) sum w f and sum w, per (group, task, bin)
    the same. Sums run in response order, as np.bincount's do, so the results are identical."""
    num = np.zeros(size)
    den = np.zeros(size)
    wn = np.zeros(size * n_bins)
    ws = np.zeros(size * n_bins)
    for i in range(len(r_f)):
        f = r_f[i]
        if not r_ref[i] or np.isnan(f):
            continue
        ww = w[i]
        wf = ww * f
        cell = gt[i]
        num[cell] += wf
        den[cell] += ww
        b = min(np.int64(np.floor(r_c[i] * n_bins + 1e-9)), n_bins - 1)
        wn[cell * n_bins + b] += ww
        ws[cell * n_bins + b] += wf
    return num, den, wn, ws


def _cmfg(
    enc: Encoded,
    w: np.ndarray,
    gt: np.ndarray,
    size: int,
    parity: bool,
    compiled: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """cMFG and MFG per (group, task) (docs/method.md §2).

    Bins: edges linspace(0, 1, 11), bin k holds edge_k <= c < edge_k+1 (numpy.digitize).
    Default: ties at an edge go up (to 1e-9, so the floating-point rounding of c cannot move a
    response down a bin), c = 1.0 joins the last bin, only non-empty bins are averaged, MFG = mean f over the
    same responses. Parity (the seed): responses with f = 0 or c = 0 are dropped, c = 1.0 falls
    outside every bin, an empty bin counts as 0 in the mean of 10; MFG = mean f over the responses
    left after the f = 0 / c = 0 drop.

    `compiled` takes the default mode's sums from `_cmfg_sums` (the numpy code below is its
    reference; parity mode always uses it).
    """
    if compiled and not parity:
        num, den, wn, ws = _cmfg_sums(enc.r_ref, enc.r_f, enc.r_c, w, gt, size, N_BINS)
        wn, ws = wn.reshape(size, N_BINS), ws.reshape(size, N_BINS)
        with warnings.catch_warnings():  # a (group, task) without any bin is NaN, on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            bin_mean = _ratio(ws, wn)
            cmfg = np.nanmean(np.where(wn > 0, bin_mean, np.nan), axis=1) if size else np.zeros(0)
        return np.where(den > 0, cmfg, np.nan), _ratio(num, den)
    keep = enc.r_ref & ~np.isnan(enc.r_f)
    if parity:
        keep &= (enc.r_f != 0) & (enc.r_c != 0)
    f, c, ww, idx = enc.r_f[keep], enc.r_c[keep], w[keep], gt[keep]
    mfg = _ratio(
        np.bincount(idx, weights=ww * f, minlength=size),
        np.bincount(idx, weights=ww, minlength=size),
    )
    if parity:
        # Exactly the seed's numpy.digitize on linspace edges (c = 1.0 -> index 10, dropped).
        b = np.digitize(c, np.linspace(0, 1, N_BINS + 1)) - 1
        inside = b < N_BINS
    else:
        # Ties at an edge go up whatever the rounding of c: a mean that is mathematically 0.7 may
        # be stored as 0.69999... and np.digitize would put it one bin lower, depending on the
        # order its terms were summed in.
        b = np.minimum(np.floor(c * N_BINS + 1e-9).astype(np.int64), N_BINS - 1)
        inside = np.ones(len(b), dtype=bool)
    cell = idx[inside] * N_BINS + b[inside]
    wn = np.bincount(cell, weights=ww[inside], minlength=size * N_BINS).reshape(size, N_BINS)
    ws = np.bincount(cell, weights=(ww * f)[inside], minlength=size * N_BINS).reshape(size, N_BINS)
    bin_mean = _ratio(ws, wn)
    has_any = np.bincount(idx, weights=ww, minlength=size) > 0
    if parity:
        cmfg = np.where(wn > 0, bin_mean, 0.0).sum(axis=1) / N_BINS
    else:
        with warnings.catch_warnings():  # a (group, task) without any bin is NaN, on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            cmfg = np.nanmean(np.where(wn > 0, bin_mean, np.nan), axis=1) if size else np.zeros(0)
    cmfg = np.where(has_any, cmfg, np.nan)
    return cmfg, mfg


def _mae_finish(cell, resp, marker, mic):
    """Means, stds and counts of the four MAE modes from the sums of `kernels.mae_sums`."""
    G, T, M = mic.shape
    result: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    mean1, std1 = _mean_std(*cell)
    result[1] = (mean1, std1, cell[0])
    mean2, std2 = _mean_std(*resp)
    result[2] = (mean2, std2, resp[0])
    n_mc = marker[0]
    has_m = n_mc > 0
    per_marker_err = _ratio(marker[1], n_mc)
    mean_conf_b = _ratio(marker[2], n_mc)
    mic_a = np.broadcast_to(mic[:, :, None, :], (G, T, T, M))  # MIC(m, A) along axis 1
    per_marker_gap = np.abs(mic_a - mean_conf_b)
    k = has_m.sum(axis=-1).astype(np.float64)
    for mode, vals in ((3, per_marker_err), (4, per_marker_gap)):
        x = np.where(has_m, vals, 0.0)
        mean, std = _mean_std(k, x.sum(axis=-1), (x * x).sum(axis=-1))
        result[mode] = (mean, std, k)
    return result


def _mae_kernel(enc: Encoded, w: np.ndarray, mic: np.ndarray, valid: np.ndarray, parity: bool):
    """MAE cells through `kernels.mae_sums` (one pass over the evaluation rows)."""
    usable = valid & ~np.isnan(mic)
    skip = enc.no_hedge if parity else -1
    cell, resp, marker = kernels.mae_sums(
        enc.ptr, enc.order, enc.s_m, enc.s_conf, enc.r_g, enc.r_t, enc.r_eval, w, mic, usable, skip
    )
    return _mae_finish(cell, resp, marker, mic)


def _mae_numpy(
    enc: Encoded, w: np.ndarray, mic: np.ndarray, valid: np.ndarray, parity: bool
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """MAE(A, B) in modes 1-4 for every (group, A, B) (docs/method.md §4); numpy reference.

    Rows scored: evaluation rows of B with confidence present whose marker is valid in A with a
    defined MIC (parity mode also leaves `<no_hedge>` out, as the seed loses it in a CSV round-trip).
    """
    G, T, M = mic.shape
    R = len(enc.r_g)
    rows = enc.r_eval[enc.s_r] & ~np.isnan(enc.s_conf)
    if parity and enc.no_hedge >= 0:
        rows &= enc.s_m != enc.no_hedge
    r = enc.s_r[rows]
    m = enc.s_m[rows]
    conf = enc.s_conf[rows]
    g = enc.r_g[r].astype(np.int64)
    b = enc.r_t[r].astype(np.int64)
    wr = w[r]
    usable = valid & ~np.isnan(mic)
    GTT = G * T * T
    out_sums = {mode: np.zeros((3, GTT)) for mode in MAE_MODES}
    marker_cells = np.zeros((4, G * T * T * M))  # Σw, Σw·err, Σw·conf, marker has rows
    resp_sum = np.zeros((3, GTT))
    for a in range(T):
        mic_a = mic[g, a, m]
        ok = usable[g, a, m]
        if not ok.any():
            continue
        err = np.abs(mic_a[ok] - conf[ok])
        cell = (g[ok] * T + a) * T + b[ok]
        ww = wr[ok]
        s = out_sums[1]
        s[0] += np.bincount(cell, weights=ww, minlength=GTT)
        s[1] += np.bincount(cell, weights=ww * err, minlength=GTT)
        s[2] += np.bincount(cell, weights=ww * err * err, minlength=GTT)
        # Mode 2: per-response mean error, then weighted over responses.
        rr = r[ok]
        n_r = np.bincount(rr, minlength=R)
        e_r = np.bincount(rr, weights=err, minlength=R)
        has = n_r > 0
        mean_r = e_r[has] / n_r[has]
        rcell = (enc.r_g[has].astype(np.int64) * T + a) * T + enc.r_t[has]
        resp_sum[0] += np.bincount(rcell, weights=w[has], minlength=GTT)
        resp_sum[1] += np.bincount(rcell, weights=w[has] * mean_r, minlength=GTT)
        resp_sum[2] += np.bincount(rcell, weights=w[has] * mean_r * mean_r, minlength=GTT)
        # Modes 3 and 4: per (cell, marker).
        mcell = cell * M + m[ok]
        size = GTT * M
        marker_cells[0] += np.bincount(mcell, weights=ww, minlength=size)
        marker_cells[1] += np.bincount(mcell, weights=ww * err, minlength=size)
        marker_cells[2] += np.bincount(mcell, weights=ww * conf[ok], minlength=size)
    return _mae_finish(
        out_sums[1].reshape(3, G, T, T),
        resp_sum.reshape(3, G, T, T),
        marker_cells[:3].reshape(3, G, T, T, M),
        mic,
    )
