"""Precision-stopped studies: waves of items until each task's intervals are narrow enough."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.contract import RunLayout, atomic_write, content_hash
from engine.errors import UserError
from engine.study.spec import say
from engine.study.stages import (
    analysis_options,
    generate_and_score,
    run_analysis,
    study_outcome,
)

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


def _well_formed(doc: Any) -> bool:
    """Whether a parsed waves.json has this version's fields with their types (an explicit
    check, not asserts, which `python -O` strips)."""

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    return (
        isinstance(doc, dict)
        and doc.get("version") == WAVE_STATE_VERSION
        and positive_int(doc.get("wave_items"))
        and positive_int(doc.get("chunk_size"))
        and "metric" in doc
        and (doc["metric"] is None or isinstance(doc["metric"], str))
        and isinstance(doc.get("waves", []), list)
        and all(isinstance(wave, dict) for wave in doc.get("waves", []))
        and _well_formed_smoother(doc.get("smoother", {}))
    )


def _well_formed_smoother(smoother: Any) -> bool:
    """`WavePlan.smoother`'s stored form: {"history": [[task, name, [[x, y], ...]], ...],
    "waves": {...}}."""
    if not isinstance(smoother, dict) or not isinstance(smoother.get("waves", {}), dict):
        return False
    history = smoother.get("history", [])
    return isinstance(history, list) and all(
        isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[2], list)
        and all(isinstance(point, list) for point in entry[2])
        for entry in history
    )


def stored_waves(path: Path, metric: str | None, wave_items: int | None) -> dict[str, Any] | None:
    """DIR/waves.json of a study resumed with this metric and wave size (None: no waves yet).

    Raises:
        UserError: The file is damaged, or was written with another metric or wave size.
    """
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        doc = None
    if not _well_formed(doc):
        raise UserError(
            f"{path} is damaged or of another version",
            "delete it to restart the waves (finished units are kept and reused)",
        )
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
    return doc


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
        doc = stored_waves(path, metric, wave_items)
        if doc is None:
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


def wave_preview(
    report: dict[str, Any],
    target_width: float,
    metric: str | None = None,
    wave_items: int | None = None,
    max_waves: int | None = None,
    out_dir: Path | None = None,
) -> list[str]:
    """Lines for `mic study --plan --target-width`: how each task would grow, wave by wave.

    A study resumed in `out_dir` keeps the wave size stored in its DIR/waves.json (the preview
    says so, with the waves already analysed), as the run itself would.

    Args:
        report: `plan_study`'s report (its units give the items per task and split).
        target_width: The interval width a task stops at.
        metric: The metric whose intervals decide (None: the task's shared-marker MICs).
        wave_items: Items per task per wave (None: the default).
        max_waves: The wave limit (None: none).
        out_dir: The study's output directory (its waves.json, if any, is read).

    Returns:
        One line on the rule, then one per task: items per wave, the most waves it can take.

    Raises:
        UserError: The stored waves.json is damaged or was written with another metric or wave
            size (the run would refuse it the same way).
    """
    totals = _split_totals(
        (u["model"], u["prompt"], u["task"], u["split"], u["items"]) for u in report["units"]
    )
    stored = stored_waves(RunLayout(out_dir).waves, metric, wave_items) if out_dir else None
    items = int(stored["wave_items"]) if stored else wave_items or default_wave_items()
    lines = [
        f"waves: each task grows by about {items} items per wave and stops once "
        + (f"its {metric} intervals are" if metric else "its shared markers' MIC intervals are")
        + f" at most {target_width:g} wide"
        + (f" (at most {max_waves} waves)" if max_waves else "")
        + "; the plan above is the most it generates (every item)"
    ]
    if stored:
        lines.append(
            f"  resuming: {len(stored.get('waves', []))} waves already analysed; the wave size "
            f"{items} is the one stored in {RunLayout(out_dir).waves.name}"
        )
    for task, splits in totals.items():
        step = split_step(items, len(splits))
        most = max(-(-n // step) for n in splits.values())
        if max_waves:
            most = min(most, max_waves)
        lines.append(
            f"  {task}: {step} items per split per wave ({len(splits)} splits), "
            f"{sum(splits.values())} items in all, at most {most} waves"
        )
    return lines


def _split_totals(units: Iterable[tuple[str, str, str, str, int]]) -> dict[str, dict[str, int]]:
    """Items per (task, split) of the plan, from its units' (model, prompt, task, split, items)
    (every model and prompt sees the same items: the first pair's units are counted)."""
    first = None
    totals: dict[str, dict[str, int]] = {}
    for model, prompt, task, split, items in units:
        first = first or (model, prompt)
        if (model, prompt) == first:
            counts = totals.setdefault(task, {})
            counts[split] = counts.get(split, 0) + items
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

    options = analysis_options(analysis)
    options.setdefault("bootstrap", DEFAULT_BOOTSTRAP)
    if options["bootstrap"] < 100:
        raise UserError(
            f"analysis.bootstrap is {options['bootstrap']}: a precision-stopped study needs "
            "intervals",
            "set analysis.bootstrap to 400 or more (--set analysis.bootstrap=400)",
        )
    units = plan_units(spec)
    totals = _split_totals(
        (u.model.name, u.prompt.id, u.task, u.split, len(u.item_ids)) for u in units
    )
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
                say(
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
            say(f"study: wave {wave}: {len(only)} units (items per task: {sizes})")
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
                say(line)
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
        say(f"study: nothing new to run; the waves as they stand ({plan.path}):")
        for line in wave_lines(plan.waves[-1], final, plan.target_width):
            say(line)
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
