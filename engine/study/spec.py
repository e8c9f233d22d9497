"""Study specs: checking them, preparing their tasks as plain JSONL files, the plan."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from engine.contract import RunLayout, atomic_write
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
    "rank_resolution": float,
}

logger = logging.getLogger("engine.study")  # one logger for the whole room


def demo_spec() -> Path:
    """The demo's study spec, shipped as package data (works from any install, any directory).

    `configs/demo.toml` in the repository is the same file, for reading and copying.
    """
    from importlib import resources

    return Path(str(resources.files("engine") / "data" / "configs" / "demo.toml"))


def say(message: str) -> None:
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
    from engine.config.sweep import check_name, refuse_judge_url_credentials

    engine_raw = copy.deepcopy(raw)
    judges = dict(engine_raw.pop("judges", {}) or {})
    refuse_judge_url_credentials(judges, source)
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
        record = read_record(sidecar)
        if record is None or record.get("entry") != wanted or not target.is_file():
            say(f"study: preparing task {name} from {src}")
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


def read_record(path: Path) -> dict[str, Any] | None:
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
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = analysis[key] = float(value)  # `rank_resolution = 0` in TOML is an int
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
    if not 0 <= analysis.get("rank_resolution", 0.0) <= 1:
        # Checked now, not after generation and scoring have run for hours.
        raise UserError(
            f"{source}: 'analysis.rank_resolution' is {analysis['rank_resolution']}",
            "use a number in [0, 1] (confidence units; 0.05 is the default)",
        )
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
    from engine.config.judges import safe_settings, settings_from
    from engine.config.sweep import (
        apply_overrides,
        read_raw,
        refuse_judge_url_credentials,
        validate,
    )
    from engine.tasks.registry import get_task
    from engine.tasks.samples import SAMPLE_TASKS

    path = Path(path)
    raw = apply_overrides(read_raw(path), overrides or [], str(path))
    doc = copy.deepcopy(raw)
    judges, analysis = doc.pop("judges", {}) or {}, doc.pop("analysis", {}) or {}
    refuse_judge_url_credentials(judges, str(path))
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
        "judges": {k: v for k, v in safe_settings(settings).items() if k != "answer_types"},
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
