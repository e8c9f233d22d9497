"""Paired comparisons of (model, prompt) groups from the same bootstrap replicates.

Two groups evaluated on the same items draw the same weights (the counter RNG is keyed by the
item, not by the model), so the replicate difference of a metric is a paired bootstrap
distribution. Each metric's difference is debiased like the metric itself
(`metrics.debias.paired_difference`): the debiased difference, its basic interval (normal for
MAC and MCC, whose replicates are long-tailed, and for the CVs, whose single-group interval is
normal too; MAC's sd from a second bootstrap level, computed only when groups are compared,
`metrics.debias.second_level_se`) and the two-sided p-value that
inverts that interval. Holm and Benjamini-Hochberg adjust across the
family of distinct tests: a metric that is another's alias (MRC is MRC-S-all, I-AvgMAE is its
Mode 1, ...) is tested once, under its headline name. A metric's population value depends on
the marker set it is computed over, so when the two groups' valid marker sets differ
(`same_markers` false: a rare marker crossed the count threshold in one group only) both groups
are recomputed on the markers valid in both, per task (`on_common_markers`): otherwise two
models drawn from one population would differ by the change of marker set (measured: 20 %
rejections at alpha = 0.05). Accuracy per task also gets McNemar's exact test on the items both
groups answered.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import polars as pl
from scipy import stats

from engine.errors import UserError
from metrics.debias import paired_difference
from metrics.encode import Encoded
from metrics.io import ScoredRun
from metrics.seven import Metric


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN left out and kept NaN)."""
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order]) if m else np.zeros(0)
    out[order] = np.minimum(adj, 1.0)
    return out


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up; NaN left out and kept NaN)."""
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    if m:
        adj = p[order] * m / np.arange(1, m + 1)
        adj = np.minimum.accumulate(adj[::-1])[::-1]
        out[order] = np.minimum(adj, 1.0)
    return out


def bootstrap_p(diff: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a paired difference's replicates (NaN replicates dropped)."""
    d = diff[np.isfinite(diff)]
    if len(d) == 0:
        return float("nan")
    lo = (1 + np.sum(d <= 0)) / (len(d) + 1)
    hi = (1 + np.sum(d >= 0)) / (len(d) + 1)
    return float(min(1.0, 2 * min(lo, hi)))


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test on paired booleans: (a right b wrong, a wrong b right, p)."""
    n01 = int(np.sum(a & ~b))
    n10 = int(np.sum(~a & b))
    n = n01 + n10
    p = 1.0 if n == 0 else float(min(1.0, 2 * stats.binom.cdf(min(n01, n10), n, 0.5)))
    return n01, n10, p


HEADLINE_ALIASES = ("I-AvgMAE", "C-AvgMAE", "MRC", "MAC", "MCC")


def distinct_metrics(ma: dict[str, Metric], mb: dict[str, Metric]) -> list[str]:
    """Metric names of both groups, one per distinct statistic (aliases share one `Metric`
    object in `metrics.seven`); the headline name is kept."""
    names = sorted(set(ma) & set(mb), key=lambda n: (n not in HEADLINE_ALIASES, n))
    seen: set[tuple[int, int]] = set()
    out = []
    for name in names:
        key = (id(ma[name]), id(mb[name]))
        if key in seen:
            continue
        seen.add(key)
        out.append(name)
    return sorted(out)


def _same_markers(va, vb) -> bool:
    """Whether two groups have the same tasks and the same valid markers in each task.

    A metric's population value is defined over the group's marker set; when the sets differ
    (a rare marker crosses the count threshold in one group only), the difference of the metric
    includes that change, and a null of "same population" no longer implies a difference of 0.
    """
    return bool(
        np.array_equal(va.tasks, vb.tasks)
        and va.usable.shape == vb.usable.shape
        and np.array_equal(va.usable, vb.usable)
    )


def compare_groups(
    run: ScoredRun,
    enc: Encoded,
    views,
    group_values: dict[int, dict[str, Metric]],
    level: float,
    common: Callable | None = None,
) -> pl.DataFrame:
    """Every pair of groups x every metric defined in both, plus McNemar per task.

    Args:
        run, enc, views: the analysis' run, encoding and `GroupView`s.
        group_values: each group's metrics (point estimate and replicates).
        level: confidence level.
        common: (view_a, view_b) -> both groups' metrics on the markers valid in both; called
            for pairs whose marker sets differ (None: compare each group's own metrics).
    """
    resp = run.responses.select("task", "split", "item_id").with_columns(
        pl.Series("_g", enc.r_g), pl.Series("_ref", enc.r_ref), pl.Series("_c", enc.r_correct)
    )
    rows: list[dict] = []
    if len(views) < 2:
        raise UserError(
            "--compare needs at least two (model, prompt) groups",
            "pass scored runs of two or more models or prompts",
        )
    for va, vb in itertools.combinations(views, 2):
        ga, gb = va.g, vb.g
        name_a, name_b = "/".join(enc.groups[ga]), "/".join(enc.groups[gb])
        ia = resp.filter(pl.col("_g") == ga)
        ib = resp.filter(pl.col("_g") == gb)
        shared = ia.join(ib, on=["task", "split", "item_id"], how="inner", suffix="_b")
        if shared.height == 0:
            raise UserError(
                f"cannot compare {name_a} with {name_b}: they share no items (task, split, item_id)",
                "compare runs scored on the same tasks and items",
            )
        base = {
            "model_a": enc.groups[ga][0], "prompt_a": enc.groups[ga][1],
            "model_b": enc.groups[gb][0], "prompt_b": enc.groups[gb][1],
            "n_shared_items": shared.height,
            "n_items_a": ia.height, "n_items_b": ib.height,
            "same_markers": _same_markers(va, vb),
        }  # fmt: skip
        ma, mb = group_values[ga], group_values[gb]
        base["on_common_markers"] = not base["same_markers"] and common is not None
        if base["on_common_markers"]:
            ma, mb = common(va, vb)
        for metric in distinct_metrics(ma, mb):
            xa, xb = ma[metric].values, mb[metric].values
            if xa is None or xb is None or not (np.isfinite(xa[0]) and np.isfinite(xb[0])):
                continue
            d = paired_difference(ma[metric], mb[metric], level, metric)
            if d is None:
                continue
            rows.append({**base, "metric": metric, "test": "paired bootstrap", "a": float(xa[0]), "b": float(xb[0]),
                         "diff": d.plugin, "diff_debiased": d.debiased, "ci_lo": d.ci[0], "ci_hi": d.ci[1],
                         "ci_method": d.ci_method, "p_value": d.p_value})  # fmt: skip
        ref = shared.filter(pl.col("_ref") & pl.col("_ref_b"))
        for task in sorted(ref.get_column("task").unique().to_list()):
            part = ref.filter(pl.col("task") == task)
            a = part.get_column("_c").to_numpy()
            b = part.get_column("_c_b").to_numpy()
            n01, n10, p = mcnemar_exact(a, b)
            rows.append({**base, "metric": f"accuracy[{task}]", "test": "McNemar exact", "a": float(a.mean()),
                         "b": float(b.mean()), "diff": float(a.mean() - b.mean()),
                         "diff_debiased": float(a.mean() - b.mean()), "ci_lo": None, "ci_hi": None,
                         "ci_method": None, "p_value": p, "n_shared_items": part.height})  # fmt: skip
    table = pl.DataFrame(rows, infer_schema_length=None)
    if table.height:
        p = table.get_column("p_value").to_numpy().astype(float)
        table = table.with_columns(
            pl.Series("p_holm", holm(p)), pl.Series("p_bh", benjamini_hochberg(p))
        )
    return table
