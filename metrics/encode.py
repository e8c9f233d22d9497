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

import hashlib
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from engine.contract import NO_HEDGE
from metrics import kernels
from metrics.io import ScoredRun

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
    """A uint64 per (task, item) that depends only on the strings and the seed (blake2b)."""
    out = np.empty(len(tasks), dtype=np.uint64)
    for i, (t, it) in enumerate(zip(tasks, items)):
        d = hashlib.blake2b(f"{seed}\x1f{t}\x1f{it}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(d, "little")
    return out


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
) -> Encoded:
    """Encode `run` for analysis (see the module docstring for roles).

    Args:
        run: a validated scored run.
        mode: "heldout" or "parity".
        ref_split: split whose responses build MICs in heldout mode.
        eval_split: split whose responses are scored in heldout mode.
        seed: seed of the 50/50 item split for tasks lacking one of the two splits.
        ignore_no_hedge: drop `<no_hedge>` rows entirely.

    Returns:
        The `Encoded` arrays.
    """
    resp = run.responses
    groups = resp.select("model", "prompt").unique().sort(["model", "prompt"]).rows()
    tasks = sorted(resp.get_column("task").unique().to_list())
    sent = run.sentences
    if ignore_no_hedge:
        sent = sent.filter(pl.col("marker") != NO_HEDGE)
    markers = sorted(sent.get_column("marker").unique().to_list())

    gnames = ["\x1f".join(g) for g in groups]
    gkey = resp.select(pl.concat_str(["model", "prompt"], separator="\x1f")).to_series()
    r_g = _codes(gkey, gnames)
    r_t = _codes(resp.get_column("task"), tasks)
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

    s_r = sent.get_column("_r").to_numpy().astype(np.int64)
    s_m = _codes(sent.get_column("marker"), markers)
    s_conf = sent.get_column("confidence").fill_null(np.nan).to_numpy().astype(np.float64)
    s_dec = sent.get_column("decisiveness").fill_null(np.nan).to_numpy().astype(np.float64)
    ptr, order = kernels.by_response(s_r, n)
    n_sentences = resp.get_column("n_sentences").to_numpy().astype(np.int64)

    # Faithfulness is a property of sentences, not markers: computed from all rows, whatever
    # `ignore_no_hedge` says.
    if sent is run.sentences:  # the same rows: reuse the arrays built above
        all_ptr, all_order, all_conf, all_dec = ptr, order, s_conf, s_dec
    else:
        full = run.sentences
        all_ptr, all_order = kernels.by_response(
            full.get_column("_r").to_numpy().astype(np.int64), n
        )
        all_conf = full.get_column("confidence").fill_null(np.nan).to_numpy().astype(np.float64)
        all_dec = full.get_column("decisiveness").fill_null(np.nan).to_numpy().astype(np.float64)
    r_f, r_c = kernels.faithfulness(
        all_ptr,
        all_order,
        run.sentences.get_column("sentence_idx").to_numpy().astype(np.int32),
        all_conf,
        all_dec,
        n_sentences,
    )
    return Encoded(
        groups=[tuple(g) for g in groups],
        tasks=tasks,
        markers=markers,
        r_g=r_g,
        r_t=r_t,
        r_correct=resp.get_column("correct").to_numpy().astype(bool),
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
    )


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
