"""K against N: consistency samples per item against items per task, for a budget.

A sentence's confidence is the mean of K judgments (one per consistency sample). Its variance
around the task's mean splits as ``between + within / K`` (Miller, "Adding Error Bars to Evals",
arXiv 2411.00640): `within` is the variance of one sentence's judgments across samples (their
mean per-sentence variance), `between` what is left of the sentence means' variance. Sentence
noise reaches a metric's standard error through that variance, so (an approximation, exact for a
MIC, a mean of sentences)

    SE(K, N) = SE_pilot(N) * sqrt((between + within / K) / (between + within / K_pilot))

with SE_pilot(N) the pilot's scaling in items per task (`metrics.power`). An item costs its
response plus K consistency samples, ``(1 + K) * tokens per generated row`` (from the run's
`summary.json`); a budget in GPU-hours is converted with the run's generated tokens per
GPU-second (busy seconds stand in on a CPU-only run, and the plan says so). The judge's own cost
is left out: a logprob consistency judge reads K prompts per sentence and generates one token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

from engine.contract import RunLayout
from engine.errors import UserError

JUDGMENTS = Path(RunLayout.STAGES) / "confidence" / "judgments.parquet"
SENTENCE_KEY = ["model", "task", "split", "prompt", "item_id", "sentence_idx"]
K_MAX = 64


@dataclass(frozen=True)
class Pilot:
    """Where a pilot's tables are: the scored run, and (a study directory) judgments and summary."""

    scored: list[Path]
    judgments: Path | None
    summary: Path | None
    root: Path | None = None


def locate_pilot(paths: list[str | Path]) -> Pilot:
    """Resolve pilot paths: a study directory (with `scored/`), its `scored/`, or scored files.

    The per-judgment table and `summary.json` are looked up in the study directory (the parent
    of `scored/`); with several inputs, the first that has them is used.
    """
    scored, judgments, summary, where = [], None, None, None
    for raw in paths:
        p = Path(raw)
        root = None
        if p.is_dir() and (p / RunLayout.SCORED).is_dir():
            root, p = p, p / RunLayout.SCORED
        elif p.is_dir() and p.name == RunLayout.SCORED:
            root = p.parent
        scored.append(p)
        if root is not None and judgments is None and (root / JUDGMENTS).is_file():
            judgments = root / JUDGMENTS
            summary = root / RunLayout.SUMMARY
            summary = summary if summary.is_file() else None
            where = root
    return Pilot(scored, judgments, summary, where)


def variance_components(judgments: pl.DataFrame) -> dict:
    """Between- and within-sentence variance of confidence from per-judgment rows.

    Args:
        judgments: rows (model, task, split, prompt, item_id, sentence_idx, sample_idx, judgment).

    Returns:
        between, within, k_pilot (median judgments per sentence), sentences, judgments.
    """
    missing = [c for c in [*SENTENCE_KEY, "judgment"] if c not in judgments.columns]
    if missing:
        raise UserError(
            f"judgments table: missing column {missing[0]!r}",
            "re-run `mic score` (stages/confidence/judgments.parquet holds one row per judgment)",
        )
    per = (
        judgments.filter(pl.col("judgment").is_not_null())
        .group_by(SENTENCE_KEY)
        .agg(
            pl.col("judgment").mean().alias("mean"),
            pl.col("judgment").var(ddof=1).alias("var"),
            pl.len().alias("k"),
        )
    )
    multi = per.filter(pl.col("k") >= 2)
    if multi.is_empty():
        raise UserError(
            "judgments table: no sentence has two or more judgments",
            "K vs N needs consistency samples (sampling.n >= 2)",
        )
    within = float(multi.get_column("var").mean())
    k = multi.get_column("k").to_numpy().astype(np.float64)
    k_harm = float(len(k) / np.sum(1.0 / k))
    # Between-sentence variance within (model, prompt, task): the sentence means' variance less
    # the part their own K-sample noise contributes.
    centred = multi.with_columns(
        (pl.col("mean") - pl.col("mean").mean().over("model", "prompt", "task")).alias("dev")
    )
    total = float(centred.get_column("dev").pow(2).sum() / max(multi.height - 1, 1))
    between = max(total - within / k_harm, 0.0)
    return {
        "between": between,
        "within": within,
        "k_pilot": float(np.median(k)),
        "sentences": multi.height,
        "judgments": int(k.sum()),
    }


