"""The compiled MAE replicate kernel (`resample._mae_blocks`) against a straightforward numpy
recomputation from explicit item weights, on a small random case spanning a partial block."""

from __future__ import annotations

import numpy as np
import pytest

from metrics.bootstrap.kernels import _prepare, item_weights_reference
from metrics.resample import _mae_blocks


def _case(seed: int):
    g = np.random.default_rng(seed)
    T, M, n_items = 3, 4, 40
    resp_t = g.integers(0, T, n_items)
    n_rows = g.integers(0, 4, n_items)
    item = np.repeat(np.arange(n_items), n_rows)
    t = resp_t[item]
    m = g.integers(0, M, item.size)
    conf = np.round(g.random(item.size), 1)  # a coarse grid: ties with the MICs below
    usable = g.random((T, M)) < 0.8
    resp_e = g.random((n_items, T))
    resp_n1 = g.integers(1, 4, (n_items, T)).astype(np.float64)
    resp_e[n_rows == 0] = np.nan
    resp_n1[n_rows == 0] = 0.0
    resp_e1 = np.where(np.isnan(resp_e), 0.0, resp_e * resp_n1)
    keys = g.choice(2**62, size=n_items, replace=False).astype(np.uint64)
    strata = resp_t.astype(np.uint64) + np.uint64(7)
    return T, M, resp_t, item, t, m, conf, usable, resp_e, resp_e1, resp_n1, keys, strata


def _reference(n_boot, w, T, M, resp_t, item, t, m, conf, usable, mic, resp_e, resp_e1, resp_n1):
    out = np.zeros((n_boot, 10, T, T))
    eval_mean = np.full((n_boot, T, M), np.nan)
    defined = np.zeros((n_boot, T, M), dtype=bool)  # some reference task scores the marker
    for b in range(n_boot):
        wr = w[b, item].astype(np.float64)
        for tb in range(T):
            for mk in range(M):
                seg = (t == tb) & (m == mk)
                if not seg.any():
                    continue
                W, C = wr[seg].sum(), (wr[seg] * conf[seg]).sum()
                scored = [a for a in range(T) if usable[a, mk] and not np.isnan(mic[b, a, mk])]
                if W > 0:
                    eval_mean[b, tb, mk] = C / W
                    defined[b, tb, mk] = bool(scored)
                for a in scored:
                    if W <= 0:
                        continue
                    mu = mic[b, a, mk]
                    s = (wr[seg] * np.abs(mu - conf[seg])).sum()
                    out[b, 0:6, a, tb] += [s, W, s / W, 1.0, abs(mu - C / W), 1.0]
            for a in range(T):
                ok = (resp_t == tb) & ~np.isnan(resp_e[:, a])
                wi = w[b, ok].astype(np.float64)
                out[b, 6, a, tb] = (wi * resp_e[ok, a]).sum()
                out[b, 7, a, tb] = wi.sum()
                out[b, 8, a, tb] = (wi * resp_e1[ok, a]).sum()
                out[b, 9, a, tb] = (wi * resp_n1[ok, a]).sum()
    return out, eval_mean, defined


@pytest.mark.parametrize("scheme", ["poisson", "multinomial"])
def test_mae_kernel_equals_numpy_recomputation(scheme):
    T, M, resp_t, item, t, m, conf, usable, resp_e, resp_e1, resp_n1, keys, strata = _case(3)
    n_boot, seed = 70, 5  # one full block of 64 and a partial one
    g = np.random.default_rng(9)
    mic = np.round(g.random((n_boot, T, M)), 1)
    mic[g.random(mic.shape) < 0.1] = np.nan
    order = np.lexsort((conf, m, t))
    key = (t * M + m)[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    seg_ptr = np.r_[starts, len(order)].astype(np.int64)
    p = _prepare(None, keys, strata, None, None, seed, n_boot, scheme, None)
    multinomial = scheme == "multinomial"
    eval_mean = np.full((n_boot, T, M), np.nan)
    out = _mae_blocks(
        seg_ptr, (key[starts] // M).astype(np.int64), (key[starts] % M).astype(np.int64),
        item[order].astype(np.int64), conf[order],
        np.zeros(len(keys), np.uint64) if multinomial else p["streams"], p["rep_keys"],
        multinomial, p["sorted_items"] if multinomial else np.zeros(1, np.int64),
        p["strat_ptr"] if multinomial else np.zeros(1, np.int64),
        p["draw_keys"] if multinomial else np.zeros(1, np.uint64),
        mic, usable, n_boot, resp_t.astype(np.int64), resp_e, resp_e1, resp_n1, eval_mean,
        p["count_proto"] if multinomial else np.zeros(0, np.uint8),
    )  # fmt: skip
    w = item_weights_reference(keys, strata, seed, range(n_boot), scheme)
    want, want_mean, defined = _reference(
        n_boot, w, T, M, resp_t, item, t, m, conf, usable, mic, resp_e, resp_e1, resp_n1
    )
    assert (want[:, 1] > 0).any() and (want[:, 7] > 0).any()  # the case exercises every sum
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    # A marker's evaluation mean is given exactly where this replicate scores it (some reference
    # task has its MIC) and some row weighs: never decided by the other replicates of its block.
    assert defined.any() and (~defined & ~np.isnan(want_mean)).any()
    np.testing.assert_array_equal(~np.isnan(eval_mean), defined)
    np.testing.assert_allclose(eval_mean[defined], want_mean[defined], rtol=1e-12, atol=0)
