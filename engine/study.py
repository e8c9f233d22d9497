"""`mic score`, `mic study` and `mic demo`: a sweep spec to generations, a scored run and MICs.

A *study spec* is a sweep spec (engine.config.sweep) whose tasks may also name a bundled sample task
(`source = "sample:sample_facts"`) or a registry task of the two studies
(`source = "registry:popqa"`, loaded from the Hugging Face hub). `mic study` prepares those tasks
as plain JSONL files in `DIR/tasks/` (question with the task's instruction and lettered options,
gold answers, split) and then runs, resuming each stage that is already done:

    DIR/tasks/*.jsonl       prepared task files (kept; a hub task is loaded once)
    DIR/run.json, shards/   generation (`engine.generate.runner.run_sweep`, resumable by unit)
    DIR/stages/*            scoring stages (`engine.score.score_run`, resumable by stage)
    DIR/scored/             the scored run (docs/method.md §8)
    DIR/analysis/           `metrics.analyze` output (metrics.json, mic.parquet)
    DIR/report.html         `metrics.report.build_report`, when that module is installed

The `[judges]` and `[analysis]` tables do not change generation, so they are kept out of the
generation run's identity (in `DIR/study.json`): changing a judge re-scores without re-generating.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from engine.contract import RunLayout, atomic_write, content_hash
from engine.errors import UserError
from engine.tasks.sources import parse_source

ANALYSIS_KEYS = {
    "threshold": int,
    "mode": str,
    "ignore_no_hedge": bool,
    "preset": str,
    "seed": int,
    "ref_split": str,
    "eval_split": str,
    "bootstrap": int,
    "ci_method": str,
    "compare": bool,
}

logger = logging.getLogger(__name__)


def demo_spec() -> Path:
    """The demo's study spec, shipped as package data (works from any install, any directory).

    `configs/demo.toml` in the repository is the same file, for reading and copying.
    """
    from importlib import resources

    return Path(str(resources.files("engine") / "data" / "configs" / "demo.toml"))


def _log(message: str) -> None:
    logger.info(message)


# ---- study specs ---------------------------------------------------------------------------------


def _task_items(entry: dict[str, Any], where: str) -> tuple[dict[str, list[Any]], str, str]:
    """Items by split, answer type and instruction of a `sample:` or `registry:` task entry."""
    source = str(entry["source"])
    splits = entry.get("splits", ["train", "test"])
    limit = entry.get("limit") or None
    kind, name = parse_source(source)
    if kind == "sample":
        from engine.tasks.samples import SAMPLE_TASKS, load_sample_task

        if name not in SAMPLE_TASKS:
            raise UserError(
                f"{where}.source names unknown sample task {name!r}",
                f"use one of {['sample:' + n for n in SAMPLE_TASKS]}",
            )
        task = SAMPLE_TASKS[name]
        items = {s: load_sample_task(name, s, limit=limit) for s in splits}
        return items, task.answer_type, task.instruction
    from engine.tasks.loaders import DEFAULT_LIMIT, load_task
    from engine.tasks.registry import get_task

    spec = get_task(name)
    path = entry.get("path")  # a local export of the hub dataset; None loads from the hub
    items = {s: load_task(spec, s, path=path, limit=limit or DEFAULT_LIMIT) for s in splits}
    return items, spec.answer_type, spec.instruction


def prepare_study(
    raw: dict[str, Any], out_dir: Path, source: str = "<spec>"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Turn a study spec into an engine spec document plus the study's judge / analysis settings.

    `sample:` and `registry:` tasks are written to `out_dir/tasks/<name>.jsonl` once (a sidecar
    records the entry they came from, so a resumed study does not reload the hub).

    Args:
        raw: The parsed study spec (overrides applied).
        out_dir: The study directory.
        source: The spec file, for error messages.

    Returns:
        (engine spec document, study settings {"judges": ..., "analysis": ...}).

    Raises:
        UserError: Unknown sample or registry task, a split without items, bad analysis settings.
    """
    from engine.config.sweep import check_name

    engine_raw = copy.deepcopy(raw)
    judges = dict(engine_raw.pop("judges", {}) or {})
    analysis = dict(engine_raw.pop("analysis", {}) or {})
    answer_types = dict(judges.get("answer_types", {}))
    for i, entry in enumerate(engine_raw.get("tasks") or []):
        if not isinstance(entry, dict) or "source" not in entry:
            continue
        where = f"{source}: tasks.{i}"
        declared = entry.pop("answer_type", None)
        src = str(entry["source"])
        kind, src_name = parse_source(src)
        if kind not in ("sample", "registry"):
            if declared:
                answer_types.setdefault(entry.get("name", ""), declared)
            continue
        name = check_name(entry.get("name") or src_name, f"tasks.{i}.name", source)
        # The task's file name is `safe_file_name(name)` (RunLayout.task_file): a name with a
        # slash or `..` cannot place the file outside `out_dir/tasks/`.
        target = RunLayout(out_dir).task_file(name)
        sidecar = target.with_suffix(".source.json")
        wanted = {k: v for k, v in entry.items() if k != "path"} | {"path": entry.get("path")}
        record = _read_record(sidecar)
        if record is None or record.get("entry") != wanted or not target.is_file():
            _log(f"study: preparing task {name} from {src}")
            items, answer_type, instruction = _task_items(entry, where)
            lines = []
            for split, split_items in items.items():
                if not split_items:
                    raise UserError(f"{where} ({src}) has no items in split {split!r}")
                for item in split_items:
                    row = {
                        "id": item.item_id,
                        "question": f"{instruction}\n{item.question}",
                        "answers": list(item.answers),
                        "split": split,
                    }
                    lines.append(json.dumps(row, ensure_ascii=False))
            atomic_write(target, "\n".join(lines) + "\n", root=out_dir)
            record = {"entry": wanted, "answer_type": answer_type}
            atomic_write(sidecar, json.dumps(record, indent=2), root=out_dir)
        entry.pop("path", None)
        # Absolute: the engine resolves relative sources against the spec's folder, not --out.
        entry["source"] = str(target.resolve())
        answer_types.setdefault(name, declared or record["answer_type"])
    if answer_types:
        judges["answer_types"] = answer_types
    return engine_raw, {"judges": judges, "analysis": check_analysis(analysis, source)}


