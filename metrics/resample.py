"""The bootstrap of a whole analysis: replicate MIC tensors, task accuracy and cMFG, MAE cells.

Resampling unit: the item (response). Weights come from the counter RNG of `metrics.bootstrap`
keyed by (seed, task, item, replicate), so two models or prompts on the same items get the same
draws and every comparison is paired for free.

Per (model, prompt) group, two passes, neither of which materializes a replicates x rows matrix:

A. reference responses -> per replicate, weighted sums per (task, marker) of present confidences,
   per task of correctness, per (task, cMFG bin) of faithfulness: one call of
   `weighted_group_sums` over a CSR table of rows (sentence rows plus one pseudo-row per response
   and statistic). Replicate MICs, accuracies and cMFGs follow as ratios.
B. evaluation rows -> MAE cells. |MIC_b(m, A) - c| summed over the rows of (task B, marker m)
   needs, per replicate, only the weighted prefix sums of the rows sorted by c and a binary search
   for MIC_b(m, A): S(mu) = mu W(<=mu) - C(<=mu) + (C - C(<=mu)) - mu (W - W(<=mu)). One pass over
   the evaluation rows per block of replicates gives modes 1, 3 and 4. Mode 2 (per-response means)
   resamples the responses' point errors exactly and adds the reference MICs' change through its
   first-order sensitivity (`_mode2_terms`): exact re-evaluation would need every row for every
   reference task and replicate.

Every metric is then a function of these replicate tensors (metrics.seven), so all metric
intervals come from the same replicates.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numba as nb
import numpy as np
import polars as pl

from metrics import kernels as akernels
from metrics.bootstrap import item_keys, stratum_keys
from metrics.bootstrap.kernels import BLOCK, _fill_multinomial_counts, _fill_poisson, _prepare
from metrics.bootstrap.kernels import weighted_group_sums as _weighted_group_sums
from metrics.bootstrap.rng import KEY_ESC, KEY_SEP
from metrics.core import N_BINS, Tables
from metrics.encode import Encoded

#: Rows ahead whose item weights `_accumulate` asks the CPU to load (16 measured faster than 4,
#: 8 or 32 on 2e6 rows).
PREFETCH = 16
EVAL_DOMAIN = np.uint64(0x6576616C2D73706C)  # "eval-spl": held-out test items draw on their own


@dataclass(frozen=True)
class GroupReplicates:
    """Replicate tensors of one (model, prompt) group; first axis = replicate."""

    mic: np.ndarray  # [B, T, M]
    accuracy: np.ndarray  # [B, T]
    cmfg: np.ndarray  # [B, T]
    mae: dict[int, np.ndarray]  # mode -> [B, T, T] (mode 2: linearized in the MICs)
    eval_mean: np.ndarray  # [B, T, M] mean confidence of a marker's evaluation rows (Mode 4)
    point_eval_mean: np.ndarray  # [T, M] the same at the point estimate
    mic_noise: np.ndarray  # [B, T, M] each replicate's estimate of the MICs' sampling variance
    point_mic_noise: np.ndarray  # [T, M] the same at the point estimate (`_mic_residuals`)
    mic_items: np.ndarray  # [T, M] reference items with a row of the cell


def response_keys(responses: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Stable item key (task, split/item_id) and stratum key (task) per response row.

    The split is part of the item's identity: a run whose ids repeat across splits (parity mode
    reads both) still has one key per item, and two models get the same key for the same item.
    """
    split = pl.col("split").cast(pl.String)  # escaped: (split, item_id) pairs never collide
    split = split.str.replace_all(KEY_ESC, KEY_ESC * 2, literal=True)
    split = split.str.replace_all(KEY_SEP, KEY_ESC + KEY_SEP, literal=True)
    pairs = responses.select(
        "task", pl.concat_str([split, "item_id"], separator=KEY_SEP).alias("_item")
    )
    # Hashing every row in the compiled pass is cheaper than finding the distinct pairs first.
    keys = item_keys(pairs.get_column("task"), pairs.get_column("_item"))
    tasks = pairs.get_column("task").unique().sort()
    tkeys = dict(zip(tasks.to_list(), stratum_keys(tasks).tolist()))
    strata = pairs.get_column("task").replace_strict(tkeys, return_dtype=pl.UInt64).to_numpy()
    return keys, strata