def throughput(summary: dict) -> dict:
    """Generated tokens per row and per GPU-second (or busy second) from a run's summary.json."""
    models = summary.get("models") or {}
    tokens = sum(float(m.get("generated_tokens", 0)) for m in models.values())
    rows = sum(float(m.get("rows", 0)) for m in models.values())
    gpu = sum(float(m.get("gpu_seconds", 0)) for m in models.values())
    busy = sum(float(m.get("busy_seconds", 0)) for m in models.values())
    if tokens <= 0 or rows <= 0:
        return {}
    seconds, clock = (
        (gpu, "gpu_seconds") if gpu > 0 else (busy, "busy_seconds (no GPU in the pilot)")
    )
    return {
        "tokens_per_row": tokens / rows,
        "tokens_per_second": tokens / seconds if seconds > 0 else None,
        "clock": clock,
    }


def shard_tokens(root: Path) -> dict:
    """Generated tokens per row counted in a run's generation shards (no timing there): the
    fallback when the run has no summary.json (e.g. a run generated in-process)."""
    files = sorted((root / RunLayout.SHARDS).glob("*.arrow"))
    if not files:
        return {}
    try:
        lengths = (
            pl.scan_ipc([str(f) for f in files])
            .select(pl.col("token_ids").list.len().alias("n"))
            .collect()
            .get_column("n")
        )
    except (pl.exceptions.PolarsError, OSError):
        return {}
    if lengths.len() == 0 or lengths.sum() == 0:
        return {}
    return {
        "tokens_per_row": float(lengths.mean()),
        "tokens_per_second": None,
        "clock": "none (tokens counted in shards/; no summary.json)",
    }


def kn_plan(
    pilot: Pilot | None,
    run,
    table: pl.DataFrame,
    *,
    budget_tokens: float | None,
    budget_gpu_hours: float | None,
    metric: str,
    level: float,
) -> dict:
    """The K vs N section of power.json (a `skipped` reason when the pilot cannot give it)."""
    if pilot is None or pilot.judgments is None:
        return {
            "skipped": "the pilot is a bare scored run (no stages/confidence/judgments.parquet "
            "beside it); pass the study directory of a consistency-scored run"
        }
    try:
        comp = variance_components(pl.read_parquet(pilot.judgments))
    except UserError as exc:
        return {"skipped": str(exc)}
    out: dict = {"components": comp, "metric": metric}
    rows = table.filter(
        (pl.col("kind") == "metric") & (pl.col("name") == metric) & pl.col("model_b").is_null()
    )
    if rows.is_empty():
        out["note"] = f"{metric} has no standard error in this pilot"
        return out
    summary = json.loads(pilot.summary.read_text()) if pilot.summary else {}
    tp = throughput(summary)
    if not tp and pilot.root is not None:
        tp = shard_tokens(pilot.root)
    out["throughput"] = tp
    budget = budget_tokens
    if budget_gpu_hours is not None:
        if not tp.get("tokens_per_second"):
            out["note"] = "no timing in the pilot (summary.json): give --budget-tokens instead"
            return out
        budget = budget_gpu_hours * 3600.0 * tp["tokens_per_second"]
    if budget is None:
        out["note"] = "give --budget-tokens or --budget-gpu-hours for a (K, N)"
        return out
    if not tp:
        out["note"] = "no generated tokens in summary.json or shards/: cannot cost an item"
        return out
    out["budget"] = {"tokens": budget, "gpu_hours": budget_gpu_hours, "clock": tp["clock"]}
    # Items of the whole sweep per item per task: groups x tasks.
    n_groups = rows.height
    n_tasks = run.responses.get_column("task").n_unique()
    row = rows.row(0, named=True)
    z = stats.norm.ppf(0.5 + level / 2)
    v0 = comp["between"] + comp["within"] / comp["k_pilot"]
    grid = []
    for k in range(1, K_MAX + 1):
        n = int(budget // ((1 + k) * tp["tokens_per_row"] * n_groups * n_tasks))
        if n < 2:
            continue
        se = row["se_pilot"] * (n / row["n_pilot"]) ** row["exponent"]
        se *= np.sqrt((comp["between"] + comp["within"] / k) / v0) if v0 > 0 else 1.0
        grid.append({"k": k, "items_per_task": n, "width": float(2 * z * se)})
    if not grid:
        out["note"] = "the budget does not buy 2 items per task"
        return out
    out["grid"] = grid
    out["recommendation"] = min(grid, key=lambda r: r["width"])
    return out
