"""A study's stages: generation and scoring (resumable), the analysis, the report."""

from __future__ import annotations

import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

from engine.contract import RunLayout, atomic_write, content_hash
from engine.errors import UserError
from engine.study.spec import read_record, say


def study_outcome(
    out_dir: Path,
    report: bool,
    summary: dict[str, Any],
    scored: Any,
    analysis_dir: Path,
    timings: dict[str, float],
    **extra: Any,
) -> dict[str, Any]:
    """Build the report when asked, and describe a finished study (plain or in waves)."""
    report_path = None
    if report:
        t0 = time.perf_counter()
        report_path = build_study_report(out_dir)
        timings["report"] = time.perf_counter() - t0
    return {
        "run": str(out_dir),
        "rows": summary.get("rows"),
        "scored": str(scored.scored_dir),
        "items_without_value": scored.errors,
        "judge_failures": scored.failure_summary(),
        "analysis": str(analysis_dir),
        "report": str(report_path) if report_path else None,
        "seconds": timings,
        **extra,
    }


def generate_and_score(
    spec: Any,
    out_dir: Path,
    settings: Any,
    timings: dict[str, float],
    *,
    ray_address: str | None = None,
    new_run: bool = False,
    progress: bool = True,
    local: bool = False,
    backend_factory: Any = None,
    judge: Any = None,
    only: set[str] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Generate the spec's units (or the ones in `only`) and score the run, resuming both.

    Args:
        spec: The validated engine spec.
        out_dir: The study directory.
        settings: The judge settings.
        timings: Seconds per step are added here ("generate", "score").
        ray_address, new_run, progress, local: As in `run_study`.
        backend_factory: `(ModelSpec, max_logprobs) -> Backend` instead of vLLM (tests).
        judge: A judge to score with instead of starting one (tests).
        only: Generate only these unit ids (a wave); None: every unit.

    Returns:
        (generation summary, `ScoreResult`).
    """
    from engine.generate.runner import run_sweep
    from engine.score.pipeline import score_run

    t0 = time.perf_counter()
    own = None  # a judge made here on the kept generation engine: closed here
    if local:
        same = [m.name for m in spec.models if m.path == settings.model and not m.is_api]
        summary, backend = run_local(
            spec,
            out_dir,
            new_run=new_run,
            keep_model=same[0] if same else None,
            progress=progress,
            backend_factory=backend_factory,
            only=only,
        )
        if backend is not None and judge is None:
            from engine.score.judges.vllm import VLLMJudge

            judge = own = VLLMJudge(
                backend=backend, top_k=settings.top_k, chat=settings.chat,
                chat_template_kwargs=settings.chat_template_kwargs,
            )  # fmt: skip
        elif backend is not None:
            backend.close()
    else:
        ours = not _ray_running()  # a Ray this process already had (a notebook's) stays up
        summary = run_sweep(
            spec,
            str(out_dir),
            ray_address=ray_address,
            new_run=new_run,
            progress=progress,
            backend_factory=backend_factory,
            only=only,
        )
        if ours:
            _shutdown_ray()
    timings["generate"] = timings.get("generate", 0.0) + time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        scored = score_run(out_dir, settings, judge=judge, log=progress)
    finally:
        if own is not None:
            own.backend.close()
    timings["score"] = timings.get("score", 0.0) + time.perf_counter() - t0
    return summary, scored


def run_local(
    spec: Any,
    out: Path,
    *,
    new_run: bool = False,
    keep_model: str | None = None,
    progress: bool = True,
    backend_factory: Any = None,
    only: set[str] | None = None,
) -> tuple[dict[str, Any], Any | None]:
    """Generate in this process, one model at a time, with no Ray (small machines, the demo).

    Same units, shards, done-records and manifest as `engine.generate.runner.run_sweep` (a run started one
    way resumes the other way); under the default `sampling.seed_mode = "per-sample"` the rows are
    identical too.

    Args:
        spec: The validated sweep spec.
        out: The run directory.
        new_run: Replace a run of a different spec.
        keep_model: Return this model's engine still running (a judge can reuse it).
        progress: Print one line per unit.
        backend_factory: `(ModelSpec, max_logprobs) -> Backend` (default: vLLM).
        only: Generate only these unit ids; the manifest lists them as the plan (see
            `engine.generate.runner.run_sweep`).

    Returns:
        (a small summary, the kept `VLLMBackend` or None).
    """
    from engine.generate.actors import GenerationActor, default_backend_factory
    from engine.generate.runner import ModelStats, select_units, write_summary
    from engine.generate.store import RunStore
    from engine.generate.units import plan_units

    units = plan_units(spec)
    store = RunStore(str(out))
    kept = None
    stats: dict[str, ModelStats] = {}
    started = time.time()
    with store.locked():
        # Resume over the whole plan (keeps finished units outside `only`), then take the wave.
        _, records, todo = store.resume(spec, units, new_run=new_run)
        units, todo = select_units(units, only), select_units(todo, only)
        order = [u.unit_id for u in units]
        rows = {u.unit_id: u.n_rows for u in units}
        if progress:
            say(f"study: local run {spec.run_id}: {len(units)} units, {len(todo)} to run")
        for model in spec.models:
            mine = [u for u in todo if u.model.name == model.name]
            if not mine:  # nothing to generate: a judge, if needed, starts lazily later
                continue
            model_started = time.time()
            try:
                actor = GenerationActor(
                    "local",
                    store,
                    model,
                    max(1, spec.sampling.logprobs),
                    backend_factory or default_backend_factory,
                    overlap_writes=False,
                )
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear line
                from engine.generate.runner import root_cause

                raise UserError(
                    f"model {model.name!r} ({model.path}) cannot be loaded: {root_cause(exc)}",
                    "fix the model path or engine_args; finished units are kept",
                ) from None
            backend = actor.backend
            model_stats = stats[model.name] = ModelStats(startup_seconds=actor.startup_seconds)
            for i, unit in enumerate(mine, start=1):
                t0 = time.perf_counter()
                for result in actor.run_unit(unit):
                    if not result["ok"]:
                        raise UserError(
                            f"[{model.name}] unit {unit.unit_id} failed: {result['error']}",
                            "re-run the same command to resume (finished units are kept)",
                        )
                    model_stats.add("local", result)
                    if progress:
                        say(
                            f"[{model.name}] {i}/{len(mine)} units, {result['generated_tokens']} "
                            f"tokens in {time.perf_counter() - t0:.1f} s"
                        )
            model_stats.wall_seconds = time.time() - model_started
            model_stats.busy_seconds = model_stats.gen_seconds + model_stats.write_seconds
            # The build's settings and why, for summary.json (as the Ray actors report them).
            if "local" in model_stats.actors:
                model_stats.actors["local"]["engine_settings"] = getattr(backend, "settings", None)
            if model.name == keep_model:
                kept = backend
            else:
                backend.close()
        records = store.finished(order, rows)
        manifest = store.write_manifest(spec, order, records)
        write_summary(spec, store, stats, manifest, {}, time.time() - started)
    return {"rows": manifest["rows"], "units": manifest["units_finished"]}, kept


def _ray_running() -> bool:
    """Whether this process is connected to a Ray (without importing Ray when it is not)."""
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _shutdown_ray() -> None:
    """Stop the local Ray of the generation step so the judge engine gets the cores."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def run_analysis(
    study_dir: Path, scored_key: str, analysis: dict[str, Any], log: bool = True
) -> Path:
    """`metrics.analyze(DIR/scored, out=DIR/analysis)`, skipped when done for this scored run."""
    from metrics.analyze import analyze

    out = RunLayout(study_dir).analysis
    options = analysis_options(analysis)
    key = content_hash([scored_key, options])
    marker = out / ".study-done.json"
    done = read_record(marker)
    if done is not None and done.get("key") == key:
        if (out / RunLayout.METRICS).is_file():
            if log:
                say("study: analysis already done (skipped)")
            return out
    analyze(str(RunLayout(study_dir).scored), out=str(out), **options)
    atomic_write(marker, json.dumps({"key": key, "options": options}), root=study_dir)
    if log:
        say(f"study: analysis written to {out}")
    return out


def build_study_report(study_dir: Path) -> Path | None:
    """Build the HTML report with `metrics.report.build_report` if that module exists."""
    try:
        from metrics.report import build_report
    except ImportError:
        say("study: metrics.report is not installed; skipping the HTML report")
        return None
    return Path(build_report(study_dir))


def analysis_options(analysis: dict[str, Any]) -> dict[str, Any]:
    """The `[analysis]` settings `metrics.analyze` takes."""
    from metrics.analyze import analyze

    accepted = set(inspect.signature(analyze).parameters)
    return {k: v for k, v in analysis.items() if k in accepted}