# ------------------------------------------------------------------------------------ pass A


def _pass_a(enc: Encoded, g: int, keys, strata, seed, n_boot, scheme, parity, group_sums):
    T, M = enc.n_tasks, enc.n_markers
    resp = np.flatnonzero((enc.r_g == g) & enc.r_ref)
    local = np.full(len(enc.r_g), -1, dtype=np.int64)
    local[resp] = np.arange(len(resp))
    # Sentence rows of these responses with a confidence.
    rows = (local[enc.s_r] >= 0) & ~np.isnan(enc.s_conf)
    s_item = local[enc.s_r[rows]]
    s_group = enc.r_t[enc.s_r[rows]].astype(np.int64) * M + enc.s_m[rows]
    s_val = enc.s_conf[rows]
    # Pseudo-rows: accuracy, cMFG bin, MFG.
    acc_off, bin_off = T * M, T * M + T
    mfg_off = bin_off + T * N_BINS
    t = enc.r_t[resp].astype(np.int64)
    keep = ~np.isnan(enc.r_f[resp])
    f = enc.r_f[resp]
    c = enc.r_c[resp]
    if parity:
        keep &= (f != 0) & (c != 0)
        b = np.digitize(c, np.linspace(0, 1, N_BINS + 1)) - 1
        in_bin = keep & (b < N_BINS)
    else:
        b = np.minimum(np.floor(np.nan_to_num(c) * N_BINS + 1e-9).astype(np.int64), N_BINS - 1)
        in_bin = keep
    k_idx = np.flatnonzero(keep)
    b_idx = np.flatnonzero(in_bin)
    item = np.concatenate([s_item, np.arange(len(resp)), b_idx, k_idx])
    group = np.concatenate(
        [s_group, acc_off + t, bin_off + t[b_idx] * N_BINS + b[b_idx], mfg_off + t[k_idx]]
    )
    value = np.concatenate([s_val, enc.r_correct[resp].astype(np.float64), f[b_idx], f[k_idx]])
    resid2, point_noise, n_items = _mic_residuals(s_item, s_group, s_val, T * M)
    ptr, order = akernels.by_response(item, len(resp))
    third = np.zeros(len(item))
    third[: len(resid2)] = resid2
    values = np.stack([np.ones(len(order)), value[order], third[order]], axis=1)
    sums = group_sums(
        ptr, keys[resp], strata[resp], group[order], values, seed, n_boot, scheme, mfg_off + T
    )  # [B, n_groups, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = sums[:, :, 1] / sums[:, :, 0]
        noise = sums[:, : T * M, 2] / sums[:, : T * M, 0] ** 2
    mic = ratio[:, : T * M].reshape(n_boot, T, M)
    noise = noise.reshape(n_boot, T, M)
    accuracy = ratio[:, acc_off:bin_off]
    bin_n = sums[:, bin_off:mfg_off, 0].reshape(n_boot, T, N_BINS)
    bin_mean = ratio[:, bin_off:mfg_off].reshape(n_boot, T, N_BINS)
    has_any = sums[:, mfg_off:, 0] > 0
    if parity:
        cmfg = np.where(bin_n > 0, bin_mean, 0.0).sum(axis=2) / N_BINS
    else:
        with warnings.catch_warnings():  # a task without any bin is NaN, on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            cmfg = np.nanmean(np.where(bin_n > 0, bin_mean, np.nan), axis=2)
    cmfg = np.where(has_any, cmfg, np.nan)
    return mic, accuracy, cmfg, noise, point_noise.reshape(T, M), n_items.reshape(T, M)


