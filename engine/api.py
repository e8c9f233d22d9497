"""The engine's Python API: what the CLI does, callable from a notebook with the same arguments.

    import engine
    spec = engine.load_spec("configs/tiny.toml")
    engine.plan(spec)                                  # units, prompts, tokens, time estimate
    sweep = engine.run_sweep(spec, "runs/tiny")        # SweepResult (frozen)
    scored = engine.score_run("runs/tiny")             # ScoreResult (frozen)
    study = engine.run_study("configs/demo.toml", "runs/demo")   # StudyResult (frozen)

Every function raises `engine.errors.UserError` (a `ValueError`) for a mistake the caller can fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config.sweep import SweepSpec
from engine.score.pipeline import ScoreResult

__all__ = [
    "ScoreResult",
    "StudyResult",
    "SweepResult",
    "load_spec",
    "plan",
    "run_demo",
    "run_study",
    "run_sweep",
    "score_run",
]


@dataclass(frozen=True)
class SweepResult:
    """What `run_sweep` generated.

    Attributes:
        out_dir: The run directory (shards, done records, manifest, summary.json).
        run_id: The run's id.
        units_planned: Work units of the spec.
        units_finished: Work units done (all of them: an incomplete run raises `RunIncomplete`).
        rows: Generation rows written.
        seconds: Wall time.
        models: Per model: rows, error rows, tokens, throughput, actors (as in summary.json).
        summary: The whole summary.json document.
    """

    out_dir: Path
    run_id: str
    units_planned: int
    units_finished: int
    rows: int
    seconds: float
    models: Mapping[str, Mapping[str, Any]]
    summary: Mapping[str, Any]


@dataclass(frozen=True)
class StudyResult:
    """What `run_study` wrote.

    Attributes:
        study_dir: The study directory.
        run_dir: The generation run (the study directory itself).
        scored_dir: The scored run (`scored/`).
        analysis_dir: `metrics.json` and `mic.parquet`.
        report: The HTML report, or None when it was not built.
        rows: Generation rows.
        items_without_value: Ledger rows per scoring stage.
        judge_failures: One line: the failed share of every judge stage.
        seconds: Wall time per stage (generate, score, analyze, report).
        waves: With `target_width`: one record per analysed wave (items, widths, status per
            task), as in DIR/waves.json; empty otherwise.
        stopping: With `target_width`: the stopping block added to metrics.json (rule, target,
            wave log, final state and smoothed intervals); None otherwise.
    """

    study_dir: Path
    run_dir: Path
    scored_dir: Path
    analysis_dir: Path
    report: Path | None
    rows: int | None
    items_without_value: Mapping[str, int]
    judge_failures: str
    seconds: Mapping[str, float]
    waves: tuple[Mapping[str, Any], ...] = ()
    stopping: Mapping[str, Any] | None = None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a sweep spec (TOML or YAML) with `KEY=VALUE` overrides.

    Args:
        path: The spec file.
        overrides: `--set` style overrides, e.g. ["sampling.n=2"].

    Returns:
        The frozen, validated spec.
    """
    from engine.config.sweep import load_spec as _load

    return _load(path, overrides)


def plan(
    spec: SweepSpec | str | Path,
    overrides: list[str] | None = None,
    tokens_per_second: float | None = None,
    node_gpus: int = 8,
) -> dict[str, Any]:
    """The work of a sweep or study spec without running anything (`mic plan`).

    Args:
        spec: A validated spec, or a sweep / study spec file.
        overrides: Overrides of a spec file.
        tokens_per_second: Measured generated tokens/s per replica of every open model; None
            assumes a rate by model size (`engine.generate.estimate`).
        node_gpus: GPUs of the node the open models' makespan is simulated on.

    Returns:
        The plan report: units, prompts, token counts and a GPU-hour estimate per model, and
        the simulated makespan of the open models on one node.
    """
    if isinstance(spec, SweepSpec):
        from engine.generate.runner import plan_report

        return plan_report(spec, tokens_per_second, node_gpus)
    from engine.study import plan_study

    return plan_study(spec, None, overrides, tokens_per_second, node_gpus)


def run_sweep(spec: SweepSpec | str | Path, out: str | Path, **options: Any) -> SweepResult:
    """Generate a sweep into `out` with Ray actors (`mic run`); re-running resumes.

    Args:
        spec: A validated spec or a spec file.
        out: Output directory or filesystem URI.
        **options: `ray_address`, `new_run`, `actors`, `progress`, ... of
            `engine.generate.runner.run_sweep`.

    Returns:
        The `SweepResult`.
    """
    from engine.generate.runner import run_sweep as _run

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    summary = _run(spec, str(out), **options)
    return SweepResult(
        out_dir=Path(str(out)),
        run_id=summary["run_id"],
        units_planned=summary["units_planned"],
        units_finished=summary["units_finished"],
        rows=summary["rows"],
        seconds=summary["seconds"],
        models=summary["models"],
        summary=summary,
    )


def score_run(
    run_dir: str | Path, settings: Mapping[str, Any] | None = None, **options: Any
) -> ScoreResult:
    """Score a run (`mic score`): sentences, markers, confidence, correctness, decisiveness.

    Args:
        run_dir: A run directory written by `run_sweep` / `run_study`.
        settings: A `[judges]` table laid over the run's own (e.g. {"decisiveness": "none"}).
        **options: `judge`, `log`, `redo` of `engine.score.pipeline.score_run`.

    Returns:
        The `ScoreResult`.
    """
    from engine.score.pipeline import score_run as _score

    return _score(run_dir, settings, **options)


def run_study(spec_path: str | Path, out: str | Path, **options: Any) -> StudyResult:
    """Generate -> score -> analyze -> report (`mic study`), skipping every stage already done.

    Args:
        spec_path: The study spec (TOML or YAML).
        out: The study directory.
        **options: `overrides`, `judges`, `ray_address`, `new_run`, `report`, `progress`,
            `local`, `target_width`, `metric`, `wave_items`, `max_waves` of
            `engine.study.run_study`.

    Returns:
        The `StudyResult`.
    """
    from engine.study import run_study as _run

    return study_result(Path(out), _run(spec_path, out, **options))


def run_demo(out: str | Path = "mic-demo", progress: bool = True) -> StudyResult:
    """The offline demo (`mic demo`): the tiny model over the bundled sample tasks."""
    from engine.study import run_demo as _demo

    return study_result(Path(out), _demo(out, progress=progress))


def study_result(out: Path, doc: Mapping[str, Any]) -> StudyResult:
    """The typed form of `engine.study.run_study`'s record."""
    return StudyResult(
        study_dir=out,
        run_dir=Path(doc["run"]),
        scored_dir=Path(doc["scored"]),
        analysis_dir=Path(doc["analysis"]),
        report=Path(doc["report"]) if doc.get("report") else None,
        rows=doc.get("rows"),
        items_without_value=doc.get("items_without_value", {}),
        judge_failures=doc.get("judge_failures", ""),
        seconds=doc.get("seconds", {}),
        waves=tuple(doc.get("waves", ())),
        stopping=doc.get("stopping"),
    )
