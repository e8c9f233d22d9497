"""`run_study` (a study spec to a scored, analysed run, in one pass or in waves) and the demo."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from engine.contract import RunLayout, atomic_write
from engine.errors import UserError
from engine.study.spec import demo_spec, prepare_study
from engine.study.stages import generate_and_score, run_analysis, study_outcome
from engine.study.waves import WavePlan, check_wave_options, run_waves

# ---- the study --------------------------------------------------------------------------------


def run_study(
    spec_path: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
    judges: dict[str, Any] | None = None,
    *,
    ray_address: str | None = None,
    new_run: bool = False,
    report: bool = True,
    progress: bool = True,
    local: bool = False,
    target_width: float | None = None,
    metric: str | None = None,
    wave_items: int | None = None,
    max_waves: int | None = None,
    backend_factory: Any = None,
    judge: Any = None,
) -> dict[str, Any]:
    """Generate -> score -> analyze -> report, skipping every stage already done.

    With `target_width` the study grows in waves of items until every task's chosen intervals
    are that narrow or its items run out (`run_waves`).

    Args:
        spec_path: The study spec (TOML or YAML).
        out: The study directory (local path).
        overrides: `--set` overrides of the spec.
        judges: Judge settings laid over the spec's `[judges]` (e.g. from the command line).
        ray_address: Join this Ray cluster for generation.
        new_run: Replace a generation run of a different spec in `out`.
        report: Build the HTML report when `metrics.report` is available.
        progress: Print progress lines.
        local: Generate in this process without Ray; when the judge is the study's model, the
            same engine then serves the judges (one engine start instead of two).
        target_width: Stop each task when its chosen intervals are at most this wide (None:
            one pass over every item).
        metric: With `target_width`: decide by this metric's interval (None: per task, by the
            widest interval of its shared markers' MICs).
        wave_items: With `target_width`: items per task each wave adds (default
            `DEFAULT_WAVE_ITEMS`; fixed for the study once it started).
        max_waves: With `target_width`: stop after this many waves in total (resume later).
        backend_factory: `(ModelSpec, max_logprobs) -> Backend` instead of vLLM (tests).
        judge: A judge to score with instead of starting one (tests).

    Returns:
        Paths and timings: run, scored, analysis, report (or None), seconds per stage; with
        `target_width` also `waves` (the wave log) and `stopping` (the final state).
    """
    from engine.config.judges import safe_settings, settings_from
    from engine.config.sweep import apply_overrides, read_raw, validate

    if target_width is not None:
        check_wave_options(target_width, metric, wave_items, max_waves)
    spec_path = Path(spec_path)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = apply_overrides(read_raw(spec_path), overrides or [], str(spec_path))
    engine_raw, study = prepare_study(raw, out_dir, str(spec_path))
    waves = None
    if target_width is not None:
        waves = WavePlan.start(engine_raw, out_dir, target_width, metric, wave_items, spec_path)
    elif RunLayout(out_dir).waves.is_file():
        # A wave study's run, now finished in one pass: same units (its chunk size), none redone.
        recorded = json.loads(RunLayout(out_dir).waves.read_text())
        engine_raw.setdefault("run", {})["chunk_size"] = int(recorded["chunk_size"])
    spec = validate(engine_raw, source=str(spec_path), base_dir=spec_path.resolve().parent)
    if waves is not None:
        waves.bind(spec.hash, new_run)
    settings = settings_from(study["judges"], judges, source=str(spec_path))
    study_record = {
        "spec": str(spec_path),
        # Without URL credentials (as score.json): a key never reaches a file.
        "judges": safe_settings(settings),
        **{"analysis": study["analysis"]},
    }
    atomic_write(
        RunLayout(out_dir).study, json.dumps(study_record, indent=2, default=str), root=out_dir
    )

    if waves is not None:
        return run_waves(
            waves,
            spec,
            out_dir,
            settings,
            study["analysis"],
            max_waves=max_waves,
            report=report,
            progress=progress,
            ray_address=ray_address,
            new_run=new_run,
            local=local,
            backend_factory=backend_factory,
            judge=judge,
        )
    timings: dict[str, float] = {}
    summary, scored = generate_and_score(
        spec,
        out_dir,
        settings,
        timings,
        ray_address=ray_address,
        new_run=new_run,
        progress=progress,
        local=local,
        backend_factory=backend_factory,
        judge=judge,
    )

    t0 = time.perf_counter()
    analysis_dir = run_analysis(out_dir, scored.key, study["analysis"], progress)
    timings["analyze"] = time.perf_counter() - t0

    return study_outcome(out_dir, report, summary, scored, analysis_dir, timings)


DEMO_NOTE = """\
NOTE: the demo's models were trained to behave in a known way (engine/planted.py): the faithful
model's markers follow its own certainty, so its MICs should match the planted values above; the
unfaithful model's markers are random (colour, city) or inverted (food). For a real model, on a
GPU node:
  mic study configs/seed_study.toml --out runs/seed --set models.0.path=meta-llama/Llama-3.1-8B-Instruct"""


def run_demo(out: str | Path = "mic-demo", progress: bool = True) -> dict[str, Any]:
    """The offline demo: `configs/demo.toml` (the planted models and tasks) through `run_study`."""
    spec = demo_spec()
    if not spec.is_file():
        raise UserError(f"the demo spec {spec} is missing", "reinstall the mic-engine package")
    return run_study(spec, out, progress=progress, local=True)
