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

MIN_WAVES = 2  # with the smoother: waves before a task may stop


@dataclass(frozen=True)
class StopDecision:
    """Per task: the widest chosen interval (None: none defined yet) and whether it stops."""

    widths: dict[str, float | None]
    stop: dict[str, bool]


@dataclass(frozen=True)
class Chosen:
    """One chosen interval: its task (None for a metric, which pools the tasks), name, centre."""

    task: str | None
    name: str
    center: float
    lo: float
    hi: float


def chosen_intervals(result: AnalysisResult, metric: str | None = None) -> list[Chosen]:
    """The intervals that decide (see the module docstring); a metric's, once per group."""
    if metric is None:
        table = result.mic_table.filter(
            pl.col("shared") & pl.col("valid") & pl.col("ci_lo").is_not_null()
        )
        return [
            Chosen(
                r["task"],
                f"{r['model']}/{r['prompt']}/{r['marker']}",
                r["mic"],
                r["ci_lo"],
                r["ci_hi"],
            )  # fmt: skip
            for r in table.iter_rows(named=True)
        ]
    out, known = [], False
    for model, prompts in result.metrics_json["models"].items():
        for prompt, block in prompts.items():
            entry = block["metrics"].get(metric)
            if entry is None:
                continue
            known = True
            if entry.get("ci") is not None:
                out.append(Chosen(None, f"{model}/{prompt}", entry["debiased"], *entry["ci"]))
    if not known:
        raise UserError(
            f"--metric {metric!r} is not a metric of this analysis",
            "use a name from metrics.json, e.g. I-AvgMAE, C-AvgMAE, MRC, I-AvgCV",
        )
    return out


class WidthSmoother:
    """Each chosen interval's width across waves; its effective width is the larger of the
    observed one and the log-log least-squares fit through every wave's width at the current
    items.

    Why: stopping at the first wave whose interval is narrow enough selects waves whose bootstrap
    happened to come out narrow, and their intervals under-cover (measured: 0.915 for I-AvgMAE at
    nominal 0.95). The fit through all waves is not moved by one wave's luck; widening the final
    interval to it (about its centre) is the correction (benchmarks/planning.py measures it).
    """

    def __init__(self) -> None:
        self.history: dict[tuple, list[tuple[float, float]]] = {}
        self.waves: dict[str, int] = {}  # analyses seen per task

    def widen(self, c: Chosen, items: float) -> Chosen:
        """`c` widened about its centre to its effective width at `items` per task."""
        width = c.hi - c.lo
        h = self.history.setdefault((c.task, c.name), [])
        h.append((float(items), width))
        pts = np.array([p for p in h if p[1] > 0])
        if len(pts) < 2 or width <= 0 or len(np.unique(pts[:, 0])) < 2:
            return c
        slope, icept = np.polyfit(np.log(pts[:, 0]), np.log(pts[:, 1]), 1)
        factor = max(1.0, float(np.exp(icept + slope * np.log(items))) / width)
        return Chosen(c.task, c.name, c.center, c.center - factor * (c.center - c.lo),
                      c.center + factor * (c.hi - c.center))  # fmt: skip


def stop_decision(
    result: AnalysisResult,
    target_width: float,
    metric: str | None = None,
    *,
    smoother: WidthSmoother | None = None,
    items: dict[str, float] | None = None,
) -> tuple[StopDecision, list[Chosen]]:
    """Which tasks have reached `target_width` (a task without a defined interval has not).

    Args:
        result: the analysis after the latest wave.
        target_width: the width to reach.
        metric: decide by this metric for every task (None: per task, by its shared MICs).
        smoother: the study's `WidthSmoother` (None: the observed widths decide).
        items: items per task so far (needed with a smoother).

    Returns:
        The decision and the chosen intervals (widened by the smoother, if any).
    """
    if not target_width > 0:
        raise UserError(f"--target-width {target_width} must be positive", "e.g. 0.05")
    tasks = sorted(result.mic_table.get_column("task").unique().to_list())
    chosen = chosen_intervals(result, metric)
    if smoother is not None:
        items = items or {}
        least = min(items.values()) if items else 1.0
        chosen = [smoother.widen(c, items.get(c.task, least)) for c in chosen]
    widths: dict[str, float | None] = {t: None for t in tasks}
    for c in chosen:
        for t in [c.task] if c.task is not None else tasks:
            widths[t] = max(widths[t] or 0.0, c.hi - c.lo)
    if metric is not None and len(chosen) < len(result.metrics_json["models"]):
        widths = {t: None for t in tasks}  # a group without the interval: not reached
    stop = {t: w is not None and w <= target_width for t, w in widths.items()}
    if smoother is not None:
        # One wave gives the smoother nothing to smooth: a task stops from its second wave on
        # (measured: tasks stopped at the first wave covered 0.90).
        for t in tasks:
            smoother.waves[t] = smoother.waves.get(t, 0) + 1
            if smoother.waves[t] < MIN_WAVES:
                stop[t] = False
    return StopDecision(widths, stop), chosen


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
    smooth: bool = True,
) -> pl.DataFrame:
    """Simulate precision-stopped studies and check their final intervals against the truth.

    Each of `reps` studies draws `max_items` items per task once, then reveals them in waves of
    `wave` items per task (half reference, half evaluation, in item order), analysing after each
    wave; a task stops at `target_width` or `max_items`. `smooth`: decide and report with the
    `WidthSmoother` (False: the observed intervals, to measure what it corrects).

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
        smoother = WidthSmoother() if smooth else None
        while True:
            limit = np.array([items[t] for t in task]) // 2
            run = take(full, pos < limit)
            result = analyze(run, bootstrap=n_boot, seed=seed + r, level=level)
            decision, chosen = stop_decision(
                result, target_width, metric, smoother=smoother, items=items
            )
            active = [
                t for t in pop.tasks if not decision.stop.get(t, False) and items[t] < max_items
            ]
            if not active:
                break
            for t in active:
                items[t] = min(items[t] + wave, max_items)
        if metric is None:
            for c in chosen:
                marker = c.name.rsplit("/", 1)[1]
                truth = truth_mic[task_row[c.task], marker_col[marker]]
                rows.append(_row(r, c.task, marker, items[c.task], decision.stop[c.task], truth,
                                 c.lo, c.hi))  # fmt: skip
        else:
            truth = population_values(pop, valid_mask(pop, result.mic_table))[metric]
            if not chosen or truth is None:
                continue
            reached = all(decision.stop.values())
            c = chosen[0]
            rows.append(_row(r, None, metric, min(items.values()), reached, truth, c.lo, c.hi))
    return pl.DataFrame(rows)


def _row(r, task, name, items, reached, truth, lo, hi) -> dict:
    return {
        "study": r, "task": task, "name": name, "items": items, "reached": reached,
        "truth": float(truth), "ci_lo": lo, "ci_hi": hi, "covered": bool(lo <= truth <= hi),
    }  # fmt: skip
