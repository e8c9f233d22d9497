"""Compiled passes that link sentence rows to their responses by a 64-bit key hash.

Validation hashes the five key columns of both tables (1e7 sentence rows at scale) and links them
through a hash table. Done with numpy, each column took several full-length temporaries (gather,
xor, multiply, shift) and the distinct values of a categorical column came from a polars `unique`
of the whole column; these kernels do each step in one pass over the rows, with no temporaries.
`metrics.io` keeps the reference semantics: the hash values are the ones its numpy code computed.
"""

from __future__ import annotations

import numba as nb
import numpy as np

# The multiplier and shift of the per-column mixing step (`metrics.io._key_hash`).
MIX_MULT = np.uint64(0x9E3779B97F4A7C15)
MIX_SHIFT = np.uint64(29)


@nb.njit(cache=True)
def first_rows(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """First row holding each code in [0, n_codes), or -1: the distinct values of a categorical
    column and a row to read each one's text from, in one pass (no sort, no hash table)."""
    first = np.full(n_codes, -1, dtype=np.int64)
    for i in range(len(codes) - 1, -1, -1):
        first[codes[i]] = i
    return first


@nb.njit(cache=True, nogil=True)
def mix_codes(h: np.ndarray, codes: np.ndarray, lut: np.ndarray) -> None:
    """h = mix(h ^ lut[codes]) in place: one key column given by categorical codes."""
    for i in range(len(h)):
        x = (h[i] ^ lut[codes[i]]) * MIX_MULT
        h[i] = x ^ (x >> MIX_SHIFT)


@nb.njit(cache=True, nogil=True)
def mix_hashes(h: np.ndarray, col: np.ndarray) -> None:
    """h = mix(h ^ col) in place: one key column given by the hash of each row's value."""
    for i in range(len(h)):
        x = (h[i] ^ col[i]) * MIX_MULT
        h[i] = x ^ (x >> MIX_SHIFT)


@nb.njit(cache=True)
def _slot(k: np.uint64, mask: int) -> int:
    # The keys are already mixed hashes; a multiply spreads the low bits once more. Slots are
    # signed (numba would turn uint64 index arithmetic mixed with int64 into floats).
    return np.int64((k * MIX_MULT) >> np.uint64(20)) & mask


@nb.njit(cache=True)
def link(response_keys: np.ndarray, row_keys: np.ndarray) -> tuple[np.ndarray, bool]:
    """Index of each row's response by 64-bit key hash (-1: none).

    Returns (index, unique): `unique` is False when two responses share a hash, in which case
    the caller must link by the key columns instead (the index is then meaningless).

    The table holds (key, index) pairs side by side, so a probe reads one cache line; a row with
    the key of the row before it (the rows of one response usually sit together) reuses its
    answer, and one with the key of the next response after it is found without a probe.
    """
    n = len(response_keys)
    size = 2
    while 2 * size < 3 * n + 2:  # load <= 2/3: a larger table costs more in cache misses
        size *= 2
    mask = size - 1
    table = np.full(2 * size, -1, dtype=np.int64)  # [key bits, response index] per slot
    for i in range(n):
        k = response_keys[i]
        s = _slot(k, mask)
        while table[2 * s + 1] != -1:
            if np.uint64(table[2 * s]) == k:
                return np.empty(0, dtype=np.int64), False
            s = (s + 1) & mask
        table[2 * s] = np.int64(k)
        table[2 * s + 1] = i
    out = np.empty(len(row_keys), dtype=np.int64)
    prev_key = np.uint64(0)
    prev = np.int64(-2)  # no previous row yet
    for j in range(len(row_keys)):
        k = row_keys[j]
        if prev != -2 and k == prev_key:
            out[j] = prev
            continue
        # Tables written in the same order put the next response right after the last one: a
        # sequential read instead of a random probe (keys are unique, so a match is the match).
        if 0 <= prev < n - 1 and response_keys[prev + 1] == k:
            found = prev + 1
        else:
            found = np.int64(-1)
            s = _slot(k, mask)
            while table[2 * s + 1] != -1:
                if np.uint64(table[2 * s]) == k:
                    found = table[2 * s + 1]
                    break
                s = (s + 1) & mask
        out[j] = found
        prev_key = k
        prev = found
    return out, True


@nb.njit(cache=True)
def groups_with_rows(keys: np.ndarray, has_rows: np.ndarray):
    """Group rows by a 64-bit key: each distinct key, its first row and how many of its rows
    have `has_rows` set (keys in order of first appearance), and each row's group.

    A growing open-addressing table: a run has a handful of (model, prompt, task) groups, so this
    stays a few kB where `np.unique` sorted every response.
    """
    size = 64
    mask = size - 1
    slots = np.full(size, -1, dtype=np.int64)  # index into the outputs below
    uniq = np.empty(16, dtype=np.uint64)
    first = np.empty(16, dtype=np.int64)
    count = np.zeros(16, dtype=np.int64)
    group = np.empty(len(keys), dtype=np.int32)
    n_uniq = 0
    g = np.int64(-1)
    for i in range(len(keys)):
        k = keys[i]
        if g >= 0 and uniq[g] == k:  # the same group as the row before (rows come grouped)
            group[i] = g
            if has_rows[i]:
                count[g] += 1
            continue
        s = _slot(k, mask)
        g = np.int64(-1)
        while slots[s] != -1:
            if uniq[slots[s]] == k:
                g = slots[s]
                break
            s = (s + 1) & mask
        if g == -1:
            if n_uniq == len(uniq):  # grow the outputs
                uniq = np.concatenate((uniq, np.empty(n_uniq, dtype=np.uint64)))
                first = np.concatenate((first, np.empty(n_uniq, dtype=np.int64)))
                count = np.concatenate((count, np.zeros(n_uniq, dtype=np.int64)))
            g = n_uniq
            uniq[g] = k
            first[g] = i
            n_uniq += 1
            slots[s] = g
            if 2 * n_uniq > size:  # keep the load below 1/2: rehash into a table twice as big
                size *= 2
                mask = size - 1
                slots = np.full(size, -1, dtype=np.int64)
                for q in range(n_uniq):
                    t = _slot(uniq[q], mask)
                    while slots[t] != -1:
                        t = (t + 1) & mask
                    slots[t] = q
        group[i] = g
        if has_rows[i]:
            count[g] += 1
    return uniq[:n_uniq], first[:n_uniq], count[:n_uniq], group