def _mic_residuals(
    item: np.ndarray, cell: np.ndarray, conf: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each item's squared residual per MIC cell, on one of its rows, and the MICs' noise.

    A MIC is a ratio S / N over items (s_i, n_i: an item's sum of the cell's confidences and
    their count), so its sampling variance is Σ e_i² / N² with e_i = s_i - MIC n_i (the
    linearization that the item bootstrap's variance estimates). Carrying e_i² (against the
    point MIC) as a third summed column gives every replicate its own noise estimate
    Σ w_i e_i² / N*² in the same pass: the noise subtracted from the CVs is itself estimated
    from the sample, and the replicates must vary it as the sample does (a rare marker's
    noise estimate has a relative sd near 0.45 at 10 sentences).

    Args:
        item, cell, conf: sentence rows' local item, (task, marker) cell and confidence.
        n_cells: T * M.

    Returns:
        e_i² on the first row of each (item, cell) pair (0 on its other rows), per row; and
        the point estimate's noise Σ e_i² / N² per cell (NaN without rows); the number of
        items per cell.
    """
    if len(item) == 0:
        return np.zeros(0), np.full(n_cells, np.nan), np.zeros(n_cells)
    pair = item.astype(np.int64) * n_cells + cell
    _, first, inv = np.unique(pair, return_index=True, return_inverse=True)
    s_i = np.bincount(inv, weights=conf)
    n_i = np.bincount(inv).astype(np.float64)
    pair_cell = cell[first]
    big_n = np.bincount(pair_cell, weights=n_i, minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        mic = np.bincount(pair_cell, weights=s_i, minlength=n_cells) / big_n
        e2 = (s_i - mic[pair_cell] * n_i) ** 2
        point = np.bincount(pair_cell, weights=e2, minlength=n_cells) / big_n**2
    out = np.zeros(len(item))
    out[first] = e2
    return out, point, np.bincount(pair_cell, minlength=n_cells).astype(np.float64)


def local_group_sums(ptr, keys, strata, group, values, seed, n_boot, scheme, n_groups):
    """Pass A's sums in this process (the default; `--ray` passes a sharded version)."""
    return _weighted_group_sums(
        ptr, keys, strata, group, values, seed, n_boot, scheme, n_groups=n_groups
    )


# ------------------------------------------------------------------------------------ pass B


@nb.njit(inline="always", cache=True)
def _accumulate(run_w, run_c, w_items, row_item, row_conf, start, stop):
    """Add rows start..stop of the sorted evaluation rows to every replicate's running sums."""
    for r in range(start, stop):
        # Rows come in confidence order, so their items' weights are read at random: at 1e6
        # rows the table is tens of MB and each read waited for memory. Asking for the row
        # PREFETCH rows ahead overlaps those waits (the kernel took a third less time).
        if r + PREFETCH < row_item.shape[0]:
            akernels.prefetch_row(w_items, row_item[r + PREFETCH])
        i = row_item[r]
        x = row_conf[r]
        for t in range(BLOCK):
            w = np.float64(w_items[i, t])
            run_w[t] += w
            run_c[t] += w * x


@nb.njit(parallel=True, cache=True)
def _mae_blocks(
    seg_ptr, seg_t, seg_m, row_item, row_conf, streams, rep_keys, use_counts, sorted_items,
    strat_ptr, draw_keys, mic_reps, usable, n_boot, resp_t, resp_e, resp_e1, resp_n1, eval_mean,
    w_proto,
):  # fmt: skip
    """MAE sums per replicate: out[b, k, A, B] for k = mode-1 (ΣS, ΣW), mode-3 (Σ, n), mode-4 (Σ, n),
    mode-2 (Σ w e_r, Σ w) with e_r the response's mean error at the point MICs (`resp_e`), and
    the same for Mode 1's linearization (Σ w Σ_rows e, Σ w n_rows).
    Also fills eval_mean[b, B, m], the replicate's mean confidence of marker m's rows in task B
    (NaN where no row weighs, and where no reference task scores m in replicate b).

    Per block of replicates and per (task B, marker m) segment of rows sorted by confidence: the
    positions of every MIC_b(m, A) among the sorted confidences come first (binary searches, no
    weights needed); one sweep over the segment's rows then accumulates the running weighted sums
    for all replicates of the block at once and records them as it passes each position.
    """
    T = usable.shape[0]
    n_blocks = (n_boot + BLOCK - 1) // BLOCK
    n_items = streams.shape[0]
    out = np.zeros((n_boot, 10, T, T))
    for blk in nb.prange(n_blocks):
        b0 = blk * BLOCK
        nb_ = min(BLOCK, n_boot - b0)
        # Item weights of this block in the narrowest exact integer type (w_proto's: uint8 for
        # Poisson weights and for counts of strata up to 255 items), each item's row starting on
        # a cache line: the sweep below reads one item row per evaluation row in confidence
        # order, i.e. at random, and at scale that read is the cost of this kernel (one 64-byte
        # line per row instead of two or three for uint16 rows at numba's 32-byte alignment).
        # Zeroed only for the multinomial counts (which are incremented); the Poisson fill
        # writes every weight (a memset of the whole table per block saved).
        if use_counts:
            buf = np.zeros(n_items * BLOCK + 64, dtype=w_proto.dtype)
        else:
            buf = np.empty(n_items * BLOCK + 64, dtype=w_proto.dtype)
        off = (-buf.ctypes.data) % 64 // buf.itemsize
        w_items = buf[off : off + n_items * BLOCK].reshape((n_items, BLOCK))
        if use_counts:
            _fill_multinomial_counts(sorted_items, strat_ptr, draw_keys, rep_keys, b0, w_items)
        else:
            ws = np.empty(BLOCK)
            for i in range(n_items):
                _fill_poisson(streams[i], rep_keys, b0, ws)
                for t in range(BLOCK):
                    w_items[i, t] = ws[t]
        # Mode 2: weighted sums of each response's mean error (weights already drawn), into a
        # block-local array with the replicate innermost (contiguous, vectorizable).
        acc2 = np.zeros((T, T, 4, BLOCK))
        wf = np.empty(BLOCK)
        for i in range(n_items):
            tb = resp_t[i]
            for t in range(BLOCK):
                wf[t] = np.float64(w_items[i, t])
            for a in range(T):
                e = resp_e[i, a]
                if np.isnan(e):
                    continue
                e_sum = resp_e1[i, a]
                n_rows = resp_n1[i, a]
                row = acc2[tb, a]
                for t in range(BLOCK):
                    row[0, t] += wf[t] * e
                    row[1, t] += wf[t]
                    row[2, t] += wf[t] * e_sum
                    row[3, t] += wf[t] * n_rows
        for tb in range(T):
            for a in range(T):
                for c in range(4):
                    for t in range(nb_):
                        out[b0 + t, 6 + c, a, tb] = acc2[tb, a, c, t]
        q_pos = np.empty(T * BLOCK, dtype=np.int64)
        q_w = np.empty(T * BLOCK)
        q_c = np.empty(T * BLOCK)
        run_w = np.zeros(BLOCK)
        run_c = np.zeros(BLOCK)
        scored = np.zeros(BLOCK, dtype=np.bool_)
        for s in range(seg_ptr.shape[0] - 1):
            lo, hi = seg_ptr[s], seg_ptr[s + 1]
            n = hi - lo
            tb, m = seg_t[s], seg_m[s]
            nq = 0
            scored[:] = False
            for a in range(T):
                for t in range(BLOCK):
                    q = a * BLOCK + t
                    q_pos[q] = -1
                    if t >= nb_ or not usable[a, m]:
                        continue
                    mu = mic_reps[b0 + t, a, m]
                    if np.isnan(mu):
                        continue
                    left, right = 0, n  # rows with conf <= mu
                    while left < right:
                        mid = (left + right) // 2
                        if row_conf[lo + mid] <= mu:
                            left = mid + 1
                        else:
                            right = mid
                    q_pos[q] = left
                    scored[t] = True
                    nq += 1
            if nq == 0:
                continue
            order = np.argsort(q_pos)
            run_w[:] = 0.0
            run_c[:] = 0.0
            j = 0
            for k in range(T * BLOCK):
                q = order[k]
                p = q_pos[q]
                if p < 0:
                    continue
                if j < p:
                    _accumulate(run_w, run_c, w_items, row_item, row_conf, lo + j, lo + p)
                    j = p
                t = q % BLOCK
                q_w[q] = run_w[t]
                q_c[q] = run_c[t]
            _accumulate(run_w, run_c, w_items, row_item, row_conf, lo + j, lo + n)
            # Only replicates in which some reference task scores the marker: whether another
            # replicate of the same block does must not decide this one's value.
            for t in range(nb_):
                if scored[t] and run_w[t] > 0:
                    eval_mean[b0 + t, tb, m] = run_c[t] / run_w[t]
            for q in range(T * BLOCK):
                if q_pos[q] < 0:
                    continue
                a = q // BLOCK
                t = q % BLOCK
                wt = run_w[t]
                if wt <= 0:
                    continue
                mu = mic_reps[b0 + t, a, m]
                ct = run_c[t]
                w_le, c_le = q_w[q], q_c[q]
                total = mu * w_le - c_le + (ct - c_le) - mu * (wt - w_le)
                b = b0 + t
                out[b, 0, a, tb] += total
                out[b, 1, a, tb] += wt
                out[b, 2, a, tb] += total / wt
                out[b, 3, a, tb] += 1.0
                out[b, 4, a, tb] += abs(mu - ct / wt)
                out[b, 5, a, tb] += 1.0
    return out


def _mode2_terms(t, m, conf, item, n_items, point_mic, usable, T, M):
    """Each evaluation response's mean error per reference task A at the point MICs, and the
    sensitivity of the Mode 2 cells to each MIC.

    Mode 2 averages per-response mean errors e_r(A) = mean over r's rows of |MIC(m, A) - c|;
    re-evaluating every row for every replicate's MICs would cost rows x B x T. Instead the
    replicate's evaluation weights resample the responses exactly and the reference side enters
    linearly: d e_r / d MIC(m, A) = (1/n_r) Σ sign(MIC(m, A) - c) over r's rows of marker m, so
    cell*(A, B) = Σ w e_r / Σ w + Σ_m D[A, B, m] (MIC*(m, A) - MIC(m, A)), D the mean over B's
    responses (a first-order delta term; the bootstrap bias correction handles the rest).

    The same quantities for Mode 1 (row-weighted: a response's error sum and row count, and
    D1 = Σ sign / rows of B) give Mode 1's linearization, whose gap to the exact Mode 1
    replicate estimates the curvature Mode 2's linearization leaves out.

    Returns:
        resp_e [n_items, T] (NaN: no scored row), resp_e1 and resp_n1 [n_items, T] (error sum
        and rows), D and D1 [T, T, M], and each response's task.
    """
    resp_e = np.full((n_items, T), np.nan)
    resp_e1 = np.zeros((n_items, T))
    resp_n1 = np.zeros((n_items, T))
    sens = np.zeros((T, T, M))
    sens1 = np.zeros((T, T, M))
    resp_task = np.zeros(n_items, dtype=np.int64)
    resp_task[item] = t
    for a in range(T):
        ok = usable[a, m]
        if not ok.any():
            continue
        mu = point_mic[a, m[ok]]
        it = item[ok]
        n_r = np.bincount(it, minlength=n_items).astype(np.float64)
        has = n_r > 0
        e = np.bincount(it, weights=np.abs(mu - conf[ok]), minlength=n_items)
        resp_e[has, a] = e[has] / n_r[has]
        resp_e1[:, a] = e
        resp_n1[:, a] = n_r
        gap = mu - conf[ok]
        # |MIC - c| has no derivative at a tie; a MIC that equals c mathematically may differ
        # from it in the last bits depending on summation order: count ties as 0 either way.
        sign = np.where(np.abs(gap) <= 1e-12, 0.0, np.sign(gap))
        n_resp = np.bincount(resp_task[has], minlength=T).astype(np.float64)
        n_rows = np.bincount(t[ok], minlength=T).astype(np.float64)
        cell = t[ok] * M + m[ok]
        d = np.bincount(cell, weights=sign / n_r[it], minlength=T * M).reshape(T, M)
        d1 = np.bincount(cell, weights=sign, minlength=T * M).reshape(T, M)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens[a] = np.where(n_resp[:, None] > 0, d / n_resp[:, None], 0.0)
            sens1[a] = np.where(n_rows[:, None] > 0, d1 / n_rows[:, None], 0.0)
    return resp_e, resp_e1, resp_n1, sens, sens1, resp_task


def _pass_b(enc, g, keys, strata, seed, n_boot, scheme, parity, mic_reps, usable, point_mic):
    T = enc.n_tasks
    M = enc.n_markers
    resp = np.flatnonzero((enc.r_g == g) & enc.r_eval)
    local = np.full(len(enc.r_g), -1, dtype=np.int64)
    local[resp] = np.arange(len(resp))
    rows = (local[enc.s_r] >= 0) & ~np.isnan(enc.s_conf)
    if parity and enc.no_hedge >= 0:
        rows &= enc.s_m != enc.no_hedge
    idx = np.flatnonzero(rows)
    t = enc.r_t[enc.s_r[idx]].astype(np.int64)
    m = enc.s_m[idx].astype(np.int64)
    conf = enc.s_conf[idx]
    # The order of np.lexsort((conf, m, t)) in two stable passes: by confidence, then by the
    # (task, marker) cell as uint16 when it fits, which numpy sorts by radix (a third of the
    # lexsort's time at 1e6 rows; ties keep row order either way).
    cell_key = t * M + m
    o = np.argsort(conf, kind="stable")
    narrow = cell_key.astype(np.uint16) if T * M <= np.iinfo(np.uint16).max else cell_key
    order = o[np.argsort(narrow[o], kind="stable")]
    seg_key = cell_key[order]
    starts = (
        np.flatnonzero(np.r_[True, seg_key[1:] != seg_key[:-1]])
        if len(order)
        else np.zeros(0, np.int64)
    )
    seg_ptr = np.r_[starts, len(order)].astype(np.int64)
    seg_t = (seg_key[starts] // M).astype(np.int64)
    seg_m = (seg_key[starts] % M).astype(np.int64)
    row_item = local[enc.s_r[idx]][order]
    row_conf = conf[order]
    eval_strata = strata[resp] if parity else strata[resp] ^ EVAL_DOMAIN
    p = _prepare(None, keys[resp], eval_strata, None, None, seed, n_boot, scheme, None)
    multinomial = scheme == "multinomial"
    n = len(resp)
    resp_e, resp_e1, resp_n1, sens, sens1, resp_task = _mode2_terms(
        t, m, conf, local[enc.s_r[idx]], n, point_mic, usable, T, M
    )
    eval_mean = np.full((n_boot, T, M), np.nan)
    cell = t * M + m
    n_rows = np.bincount(cell, minlength=T * M)
    with np.errstate(invalid="ignore", divide="ignore"):
        point_eval = (np.bincount(cell, weights=conf, minlength=T * M) / n_rows).reshape(T, M)
    out = _mae_blocks(
        seg_ptr, seg_t, seg_m, row_item, row_conf,
        np.zeros(n, dtype=np.uint64) if multinomial else p["streams"],
        p["rep_keys"], multinomial,
        p["sorted_items"] if multinomial else np.zeros(1, np.int64),
        p["strat_ptr"] if multinomial else np.zeros(1, np.int64),
        p["draw_keys"] if multinomial else np.zeros(1, np.uint64),
        mic_reps, usable, n_boot, resp_task, resp_e, resp_e1, resp_n1, eval_mean,
        p["count_proto"] if multinomial else np.zeros(0, np.uint8),
    )  # fmt: skip
    shift = np.where(usable, mic_reps - point_mic, 0.0)  # [B, A, M]
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = {
            1: out[:, 0] / out[:, 1],
            2: out[:, 6] / out[:, 7] + np.einsum("bam,anm->ban", np.nan_to_num(shift), sens),
            3: out[:, 2] / out[:, 3],
            4: out[:, 4] / out[:, 5],
        }
        # Mode 2's linearization misses the curvature of |MIC - c| (the O(1/n) bias the
        # bootstrap is there to measure); Mode 1 has the same rows and the same curvature and
        # is resampled exactly: add Mode 1's second-order remainder of the same replicate.
        lin1 = out[:, 8] / out[:, 9] + np.einsum("bam,anm->ban", np.nan_to_num(shift), sens1)
        mae[2] = mae[2] + (mae[1] - lin1)
    return mae, eval_mean, point_eval


def group_replicates(
    enc: Encoded,
    g: int,
    keys: np.ndarray,
    strata: np.ndarray,
    *,
    seed: int,
    n_boot: int,
    scheme: str,
    parity: bool,
    valid: np.ndarray,
    point: Tables,
    group_sums: Callable = local_group_sums,
) -> GroupReplicates:
    """All replicate tensors of group `g` (see the module docstring)."""
    mic, accuracy, cmfg, noise, point_noise, n_items = _pass_a(
        enc, g, keys, strata, seed, n_boot, scheme, parity, group_sums
    )
    usable = valid[g] & ~np.isnan(point.mic[g])
    mae, eval_mean, point_eval = _pass_b(
        enc, g, keys, strata, seed, n_boot, scheme, parity, mic, usable, point.mic[g]
    )
    return GroupReplicates(
        mic, accuracy, cmfg, mae, eval_mean, point_eval, noise, point_noise, n_items
    )


# ------------------------------------------------------------------------- BCa accelerations


def mic_acceleration(enc: Encoded, g: int) -> np.ndarray:
    """Jackknife acceleration of each MIC of group g, leaving out one reference item at a time.

    MIC = S / N over the items of the task (s_i, n_i: an item's sum of present confidences and
    their count for the marker). Leaving item i out gives (S - s_i) / (N - n_i); items without
    the marker leave it unchanged. a = Σ U³ / (6 (Σ U²)^1.5), U_i = mean_j θ_(j) - θ_(i), over all
    reference items of the task: O(rows), no leave-one-out loop.
    """
    T, M = enc.n_tasks, enc.n_markers
    resp = np.flatnonzero((enc.r_g == g) & enc.r_ref)
    local = np.full(len(enc.r_g), -1, dtype=np.int64)
    local[resp] = np.arange(len(resp))
    rows = (local[enc.s_r] >= 0) & ~np.isnan(enc.s_conf)
    cell = enc.r_t[enc.s_r[rows]].astype(np.int64) * M + enc.s_m[rows]
    pair = local[enc.s_r[rows]] * (T * M) + cell
    uniq, inv = np.unique(pair, return_inverse=True)
    n_i = np.bincount(inv).astype(np.float64)
    s_i = np.bincount(inv, weights=enc.s_conf[rows])
    pc = uniq % (T * M)
    N = np.bincount(pc, weights=n_i, minlength=T * M)
    S = np.bincount(pc, weights=s_i, minlength=T * M)
    items_per_task = np.bincount(enc.r_t[resp], minlength=T).astype(np.float64)
    n_t = np.repeat(items_per_task, M)  # items of the cell's task
    theta = np.divide(S, N, out=np.full(T * M, np.nan), where=N > 0)
    rest = N[pc] - n_i
    with np.errstate(invalid="ignore", divide="ignore"):
        loo = np.where(rest > 0, (S[pc] - s_i) / rest, np.nan)
    k = np.bincount(pc, minlength=T * M).astype(np.float64)  # items carrying the marker
    # mean of leave-one-out values: carriers give loo, the other n_t - k items give theta.
    with np.errstate(invalid="ignore", divide="ignore"):
        dot = (
            np.bincount(pc, weights=np.nan_to_num(loo), minlength=T * M) + (n_t - k) * theta
        ) / n_t
        u_c = dot[pc] - loo
        u_o = dot - theta
        m2 = np.bincount(pc, weights=u_c**2, minlength=T * M) + (n_t - k) * u_o**2
        m3 = np.bincount(pc, weights=u_c**3, minlength=T * M) + (n_t - k) * u_o**3
        a = m3 / (6.0 * m2**1.5)
    bad = ~np.isfinite(a) | (N <= 0) | np.isnan(np.bincount(pc, weights=loo, minlength=T * M))
    return np.where(bad, np.nan, a).reshape(T, M)
