"""`mic analyze`: scored runs -> `metrics.json` and `mic.parquet` (SPEC.md section 6).

from metrics import analyze
result = analyze(["runs/llama"], out="results/llama", mode="heldout", threshold=10)
result.metrics_json["models"]["llama"]["default"]["metrics"]["MRC"]
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from engine.errors import UserError
from metrics.core import Tables, compute_tables
from metrics.encode import Encoded, encode
from metrics.io import read_scored
from metrics.seven import Metric, seven_metrics

MODES = ("heldout", "parity")
PRESETS = ("mic", "marcon")
JSON_VERSION = 1


@dataclass(frozen=True)
class AnalysisResult:
    """What `analyze` computed and where it wrote it."""

    metrics_json: dict
    mic_table: pl.DataFrame
    out_dir: Path | None


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


def group_metrics(view: GroupView, tables: list[Tables], parity: bool) -> dict[str, Metric]:
    """The seven metrics of one group, vectorized over the tables of several replicates."""
    g, t = view.g, view.tasks
    mic = np.stack([tb.mic[g][t] for tb in tables])
    acc = np.stack([tb.accuracy[g][t] for tb in tables])
    cmfg = np.stack([tb.cmfg[g][t] for tb in tables])
    mae = {
        mode: tuple(np.stack([tb.mae[mode][k][g][np.ix_(t, t)] for tb in tables]) for k in range(3))
        for mode in tables[0].mae
    }
    return seven_metrics(mic, view.usable, view.shared, acc, cmfg, mae, parity)


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def metric_entry(metric: Metric) -> dict:
    """A metric as `metrics.json` shapes it: value, ci, n (+ extras), or null with a reason."""
    extra = {
        k: (_num(v) if isinstance(v, float | np.floating) else v) for k, v in metric.extra.items()
    }
    if metric.values is None:
        return {"value": None, "ci": None, "reason": metric.reason, **extra}
    value = _num(metric.values[0])
    if value is None:
        return {"value": None, "ci": None, "reason": "undefined for these data (NaN)", **extra}
    return {"value": value, "ci": None, "n": metric.n, **extra}


def _mic_table(
    enc: Encoded, tables: Tables, views: list[GroupView], valid: np.ndarray
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
            cols["ci_lo"] += [None] * k
            cols["ci_hi"] += [None] * k
            cols["valid"] += valid[view.g, t, present].tolist()
            cols["shared"] += view.shared[present].tolist()
            for name in ("mic_c", "mic_i", "mic_f", "mic_uf", "mf"):
                cols[name] += tables.variants[name][view.g, t, present].tolist()
    schema = {
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
    return pl.DataFrame(cols, schema=schema).with_columns(pl.col(pl.Float64).fill_nan(None))


def _write_atomic(path: Path, write) -> None:
    """Write through a temp file in the same directory, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
) -> AnalysisResult:
    """Compute MIC tables and the seven metrics of one or more scored runs.

    Args:
        scored: scored-run directories or long-table files (one path or a list).
        out: output directory for `metrics.json` and `mic.parquet` (None: write nothing).
        mode: "heldout" (MICs from `ref_split`, MAE on `eval_split`) or "parity" (the seed).
        threshold: marker count threshold tau.
        ignore_no_hedge: drop `<no_hedge>` rows everywhere.
        preset: "mic" (the seven metrics) or "marcon" (MarCon's metrics).
        seed: seed of the 50/50 item split for tasks lacking a reference or evaluation split.
        ref_split, eval_split: split names of the held-out protocol.

    Returns:
        The `AnalysisResult`.
    """
    _check_options(mode, threshold, preset)
    run = read_scored(scored)
    parity = mode == "parity"
    enc = encode(
        run,
        mode=mode,
        ref_split=ref_split,
        eval_split=eval_split,
        seed=seed,
        ignore_no_hedge=ignore_no_hedge,
    )
    tables, valid = compute_tables(enc, threshold=threshold, parity=parity)
    views = group_views(enc, tables, valid)

    models: dict[str, dict] = {}
    if preset == "marcon":
        from metrics.marcon import marcon_metrics, marcon_tables

        mt = marcon_tables(enc, threshold)
    for view in views:
        model, prompt = enc.groups[view.g]
        if preset == "marcon":
            metrics = marcon_metrics(enc, mt, view.g, view.tasks)
        else:
            metrics = group_metrics(view, [tables], parity)
        n_eval = np.bincount(enc.r_t[enc.r_eval & (enc.r_g == view.g)], minlength=enc.n_tasks)
        task_block = {
            enc.tasks[t]: {
                "accuracy": _num(tables.accuracy[view.g, t]),
                "cmfg": _num(tables.cmfg[view.g, t]),
                "mfg": _num(tables.mfg[view.g, t]),
                "n_items": int(tables.n_items[view.g, t]),
                "n_eval_items": int(n_eval[t]),
                "n_valid_markers": int(view.usable[i].sum()),
            }
            for i, t in enumerate(view.tasks)
        }
        models.setdefault(model, {})[prompt] = {
            "metrics": {name: metric_entry(m) for name, m in sorted(metrics.items())},
            "tasks": task_block,
            "shared_markers": [enc.markers[m] for m in np.flatnonzero(view.shared)],
        }
    settings = {
        "threshold": threshold,
        "mode": mode,
        "preset": preset,
        "bootstrap": 0,
        "seed": seed,
        "ignore_no_hedge": ignore_no_hedge,
        "ref_split": ref_split if not parity else None,
        "eval_split": eval_split if not parity else None,
        "auto_split": {k: sorted(v) for k, v in enc.auto_split.items()},
        "inputs": list(run.files),
    }
    doc = {"version": JSON_VERSION, "settings": settings, "models": models}
    mic_table = _mic_table(enc, tables, views, valid)
    out_dir = None
    if out is not None:
        out_dir = Path(out)
        text = json.dumps(doc, indent=2, allow_nan=False)
        _write_atomic(out_dir / "metrics.json", lambda p: Path(p).write_text(text))
        _write_atomic(out_dir / "mic.parquet", lambda p: mic_table.write_parquet(p))
    return AnalysisResult(doc, mic_table, out_dir)
