"""Bootstrap kernels: weighted per-group sums over item-resampling replicates.

The data layout is CSR by item: rows are sorted so that the rows of item ``i`` are
``item_ptr[i]:item_ptr[i + 1]``. A replicate ``b`` gives every item a weight ``w(b, i)`` (how
many times the item is drawn) and every row of the item comes along (SPEC section 5: the
resampling unit is the item, not the row). A kernel returns

    out[b, g, j] = sum over rows r of group g of  w(b, item(r)) * row_values[r, j]

from which a caller forms any ratio-of-sums statistic per replicate (include a column of ones to
get the weighted row count, or one value per item to get the weighted item count).

Weights come from the counter-based RNG of :mod:`metrics.bootstrap.rng`, keyed by
``(seed, stratum_key, item_key, b)``, so results depend on none of: thread count, row or item
order, sharding. Two schemes:

* ``"poisson"`` (default): ``w(b, i) ~ Poisson(1)`` independently per item. Replicate sums are
  additive across shards: the sums of the shards of a dataset add up to the sums of the whole.
* ``"multinomial"``: the classical bootstrap, exact per stratum. For replicate ``b`` and a stratum
  with ``n_s`` items (sorted by item key), ``n_s`` indices are drawn uniformly, draw ``j`` keyed by
  ``(seed, stratum_key, j, b)``; an item's weight is how often it was drawn. Not additive across
  shards (a stratum must be whole in one call).

Parallel structure: replicates are cut into fixed blocks of ``BLOCK`` replicates and blocks are
distributed over threads (``numba.prange``). Within a block, the items are visited in CSR order;
the weights of one item for the block's replicates are generated together, then each of its rows
is added into a per-block accumulator ``[n_groups, k, BLOCK]``. Each ``out[b]`` is therefore
computed by one thread, summing items in a fixed order: bit-identical for any thread count. Each
row is read once per block (not once per replicate), and no replicates x items or replicates x
rows matrix is ever built. Per-thread scratch is ``n_groups * k * BLOCK`` doubles (500 groups x 2
columns: 0.5 MB), plus ``n_items * BLOCK`` counts for the multinomial scheme, stored in the
narrowest integer type that holds the largest stratum size (uint8 up to 255 items per stratum).
Small jobs (see ``PARALLEL_MIN_WORK``) run the same blocks serially: identical results, no thread
pool start-up.

Numerics: products are added as ``acc += w * v`` without fused multiply-add, in CSR row order,
so a kernel equals its reference bit for bit; ``row_values`` must be finite (a zero weight times
NaN would otherwise leak an undrawn row into a replicate).

Each kernel has a plain numpy reference (``*_reference``) that loops over replicates in Python;
the two agree exactly because they add the same products in the same order.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from engine.errors import UserError
from metrics.bootstrap import rng
from metrics.bootstrap._validate import check_n_boot, check_scheme, check_seed

__all__ = [
    "BLOCK",
    "item_weights_reference",
    "replicate_weight_totals",
    "replicate_weight_totals_reference",
    "weighted_group_sums",
    "weighted_group_sums_reference",
]

#: Replicates generated together per item (a compile-time constant, so the inner loops over the
#: block vectorize). 64 measured faster than 16 or 32 on 1e6 rows x 500 groups (each row is read
#: once per block) and keeps the accumulator of 500 groups x 2 columns within L2. Results do not
#: depend on it.
BLOCK = 64

# The first six Poisson(1) thresholds on the top 53 bits, as int64 (they are below 2**53).
_I0, _I1, _I2, _I3, _I4, _I5 = (np.int64(int(t)) for t in rng.POISSON1_THRESHOLDS[:6])
_TWO_POW_MINUS_53 = 2.0**-53
_SHIFT11 = np.uint64(11)


# ----------------------------------------------------------------------------- numba pieces


@numba.njit(cache=True)
def _keys(
    seed: np.uint64, strata: np.ndarray, keys: np.ndarray, n_rep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's stream key (a hash of seed, stratum and key) and the first ``n_rep`` replicate
    keys. One kernel for both, as every call needs both: each distinct kernel is one more load
    from numba's cache (~10 ms) in every process."""
    streams = np.empty(keys.shape[0], dtype=np.uint64)
    for i in range(keys.shape[0]):
        streams[i] = rng.stream_key(seed, strata[i], keys[i])
    rep_keys = np.empty(n_rep, dtype=np.uint64)
    for b in range(n_rep):
        rep_keys[b] = rng.replicate_key(b)
    return streams, rep_keys


