"""Turn a validated scored run into dense numpy arrays the computations run on.

Responses and (sentence, marker) rows get small integer codes: group g = (model, prompt), task t,
marker m, and each row the index r of its response. Every later computation is a weighted sum
over these arrays (np.bincount), so a bootstrap replicate is the same computation with other
response weights.

Roles (docs/method.md §4): in `heldout` mode a response is *reference* (builds MICs, accuracy,
cMFG) if its split is the reference split and *evaluation* (scored for MAE) if its split is the
evaluation split; a task lacking either split is divided 50/50 by item with a seeded, stable hash,
so the same items fall on the same side for every model and prompt. In `parity` mode every
response plays both roles (the seed scores in-sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba as nb
import numpy as np
import polars as pl

from engine.contract import NO_HEDGE
from metrics import kernels, keycodes
from metrics.bootstrap.rng import KEY_SEP
from metrics.io import ScoredRun, _read_only

FAITHFUL_CUTOFF = 0.75


@dataclass(frozen=True)
class Encoded:
    """Dense arrays of one scored run.

    Response arrays (length R) start with `r_`, row arrays (length N) with `s_`.
    Missing confidence / decisiveness / faithfulness are NaN.
    """

    groups: list[tuple[str, str]]  # (model, prompt) per group code
    tasks: list[str]
    markers: list[str]
    r_g: np.ndarray
    r_t: np.ndarray
    r_correct: np.ndarray
    r_nsent: np.ndarray
    r_ref: np.ndarray
    r_eval: np.ndarray
    r_f: np.ndarray  # faithfulness f(r), NaN when no valid sentence
    r_c: np.ndarray  # mean confidence over valid sentences c(r)
    s_r: np.ndarray
    s_m: np.ndarray
    s_conf: np.ndarray
    s_dec: np.ndarray
    ptr: np.ndarray  # CSR by response: rows of r are order[ptr[r]:ptr[r+1]]
    order: np.ndarray
    no_hedge: int  # marker code of <no_hedge>, -1 if absent
    auto_split: dict[str, list[str]] = field(
        default_factory=dict
    )  # "model/prompt" -> tasks split 50/50
    # MIC-table rows of the markers left out of the arrays (below the threshold in every cell):
    # model, prompt, task, marker, count, n_present, mic and its variants (see `DROPPED_SCHEMA`).
    dropped: pl.DataFrame | None = None

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_markers(self) -> int:
        return len(self.markers)


def stable_item_hash(seed: int, tasks: np.ndarray, items: np.ndarray) -> np.ndarray:
    """A uint64 per (task, item) that depends only on the strings and the seed.

    XXH64 of ``f"{seed}\\x1f{escape_key_part(task)}\\x1f{item}"`` (see `pair_keys`): the task is
    escaped, so no two (task, item) pairs share a text.
    """
    from metrics.bootstrap.rng import pair_keys

    if len(tasks) == 0:
        return np.zeros(0, dtype=np.uint64)
    return pair_keys(tasks, items, prefix=f"{seed}{KEY_SEP}")


def _writable(col: pl.Series, dtype: type) -> np.ndarray:
    """`col` as a writable numpy array of `dtype` (nulls of a float column as NaN), copied at
    most once: polars may hand out its own read-only memory, and numba compiles a kernel again
    for a read-only array."""
    a = col.to_numpy()
    if a.dtype != dtype or not a.flags.writeable:
        a = a.astype(dtype)
    return a


def _codes(col: pl.Series, names: list[str]) -> np.ndarray:
    """Position of each value in the sorted `names` (an Enum cast: the fastest polars path)."""
    return col.cast(pl.Enum(names)).to_physical().to_numpy().astype(np.int32)


def encode(
    run: ScoredRun,
    *,
    mode: str = "heldout",
    ref_split: str = "train",
    eval_split: str = "test",
    seed: int = 0,
    ignore_no_hedge: bool = False,
    threshold: int | None = None,
) -> Encoded:
    """Encode `run` for analysis (see the module docstring for roles).

    Args:
        run: a validated scored run.
        mode: "heldout" or "parity".
        ref_split: split whose responses build MICs in heldout mode.
        eval_split: split whose responses are scored in heldout mode.
        seed: seed of the 50/50 item split for tasks lacking one of the two splits.
        ignore_no_hedge: drop `<no_hedge>` rows entirely.
        threshold: marker count threshold tau. When given, markers with fewer than tau reference
            rows in every (group, task) leave the arrays: no metric uses them, and free-form
            extraction can give hundreds of thousands of them. Their MIC-table rows are kept in
            `Encoded.dropped`. None keeps every marker.

    Returns:
        The `Encoded` arrays.
    """
    resp = run.responses
    # Group (model, prompt) codes from the codes of each column (sorted names keep the groups in
    # (model, prompt) order): no key is made by joining the two strings.
    triples = run.triples
    if triples is not None and len(triples[0]) == resp.height:
        # Validation's (model, prompt, task) group of each response: the names from each
        # group's first row, the codes by lookup (three Enum casts and three `unique`s of
        # every response's strings cost ~0.5 s at 4.6e6 responses).
        triple, first_row = triples
        head = resp.select("model", "prompt", "task")[first_row]
        models = sorted(set(head.get_column("model").to_list()))
        prompts = sorted(set(head.get_column("prompt").to_list()))
        tasks = sorted(set(head.get_column("task").to_list()))
        code_of = [{name: i for i, name in enumerate(names)} for names in (models, prompts, tasks)]
        m_code, p_code, t_code = (
            np.array([codes[v] for v in head.get_column(c).to_list()], dtype=np.int64)
            for codes, c in zip(code_of, ("model", "prompt", "task"))
        )
        pair = (m_code * len(prompts) + p_code)[triple]
        r_t = t_code.astype(np.int32)[triple]
    else:
        models = sorted(resp.get_column("model").unique().to_list())
        prompts = sorted(resp.get_column("prompt").unique().to_list())
        pair = _codes(resp.get_column("model"), models).astype(np.int64) * len(prompts) + _codes(
            resp.get_column("prompt"), prompts
        )
        tasks = sorted(resp.get_column("task").unique().to_list())
        r_t = _codes(resp.get_column("task"), tasks)
    # Dense codes of the pairs present, in pair order (what np.unique gives, without its sort
    # of every response: the pairs are few).
    present = np.bincount(pair, minlength=len(models) * len(prompts)) > 0
    uniq_pairs = np.flatnonzero(present)
    r_g = (np.cumsum(present) - 1).astype(np.int32)[pair]
    groups = [(models[int(u) // len(prompts)], prompts[int(u) % len(prompts)]) for u in uniq_pairs]
    sent = run.sentences
    if ignore_no_hedge:
        sent = sent.filter(pl.col("marker") != NO_HEDGE)
    marker_col = sent.get_column("marker")
    marker_lut = None
    if isinstance(marker_col.dtype, pl.Categorical) and not marker_col.null_count():
        # A categorical (as files are read): its distinct values from one pass over the codes,
        # each row's position among the sorted names by a lookup (a polars unique and an Enum
        # cast of 1e7 rows cost ~0.4 s together).
        m_codes = _read_only(marker_col.to_physical().to_numpy())
        first = keycodes.first_rows(m_codes, int(m_codes.max(initial=0)) + 1)
        present = np.flatnonzero(first >= 0)
        names = marker_col.gather(first[present]).cast(pl.String).to_list()
        markers = sorted(names)
        marker_lut = np.zeros(len(first), dtype=np.int32)
        rank = {name: i for i, name in enumerate(markers)}
        marker_lut[present] = [rank[name] for name in names]
    else:
        markers = sorted(marker_col.unique().to_list())
    n = resp.height

    auto: dict[str, list[str]] = {}
    if mode == "parity":
        r_ref = np.ones(n, dtype=bool)
        r_eval = np.ones(n, dtype=bool)
    else:
        split = resp.get_column("split")
        r_ref = (split == ref_split).to_numpy()
        r_eval = (split == eval_split).to_numpy()
        gt = r_g.astype(np.int64) * len(tasks) + r_t
        has_ref = np.bincount(gt[r_ref], minlength=len(groups) * len(tasks)) > 0
        has_eval = np.bincount(gt[r_eval], minlength=len(groups) * len(tasks)) > 0
        need = ~(has_ref & has_eval)
        resp_need = need[gt]
        if resp_need.any():
            idx = np.flatnonzero(resp_need)
            items = resp.get_column("item_id").gather(idx).to_numpy().astype(object)
            h = stable_item_hash(seed, np.asarray(tasks, dtype=object)[r_t[idx]], items)
            # Within each (group, task): the half of the items with the smallest hash is reference.
            order = np.lexsort((h, gt[idx]))
            sorted_gt = gt[idx][order]
            starts = np.r_[0, np.flatnonzero(np.diff(sorted_gt)) + 1]
            sizes = np.diff(np.r_[starts, len(order)])
            rank = np.arange(len(order)) - np.repeat(starts, sizes)
            half = np.repeat((sizes + 1) // 2, sizes)
            ref_sorted = rank < half
            r_ref[idx[order]] = ref_sorted
            r_eval[idx[order]] = ~ref_sorted
            for code in np.unique(gt[idx]):
                g, t = divmod(int(code), len(tasks))
                auto.setdefault("/".join(groups[g]), []).append(tasks[t])

    s_r = _writable(sent.get_column("_r"), np.int64)
    s_m = marker_lut[m_codes] if marker_lut is not None else _codes(marker_col, markers)
    del marker_col
    s_conf = _writable(sent.get_column("confidence"), np.float64)
    s_dec = _writable(sent.get_column("decisiveness"), np.float64)
    n_sentences = resp.get_column("n_sentences").to_numpy().astype(np.int64)
    r_correct = resp.get_column("correct").to_numpy().astype(bool)

    # Faithfulness is a property of sentences, not markers: computed from all rows, whatever
    # `ignore_no_hedge` or the threshold drop.
    full = run.sentences
    same = sent is full  # the same rows: reuse the arrays built above
    full_r = s_r if same else _writable(full.get_column("_r"), np.int64)
    cached = run.by_response
    if cached is not None and len(cached[1]) == n + 1 and np.array_equal(cached[0], full_r):
        all_ptr, all_order = cached[1], cached[2]  # validation's index of these very rows
    else:
        all_ptr, all_order = kernels.by_response(full_r, n)
    del full_r, cached
    r_f, r_c = kernels.faithfulness(
        all_ptr,
        all_order,
        _writable(full.get_column("sentence_idx"), np.int32),
        s_conf if same else _writable(full.get_column("confidence"), np.float64),
        s_dec if same else _writable(full.get_column("decisiveness"), np.float64),
        n_sentences,
    )
    kept_all = same  # s_r is still every row of `full`: the CSR index above is the one needed

    dropped = None
    if threshold is not None and len(s_r):
        keep_marker = _markers_reaching(threshold, s_r, s_m, r_g, r_t, r_ref, len(markers))
        if not keep_marker.all():
            kept_all = False
            drop_row = ~keep_marker[s_m]
            dropped = _dropped_rows(
                s_r[drop_row], s_m[drop_row], s_conf[drop_row], s_dec[drop_row],
                r_g, r_t, r_ref, r_correct, r_f, groups, tasks, markers,
            )  # fmt: skip
            new_code = np.cumsum(keep_marker) - 1
            keep_row = ~drop_row
            s_r, s_conf, s_dec = s_r[keep_row], s_conf[keep_row], s_dec[keep_row]
            s_m = new_code[s_m[keep_row]].astype(np.int32)
            markers = [mk for mk, k in zip(markers, keep_marker) if k]
    if kept_all:
        ptr, order = all_ptr, all_order
    else:
        ptr, order = kernels.by_response(s_r, n)
    del all_ptr, all_order

    return Encoded(
        groups=[tuple(g) for g in groups],
        tasks=tasks,
        markers=markers,
        r_g=r_g,
        r_t=r_t,
        r_correct=r_correct,
        r_nsent=n_sentences,
        r_ref=r_ref,
        r_eval=r_eval,
        r_f=r_f,
        r_c=r_c,
        s_r=s_r,
        s_m=s_m,
        s_conf=s_conf,
        s_dec=s_dec,
        ptr=ptr,
        order=order,
        no_hedge=markers.index(NO_HEDGE) if NO_HEDGE in markers else -1,
        auto_split=auto,
        dropped=dropped,
    )


@nb.njit(cache=True)
def _ref_cell_counts(s_r, s_m, r_g, r_t, r_ref, n_tasks, n_markers, size):
    """Reference rows per (group, task, marker) cell, in one pass (numpy took five gathers of
    every row and the products of their codes: ~0.2 s at 1e7 rows)."""
    counts = np.zeros(size, dtype=np.int64)
    for i in range(len(s_r)):
        r = s_r[i]
        if r_ref[r]:
            counts[(np.int64(r_g[r]) * n_tasks + r_t[r]) * n_markers + s_m[i]] += 1
    return counts


def _markers_reaching(
    threshold: int,
    s_r: np.ndarray,
    s_m: np.ndarray,
    r_g: np.ndarray,
    r_t: np.ndarray,
    r_ref: np.ndarray,
    n_markers: int,
) -> np.ndarray:
    """Mask of markers with at least `threshold` reference rows in some (group, task)."""
    n_tasks = int(r_t.max(initial=-1)) + 1
    n_groups = int(r_g.max(initial=-1)) + 1
    size = n_groups * n_tasks * n_markers
    if size <= 4 * len(s_r) + 1_000_000:  # dense counts are cheaper than a sort
        counts = _ref_cell_counts(s_r, s_m, r_g, r_t, r_ref, n_tasks, n_markers, size)
        reach = np.flatnonzero(counts >= threshold)
    else:
        ref = r_ref[s_r]
        cell = (r_g[s_r[ref]].astype(np.int64) * n_tasks + r_t[s_r[ref]]) * n_markers + s_m[ref]
        uniq, counts = np.unique(cell, return_counts=True)
        reach = uniq[counts >= threshold]
    keep = np.zeros(n_markers, dtype=bool)
    keep[reach % n_markers] = True
    return keep


# The columns of `mic.parquet`, one row per (model, prompt, task, marker).
MIC_TABLE_SCHEMA = {
    "model": pl.String,
    "prompt": pl.String,
    "task": pl.String,
    "marker": pl.String,
    "count": pl.Int64,
    "n_present": pl.Int64,
    "mic": pl.Float64,
    "ci_lo": pl.Float64,
    "ci_hi": pl.Float64,
    "valid": pl.Boolean,
    "shared": pl.Boolean,
    "mic_c": pl.Float64,
    "mic_i": pl.Float64,
    "mic_f": pl.Float64,
    "mic_uf": pl.Float64,
    "mf": pl.Float64,
}
# Columns of `Encoded.dropped` (the MIC table's columns a dropped marker can fill: no interval).
DROPPED_SCHEMA = {k: v for k, v in MIC_TABLE_SCHEMA.items() if k not in ("ci_lo", "ci_hi")}


def _dropped_rows(
    s_r, s_m, s_conf, s_dec, r_g, r_t, r_ref, r_correct, r_f, groups, tasks, markers
) -> pl.DataFrame:
    """MIC-table rows of dropped markers: the sums of `kernels.mic_sums`, per present cell.

    Sums run over the rows in row order, as the kernel adds them, so the values are the ones the
    full tensor would have held.
    """
    ref = r_ref[s_r]
    r = s_r[ref]
    m = s_m[ref].astype(np.int64)
    x = s_conf[ref]
    d = s_dec[ref]
    T, M = len(tasks), len(markers)
    cell = (r_g[r].astype(np.int64) * T + r_t[r]) * M + m
    uniq, inv = np.unique(cell, return_inverse=True)
    inv = inv.reshape(-1)
    k = len(uniq)
    present = ~np.isnan(x)
    xz = np.where(present, x, 0.0)

    def sums(mask: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_ = np.bincount(inv[mask], minlength=k).astype(np.float64)
        s_ = np.bincount(inv[mask], weights=values[mask], minlength=k)
        return n_, s_

    def ratio(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        den, num = pair
        out = np.full(k, np.nan)
        np.divide(num, den, out=out, where=den > 0)
        return out

    f = r_f[r]
    correct = r_correct[r]
    n_present, s_conf_sum = sums(present, xz)
    both = present & ~np.isnan(d)
    gap = np.where(both, np.abs(np.where(both, d, 0.0) - xz), 0.0)
    g_code, rest = np.divmod(uniq, T * M)
    t_code, m_code = np.divmod(rest, M)
    columns = {
        "model": [groups[i][0] for i in g_code],
        "prompt": [groups[i][1] for i in g_code],
        "task": [tasks[i] for i in t_code],
        "marker": [markers[i] for i in m_code],
        "count": np.bincount(inv, minlength=k),
        "n_present": n_present.astype(np.int64),
        "mic": ratio((n_present, s_conf_sum)),
        "valid": np.zeros(k, dtype=bool),
        "shared": np.zeros(k, dtype=bool),
        "mic_c": ratio(sums(present & correct, xz)),
        "mic_i": ratio(sums(present & ~correct, xz)),
        "mic_f": ratio(sums(present & (f >= FAITHFUL_CUTOFF), xz)),
        "mic_uf": ratio(sums(present & (f < FAITHFUL_CUTOFF), xz)),
        "mf": ratio(sums(both, gap)),
    }
    return pl.DataFrame(columns, schema=DROPPED_SCHEMA).with_columns(
        pl.col(pl.Float64).fill_nan(None)
    )


def with_dropped_markers(enc: Encoded, mic_table: pl.DataFrame) -> pl.DataFrame:
    """`mic_table` plus the rows of the markers `encode` left out, in (model, prompt, task,
    marker) order like the rest; columns the dropped markers cannot fill (intervals) are null."""
    if enc.dropped is None or enc.dropped.height == 0:
        return mic_table
    merged = pl.concat([mic_table, enc.dropped], how="diagonal_relaxed")
    return merged.select(mic_table.columns).sort("model", "prompt", "task", "marker")


def faithfulness_reference(
    sentences: pl.DataFrame, n_sentences: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """f(r) and c(r) of docs/method.md §2 in polars: the reference of `kernels.faithfulness`.

    f(r) = 1 - (1/|S(r)|) * sum over valid sentences of |decisiveness - confidence|, where valid
    means both are present and |S(r)| = n_sentences counts every sentence. Undefined (NaN) when no
    sentence is valid. c(r) = mean confidence over valid sentences. Always computed from all rows,
    whatever `ignore_no_hedge` says: faithfulness is a property of sentences, not markers.
    """
    f = np.full(n, np.nan)
    c = np.full(n, np.nan)
    valid = sentences.select("_r", "sentence_idx", "confidence", "decisiveness").filter(
        pl.col("confidence").is_not_null() & pl.col("decisiveness").is_not_null()
    )
    if valid.height == 0:
        return f, c
    per_sentence = (
        valid.group_by("_r", "sentence_idx")
        .agg(pl.col("confidence").first(), pl.col("decisiveness").first())
        # Sum in sentence order (as the seed does): c(r) is binned for cMFG, so its last bit must
        # not depend on row order or file split.
        .sort("_r", "sentence_idx")
    )
    r = per_sentence.get_column("_r").to_numpy().astype(np.int64)
    conf = per_sentence.get_column("confidence").to_numpy()
    gap = np.abs(per_sentence.get_column("decisiveness").to_numpy() - conf)
    nvalid = np.bincount(r, minlength=n)
    has = nvalid > 0
    gap_sum = np.bincount(r, weights=gap, minlength=n)
    conf_sum = np.bincount(r, weights=conf, minlength=n)
    f[has] = 1.0 - gap_sum[has] / n_sentences[has]
    c[has] = conf_sum[has] / nvalid[has]
    return f, c
