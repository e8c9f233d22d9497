"""Numba kernels of the analysis: one pass over rows instead of many numpy passes.

Each kernel has a plain numpy reference in `metrics.core` / `metrics.encode` or in the tests that
it is compared against. Rows are grouped by response through a CSR index (`by_response`), built
once by a counting sort (O(rows)).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch_row(typingctx, arr, idx):
    """Ask the CPU to start loading the cache line of ``arr[idx, 0]`` (2-D array; a hint only).

    For loops that read rows of a large table at indices known a few iterations ahead (the MAE
    sweep reads item weights in confidence order, i.e. at random): the load overlaps the work
    of the rows before it instead of stalling on it. No effect on results.
    """
    sig = nb.types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(nb.types.intp, 0)
        ptr = cgutils.get_item_pointer(
            context, builder, aryty, ary, [args[1], zero], wraparound=False
        )
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [i8p, i32(0), i32(3), i32(1)])  # read, high locality, data cache
        return context.get_dummy_value()

    return sig, codegen


# Accumulator slots of `mic_sums` (first axis of its output).
COUNT, N_PRESENT, S_CONF, N_C, S_C, N_I, S_I, N_F, S_F, N_UF, S_UF, N_MF, S_MF = range(13)
N_MIC_SLOTS = 13


@nb.njit(cache=True)
def by_response(s_r: np.ndarray, n_responses: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR grouping of rows by response: rows of r are order[ptr[r]:ptr[r+1]] (stable)."""
    ptr = np.zeros(n_responses + 1, dtype=np.int64)
    for i in range(len(s_r)):
        ptr[s_r[i] + 1] += 1
    for r in range(n_responses):
        ptr[r + 1] += ptr[r]
    fill = ptr[:-1].copy()
    order = np.empty(len(s_r), dtype=np.int64)
    for i in range(len(s_r)):
        r = s_r[i]
        order[fill[r]] = i
        fill[r] += 1
    return ptr, order


# A response with more rows than this is sorted (O(k log k)) instead of scanned pairwise: below it
# the pairwise scan is faster, above it a single long response (300k rows) would take minutes.
SMALL_RESPONSE = 32