@numba.njit(inline="always", cache=True)
def _fill_poisson(stream: np.uint64, rep_keys: np.ndarray, b0: int, ws: np.ndarray) -> None:
    """Poisson(1) weights of one item for replicates ``b0 .. b0 + BLOCK``.

    Six branch-free comparisons settle every weight below 6 (all but 6e-4 of draws) in a loop
    that vectorizes; the rare larger draws are finished by a second, scalar pass. Equal to
    ``rng.poisson1_from_bits`` for every input.
    """
    # Compare the top 53 bits as signed int64 (AVX2 has a native signed 64-bit compare) and
    # convert the count through int32 (AVX2 converts int32, not int64, to float64).
    tail = False
    for t in range(BLOCK):
        v = np.int64(rng.mix64(stream ^ rep_keys[b0 + t]) >> _SHIFT11)
        count = (
            np.int64(v >= _I0)
            + np.int64(v >= _I1)
            + np.int64(v >= _I2)
            + np.int64(v >= _I3)
            + np.int64(v >= _I4)
            + np.int64(v >= _I5)
        )
        ws[t] = np.float64(np.int32(count))
        tail |= v >= _I5
    if tail:
        for t in range(BLOCK):
            x = rng.mix64(stream ^ rep_keys[b0 + t])
            if np.int64(x >> _SHIFT11) >= _I5:
                ws[t] = np.float64(rng.poisson1_from_bits(x))


@numba.njit(inline="always", cache=True)
def _fill_multinomial_counts(
    sorted_items: np.ndarray,
    strat_ptr: np.ndarray,
    draw_keys: np.ndarray,
    rep_keys: np.ndarray,
    b0: int,
    counts: np.ndarray,
) -> None:
    """Multinomial counts ``counts[i, t]`` for replicates ``b0 .. b0 + BLOCK`` (counts zeroed)."""
    for t in range(BLOCK):
        r = rep_keys[b0 + t]
        for s in range(strat_ptr.shape[0] - 1):
            start = strat_ptr[s]
            n_s = strat_ptr[s + 1] - start
            for j in range(n_s):
                u = np.float64(rng.mix64(draw_keys[start + j] ^ r) >> _SHIFT11) * _TWO_POW_MINUS_53
                idx = min(np.int64(u * n_s), n_s - 1)
                counts[sorted_items[start + idx], t] += 1


@numba.njit(inline="always", cache=True)
def _add_item_rows(
    acc: np.ndarray,
    ws: np.ndarray,
    r0: int,
    r1: int,
    row_group: np.ndarray,
    row_values: np.ndarray,
) -> None:
    k = row_values.shape[1]
    for r in range(r0, r1):
        g = row_group[r]
        for j in range(k):
            v = row_values[r, j]
            for t in range(BLOCK):
                acc[g, j, t] += ws[t] * v


@numba.njit(inline="always", cache=True)
def _store_block(out: np.ndarray, acc: np.ndarray, b0: int) -> None:
    m = min(BLOCK, out.shape[0] - b0)
    for t in range(m):
        for g in range(acc.shape[0]):
            for j in range(acc.shape[1]):
                out[b0 + t, g, j] = acc[g, j, t]


@numba.njit(inline="always", cache=True)
def _poisson_block(blk, item_ptr, streams, rep_keys, row_group, row_values, out):
    b0 = blk * BLOCK
    ws = np.empty(BLOCK)
    acc = np.zeros((out.shape[1], out.shape[2], BLOCK))
    for i in range(streams.shape[0]):
        _fill_poisson(streams[i], rep_keys, b0, ws)
        _add_item_rows(acc, ws, item_ptr[i], item_ptr[i + 1], row_group, row_values)
    _store_block(out, acc, b0)