def _read_record(path: Path) -> dict[str, Any] | None:
    """A small JSON record the study wrote (a task's sidecar, the analysis marker), or None when
    it is missing or damaged: the step it records is then simply done again."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def check_analysis(analysis: dict[str, Any], source: str = "<spec>") -> dict[str, Any]:
    """Validate the `[analysis]` table (keys and types of `metrics.analyze`'s options)."""
    for key, value in analysis.items():
        if key not in ANALYSIS_KEYS:
            raise UserError(
                f"{source}: unknown key 'analysis.{key}'", f"allowed keys: {sorted(ANALYSIS_KEYS)}"
            )
        kind = ANALYSIS_KEYS[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UserError(
                f"{source}: 'analysis.{key}' is {value!r}", f"expected a {kind.__name__}"
            )
    if analysis.get("mode", "heldout") not in ("heldout", "parity"):
        raise UserError(
            f"{source}: 'analysis.mode' is {analysis['mode']!r}", "use heldout or parity"
        )
    if analysis.get("threshold", 10) < 1:
        raise UserError(f"{source}: 'analysis.threshold' is {analysis['threshold']}", "use >= 1")
    return analysis


def check_study_spec(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Validate a study spec without loading any task data (works offline for hub tasks).

    Registry and sample task names are checked against their registries; every other part goes
    through the engine's validation with placeholder task files.

    Args:
        path: The study spec.
        overrides: `--set` overrides.

    Returns:
        A short description: run id of the placeholder spec, models, tasks, judges, analysis.

    Raises:
        UserError: Any problem, naming the key.
    """
    from engine.config.judges import settings_from
    from engine.config.sweep import apply_overrides, read_raw, validate
    from engine.tasks.registry import get_task
    from engine.tasks.samples import SAMPLE_TASKS

    path = Path(path)
    raw = apply_overrides(read_raw(path), overrides or [], str(path))
    doc = copy.deepcopy(raw)
    judges, analysis = doc.pop("judges", {}) or {}, doc.pop("analysis", {}) or {}
    tasks = []
    for i, entry in enumerate(doc.get("tasks") or []):
        if not isinstance(entry, dict):
            continue
        entry.pop("answer_type", None)
        src = str(entry.get("source", ""))
        kind, src_name = parse_source(src)
        if kind == "registry":
            get_task(src_name)
            entry.pop("path", None)
            entry["source"] = "builtin:arithmetic"
        elif kind == "sample":
            if src_name not in SAMPLE_TASKS:
                raise UserError(
                    f"{path}: tasks.{i}.source names unknown sample task {src!r}",
                    f"use one of {['sample:' + n for n in SAMPLE_TASKS]}",
                )
            entry["source"] = "builtin:arithmetic"
        tasks.append(f"{entry.get('name')} ({src})")
    spec = validate(doc, source=str(path), base_dir=path.resolve().parent)
    settings = settings_from(judges, source=str(path))
    check_analysis(analysis, str(path))
    return {
        "spec": str(path),
        "models": [m.name for m in spec.models],
        "tasks": tasks,
        "sampling": spec.to_dict()["sampling"],
        "judges": {k: v for k, v in settings.__dict__.items() if k != "answer_types"},
        "analysis": analysis,
    }


def plan_study(
    spec_path: str | Path,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    tokens_per_second: float | None = None,
    node_gpus: int = 8,
) -> dict[str, Any]:
    """The engine's plan report of a sweep or study spec; runs nothing, needs no network.

    `sample:` tasks are prepared from the bundled files. A `registry:` task without a local
    `path` is not loaded from the hub: it is planned with `limit` (default 5,000) placeholder
    items per split, and the report names it under `estimated_tasks`.

    Args:
        spec_path: A sweep spec or a study spec (TOML or YAML).
        out: Prepare the tasks into `out/tasks` (kept for the run); None uses a temporary folder.
        overrides: `--set` overrides of the spec.
        tokens_per_second: Measured generated tokens/s per replica of every open model; None
            assumes a rate by model size (`engine.generate.estimate`).
        node_gpus: GPUs of the node the open models' makespan is simulated on.

    Returns:
        The plan report (`engine.generate.runner.plan_report`) plus `estimated_tasks`.
    """
    import tempfile

    from engine.config.sweep import apply_overrides, read_raw, validate
    from engine.generate.runner import plan_report
    from engine.tasks.loaders import DEFAULT_LIMIT
    from engine.tasks.registry import get_task

    spec_path = Path(spec_path)
    raw = apply_overrides(read_raw(spec_path), overrides or [], str(spec_path))
    with tempfile.TemporaryDirectory(prefix="mic-plan-") as tmp:
        estimated = []
        for i, entry in enumerate(raw.get("tasks") or []):
            if not isinstance(entry, dict):
                continue
            kind, src_name = parse_source(str(entry.get("source", "")))
            if kind != "registry" or entry.get("path") or out is not None:
                continue
            task = get_task(src_name)
            name = str(entry.get("name") or task.name)
            count = int(entry.get("limit") or DEFAULT_LIMIT)
            rows = [
                {"id": f"{split}-{k}", "question": task.instruction, "answers": [], "split": split}
                for split in entry.get("splits", ["train", "test"])
                for k in range(count)
            ]
            placeholder = Path(tmp) / f"placeholder-{i}.jsonl"
            placeholder.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
            entry["source"] = str(placeholder)
            entry.setdefault("answer_type", task.answer_type)
            estimated.append(name)
        engine_raw, _ = prepare_study(
            raw, Path(out) if out is not None else Path(tmp), str(spec_path)
        )
        spec = validate(engine_raw, source=str(spec_path), base_dir=spec_path.resolve().parent)
        report = plan_report(spec, tokens_per_second, node_gpus)
    report["estimated_tasks"] = estimated
    return report


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

            judge = own = VLLMJudge(backend=backend, top_k=settings.top_k, chat=settings.chat)
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
            _log(f"study: local run {spec.run_id}: {len(units)} units, {len(todo)} to run")
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
                        _log(
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
    options = _analysis_options(analysis)
    key = content_hash([scored_key, options])
    marker = out / ".study-done.json"
    done = _read_record(marker)
    if done is not None and done.get("key") == key:
        if (out / RunLayout.METRICS).is_file():
            if log:
                _log("study: analysis already done (skipped)")
            return out
    analyze(str(RunLayout(study_dir).scored), out=str(out), **options)
    atomic_write(marker, json.dumps({"key": key, "options": options}), root=study_dir)
    if log:
        _log(f"study: analysis written to {out}")
    return out


def build_study_report(study_dir: Path) -> Path | None:
    """Build the HTML report with `metrics.report.build_report` if that module exists."""
    try:
        from metrics.report import build_report
    except ImportError:
        _log("study: metrics.report is not installed; skipping the HTML report")
        return None
    return Path(build_report(study_dir))


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


# ---- precision-stopped studies: waves of items ------------------------------------------------
#
# `mic study SPEC --out DIR --target-width W` binds DIR to the spec's whole item set (run.json:
# every item, as a plain study would) and generates it in waves: wave k asks for the first
# k x step items of each still-running task, half from each split (`run.chunk_size` is set to a
# divisor of the per-split step, so a wave is whole work units and wave k+1's units are wave k's
# plus new ones: the same unit ids, never generated twice). After each wave the run is scored
# and analysed with a bootstrap, and `metrics.stopping.stop_decision` says which tasks stop.
# DIR/waves.json (written atomically after each analysed wave) makes a killed study resume at
# the wave it was in; the analysis is seeded, so the resumed study ends where an uninterrupted
# one would.

WAVE_STATE_VERSION = 1
DEFAULT_BOOTSTRAP = 400  # a wave study needs intervals; 400 replicates when the spec sets none


def default_wave_items() -> int:
    """Items per task per wave when not given: twice the smallest pilot `mic power` plans from."""
    from metrics.power import MIN_ITEMS

    return 2 * MIN_ITEMS


def known_metrics() -> list[str]:
    """The metric names `--metric` accepts (the headline seven, their MAE modes, MarCon's)."""
    from metrics.power import PLAN_METRICS
    from metrics.summary import HEADLINE, MARCON

    return list(dict.fromkeys([*HEADLINE, *PLAN_METRICS, *MARCON]))


def check_wave_options(
    target_width: float,
    metric: str | None = None,
    wave_items: int | None = None,
    max_waves: int | None = None,
) -> None:
    """Refuse bad wave options before anything runs (one line each).

    Raises:
        UserError: A width that is not a positive number, an unknown metric, fewer than two
            items per wave (each split needs one) or fewer than one wave.
    """
    if not (isinstance(target_width, (int, float)) and math.isfinite(target_width)) or (
        target_width <= 0
    ):
        raise UserError(
            f"--target-width {target_width} must be a positive number",
            "e.g. --target-width 0.1 (the widest 95 % interval a task may end with)",
        )
    if metric is not None and metric not in known_metrics():
        raise UserError(
            f"--metric {metric!r} is not a metric",
            f"use one of {', '.join(known_metrics()[:7])} (or leave it out: per-task MICs)",
        )
    if wave_items is not None and wave_items < 2:
        raise UserError(f"--wave-items {wave_items} is too small", "use 2 or more (e.g. 80)")
    if max_waves is not None and max_waves < 1:
        raise UserError(f"--max-waves {max_waves} must be at least 1", "e.g. --max-waves 3")


def split_step(wave_items: int, splits: int) -> int:
    """Items per split a wave adds to a task of `splits` splits (the splits grow together)."""
    return -(-wave_items // max(splits, 1))


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


class WavePlan:
    """The wave state of a precision-stopped study (DIR/waves.json), loaded or started.

    Attributes:
        path: DIR/waves.json.
        target_width: The width of this invocation (it may differ from earlier waves').
        metric: The deciding metric (None: per-task shared MICs); fixed for the study.
        wave_items: Items per task a wave adds; fixed for the study.
        split_step: Per task, items per split a wave adds (`split_step`).
        waves: The log, one record per analysed wave.
        smoother: `metrics.stopping.WidthSmoother` history, as stored.
    """

    def __init__(self, path: Path, doc: dict[str, Any], target_width: float) -> None:
        self.path = path
        self.target_width = float(target_width)
        self.metric: str | None = doc["metric"]
        self.wave_items = int(doc["wave_items"])
        self.split_step: dict[str, int] = {}  # set from the validated spec (`run_waves`)
        self.chunk_size = int(doc["chunk_size"])
        self.waves: list[dict[str, Any]] = list(doc.get("waves", []))
        self.smoother_doc: dict[str, Any] = doc.get("smoother", {"history": [], "waves": {}})
        self.spec_hash: str | None = doc.get("spec_hash")

    def bind(self, spec_hash: str, new_run: bool) -> None:
        """Tie the waves to the run's spec: waves measured on another spec (another model,
        temperature, task set...) say nothing about this one's widths.

        Raises:
            UserError: waves.json was written for another spec and `new_run` is not set.
        """
        if self.spec_hash not in (None, spec_hash):
            if not new_run:
                raise UserError(
                    f"{self.path} holds waves of another spec (run hash {self.spec_hash[:12]}, "
                    f"this spec {spec_hash[:12]})",
                    "pass --new-run to restart the waves on this spec, or use another --out",
                )
            self.waves, self.smoother_doc = [], {"history": [], "waves": {}}
        self.spec_hash = spec_hash

    @classmethod
    def start(
        cls,
        engine_raw: dict[str, Any],
        out_dir: Path,
        target_width: float,
        metric: str | None,
        wave_items: int | None,
        source: str | Path = "<spec>",
    ) -> WavePlan:
        """Load DIR/waves.json (checking it matches) or start a new plan, and set the spec's
        `run.chunk_size` to whole waves (`engine_raw` is changed in place).

        Raises:
            UserError: waves.json was written with another metric or wave size, or is damaged.
        """
        path = RunLayout(out_dir).waves
        doc: dict[str, Any] | None = None
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
                assert doc.get("version") == WAVE_STATE_VERSION and "wave_items" in doc
            except (ValueError, AssertionError):
                raise UserError(
                    f"{path} is damaged or of another version",
                    "delete it to restart the waves (finished units are kept and reused)",
                ) from None
            if doc["metric"] != metric:
                raise UserError(
                    f"{path}: this study stops on {doc['metric'] or 'per-task MICs'!r}, not "
                    f"{metric or 'per-task MICs'!r} ('metric')",
                    f"pass {'--metric ' + doc['metric'] if doc['metric'] else 'no --metric'}, "
                    "or use another --out",
                )
            if wave_items is not None and wave_items != doc["wave_items"]:
                raise UserError(
                    f"{path}: this study's waves add {doc['wave_items']} items per task, not "
                    f"{wave_items} ('wave_items')",
                    f"pass --wave-items {doc['wave_items']} (or leave it out), or use another --out",
                )
        else:
            items = wave_items or default_wave_items()
            tasks = [t for t in engine_raw.get("tasks") or [] if isinstance(t, dict)]
            run = engine_raw.get("run") or {}
            spec_chunk = int(run.get("chunk_size", 256)) if isinstance(run, dict) else 256
            gcd = 0
            for task in tasks:
                gcd = math.gcd(gcd, split_step(items, len(task.get("splits", ["train", "test"]))))
            doc = {
                "version": WAVE_STATE_VERSION,
                "metric": metric,
                "wave_items": items,
                "chunk_size": _largest_divisor(max(gcd, 1), max(spec_chunk, 1)),
                "waves": [],
            }
        engine_raw.setdefault("run", {})["chunk_size"] = int(doc["chunk_size"])
        return cls(path, doc, target_width)

    def save(self, smoother: Any) -> None:
        """Write waves.json atomically (a kill leaves the previous wave's state)."""
        doc = {
            "version": WAVE_STATE_VERSION,
            "metric": self.metric,
            "wave_items": self.wave_items,
            "split_step": self.split_step,
            "chunk_size": self.chunk_size,
            "target_width": self.target_width,
            "spec_hash": self.spec_hash,
            "smoother": {
                "history": [[t, n, h] for (t, n), h in smoother.history.items()],
                "waves": smoother.waves,
            },
            "waves": self.waves,
        }
        atomic_write(self.path, json.dumps(doc, indent=1))

    def smoother(self) -> Any:
        """The `WidthSmoother` as it was after the last saved wave."""
        from metrics.stopping import WidthSmoother

        smoother = WidthSmoother()
        for task, name, history in self.smoother_doc.get("history", []):
            smoother.history[(task, name)] = [tuple(p) for p in history]
        smoother.waves = dict(self.smoother_doc.get("waves", {}))
        return smoother

    def status(self) -> dict[str, str]:
        """Each task's state after the last wave under this invocation's width: "stopped",
        "limit" (its items ran out first) or "continuing".

        A task stopped under the same width stays stopped (its items do not grow again); with
        another width the last wave's (smoothed) widths are judged afresh against it, so a
        looser width can stop tasks without a new wave and a tighter one restarts them.
        """
        from metrics.stopping import MIN_WAVES

        if not self.waves:
            return {}
        last = self.waves[-1]
        out = {}
        for task, width in last["widths"].items():
            if last["target_width"] == self.target_width:
                stopped = last["status"][task] == "stopped"
            else:
                seen = self.smoother_doc.get("waves", {}).get(task, 0)
                stopped = width is not None and width <= self.target_width and seen >= MIN_WAVES
            at_limit = last["at_limit"][task]
            out[task] = "stopped" if stopped else "limit" if at_limit else "continuing"
        return out


def _split_totals(units: list[Any]) -> dict[str, dict[str, int]]:
    """Items per (task, split) of the plan (every model and prompt sees the same items)."""
    first = (units[0].model.name, units[0].prompt.id) if units else None
    totals: dict[str, dict[str, int]] = {}
    for u in units:
        if (u.model.name, u.prompt.id) == first:
            split = totals.setdefault(u.task, {})
            split[u.split] = split.get(u.split, 0) + len(u.item_ids)
    return totals


def run_waves(
    plan: WavePlan,
    spec: Any,
    out_dir: Path,
    settings: Any,
    analysis: dict[str, Any],
    *,
    max_waves: int | None = None,
    report: bool = True,
    progress: bool = True,
    **generate: Any,
) -> dict[str, Any]:
    """Generate, score and analyse wave after wave until every task has stopped or run out of
    items (or `max_waves` waves are done); then note the stopping rule in metrics.json and
    build the report.

    Args:
        plan: The study's `WavePlan`.
        spec: The validated engine spec (all of the study's items).
        out_dir: The study directory.
        settings: Judge settings.
        analysis: The study's `[analysis]` settings (a bootstrap is needed; 400 when unset).
        max_waves: Stop after this many waves in all (None: until done).
        report: Build the HTML report.
        progress: Print progress lines (and one line per wave and task).
        **generate: ray_address, new_run, local, backend_factory, judge (`generate_and_score`).

    Returns:
        As `run_study`, plus `waves` (the log) and `stopping` (the block added to metrics.json).
    """
    from engine.generate.units import plan_units
    from metrics.analyze import analyze
    from metrics.stopping import stop_decision

    options = _analysis_options(analysis)
    options.setdefault("bootstrap", DEFAULT_BOOTSTRAP)
    if options["bootstrap"] < 100:
        raise UserError(
            f"analysis.bootstrap is {options['bootstrap']}: a precision-stopped study needs "
            "intervals",
            "set analysis.bootstrap to 400 or more (--set analysis.bootstrap=400)",
        )
    units = plan_units(spec)
    totals = _split_totals(units)
    plan.split_step = {t.name: split_step(plan.wave_items, len(t.splits)) for t in spec.tasks}
    layout = RunLayout(out_dir)
    timings: dict[str, float] = {}
    smoother = plan.smoother()
    summary: dict[str, Any] = {}
    scored = None
    ran = 0
    while True:
        status = plan.status()
        if plan.waves and "continuing" not in status.values():
            break
        if max_waves is not None and len(plan.waves) >= max_waves:
            if progress:
                _log(
                    f"study: paused after wave {len(plan.waves)} (--max-waves {max_waves}); "
                    "re-run without it to continue"
                )
            break
        last = plan.waves[-1]["split_items"] if plan.waves else {t: 0 for t in totals}
        reveal = {
            t: last[t] + plan.split_step[t] if status.get(t, "continuing") == "continuing"
            else last[t]
            for t in totals
        }  # fmt: skip
        wave = len(plan.waves) + 1
        only = {u.unit_id for u in units if u.chunk_index * plan.chunk_size < reveal[u.task]}
        if progress:
            sizes = ", ".join(f"{t} {n}" for t, n in _items(reveal, totals).items())
            _log(f"study: wave {wave}: {len(only)} units (items per task: {sizes})")
        summary, scored = generate_and_score(
            spec, out_dir, settings, timings, progress=progress, only=only, **generate
        )
        t0 = time.perf_counter()
        result = analyze(str(layout.scored), out=str(layout.analysis), **options)
        (layout.analysis / ".study-done.json").write_text(
            json.dumps({"key": content_hash([scored.key, options]), "options": options})
        )
        timings["analyze"] = timings.get("analyze", 0.0) + time.perf_counter() - t0
        items = _items(reveal, totals)
        decision, chosen = stop_decision(
            result, plan.target_width, plan.metric, smoother=smoother, items=items
        )
        previous = status
        record_status = {}
        for t in totals:
            sticky = previous.get(t) == "stopped"
            at_limit = all(reveal[t] >= n for n in totals[t].values())
            record_status[t] = (
                "stopped" if decision.stop.get(t) or sticky
                else "limit" if at_limit
                else "continuing"
            )  # fmt: skip
        plan.waves.append(
            {
                "wave": wave,
                "target_width": plan.target_width,
                "split_items": reveal,
                "items": items,
                "widths": {t: decision.widths.get(t) for t in totals},
                "status": record_status,
                "at_limit": {t: all(reveal[t] >= n for n in totals[t].values()) for t in totals},
                "chosen": [c.__dict__ for c in chosen],
            }
        )
        plan.save(smoother)
        plan.smoother_doc = json.loads(plan.path.read_text())["smoother"]
        ran += 1
        if progress:
            for line in wave_lines(plan.waves[-1]):
                _log(line)
    if not plan.waves:
        raise UserError(f"{plan.path}: no wave ran", "re-run without --max-waves 0")
    if scored is None:
        # Nothing new to generate. The manifest, scored run and analysis are made to hold the
        # last wave's units again (a plain `mic study` may have finished every item since);
        # when they already do, every step is skipped.
        split_items = plan.waves[-1]["split_items"]
        only = {u.unit_id for u in units if u.chunk_index * plan.chunk_size < split_items[u.task]}
        summary, scored = generate_and_score(
            spec, out_dir, settings, timings, progress=progress, only=only, **generate
        )
        run_analysis(out_dir, scored.key, {**analysis, **options}, progress)
    final = plan.status()
    stopping = stopping_block(plan, final)
    metrics_path = layout.analysis / RunLayout.METRICS
    doc = json.loads(metrics_path.read_text())
    doc["stopping"] = stopping
    atomic_write(metrics_path, json.dumps(doc, indent=2))
    if progress and ran == 0:
        _log(f"study: nothing new to run; the waves as they stand ({plan.path}):")
        for line in wave_lines(plan.waves[-1], final, plan.target_width):
            _log(line)
    return study_outcome(
        out_dir,
        report,
        summary,
        scored,
        layout.analysis,
        timings,
        waves=plan.waves,
        stopping=stopping,
    )


def _items(split_items: dict[str, int], totals: dict[str, dict[str, int]]) -> dict[str, int]:
    """Items per task (all splits) when each split shows its first `split_items[task]`."""
    return {t: sum(min(split_items[t], n) for n in totals[t].values()) for t in totals}


def wave_lines(
    record: dict[str, Any], status: dict[str, str] | None = None, target: float | None = None
) -> list[str]:
    """One progress line per task of a wave: items, current width, target, state."""
    status = status or record["status"]
    target = record["target_width"] if target is None else target
    lines = []
    for task, items in record["items"].items():
        width = record["widths"].get(task)
        shown = "none yet" if width is None else f"{width:.4f}"
        lines.append(
            f"study: wave {record['wave']}, {task}: {items} items, width {shown} "
            f"(target {target:g}): {status[task]}"
        )
    return lines


def stopping_block(plan: WavePlan, final: dict[str, str]) -> dict[str, Any]:
    """The stopping rule, the wave log and the final (smoothed) chosen intervals, for
    metrics.json: the intervals in the rest of metrics.json are the last wave's bootstrap ones;
    the `final_intervals` here are widened to the smoothed width (the correction)."""
    last = plan.waves[-1]
    return {
        "rule": (
            "precision stopping: waves of items, each task stops when its chosen intervals are "
            "at most target_width wide (or at its item limit); chosen = "
            + (
                f"the {plan.metric} interval of every (model, prompt)"
                if plan.metric
                else "the MIC intervals of the task's shared markers (the widest decides)"
            )
        ),  # fmt: skip
        "correction": (
            "widths smoothed across waves (metrics.stopping.WidthSmoother): each chosen interval "
            "is widened about its centre to the log-log fit through every wave's width when that "
            "is wider; no task stops before wave 2"
        ),
        "target_width": plan.target_width,
        "metric": plan.metric,
        "wave_items": plan.wave_items,
        "waves": [
            {k: w[k] for k in ("wave", "target_width", "items", "widths", "status")}
            for w in plan.waves
        ],
        "final": {
            t: {"items": last["items"][t], "width": last["widths"][t], "status": final[t]}
            for t in last["items"]
        },
        "final_intervals": last["chosen"],
    }


def _analysis_options(analysis: dict[str, Any]) -> dict[str, Any]:
    """The `[analysis]` settings `metrics.analyze` takes."""
    from metrics.analyze import analyze

    accepted = set(inspect.signature(analyze).parameters)
    return {k: v for k, v in analysis.items() if k in accepted}
