"""Precision-based stopping: which tasks have reached a target interval width, and how well the
final intervals of a study stopped that way cover the truth.

A study generated in waves of items is analysed after each wave; a task stops when its chosen
intervals are at most `target_width` wide (or at the item limit):

* without a metric, the task's chosen intervals are the MIC intervals of its shared markers (the
  MICs every cross-task metric is built from); the widest one decides;
* with a metric (`--metric I-AvgMAE`), that metric's interval decides for every task at once (a
  metric pools the tasks), over every (model, prompt).

Stopping when an interval is narrow picks the runs whose noise happened to make it narrow, so the
final intervals can cover less than their level; `stopping_study` measures it on a known-truth
population (benchmarks/planning.py prints it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.errors import UserError
from metrics.analyze import AnalysisResult
from metrics.io import ScoredRun


@dataclass(frozen=True)
class StopDecision:
    """Per task: the widest chosen interval (None: none defined yet) and whether it stops."""

    widths: dict[str, float | None]
    stop: dict[str, bool]


def chosen_widths(result: AnalysisResult, metric: str | None = None) -> dict[str, float | None]:
    """The widest chosen interval per task (see the module docstring)."""
    tasks = sorted(result.mic_table.get_column("task").unique().to_list())
    if metric is None:
        widths = (
            result.mic_table.filter(pl.col("shared") & pl.col("valid"))
            .group_by("task")
            .agg((pl.col("ci_hi") - pl.col("ci_lo")).max().alias("w"))
        )
        found = dict(zip(widths.get_column("task"), widths.get_column("w")))
        return {t: found.get(t) for t in tasks}
    widest: float | None = None
    known = False
    for prompts in result.metrics_json["models"].values():
        for block in prompts.values():
            entry = block["metrics"].get(metric)
            if entry is None:
                continue
            known = True
            ci = entry.get("ci")
            if ci is None:
                return {t: None for t in tasks}  # undefined somewhere: not reached
            widest = max(widest or 0.0, ci[1] - ci[0])
    if not known:
        raise UserError(
            f"--metric {metric!r} is not a metric of this analysis",
            "use a name from metrics.json, e.g. I-AvgMAE, C-AvgMAE, MRC, I-AvgCV",
        )
    return {t: widest for t in tasks}


def stop_decision(
    result: AnalysisResult, target_width: float, metric: str | None = None
) -> StopDecision:
    """Which tasks have reached `target_width` (an undefined interval has not)."""
    if not target_width > 0:
        raise UserError(f"--target-width {target_width} must be positive", "e.g. 0.05")
    widths = chosen_widths(result, metric)
    return StopDecision(widths, {t: w is not None and w <= target_width for t, w in widths.items()})


def take(run: ScoredRun, keep: np.ndarray) -> ScoredRun:
    """The run restricted to the responses where `keep` is True (sentences follow)."""
    new_index = np.cumsum(keep) - 1
    r_of = run.sentences.get_column("_r").to_numpy()
    rows = keep[r_of]
    sent = run.sentences.filter(pl.Series(rows)).with_columns(
        pl.Series("_r", new_index[r_of[rows]].astype(r_of.dtype))
    )
    return ScoredRun(run.responses.filter(pl.Series(keep)), sent, run.files)


def stopping_study(
    pop,
    target_width: float,
    *,
    wave: int,
    max_items: int,
    reps: int,
    metric: str | None = None,
    n_boot: int = 400,
    seed: int = 0,
    level: float = 0.95,
) -> pl.DataFrame:
    """Simulate precision-stopped studies and check their final intervals against the truth.

    Each of `reps` studies draws `max_items` items per task once, then reveals them in waves of
    `wave` items per task (half reference, half evaluation, in item order), analysing after each
    wave; a task stops at `target_width` or `max_items`.

    Returns:
        One row per (study, final chosen interval): task, name (marker or metric), items (the
        task's final items), reached (stopped by width), truth, ci_lo, ci_hi, covered.
    """
    from metrics.analyze import analyze
    from metrics.simulate import population_values, sample, valid_mask

    truth_mic = pop.population_mic()
    marker_col = {m: i for i, m in enumerate(pop.marker_names)}
    task_row = {t: i for i, t in enumerate(pop.tasks)}
    rows: list[dict] = []
    for r in range(reps):
        full = sample(pop, max_items, seed + r)
        resp = full.responses
        index = resp.get_column("item_id").str.slice(1).cast(pl.Int64).to_numpy()
        half = max_items // 2
        # Position of an item within its split: waves reveal both splits at the same pace.
        pos = np.where(resp.get_column("split").to_numpy() == "train", index, index - half)
        task = resp.get_column("task").to_numpy()
        items = {t: min(wave, max_items) for t in pop.tasks}
        while True:
            limit = np.array([items[t] for t in task]) // 2
            run = take(full, pos < limit)
            result = analyze(run, bootstrap=n_boot, seed=seed + r, level=level)
            decision = stop_decision(result, target_width, metric)
            active = [
                t for t in pop.tasks if not decision.stop.get(t, False) and items[t] < max_items
            ]
            if not active:
                break
            for t in active:
                items[t] = min(items[t] + wave, max_items)
        if metric is None:
            final = result.mic_table.filter(pl.col("shared") & pl.col("valid"))
            for row in final.iter_rows(named=True):
                t, m = task_row[row["task"]], marker_col[row["marker"]]
                rows.append(_row(r, row["task"], row["marker"], items[row["task"]],
                                 decision.stop[row["task"]], truth_mic[t, m], row["ci_lo"],
                                 row["ci_hi"]))  # fmt: skip
        else:
            entry = result.metrics_json["models"]["model-0"]["default"]["metrics"][metric]
            truth = population_values(pop, valid_mask(pop, result.mic_table))[metric]
            if entry.get("ci") is None or truth is None:
                continue
            reached = all(decision.stop.values())
            rows.append(_row(r, None, metric, min(items.values()), reached, truth, *entry["ci"]))
    return pl.DataFrame(rows)


def _row(r, task, name, items, reached, truth, lo, hi) -> dict:
    return {
        "study": r, "task": task, "name": name, "items": items, "reached": reached,
        "truth": float(truth), "ci_lo": lo, "ci_hi": hi, "covered": lo <= truth <= hi,
    }  # fmt: skip
