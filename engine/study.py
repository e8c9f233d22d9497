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
        name = entry.get("name") or src_name
        target = RunLayout(out_dir).task_file(name)
        sidecar = target.with_suffix(".source.json")
        wanted = {k: v for k, v in entry.items() if k != "path"} | {"path": entry.get("path")}
        record = json.loads(sidecar.read_text()) if sidecar.is_file() else None
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
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(lines) + "\n", encoding="utf-8")
            record = {"entry": wanted, "answer_type": answer_type}
            sidecar.write_text(json.dumps(record, indent=2))
        entry.pop("path", None)
        # Absolute: the engine resolves relative sources against the spec's folder, not --out.
        entry["source"] = str(target.resolve())
        answer_types.setdefault(name, declared or record["answer_type"])
    if answer_types:
        judges["answer_types"] = answer_types
    return engine_raw, {"judges": judges, "analysis": check_analysis(analysis, source)}


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
    tokens_per_second: float = 1000.0,
) -> dict[str, Any]:
    """The engine's plan report of a sweep or study spec; runs nothing, needs no network.

    `sample:` tasks are prepared from the bundled files. A `registry:` task without a local
    `path` is not loaded from the hub: it is planned with `limit` (default 5,000) placeholder
    items per split, and the report names it under `estimated_tasks`.

    Args:
        spec_path: A sweep spec or a study spec (TOML or YAML).
        out: Prepare the tasks into `out/tasks` (kept for the run); None uses a temporary folder.
        overrides: `--set` overrides of the spec.
        tokens_per_second: Assumed generated tokens/s per replica for the time estimate.

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
        report = plan_report(spec, tokens_per_second)
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
) -> dict[str, Any]:
    """Generate -> score -> analyze -> report, skipping every stage already done.

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

    Returns:
        Paths and timings: run, scored, analysis, report (or None), seconds per stage.
    """
    from engine.config.judges import settings_from
    from engine.config.sweep import apply_overrides, read_raw, validate
    from engine.generate.runner import run_sweep
    from engine.score.pipeline import score_run

    spec_path = Path(spec_path)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = apply_overrides(read_raw(spec_path), overrides or [], str(spec_path))
    engine_raw, study = prepare_study(raw, out_dir, str(spec_path))
    spec = validate(engine_raw, source=str(spec_path), base_dir=spec_path.resolve().parent)
    settings = settings_from(study["judges"], judges, source=str(spec_path))
    study_record = {
        "spec": str(spec_path),
        "judges": settings.__dict__,
        **{"analysis": study["analysis"]},
    }
    atomic_write(RunLayout(out_dir).study, json.dumps(study_record, indent=2, default=str))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    judge = None
    if local:
        same = [m.name for m in spec.models if m.path == settings.model]
        summary, backend = run_local(
            spec, out_dir, new_run=new_run, keep_model=same[0] if same else None, progress=progress
        )
        if backend is not None:
            from engine.score.judges.vllm import VLLMJudge

            judge = VLLMJudge(backend=backend, top_k=settings.top_k, chat=settings.chat)
    else:
        summary = run_sweep(
            spec, str(out_dir), ray_address=ray_address, new_run=new_run, progress=progress
        )
        _shutdown_ray()
    timings["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        scored = score_run(out_dir, settings, judge=judge, log=progress)
    finally:
        if judge is not None:
            judge.backend.close()
    timings["score"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    analysis_dir = run_analysis(out_dir, scored.key, study["analysis"], progress)
    timings["analyze"] = time.perf_counter() - t0

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
    }


def run_local(
    spec: Any,
    out: Path,
    *,
    new_run: bool = False,
    keep_model: str | None = None,
    progress: bool = True,
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

    Returns:
        (a small summary, the kept `VLLMBackend` or None).
    """
    from engine.generate.actors import GenerationActor, vllm_backend_factory
    from engine.generate.runner import ModelStats, write_summary
    from engine.generate.store import RunStore
    from engine.generate.units import plan_units

    units = plan_units(spec)
    store = RunStore(str(out))
    kept = None
    stats: dict[str, ModelStats] = {}
    started = time.time()
    with store.locked():
        _, records, todo = store.resume(spec, units, new_run=new_run)
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
                    vllm_backend_factory,
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
    accepted = set(inspect.signature(analyze).parameters)
    options = {k: v for k, v in analysis.items() if k in accepted}
    key = content_hash([scored_key, options])
    marker = out / ".study-done.json"
    if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        if (out / RunLayout.METRICS).is_file():
            if log:
                _log("study: analysis already done (skipped)")
            return out
    analyze(str(RunLayout(study_dir).scored), out=str(out), **options)
    marker.write_text(json.dumps({"key": key, "options": options}))
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