@numba.njit(inline="always", cache=True)
def _multinomial_block(
    blk,
    item_ptr,
    sorted_items,
    strat_ptr,
    draw_keys,
    rep_keys,
    count_proto,
    row_group,
    row_values,
    out,
):
    b0 = blk * BLOCK
    n_items = item_ptr.shape[0] - 1
    counts = np.zeros((n_items, BLOCK), dtype=count_proto.dtype)
    _fill_multinomial_counts(sorted_items, strat_ptr, draw_keys, rep_keys, b0, counts)
    ws = np.empty(BLOCK)
    acc = np.zeros((out.shape[1], out.shape[2], BLOCK))
    for i in range(n_items):
        for t in range(BLOCK):
            ws[t] = np.float64(counts[i, t])
        _add_item_rows(acc, ws, item_ptr[i], item_ptr[i + 1], row_group, row_values)
    _store_block(out, acc, b0)


@numba.njit(inline="always", cache=True)
def _poisson_totals_block(blk, streams, rep_keys, out):
    b0 = blk * BLOCK
    ws = np.empty(BLOCK)
    acc = np.zeros(BLOCK)
    for i in range(streams.shape[0]):
        _fill_poisson(streams[i], rep_keys, b0, ws)
        for t in range(BLOCK):
            acc[t] += ws[t]
    for t in range(min(BLOCK, out.shape[0] - b0)):
        out[b0 + t] = acc[t]


@numba.njit(inline="always", cache=True)
def _multinomial_totals_block(blk, sorted_items, strat_ptr, draw_keys, rep_keys, count_proto, out):
    b0 = blk * BLOCK
    n_items = sorted_items.shape[0]
    counts = np.zeros((n_items, BLOCK), dtype=count_proto.dtype)
    _fill_multinomial_counts(sorted_items, strat_ptr, draw_keys, rep_keys, b0, counts)
    acc = np.zeros(BLOCK)
    for i in range(n_items):
        for t in range(BLOCK):
            acc[t] += np.float64(counts[i, t])
    for t in range(min(BLOCK, out.shape[0] - b0)):
        out[b0 + t] = acc[t]


# Each kernel comes twice, over threads (prange) and serial. Both run the same block function on
# the same blocks, so they return identical arrays; the serial one avoids the thread pool for small
# jobs (see PARALLEL_MIN_WORK).


