"""`mic analyze`: scored runs -> `metrics.json` and `mic.parquet` (docs/method.md §8).

from metrics import analyze
result = analyze(["runs/llama"], out="results/llama", mode="heldout", threshold=10)
result.metrics_json["models"]["llama"]["default"]["metrics"]["MRC"]
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.contract import RunLayout, atomic_write
from engine.errors import UserError
from metrics import debias as debias_mod
from metrics.bootstrap import bca_interval, mean_acceleration, percentile_interval
from metrics.bootstrap._validate import check_level, check_method, check_n_boot, check_scheme
from metrics.compile_notice import announce_compiles
from metrics.core import Tables, compute_tables
from metrics.debias import (
    CI_METHOD,
    CI_METHOD_CORRECTED,
    CI_METHOD_CV,
    CI_METHOD_PEARSON,
    CI_METHOD_PLUGIN,
    CI_METHOD_RANK,
    CI_METHOD_RANK_KEPT,
    CI_METHOD_TWO_LEVEL,
    debias,
    is_correlation,
    is_pearson,
    metric_bounds,
    on_fisher_scale,
)
from metrics.encode import MIC_TABLE_SCHEMA, Encoded, encode, with_dropped_markers
from metrics.frames import as_scored_run
from metrics.guards import bootstrap_progress, check_bootstrap, check_output_dir
from metrics.resample import (
    GroupReplicates,
    group_replicates,
    local_group_sums,
    mic_acceleration,
    response_keys,
)
from metrics.seven import (
    RANK_RESOLUTION,
    Metric,
    attach_noise_corrections,
    attach_pearson_corrections,
    attach_rank_corrections,
    seven_metrics,
)

MODES = ("heldout", "parity")
PRESETS = ("mic", "marcon")
JSON_VERSION = 1
# Items per task (reference and evaluation together) from which the metric intervals' coverage
# was measured within [0.92, 0.98] on the simulator's populations (docs/statistics.md). Below
# it, a group's metrics.json block carries an `interval_note`, which the summary and the
# report show.
VALIDATED_ITEMS = 300


@dataclass(frozen=True)
class AnalysisResult:
    """What `analyze` computed and where it wrote it."""

    metrics_json: dict
    mic_table: pl.DataFrame
    out_dir: Path | None
    comparisons: pl.DataFrame | None = None

    @property
    def metrics(self) -> pl.DataFrame:
        """The metrics as a tidy table (model, prompt, metric, value, debiased, ci_lo, ci_hi, n)."""
        from metrics.tidy import tidy_metrics

        return tidy_metrics(self.metrics_json)


@dataclass(frozen=True)
class GroupView:
    """One (model, prompt): the tasks it has and its marker sets."""

    g: int
    tasks: np.ndarray  # task codes with reference responses
    usable: np.ndarray  # [T_g, M] valid with a defined MIC
    shared: np.ndarray  # [M]


def _check_options(mode: str, threshold: int, preset: str) -> None:
    if mode not in MODES:
        raise UserError(f"--mode {mode!r} is not a mode", f"use one of {', '.join(MODES)}")
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r} is not a preset", f"use one of {', '.join(PRESETS)}")
    if not isinstance(threshold, int) or threshold < 1:
        raise UserError(
            f"--threshold {threshold!r} must be a whole number >= 1", "the seed study uses 10"
        )


def group_views(enc: Encoded, tables: Tables, valid: np.ndarray) -> list[GroupView]:
    """Tasks, usable and shared markers per (model, prompt)."""
    views = []
    for g in range(enc.n_groups):
        tasks = np.flatnonzero(tables.n_items[g] > 0)
        usable = valid[g][tasks] & ~np.isnan(tables.mic[g][tasks])
        shared = usable.all(axis=0) if len(tasks) else np.zeros(enc.n_markers, dtype=bool)
        views.append(GroupView(g, tasks, usable, shared))
    return views


def common_marker_set(va: GroupView, vb: GroupView, valid: np.ndarray):
    """The tasks both groups have and the markers usable in both, per task.

    Returns:
        (tasks, usable [T_common, M], shared [M], valid [G, T, M]: `valid` with both groups
        restricted to the common set, for `compute_tables` and the bootstrap).
    """
    tasks = np.intersect1d(va.tasks, vb.tasks)
    ia = np.searchsorted(va.tasks, tasks)
    ib = np.searchsorted(vb.tasks, tasks)
    usable = va.usable[ia] & vb.usable[ib]
    shared = usable.all(axis=0) if len(tasks) else np.zeros(usable.shape[1], dtype=bool)
    common = valid.copy()
    for g in (va.g, vb.g):
        common[g] = False
        common[g][tasks] = usable
    return tasks, usable, shared, common


def check_rank_resolution(rank_resolution: Any) -> float:
    """The rank resolution h as a float, or one clear error.

    Raises:
        UserError: `rank_resolution` is not a number in [0, 1].
    """
    if isinstance(rank_resolution, bool) or not (
        isinstance(rank_resolution, int | float) and 0 <= rank_resolution <= 1
    ):
        raise UserError(
            f"--rank-resolution {rank_resolution!r} must be a number in [0, 1]",
            f"confidence units; the default is {RANK_RESOLUTION}, 0 gives the ordinary Spearman",
        )
    return float(rank_resolution)


def group_metrics(
    view: GroupView,
    tables: Tables,
    parity: bool,
    reps: GroupReplicates | None = None,
    level: float = 0.95,
    rank_resolution: float = RANK_RESOLUTION,
    second_level: bool = False,
) -> dict[str, Metric]:
    """The seven metrics of one group: values[0] is the point estimate, values[1:] replicates.

    `rank_resolution`: h of the Spearman variants' estimand (`attach_rank_corrections`; 0: the
    ordinary Spearman, interval centred on the plug-in value). `second_level`: also the second
    bootstrap level that MAC's paired tests take their sd from (`Metric.second_level`), for an
    analysis that compares groups."""
    g, t = view.g, view.tasks
    ix = np.ix_(t, t)
    mic = tables.mic[g][t][None]
    acc = tables.accuracy[g][t][None]
    cmfg = tables.cmfg[g][t][None]
    mae = {mode: tuple(x[g][ix][None] for x in tables.mae[mode]) for mode in tables.mae}
    if reps is not None:
        mic = np.concatenate([mic, reps.mic[:, t]])
        acc = np.concatenate([acc, reps.accuracy[:, t]])
        cmfg = np.concatenate([cmfg, reps.cmfg[:, t]])
        mae = {
            mode: (np.concatenate([mean, reps.mae[mode][:, t][:, :, t]]), std, n)
            for mode, (mean, std, n) in mae.items()
        }
    metrics = seven_metrics(mic, view.usable, view.shared, acc, cmfg, mae, parity)
    if reps is not None:
        ev = np.concatenate([reps.point_eval_mean[t][None], reps.eval_mean[:, t]])
        noise = np.concatenate([reps.point_mic_noise[t][None], reps.mic_noise[:, t]])
        attach_noise_corrections(
            metrics, mic, ev, view.usable, view.shared, level, noise, reps.mic_items[t]
        )
        attach_rank_corrections(
            metrics, mic, acc, cmfg, view.shared, parity, rank_resolution, second_level
        )
        attach_pearson_corrections(metrics, mic, acc, cmfg, view.shared, second_level=second_level)
    return metrics


def small_run_note(items: int) -> str | None:
    """What a group's metric intervals promise when its smallest task has `items` items.

    Args:
        items: items (responses, reference and evaluation splits together) in the group's
            smallest task.

    Returns:
        A one-sentence warning below `VALIDATED_ITEMS`, else None.
    """
    if items >= VALIDATED_ITEMS:
        return None
    return (
        f"small run: {items} items in the smallest task. Most metric intervals cover the "
        f"population value at their level from about {VALIDATED_ITEMS} items per task; below "
        "that some cover less (MRC, MCC and the C-AvgMAE modes most), so treat them as "
        "indicative (docs/statistics.md, Coverage)."
    )


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _ci_method(metric: Metric, name: str, rank_resolution: float) -> str:
    """How a metric's interval is built (metrics.json's `ci_method`)."""
    if metric.anchor is not None and is_pearson(name):
        return CI_METHOD_PEARSON
    if metric.anchor is not None and is_correlation(name):
        kept = name.startswith(debias_mod.RANK_UNREFLECTED)
        method = (CI_METHOD_RANK_KEPT if kept else CI_METHOD_RANK).format(h=rank_resolution)
        return method + (CI_METHOD_TWO_LEVEL if metric.inner is not None else "")
    if metric.anchor is not None:
        return CI_METHOD_CV
    if metric.corrected is not None:
        return CI_METHOD_CORRECTED
    return CI_METHOD_PLUGIN if is_correlation(name) else CI_METHOD


def metric_entry(
    metric: Metric, level: float = 0.95, name: str = "", rank_resolution: float = 0.0
) -> dict:
    """A metric as `metrics.json` shapes it, or null with a reason.

    Keys: `value` (the plug-in number; the seed's in parity mode), `debiased` (bootstrap
    bias-corrected), `se` (bootstrap standard error), `ci` (interval for the population value,
    containing `debiased`), `ci_method`, `n` and the metric's extras. Without replicates the
    last four are null. See `metrics.debias` for the method and docs/statistics.md for why.
    """
    extra = {
        k: (_num(v) if isinstance(v, float | np.floating) else v) for k, v in metric.extra.items()
    }
    empty = {"debiased": None, "se": None, "ci": None, "ci_method": None}
    if metric.values is None:
        return {"value": None, **empty, "reason": metric.reason, **extra}
    value = _num(metric.values[0])
    if value is None:
        return {"value": None, **empty, "reason": "undefined for these data (NaN)", **extra}
    entry = {"value": value, **empty, "n": metric.n, **extra}
    reps = metric.values[1:]
    if len(reps):
        base = metric.values if metric.corrected is None else metric.corrected
        est = debias(
            float(base[0]),
            base[1:],
            level,
            metric_bounds(name),
            already_debiased=metric.corrected is not None or is_correlation(name),
            method=_ci_method(metric, name, rank_resolution),
            fisher=on_fisher_scale(name),
            reaches_lower=metric.reaches_zero,
            anchor=metric.anchor,
            reflect=metric.anchor is None or not name.startswith(debias_mod.RANK_UNREFLECTED),
            lower_allowance=metric.lower_allowance,
            normal=metric.anchor is not None and name.startswith(debias_mod.NORMAL_INTERVAL),
            inner=metric.inner,
        )
        if est.ci is None:
            entry["ci_reason"] = "fewer than 2 bootstrap replicates define this metric"
        else:
            entry.update(
                debiased=_num(est.debiased),
                se=_num(est.se),
                ci=[_num(est.ci[0]), _num(est.ci[1])],
                ci_method=est.ci_method,
            )
            if est.degenerate:
                entry["ci_degenerate"] = True
            if est.n_dropped:
                entry["ci_undefined_replicates"] = est.n_dropped
    return entry


def _mic_table(
    enc: Encoded, tables: Tables, views: list[GroupView], valid: np.ndarray, ci: np.ndarray
) -> pl.DataFrame:
    cols: dict[str, list] = {
        k: []
        for k in (
            "model",
            "prompt",
            "task",
            "marker",
            "count",
            "n_present",
            "mic",
            "ci_lo",
            "ci_hi",
            "valid",
            "shared",
            "mic_c",
            "mic_i",
            "mic_f",
            "mic_uf",
            "mf",
        )
    }
    for view in views:
        model, prompt = enc.groups[view.g]
        for t in view.tasks:
            present = np.flatnonzero(tables.count[view.g, t] > 0)
            k = len(present)
            cols["model"] += [model] * k
            cols["prompt"] += [prompt] * k
            cols["task"] += [enc.tasks[t]] * k
            cols["marker"] += [enc.markers[m] for m in present]
            cols["count"] += tables.count[view.g, t, present].round().astype(np.int64).tolist()
            cols["n_present"] += (
                tables.n_present[view.g, t, present].round().astype(np.int64).tolist()
            )
            cols["mic"] += tables.mic[view.g, t, present].tolist()
            cols["ci_lo"] += ci[0, view.g, t, present].tolist()
            cols["ci_hi"] += ci[1, view.g, t, present].tolist()
            cols["valid"] += valid[view.g, t, present].tolist()
            cols["shared"] += view.shared[present].tolist()
            for name in ("mic_c", "mic_i", "mic_f", "mic_uf", "mf"):
                cols[name] += tables.variants[name][view.g, t, present].tolist()
    schema = MIC_TABLE_SCHEMA
    return pl.DataFrame(cols, schema=schema).with_columns(pl.col(pl.Float64).fill_nan(None))


def check_split_names(responses: pl.DataFrame, ref_split: str, eval_split: str) -> None:
    """Refuse a split name that no task has (a typo would silently auto-split every task).

    The defaults (train / test) may be absent: tasks without them are split 50/50 by design.

    Raises:
        UserError: `--ref-split` or `--eval-split` names a split found in no response.
    """
    present = set(responses.get_column("split").cast(pl.String).unique().to_list())
    for flag, name, default in (
        ("--ref-split", ref_split, "train"),
        ("--eval-split", eval_split, "test"),
    ):
        if name != default and name not in present:
            raise UserError(
                f"{flag} {name!r} is a split no task has (splits present: {sorted(map(str, present))})",
                f"use one of those, or leave {flag} at {default!r}",
            )


@announce_compiles
def analyze(
    scored,
    *,
    out: str | Path | None = None,
    mode: str = "heldout",
    threshold: int = 10,
    ignore_no_hedge: bool = False,
    preset: str = "mic",
    seed: int = 0,
    ref_split: str = "train",
    eval_split: str = "test",
    bootstrap: int = 0,
    ci_method: str = "bca",
    level: float = 0.95,
    scheme: str = "poisson",
    compare: bool = False,
    group_sums: Callable | None = None,
    pool: bool = False,
    rank_resolution: float = RANK_RESOLUTION,
) -> AnalysisResult:
    """Compute MIC tables and the seven metrics of one or more scored runs.

    Args:
        scored: scored-run directories or long-table files (one path or a list), a
            `ScoredRun` already in memory (e.g. from `metrics.simulate.sample`), or in-memory
            tables: one long DataFrame / LazyFrame (polars or pandas), a (responses, sentences)
            pair or {"responses": ..., "sentences": ...} (see `metrics.frames.as_scored_run`).
        out: output directory for `metrics.json` and `mic.parquet` (None: write nothing).
        mode: "heldout" (MICs from `ref_split`, MAE on `eval_split`) or "parity" (the seed).
        threshold: marker count threshold tau.
        ignore_no_hedge: drop `<no_hedge>` rows everywhere.
        preset: "mic" (the seven metrics) or "marcon" (MarCon's metrics).
        seed: seed of the 50/50 item split and of the bootstrap's counter RNG.
        ref_split, eval_split: split names of the held-out protocol.
        bootstrap: number of bootstrap replicates B (0: no intervals).
        ci_method: "bca" or "percentile" for MICs and accuracies (metrics: percentile).
        level: confidence level of the intervals.
        scheme: "poisson" (additive across shards) or "multinomial" (exact per task).
        compare: paired comparisons of every two (model, prompt) groups -> comparisons.parquet.
        group_sums: replacement for the bootstrap's pass-A sums (e.g. Ray tasks over shards).
        pool: merge runs from different scored-run directories that share a (model, prompt).
        rank_resolution: h of the Spearman variants' estimand (confidence units; 0: the
            ordinary Spearman, its interval centred on the plug-in value); see
            docs/statistics.md, "Rank correlations and near-ties". `value` is always the
            ordinary Spearman.

    Returns:
        The `AnalysisResult`.
    """
    _check_options(mode, threshold, preset)
    n_boot = check_n_boot(bootstrap)
    level = check_level(level)
    rank_resolution = check_rank_resolution(rank_resolution)
    ci_method = check_method(ci_method)
    scheme = check_scheme(scheme)
    if compare and n_boot == 0:
        raise UserError("--compare needs bootstrap replicates", "add --bootstrap 1000 (or more)")
    check_output_dir(out)
    run = as_scored_run(scored, pool=pool)
    parity = mode == "parity"
    if not parity:
        check_split_names(run.responses, ref_split, eval_split)
    enc = encode(
        run,
        mode=mode,
        ref_split=ref_split,
        eval_split=eval_split,
        seed=seed,
        ignore_no_hedge=ignore_no_hedge,
        threshold=threshold,
    )
    if enc.auto_split:
        split_note = "; ".join(f"{g}: {', '.join(t)}" for g, t in sorted(enc.auto_split.items()))
        print(
            f"analyze: no {ref_split!r}/{eval_split!r} pair of splits in some tasks, so their "
            f"items were split 50/50 by a seeded hash (seed {seed}): {split_note}",
            file=sys.stderr,
        )
    tables, valid = compute_tables(enc, threshold=threshold, parity=parity)
    views = group_views(enc, tables, valid)
    if n_boot:
        keys, strata = response_keys(run.responses)
    estimate = check_bootstrap(enc, n_boot) if n_boot else None
    mic_ci = np.full((2, *tables.mic.shape), np.nan)

    models: dict[str, dict] = {}
    group_values: dict[int, dict[str, Metric]] = {}
    if preset == "marcon":
        from metrics.marcon import (
            marcon_metrics,
            marcon_replicate_sums,
            marcon_sums,
            marcon_tables,
        )

        mt = marcon_tables(enc, threshold)
    for view in bootstrap_progress(views, len(views), estimate):
        g = view.g
        model, prompt = enc.groups[g]
        reps = None
        if n_boot:
            reps = group_replicates(
                enc, g, keys, strata, seed=seed, n_boot=n_boot, scheme=scheme, parity=parity,
                valid=valid, point=tables, group_sums=group_sums or local_group_sums,
            )  # fmt: skip
            mic_ci[:, g] = _mic_intervals(enc, g, tables.mic[g], reps.mic, ci_method, level)
        if preset == "marcon":
            sums = marcon_sums(enc, mt, g)
            if n_boot:
                sums = sums.join(
                    marcon_replicate_sums(
                        enc,
                        mt,
                        g,
                        keys,
                        strata,
                        seed=seed,
                        n_boot=n_boot,
                        scheme=scheme,
                        parity=parity,
                        group_sums=group_sums or local_group_sums,
                    )  # fmt: skip
                )
            metrics = marcon_metrics(enc, mt, g, view.tasks, sums)
        else:
            metrics = group_metrics(
                view, tables, parity, reps, level, rank_resolution, second_level=compare
            )
        group_values[g] = metrics
        n_eval = np.bincount(enc.r_t[enc.r_eval & (enc.r_g == g)], minlength=enc.n_tasks)
        task_block = {}
        for i, t in enumerate(view.tasks):
            block = {
                "accuracy": _num(tables.accuracy[g, t]),
                "cmfg": _num(tables.cmfg[g, t]),
                "mfg": _num(tables.mfg[g, t]),
                "n_items": int(tables.n_items[g, t]),
                "n_eval_items": int(n_eval[t]),
                "n_valid_markers": int(view.usable[i].sum()),
            }
            if reps is not None:
                block["accuracy_ci"] = _accuracy_interval(
                    enc, g, t, tables.accuracy[g, t], reps.accuracy[:, t], ci_method, level
                )
                iv = percentile_interval(
                    reps.cmfg[:, t], level, theta_hat=np.float64(tables.cmfg[g, t])
                )
                block["cmfg_ci"] = (
                    [_num(iv.low), _num(iv.high)] if np.isfinite(tables.cmfg[g, t]) else None
                )
            task_block[enc.tasks[t]] = block
        models.setdefault(model, {})[prompt] = {
            "metrics": {
                name: metric_entry(m, level, name, rank_resolution)
                for name, m in sorted(metrics.items())
            },
            "tasks": task_block,
            "shared_markers": [enc.markers[m] for m in np.flatnonzero(view.shared)],
        }
        if reps is not None and len(view.tasks):
            items = np.bincount(enc.r_t[enc.r_g == g], minlength=enc.n_tasks)[view.tasks]
            note = small_run_note(int(items.min()))
            if note:
                models[model][prompt]["interval_note"] = note
    settings = {
        "threshold": threshold,
        "mode": mode,
        "preset": preset,
        "bootstrap": n_boot,
        "seed": seed,
        "ignore_no_hedge": ignore_no_hedge,
        "ref_split": ref_split if not parity else None,
        "eval_split": eval_split if not parity else None,
        "auto_split": {k: sorted(v) for k, v in enc.auto_split.items()},
        "inputs": list(run.files),
    }
    if n_boot:
        settings.update(
            {
                "level": level,
                "scheme": scheme,
                "rank_resolution": rank_resolution,
                "resampling_unit": "item (response), counter RNG keyed by (seed, task, split/item_id, replicate)",
                "ci_method": {
                    "mic": ci_method,
                    "accuracy": ci_method,
                    "cmfg": "percentile",
                    "metrics": "per metric: see its ci_method (docs/statistics.md)",
                },
            }
        )
    doc = {"version": JSON_VERSION, "settings": settings, "models": models}
    mic_table = with_dropped_markers(enc, _mic_table(enc, tables, views, valid, mic_ci))
    comparisons = None
    if compare:
        from metrics.compare import compare_groups

        def common_metrics(va: GroupView, vb: GroupView):
            # Recompute both groups' metrics on the markers valid in both (see
            # `metrics.compare.compare_groups`): MAE cells, shared markers and every replicate
            # change with the marker set, so both bootstraps are rerun with it.
            tasks, usable, shared, common = common_marker_set(va, vb, valid)
            point, _ = compute_tables(enc, threshold=threshold, parity=parity, valid=common)
            out = []
            for v in (va, vb):
                reps = group_replicates(
                    enc, v.g, keys, strata, seed=seed, n_boot=n_boot, scheme=scheme,
                    parity=parity, valid=common, point=point,
                    group_sums=group_sums or local_group_sums,
                )  # fmt: skip
                view = GroupView(v.g, tasks, usable, shared)
                out.append(group_metrics(view, point, parity, reps, level, rank_resolution, True))
            return out[0], out[1]

        comparisons = compare_groups(
            run, enc, views, group_values, level,
            common=common_metrics if preset == "mic" else None,
        )  # fmt: skip
        settings["comparisons"] = comparisons.height
    out_dir = None
    if out is not None:
        out_dir = Path(out)
        text = json.dumps(doc, indent=2, allow_nan=False)
        atomic_write(out_dir / RunLayout.METRICS, text)
        atomic_write(out_dir / RunLayout.MIC, lambda p: mic_table.write_parquet(p))
        if comparisons is not None:
            atomic_write(out_dir / RunLayout.COMPARISONS, lambda p: comparisons.write_parquet(p))
    return AnalysisResult(doc, mic_table, out_dir, comparisons)


def _mic_intervals(
    enc: Encoded, g: int, theta: np.ndarray, reps: np.ndarray, method: str, level: float
) -> np.ndarray:
    """[2, T, M] interval endpoints of every MIC of group g."""
    if method == "bca":
        iv = bca_interval(theta, reps, mic_acceleration(enc, g), level)
    else:
        iv = percentile_interval(reps, level, theta_hat=theta)
    return np.stack([iv.low, iv.high])


def _accuracy_interval(
    enc: Encoded, g: int, t: int, theta: float, reps: np.ndarray, method: str, level: float
):
    if method == "bca":
        x = enc.r_correct[enc.r_ref & (enc.r_g == g) & (enc.r_t == t)].astype(np.float64)
        k = x.sum()
        a = mean_acceleration(len(x), k, k, k)
        iv = bca_interval(np.float64(theta), reps, a, level)
    else:
        iv = percentile_interval(reps, level, theta_hat=np.float64(theta))
    return [_num(iv.low), _num(iv.high)]