@nb.njit(cache=True)
def _stable_sort_rows(rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """`rows` ordered by key[rows], ties kept in their given order (a stable merge sort)."""
    keys = np.empty(len(rows), dtype=np.int64)
    for j in range(len(rows)):
        keys[j] = key[rows[j]]
    return rows[np.argsort(keys, kind="mergesort")]


@nb.njit(cache=True)
def faithfulness(ptr, order, s_sidx, s_conf, s_dec, n_sentences):
    """f(r) and c(r) per response from sentence-level values (docs/method.md §2).

    A sentence's marker rows repeat its confidence and decisiveness: each sentence counts once.
    Sums run in sentence order, so the result does not depend on row order. Valid rows are put in
    sentence order by an insertion sort for short responses and a stable merge sort for long ones
    (the same order: both keep ties in row order).
    """
    n = len(ptr) - 1
    f = np.full(n, np.nan)
    c = np.full(n, np.nan)
    for r in range(n):
        a, b = ptr[r], ptr[r + 1]
        k = b - a
        if k == 0:
            continue
        idx = np.empty(k, dtype=np.int64)
        m = 0
        for j in range(a, b):
            i = order[j]
            if not (np.isnan(s_conf[i]) or np.isnan(s_dec[i])):
                if k <= SMALL_RESPONSE:  # insertion by sentence index
                    p = m
                    while p > 0 and s_sidx[idx[p - 1]] > s_sidx[i]:
                        idx[p] = idx[p - 1]
                        p -= 1
                    idx[p] = i
                else:
                    idx[m] = i
                m += 1
        if m == 0:
            continue
        if k > SMALL_RESPONSE:
            idx[:m] = _stable_sort_rows(idx[:m], s_sidx)
        gap = 0.0
        conf = 0.0
        nv = 0
        last = -1
        for q in range(m):
            i = idx[q]
            if s_sidx[i] == last:
                continue
            last = s_sidx[i]
            gap += abs(s_dec[i] - s_conf[i])
            conf += s_conf[i]
            nv += 1
        f[r] = 1.0 - gap / n_sentences[r]
        c[r] = conf / nv
    return f, c


@nb.njit(cache=True)
def mic_sums(s_r, s_m, s_conf, s_dec, r_g, r_t, r_ref, r_correct, r_f, w, G, T, M, faithful_cutoff):
    """Weighted sums per (group, task, marker) over reference rows, all MIC variants at once."""
    out = np.zeros((N_MIC_SLOTS, G, T, M))
    for i in range(len(s_r)):
        r = s_r[i]
        if not r_ref[r]:
            continue
        g, t, m, wr = r_g[r], r_t[r], s_m[i], w[r]
        out[COUNT, g, t, m] += wr
        x = s_conf[i]
        if np.isnan(x):
            continue
        out[N_PRESENT, g, t, m] += wr
        out[S_CONF, g, t, m] += wr * x
        if r_correct[r]:
            out[N_C, g, t, m] += wr
            out[S_C, g, t, m] += wr * x
        else:
            out[N_I, g, t, m] += wr
            out[S_I, g, t, m] += wr * x
        fr = r_f[r]
        if fr >= faithful_cutoff:
            out[N_F, g, t, m] += wr
            out[S_F, g, t, m] += wr * x
        elif fr < faithful_cutoff:  # NaN (undefined f) is neither
            out[N_UF, g, t, m] += wr
            out[S_UF, g, t, m] += wr * x
        d = s_dec[i]
        if not np.isnan(d):
            out[N_MF, g, t, m] += wr
            out[S_MF, g, t, m] += wr * abs(d - x)
    return out


@nb.njit(cache=True)
def mae_sums(ptr, order, s_m, s_conf, r_g, r_t, r_eval, w, mic, usable, skip_marker):
    """Sums behind MAE(A, B) in modes 1-4 for every (group, A, B), one pass over evaluation rows.

    Returns:
        cell: [3, G, T, T] mode 1 Σw, Σw·err, Σw·err² (rows).
        resp: [3, G, T, T] mode 2 Σw, Σw·e_r, Σw·e_r² (e_r = a response's mean error).
        marker: [3, G, T, T, M] Σw, Σw·err, Σw·conf per marker (modes 3 and 4).
    """
    G, T, M = mic.shape
    cell = np.zeros((3, G, T, T))
    resp = np.zeros((3, G, T, T))
    marker = np.zeros((3, G, T, T, M))
    e_sum = np.zeros(T)
    e_n = np.zeros(T)
    for r in range(len(ptr) - 1):
        if not r_eval[r]:
            continue
        a0, a1 = ptr[r], ptr[r + 1]
        if a0 == a1:
            continue
        g, b, wr = r_g[r], r_t[r], w[r]
        e_sum[:] = 0.0
        e_n[:] = 0.0
        for j in range(a0, a1):
            i = order[j]
            x = s_conf[i]
            m = s_m[i]
            if np.isnan(x) or m == skip_marker:
                continue
            for a in range(T):
                if not usable[g, a, m]:
                    continue
                err = abs(mic[g, a, m] - x)
                cell[0, g, a, b] += wr
                cell[1, g, a, b] += wr * err
                cell[2, g, a, b] += wr * err * err
                marker[0, g, a, b, m] += wr
                marker[1, g, a, b, m] += wr * err
                marker[2, g, a, b, m] += wr * x
                e_sum[a] += err
                e_n[a] += 1.0
        for a in range(T):
            if e_n[a] > 0:
                e = e_sum[a] / e_n[a]
                resp[0, g, a, b] += wr
                resp[1, g, a, b] += wr * e
                resp[2, g, a, b] += wr * e * e
    return cell, resp, marker


@nb.njit(cache=True)
def hash_link(response_keys: np.ndarray, row_keys: np.ndarray) -> tuple[np.ndarray, bool]:
    """Index of each row's response by 64-bit key hash (-1: none), with an open-addressing table.

    Returns (index, unique): `unique` is False when two responses share a hash, in which case
    the caller must link by the key columns instead (the index is then meaningless).
    """
    n = len(response_keys)
    size = 1
    while size < 2 * n + 1:
        size *= 2
    mask = np.uint64(size - 1)
    slots = np.full(size, -1, dtype=np.int64)
    for i in range(n):
        k = response_keys[i]
        h = (k ^ (k >> np.uint64(29))) & mask
        while slots[h] != -1:
            if response_keys[slots[h]] == k:
                return np.empty(0, dtype=np.int64), False
            h = (h + np.uint64(1)) & mask
        slots[h] = i
    out = np.full(len(row_keys), -1, dtype=np.int64)
    for j in range(len(row_keys)):
        k = row_keys[j]
        h = (k ^ (k >> np.uint64(29))) & mask
        while slots[h] != -1:
            if response_keys[slots[h]] == k:
                out[j] = slots[h]
                break
            h = (h + np.uint64(1)) & mask
    return out, True


@nb.njit(cache=True)
def sentence_rows(ptr, order, sentence_idx, marker_code):
    """Per response: the first repeated (sentence_idx, marker) row, and the distinct sentences.

    Returns (row, n_seen): `row` is the index of a row whose (sentence_idx, marker) pair occurs
    earlier in the same response, or -1; `n_seen[r]` is the number of distinct sentence indices
    among response r's rows (valid only when `row` is -1). Short responses are scanned pairwise
    (no allocation); long ones are sorted by (sentence_idx, marker), O(k log k). A global hash
    set would cost hundreds of MB at 1e7 rows. `sentence_idx` must be non-negative.
    """
    n = len(ptr) - 1
    n_seen = np.zeros(n, dtype=np.int64)
    for r in range(n):
        a, b = ptr[r], ptr[r + 1]
        if b - a <= SMALL_RESPONSE:
            for j in range(a, b):
                i = order[j]
                new_sentence = True
                for k in range(a, j):
                    q = order[k]
                    if sentence_idx[q] == sentence_idx[i]:
                        new_sentence = False
                        if marker_code[q] == marker_code[i]:
                            return i, n_seen
                if new_sentence:
                    n_seen[r] += 1
            continue
        rows = order[a:b]
        pair = np.empty(b - a, dtype=np.int64)  # (sentence_idx, marker) packed in 64 bits
        for j in range(b - a):
            i = rows[j]
            pair[j] = (np.int64(sentence_idx[i]) << 32) | np.int64(marker_code[i])
        perm = np.argsort(pair, kind="mergesort")
        n_seen[r] = 1
        for j in range(1, len(perm)):
            if pair[perm[j]] == pair[perm[j - 1]]:
                return rows[perm[j]], n_seen
            if (pair[perm[j]] >> 32) != (pair[perm[j - 1]] >> 32):
                n_seen[r] += 1
    return -1, n_seen


@nb.njit(cache=True)
def average_ranks_rows(a: np.ndarray, out: np.ndarray) -> None:
    """out[r] = the average ranks (1-based, ties sharing their mean rank) of a[r]; a row holding a
    NaN is all NaN. Reference: `average_ranks_reference` (numpy), which ranks bit for bit alike
    (ranks are halves of integers). One pass per row instead of argsort, gathers, two
    accumulates and a scatter over the whole [rows, n] array (the replicates' Spearman)."""
    R, n = a.shape
    order = np.empty(n, dtype=np.int64)
    vals = np.empty(n)  # row[order], kept beside the indices: the sort compares without gathers
    for r in range(R):
        row = a[r]
        bad = False
        for k in range(n):
            if np.isnan(row[k]):
                bad = True
                break
        if bad:
            for k in range(n):
                out[r, k] = np.nan
            continue
        if n <= 64:
            # Insertion sort of the indices: rows are short (markers or tasks), and argsort's
            # allocation per row cost more than the sort.
            for k in range(n):
                v = row[k]
                j = k
                while j > 0 and vals[j - 1] > v:
                    vals[j] = vals[j - 1]
                    order[j] = order[j - 1]
                    j -= 1
                vals[j] = v
                order[j] = k
        else:
            order[:] = np.argsort(row, kind="mergesort")
            for k in range(n):
                vals[k] = row[order[k]]
        i = 0
        while i < n:
            j = i
            while j + 1 < n and vals[j + 1] == vals[i]:
                j += 1
            rank = (i + j) / 2.0 + 1.0  # positions i..j (0-based) tie: mean of ranks i+1..j+1
            for k in range(i, j + 1):
                out[r, order[k]] = rank
            i = j + 1


def average_ranks_reference(a: np.ndarray) -> np.ndarray:
    """`average_ranks_rows` in numpy, along the last axis of any array: a stable argsort, the
    first and last sorted position of each run of equal values, their mean + 1 scattered back."""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[-1]
    if n == 0:
        return a.copy()
    order = np.argsort(a, axis=-1, kind="stable")
    s = np.take_along_axis(a, order, axis=-1)
    idx = np.broadcast_to(np.arange(n), s.shape)
    starts = np.ones(s.shape, dtype=bool)  # first position of each run of equal values
    starts[..., 1:] = s[..., 1:] != s[..., :-1]
    ends = np.ones(s.shape, dtype=bool)  # last position of each run
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, idx, n - 1), -1), axis=-1), -1)
    ranks = np.empty(s.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=-1)
    ranks[np.isnan(a).any(axis=-1)] = np.nan
    return ranks