@numba.njit(parallel=True, cache=True)
def _poisson_group_sums_par(item_ptr, streams, rep_keys, row_group, row_values, out):
    for blk in numba.prange((out.shape[0] + BLOCK - 1) // BLOCK):
        _poisson_block(blk, item_ptr, streams, rep_keys, row_group, row_values, out)


@numba.njit(cache=True)
def _poisson_group_sums_ser(item_ptr, streams, rep_keys, row_group, row_values, out):
    for blk in range((out.shape[0] + BLOCK - 1) // BLOCK):
        _poisson_block(blk, item_ptr, streams, rep_keys, row_group, row_values, out)


@numba.njit(parallel=True, cache=True)
def _multinomial_group_sums_par(
    item_ptr, sorted_items, strat_ptr, draw_keys, rep_keys, count_proto, row_group, row_values, out
):
    for blk in numba.prange((out.shape[0] + BLOCK - 1) // BLOCK):
        _multinomial_block(
            blk,
            item_ptr,
            sorted_items,
            strat_ptr,
            draw_keys,
            rep_keys,
            count_proto,
            row_group,
            row_values,
            out,
        )


@numba.njit(cache=True)
def _multinomial_group_sums_ser(
    item_ptr, sorted_items, strat_ptr, draw_keys, rep_keys, count_proto, row_group, row_values, out
):
    for blk in range((out.shape[0] + BLOCK - 1) // BLOCK):
        _multinomial_block(
            blk,
            item_ptr,
            sorted_items,
            strat_ptr,
            draw_keys,
            rep_keys,
            count_proto,
            row_group,
            row_values,
            out,
        )


@numba.njit(parallel=True, cache=True)
def _poisson_totals_par(streams, rep_keys, out):
    for blk in numba.prange((out.shape[0] + BLOCK - 1) // BLOCK):
        _poisson_totals_block(blk, streams, rep_keys, out)


@numba.njit(cache=True)
def _poisson_totals_ser(streams, rep_keys, out):
    for blk in range((out.shape[0] + BLOCK - 1) // BLOCK):
        _poisson_totals_block(blk, streams, rep_keys, out)


@numba.njit(parallel=True, cache=True)
def _multinomial_totals_par(sorted_items, strat_ptr, draw_keys, rep_keys, count_proto, out):
    for blk in numba.prange((out.shape[0] + BLOCK - 1) // BLOCK):
        _multinomial_totals_block(
            blk, sorted_items, strat_ptr, draw_keys, rep_keys, count_proto, out
        )


@numba.njit(cache=True)
def _multinomial_totals_ser(sorted_items, strat_ptr, draw_keys, rep_keys, count_proto, out):
    for blk in range((out.shape[0] + BLOCK - 1) // BLOCK):
        _multinomial_totals_block(
            blk, sorted_items, strat_ptr, draw_keys, rep_keys, count_proto, out
        )


#: Below this many weight-times-value operations (``n_boot * (n_items + n_rows * k)``) a kernel
#: runs serially: starting the thread pool costs more than it saves, and on a loaded machine a
#: parallel region waits until every thread is scheduled.
PARALLEL_MIN_WORK = 4_000_000


def _use_threads(n_boot: int, n_items: int, n_cells: int) -> bool:
    return n_boot > BLOCK and n_boot * (n_items + n_cells) >= PARALLEL_MIN_WORK


# ----------------------------------------------------------------------------- input handling


def _as_keys(name: str, values: npt.ArrayLike | None, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=np.uint64)
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise UserError(
            f"bootstrap input {name} must be 1-D with one entry per item ({n}), got shape {arr.shape}",
            "pass one key per item, in item (CSR) order",
        )
    if arr.dtype.kind not in "iu":
        raise UserError(
            f"bootstrap input {name} must hold integer keys, got dtype {arr.dtype}",
            "build keys with metrics.bootstrap.item_keys / stratum_keys",
        )
    return rng._u64(arr)


# Odd multiplier folding the stratum into the key for the quick uniqueness check (any odd
# constant keeps distinct strata distinct; equal pairs always fold to equal values).
_FOLD = np.uint64(0x9E3779B97F4A7C15)


def _check_unique_keys(
    strata: np.ndarray, keys: np.ndarray, *, need_order: bool = True
) -> np.ndarray | None:
    """Sort order by (stratum, key); raises if an item key repeats within a stratum.

    With ``need_order=False`` (the Poisson scheme) it returns None when the check passes: equal
    (stratum, key) pairs fold to equal values, so distinct folded values prove uniqueness, and
    one plain sort of them (SIMD) costs a fraction of the two-key lexsort (0.2 s at 5e5 items).
    A repeated folded value falls back to the exact check below, which names the items.
    """
    if not need_order:
        with np.errstate(over="ignore"):
            folded = np.sort(keys ^ (strata * _FOLD))
        if not (folded[1:] == folded[:-1]).any():
            return None
    order = np.lexsort((keys, strata))
    s, k = strata[order], keys[order]
    dup = np.flatnonzero((s[1:] == s[:-1]) & (k[1:] == k[:-1]))
    if dup.size:
        a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise UserError(
            f"bootstrap input item_keys: items {a} and {b} share key {int(k[dup[0]])} in one stratum",
            "put all rows of an item in one CSR segment (one item = one key per stratum)",
        )
    return order


def _prepare(
    item_ptr: npt.ArrayLike,
    item_keys: npt.ArrayLike,
    item_strata: npt.ArrayLike | None,
    row_group: npt.ArrayLike | None,
    row_values: npt.ArrayLike | None,
    seed: object,
    n_boot: object,
    scheme: object,
    n_groups: int | None,
) -> dict:
    scheme = check_scheme(scheme)
    n_boot = check_n_boot(n_boot)
    seed_u = check_seed(seed)
    ptr = None
    if item_ptr is not None:
        ptr = np.asarray(item_ptr)
        if ptr.ndim != 1 or ptr.size < 1 or ptr.dtype.kind not in "iu":
            raise UserError(
                "bootstrap input item_ptr must be 1-D integer CSR offsets of length n_items + 1",
                "sort rows by item and pass the offsets where each item starts, plus n_rows",
            )
        ptr = ptr.astype(np.int64)
        n_items = ptr.size - 1
    else:
        n_items = np.asarray(item_keys).shape[0]
    keys = _as_keys("item_keys", item_keys, n_items)
    strata = _as_keys("item_strata", item_strata, n_items)
    order = _check_unique_keys(strata, keys, need_order=scheme != "poisson")
    prepared: dict = {"scheme": scheme, "n_boot": n_boot, "seed": seed_u, "n_items": n_items}
    if row_values is not None:
        values = np.asarray(row_values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise UserError(
                f"bootstrap input row_values must be 1-D or 2-D (rows x columns), got {values.ndim}-D",
                "pass one row per CSR row and one column per summed quantity",
            )
        n_rows = values.shape[0]
        if ptr[0] != 0 or ptr[-1] != n_rows or np.any(np.diff(ptr) < 0):
            raise UserError(
                f"bootstrap input item_ptr must start at 0, be non-decreasing and end at n_rows "
                f"({n_rows}); got start {ptr[0]}, end {ptr[-1]}",
                "sort rows by item and pass the CSR offsets of each item's rows",
            )
        if not np.isfinite(values).all():
            bad = np.argwhere(~np.isfinite(values))[0]
            raise UserError(
                f"bootstrap input row_values has a non-finite value at row {bad[0]}, column {bad[1]}",
                "drop or impute missing values before the bootstrap",
            )
        groups = np.asarray(row_group)
        if groups.shape != (n_rows,) or (n_rows and groups.dtype.kind not in "iu"):
            raise UserError(
                f"bootstrap input row_group must be 1-D integer with one group id per row "
                f"({n_rows}), got shape {groups.shape} and dtype {groups.dtype}",
                "pass dense group ids 0 .. n_groups - 1",
            )
        groups = groups.astype(np.int64)
        max_group = int(groups.max()) + 1 if n_rows else 0
        if n_groups is None:
            n_groups = max_group
        if n_rows and (groups.min() < 0 or max_group > n_groups):
            raise UserError(
                f"bootstrap input row_group must lie in [0, n_groups={n_groups}), "
                f"got values in [{groups.min()}, {max_group - 1}]",
                "pass dense group ids and n_groups covering all of them",
            )
        prepared.update(
            item_ptr=ptr,
            row_group=np.ascontiguousarray(groups),
            row_values=np.ascontiguousarray(values),
            n_groups=int(n_groups),
        )
    prepared["keys"], prepared["strata"] = keys, strata
    n_padded = -(-n_boot // BLOCK) * BLOCK
    if scheme == "poisson":
        prepared["streams"], prepared["rep_keys"] = _keys(seed_u, strata, keys, n_padded)
    else:
        # Items sorted by (stratum, key); stratum s occupies strat_ptr[s]:strat_ptr[s + 1], and the
        # j-th draw of stratum s is keyed by (seed, stratum key, j).
        sorted_strata = strata[order]
        # No items (a group without evaluation items): no strata either, and every sum is 0.
        starts = (
            np.flatnonzero(np.r_[True, sorted_strata[1:] != sorted_strata[:-1]])
            if n_items
            else np.zeros(0, dtype=np.int64)
        )
        strat_ptr = np.r_[starts, n_items].astype(np.int64)
        positions = np.arange(n_items, dtype=np.uint64) - np.repeat(
            starts, np.diff(strat_ptr)
        ).astype(np.uint64)
        prepared["sorted_items"] = order.astype(np.int64)
        prepared["strat_ptr"] = strat_ptr
        prepared["draw_keys"], prepared["rep_keys"] = _keys(
            seed_u, sorted_strata, positions, n_padded
        )
        # A count never exceeds its stratum size: the narrowest exact dtype keeps the per-thread
        # count scratch (n_items x BLOCK) small.
        largest = int(np.diff(strat_ptr).max()) if n_items else 0
        count_dtype = np.uint8 if largest <= 255 else np.uint16 if largest <= 65535 else np.int32
        prepared["count_proto"] = np.zeros(0, dtype=count_dtype)
    return prepared


# ----------------------------------------------------------------------------- public API


def weighted_group_sums(
    item_ptr: npt.ArrayLike,
    item_keys: npt.ArrayLike,
    item_strata: npt.ArrayLike | None,
    row_group: npt.ArrayLike,
    row_values: npt.ArrayLike,
    seed: int,
    n_boot: int,
    scheme: str = "poisson",
    *,
    n_groups: int | None = None,
) -> np.ndarray:
    """Per-replicate weighted sums of row values per group, resampling items.

    Args:
        item_ptr: CSR offsets, length ``n_items + 1``: the rows of item ``i`` are
            ``item_ptr[i]:item_ptr[i + 1]`` (``item_ptr[0] == 0``, ``item_ptr[-1] == n_rows``).
        item_keys: Stable uint64 key per item (see :func:`metrics.bootstrap.item_keys`); it,
            not the position, decides the item's weights.
        item_strata: uint64 stratum (task) key per item (see
            :func:`metrics.bootstrap.stratum_keys`), or None for a single stratum (key 0).
        row_group: Dense group id per row, in ``[0, n_groups)``.
        row_values: Values to sum, shape ``(n_rows, k)`` (or ``(n_rows,)`` for ``k = 1``);
            must be finite.
        seed: Integer seed in ``[0, 2**64)``.
        n_boot: Number of replicates B (0 returns an empty ``(0, n_groups, k)`` array).
        scheme: ``"poisson"`` (additive across shards) or ``"multinomial"`` (exact per stratum).
        n_groups: Number of groups; defaults to ``max(row_group) + 1``. Pass it when adding
            shards, which may not all contain the last group.

    Returns:
        float64 array ``[n_boot, n_groups, k]``: ``out[b, g, j] = sum_r w(b, item(r)) *
        row_values[r, j]`` over the rows ``r`` of group ``g``.

    Raises:
        UserError: On a bad option (``n_boot``, ``seed``, ``scheme``) or inconsistent arrays.
    """
    p = _prepare(
        item_ptr, item_keys, item_strata, row_group, row_values, seed, n_boot, scheme, n_groups
    )
    values = p["row_values"]
    out = np.zeros((p["n_boot"], p["n_groups"], values.shape[1]))
    threads = _use_threads(p["n_boot"], p["n_items"], values.size)
    if p["scheme"] == "poisson":
        kernel = _poisson_group_sums_par if threads else _poisson_group_sums_ser
        kernel(p["item_ptr"], p["streams"], p["rep_keys"], p["row_group"], values, out)
    else:
        kernel = _multinomial_group_sums_par if threads else _multinomial_group_sums_ser
        kernel(
            p["item_ptr"], p["sorted_items"], p["strat_ptr"], p["draw_keys"], p["rep_keys"],
            p["count_proto"], p["row_group"], values, out,
        )  # fmt: skip
    return out


def replicate_weight_totals(
    item_keys: npt.ArrayLike,
    item_strata: npt.ArrayLike | None,
    seed: int,
    n_boot: int,
    scheme: str = "poisson",
) -> np.ndarray:
    """Total item weight per replicate, ``sum_i w(b, i)``: the RNG-only kernel.

    Runs the same replicate-block loop as :func:`weighted_group_sums` but only generates and sums
    weights; it measures the RNG ceiling and gives the effective number of items per replicate.

    Args:
        item_keys: Stable uint64 key per item.
        item_strata: uint64 stratum key per item, or None for a single stratum.
        seed: Integer seed in ``[0, 2**64)``.
        n_boot: Number of replicates B.
        scheme: ``"poisson"`` or ``"multinomial"`` (whose totals always equal ``n_items``).

    Returns:
        float64 array ``[n_boot]``.
    """
    p = _prepare(None, item_keys, item_strata, None, None, seed, n_boot, scheme, None)
    out = np.zeros(p["n_boot"])
    threads = _use_threads(p["n_boot"], p["n_items"], 0)
    if p["scheme"] == "poisson":
        (_poisson_totals_par if threads else _poisson_totals_ser)(p["streams"], p["rep_keys"], out)
    else:
        kernel = _multinomial_totals_par if threads else _multinomial_totals_ser
        kernel(
            p["sorted_items"], p["strat_ptr"], p["draw_keys"], p["rep_keys"], p["count_proto"], out
        )
    return out


# ----------------------------------------------------------------------------- numpy references


def item_weights_reference(
    item_keys: npt.ArrayLike,
    item_strata: npt.ArrayLike | None,
    seed: int,
    replicates: npt.ArrayLike,
    scheme: str = "poisson",
) -> np.ndarray:
    """The weights ``w(b, i)`` as an explicit ``[len(replicates), n_items]`` int64 matrix.

    A reference for tests and small inspections only: the kernels never build this matrix.

    Args:
        item_keys: Stable uint64 key per item.
        item_strata: uint64 stratum key per item, or None for a single stratum.
        seed: Integer seed.
        replicates: Replicate indices ``b``.
        scheme: ``"poisson"`` or ``"multinomial"``.

    Returns:
        int64 array ``[len(replicates), n_items]``.
    """
    scheme = check_scheme(scheme)
    seed_u = check_seed(seed)
    n_items = np.asarray(item_keys).shape[0]
    keys = _as_keys("item_keys", item_keys, n_items)
    strata = _as_keys("item_strata", item_strata, n_items)
    order = _check_unique_keys(strata, keys)
    reps = np.asarray(replicates, dtype=np.int64).reshape(-1)
    out = np.zeros((reps.size, n_items), dtype=np.int64)
    if scheme == "poisson":
        streams = rng.stream_key_reference(seed_u, strata, keys)
        for row, b in enumerate(reps):
            bits = rng.mix64_reference(streams ^ rng.replicate_key_reference(b))
            out[row] = rng.poisson1_from_bits_reference(bits)
        return out
    sorted_strata = strata[order]
    starts = np.flatnonzero(np.r_[True, sorted_strata[1:] != sorted_strata[:-1]])
    ends = np.r_[starts[1:], n_items]
    for row, b in enumerate(reps):
        r = rng.replicate_key_reference(b)
        for start, end in zip(starts, ends):
            n_s = int(end - start)
            draw_keys = rng.stream_key_reference(
                seed_u, sorted_strata[start], np.arange(n_s, dtype=np.uint64)
            )
            u = rng.bits_to_uniform_reference(rng.mix64_reference(draw_keys ^ r))
            idx = np.minimum((u * n_s).astype(np.int64), n_s - 1)
            out[row, order[start:end]] = np.bincount(idx, minlength=n_s)
    return out


def weighted_group_sums_reference(
    item_ptr: npt.ArrayLike,
    item_keys: npt.ArrayLike,
    item_strata: npt.ArrayLike | None,
    row_group: npt.ArrayLike,
    row_values: npt.ArrayLike,
    seed: int,
    n_boot: int,
    scheme: str = "poisson",
    *,
    n_groups: int | None = None,
) -> np.ndarray:
    """Numpy reference of :func:`weighted_group_sums` (same arguments, same result)."""
    p = _prepare(
        item_ptr, item_keys, item_strata, row_group, row_values, seed, n_boot, scheme, n_groups
    )
    values, groups, n_g = p["row_values"], p["row_group"], p["n_groups"]
    rows_per_item = np.diff(p["item_ptr"])
    out = np.zeros((p["n_boot"], n_g, values.shape[1]))
    for b in range(p["n_boot"]):
        w_item = item_weights_reference(p["keys"], p["strata"], int(p["seed"]), [b], p["scheme"])[0]
        w_row = np.repeat(w_item.astype(np.float64), rows_per_item)
        for j in range(values.shape[1]):
            # bincount adds the products row by row in row order, as the kernel does.
            out[b, :, j] = np.bincount(groups, weights=w_row * values[:, j], minlength=n_g)
    return out


def replicate_weight_totals_reference(
    item_keys: npt.ArrayLike,
    item_strata: npt.ArrayLike | None,
    seed: int,
    n_boot: int,
    scheme: str = "poisson",
) -> np.ndarray:
    """Numpy reference of :func:`replicate_weight_totals`."""
    n_boot = check_n_boot(n_boot)
    weights = item_weights_reference(item_keys, item_strata, seed, np.arange(n_boot), scheme)
    return weights.sum(axis=1).astype(np.float64)
