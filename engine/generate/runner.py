"""The driver of `mic run` and `mic plan`: units -> Ray actors -> shards, exactly once.

Flow of `run_sweep`: plan the units; lock the output directory; bind it to the spec (`run.json`);
verify done-records and delete orphan shards; then `SweepScheduler` runs the units: actors of
several models side by side on the cluster's GPUs (the policy: `engine.generate.scheduler`), idle
actors pull the next unit of their model (no static split), actors that die are replaced and
their units retried, actors retire when their model has nothing left; finally rebuild the
manifest and write `summary.json`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from engine.cluster import init_ray
from engine.config.sweep import ModelSpec, SweepSpec
from engine.contract import RunLayout
from engine.errors import UserError
from engine.generate.backends.base import STOP_STRING_MODE
from engine.generate.backends.device import CPU_ENV
from engine.generate.backends.vllm import ENGINE_ENV, check_model_available, hub_env
from engine.generate.scheduler import (
    SCHEDULES,
    ActorSpan,
    Demand,
    choose_starts,
    schedule_report,
    slots,
)
from engine.generate.store import RunStore, is_storage_error
from engine.generate.units import WorkUnit, plan_units

logger = logging.getLogger(__name__)

# How long a started actor may wait for Ray to find its resources before the run says so (an
# actor that cannot be placed would otherwise wait for ever, e.g. after a node was lost).
PLACEMENT_TIMEOUT_S = 600.0
# How long a retiring actor may take to free its engine before it is killed.
CLOSE_TIMEOUT_S = 120.0
# How long a closed actor may take to exit by itself before it is killed. An actor that is
# killed (`ray.kill`, or its placement group removed) gets SIGTERM, whose Ray handler raises
# SystemExit wherever the actor's main thread is: inside a weakref or garbage-collection
# callback that prints a stray "Traceback" to the driver's console on a joined cluster
# (`GenerationActor.exit` makes a late SIGTERM quiet as well).
EXIT_TIMEOUT_S = 15.0


class RunIncomplete(RuntimeError):
    """Some units still failed after `run.max_attempts` tries; finished units are kept."""


@dataclass
class ModelStats:
    """Throughput accounting of one model (and of its actors)."""

    units: int = 0
    rows: int = 0
    error_rows: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    gen_seconds: float = 0.0
    write_seconds: float = 0.0
    wall_seconds: float = 0.0
    busy_seconds: float = 0.0
    startup_seconds: float = 0.0
    restarts: int = 0
    actors: dict[str, dict[str, Any]] = field(default_factory=dict)
    retries: list[dict[str, Any]] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)  # API models: tokens and requests billed

    def actor(self, name: str) -> dict[str, Any]:
        """The accounting record of actor `name` (created empty on first use)."""
        return self.actors.setdefault(
            name,
            {"units": 0, "rows": 0, "prompt_tokens": 0, "generated_tokens": 0, "gen_seconds": 0.0},
        )

    def add(self, actor: str, result: dict[str, Any]) -> None:
        """Count one finished unit (a successful result of `GenerationActor.run_unit`)."""
        self.units += 1
        self.rows += result["rows"]
        self.error_rows += result["errors"]
        self.prompt_tokens += result["prompt_tokens"]
        self.generated_tokens += result["generated_tokens"]
        self.gen_seconds += result["gen_seconds"]
        self.write_seconds += result["write_seconds"]
        per = self.actor(actor)
        for key in ("rows", "prompt_tokens", "generated_tokens", "gen_seconds"):
            per[key] += result[key]
        per["units"] += 1
        per["node"] = result.get("node", "local")
        node = self.nodes.setdefault(
            per["node"], {"units": 0, "rows": 0, "prompt_tokens": 0, "generated_tokens": 0}
        )
        for key in ("rows", "prompt_tokens", "generated_tokens"):
            node[key] += result[key]
        node["units"] += 1
        for key, value in (result.get("usage") or {}).items():
            self.usage[key] = self.usage.get(key, 0) + value


# ---- plan ----------------------------------------------------------------------------------------


def plan_report(
    spec: SweepSpec, tokens_per_second: float | None = None, node_gpus: int = 8
) -> dict[str, Any]:
    """Describe the work of a spec without running anything.

    Args:
        spec: The validated spec.
        tokens_per_second: Measured generated tokens/s per replica of every open model (`mic
            bench`); None uses the size rule of `engine.generate.estimate`.
        node_gpus: GPUs of the node the makespan is simulated for.

    Returns:
        Units (model, task, split, prompt, chunk, items, rows, unit id), per model the token
        counts with GPU-hours (open models) or tokens and cost (API models), totals, and
        `makespan`: the open models' sweep simulated on one node (`plan_makespan`).
    """
    from engine.generate.estimate import (
        THROUGHPUT_ASSUMPTION,
        estimate_api_model,
        estimate_open_model,
        requests_per_item,
    )

    units = plan_units(spec)
    n = spec.sampling.n
    per_request = requests_per_item(spec.sampling.seed_mode, n)
    prompt_chars: dict[tuple[str, str, str, int], int] = {}  # the same for every model
    per_model: dict[str, dict[str, Any]] = {}
    for model in spec.models:
        mine = [u for u in units if u.model.name == model.name]
        items = sum(len(u.item_ids) for u in mine)
        tokens = items * n * spec.sampling.max_tokens
        entry: dict[str, Any] = {
            "backend": model.backend,
            "units": len(mine),
            "prompts": items,
            "samples": items * n,
            "max_generated_tokens": tokens,
            "replicas": model.replicas,
            "gpus_per_replica": 0 if model.is_api else model.tensor_parallel_size,
        }
        if model.is_api:
            chars = 0
            for u in mine:
                key = (u.task, u.split, u.prompt.id, u.chunk_index)
                if key not in prompt_chars:
                    system = len(u.prompt.system)
                    prompt_chars[key] = sum(len(t) + system for t in u.user_texts())
                chars += prompt_chars[key]
            entry["api"] = estimate_api_model(
                model, items * per_request, chars * per_request, tokens
            )
            entry.update(gpu_hours_estimate=0.0, wall_hours_estimate=0.0)
        else:
            entry.update(estimate_open_model(model, tokens, tokens_per_second))
        per_model[model.name] = entry
    api = [m["api"] for m in per_model.values() if "api" in m]
    costs = [a["cost_usd_max"] for a in api if a["cost_usd_max"] is not None]
    return {
        "run_id": spec.run_id,
        "config_hash": spec.hash,
        "assumed_tokens_per_second_per_replica": tokens_per_second,
        "throughput_assumption": THROUGHPUT_ASSUMPTION if tokens_per_second is None else None,
        "units": [
            {
                "unit_id": u.unit_id,
                "model": u.model.name,
                "task": u.task,
                "split": u.split,
                "prompt": u.prompt.id,
                "chunk": u.chunk_index,
                "items": len(u.item_ids),
                "rows": u.n_rows,
            }
            for u in units
        ],
        "models": per_model,
        "totals": {
            "units": len(units),
            "prompts": sum(m["prompts"] for m in per_model.values()),
            "samples": sum(m["samples"] for m in per_model.values()),
            "max_generated_tokens": sum(m["max_generated_tokens"] for m in per_model.values()),
            "gpu_hours_estimate": sum(m["gpu_hours_estimate"] for m in per_model.values()),
            # Models run one after another, each on its own replicas.
            "sequential_wall_hours_estimate": sum(
                m["wall_hours_estimate"] for m in per_model.values()
            ),
            "api_prompt_tokens_estimate": sum(a["prompt_tokens_estimate"] for a in api),
            "api_max_completion_tokens": sum(a["max_completion_tokens"] for a in api),
            "api_cost_usd_max": sum(costs) if costs else None,
        },
        "makespan": plan_makespan(spec, units, per_model, node_gpus),
    }


def plan_makespan(
    spec: SweepSpec, units: list[WorkUnit], per_model: dict[str, dict[str, Any]], node_gpus: int
) -> dict[str, Any] | None:
    """The open models' sweep simulated on one node: the fill schedule against model after model.

    Each model's engine runs at the plan's own rate (the size rule or --tokens-per-second, the
    one its GPU-hours use, at a saturating batch) with `TimingModel.for_size`'s load time and
    per-unit tail, every sample running to max_tokens, through the scheduler's policy
    (`engine.generate.scheduler.simulate_sweep`). None when no open model has a known rate or a
    model needs more GPUs than the node has.
    """
    import dataclasses

    from engine.generate.scheduler import TimingModel, sim_models, simulate_sweep

    timing: dict[str, TimingModel] = {}
    for model in spec.models:
        entry = per_model.get(model.name, {})
        rate = entry.get("tokens_per_gpu_second")
        if model.is_api or not rate or model.tensor_parallel_size > node_gpus:
            continue
        tp = model.tensor_parallel_size
        base = TimingModel.for_size(entry.get("size_b") or 8.0, tp, spec.sampling.max_tokens)
        timing[model.name] = dataclasses.replace(
            base, decode_tps=rate * tp, prefill_tps=8 * rate * tp
        )
    if not timing:
        return None
    models = sim_models(spec, units, timing, generated_share=1.0)
    if not models:
        return None
    fill = simulate_sweep(models, [node_gpus], "fill")
    sequential = simulate_sweep(models, [node_gpus], "sequential", elastic=False)
    return {
        "node_gpus": node_gpus,
        "models": [m.name for m in models],
        "fill_hours": fill["makespan_seconds"] / 3600,
        "fill_busy_share": fill["busy_share"],
        "sequential_hours": sequential["makespan_seconds"] / 3600,
        "sequential_busy_share": sequential["busy_share"],
    }


def format_plan(report: dict[str, Any], max_units: int = 20) -> str:
    """Render a plan report as text: units, then a table per kind of model, then totals."""
    lines = [f"run {report['run_id']}  ({report['totals']['units']} units)", ""]
    header = f"{'model':<14}{'task':<16}{'split':<8}{'prompt':<10}{'chunk':>6}{'items':>7}{'rows':>8}  unit"
    lines.append(header)
    for u in report["units"][:max_units]:
        lines.append(
            f"{u['model']:<14}{u['task']:<16}{u['split']:<8}{u['prompt']:<10}{u['chunk']:>6}"
            f"{u['items']:>7}{u['rows']:>8}  {u['unit_id']}"
        )
    if len(report["units"]) > max_units:
        lines.append(f"... {len(report['units']) - max_units} more units")
    models = report["models"]
    open_models = {k: m for k, m in models.items() if "api" not in m}
    api_models = {k: m for k, m in models.items() if "api" in m}
    width = max([len(k) for k in models] + [5]) + 2
    if open_models:
        lines += ["", "open models (at most max_tokens per sample):"]
        lines.append(
            f"{'model':<{width}}{'prompts':>10}{'samples':>13}{'<= gen tokens':>16}{'GPUs':>8}"
            f"{'size':>7}{'tok/s/GPU':>11}{'GPU-h':>10}{'wall h':>9}"
        )
        for name, m in open_models.items():
            gpus = f"{m['replicas']}x{m['gpus_per_replica']}"
            size = f"{m['size_b']:g}B" if m.get("size_b") else "?"
            rate = f"{m['tokens_per_gpu_second']:,.0f}" if m.get("tokens_per_gpu_second") else "?"
            known = bool(m.get("tokens_per_gpu_second"))
            hours = f"{m['gpu_hours_estimate']:,.1f}" if known else "?"
            wall = f"{m['wall_hours_estimate']:,.1f}" if known else "?"
            lines.append(
                f"{name:<{width}}{m['prompts']:>10,}{m['samples']:>13,}"
                f"{m['max_generated_tokens']:>16,}{gpus:>8}{size:>7}{rate:>11}{hours:>10}{wall:>9}"
            )
    if api_models:
        lines += [
            "",
            "API models (prompt tokens ~ characters / 4; completions at most max_tokens):",
        ]
        lines.append(
            f"{'model':<{width}}{'prompts':>10}{'requests':>10}{'~prompt tok':>14}"
            f"{'<= completion tok':>19}{'USD/1M in/out':>15}{'<= USD':>11}"
        )
        for name, m in api_models.items():
            a = m["api"]
            prices = f"{a['price_in_per_1m']:g}/{a['price_out_per_1m']:g}"
            cost = f"{a['cost_usd_max']:,.0f}" if a["cost_usd_max"] is not None else "?"
            lines.append(
                f"{name:<{width}}{m['prompts']:>10,}{a['requests']:>10,}"
                f"{a['prompt_tokens_estimate']:>14,}{a['max_completion_tokens']:>19,}"
                f"{prices:>15}{cost:>11}"
            )
    lines.append("")
    if report.get("estimated_tasks"):
        lines.append(
            f"estimated (hub tasks not loaded; `limit` placeholder items per split): "
            f"{', '.join(report['estimated_tasks'])}"
        )
    t = report["totals"]
    lines.append(
        f"total: {t['prompts']:,} prompts, {t['samples']:,} samples, "
        f"<= {t['max_generated_tokens']:,} tokens"
    )
    if open_models:
        rate = report["assumed_tokens_per_second_per_replica"]
        assumption = (
            f"at {rate:,.0f} generated tokens/s per replica (--tokens-per-second)"
            if rate
            else f"assuming {report['throughput_assumption']}"
        )
        unknown = [k for k, m in open_models.items() if not m.get("tokens_per_gpu_second")]
        lines.append(
            f"open models: ~{t['gpu_hours_estimate']:,.1f} GPU-h, "
            f"~{t['sequential_wall_hours_estimate']:,.1f} h wall one model after another"
            + (
                f" (without {', '.join(unknown)}: size unknown, set models.params_b)"
                if unknown
                else ""
            )
        )
        lines.append(f"  {assumption}")
    sim = report.get("makespan")
    if sim:
        lines.append(
            f"  simulated on one {sim['node_gpus']}-GPU node: ~{sim['fill_hours']:,.1f} h with "
            f"models side by side (GPUs busy {sim['fill_busy_share']:.0%}), "
            f"~{sim['sequential_hours']:,.1f} h at each model's replicas one model after "
            f"another ({sim['sequential_busy_share']:.0%})"
        )
    if api_models:
        cost = t["api_cost_usd_max"]
        lines.append(
            f"API models: ~{t['api_prompt_tokens_estimate']:,} prompt + <= "
            f"{t['api_max_completion_tokens']:,} completion tokens, <= "
            + (
                f"${cost:,.0f}"
                if cost is not None
                else "? USD (no prices: set models.price_in / price_out)"
            )
        )
    return "\n".join(lines)


# ---- run -----------------------------------------------------------------------------------------


def engine_env(spec: SweepSpec) -> dict[str, str]:
    """Environment defaults of the engine processes of `spec` (see `engine.generate.backends.vllm.hub_env`).

    The CPU build's variables are not among them: each actor's backend chooses those for the
    build installed on its own node (`engine.generate.backends.device.engine_settings`).
    """
    return {**ENGINE_ENV, **hub_env([m.path for m in spec.models if not m.is_api])}


def actor_env(spec: SweepSpec) -> dict[str, str]:
    """The environment passed to the actors: `engine_env` with the driver's values winning, plus
    the build variables the user set explicitly in the driver's environment."""
    env = {k: os.environ.get(k, v) for k, v in engine_env(spec).items()}
    env.update({k: os.environ[k] for k in CPU_ENV if k in os.environ})
    return env


def root_cause(exc: BaseException, limit: int = 300) -> str:
    """The innermost `SomeError: message` line of a (Ray-wrapped) exception, shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [
        line
        for line in lines
        if ":" in line
        and line.split(":", 1)[0].replace(".", "").isidentifier()
        and line.split(":", 1)[0].endswith(("Error", "Exception", "Exit"))
    ]
    text = errors[-1] if errors else (lines[-1] if lines else type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_failure(exc: BaseException) -> str | None:
    """The cause when an actor died in its constructor (the model did not load), else None."""
    if "creation task" not in str(exc):
        return None
    return root_cause(exc)


def _actor_resources(
    model: ModelSpec, device: str, cluster: dict[str, float], index: int, replicas: int
) -> dict[str, Any]:
    gpus = cluster.get("GPU", 0.0)
    # An API model's actor only waits on the network: CPUs, whatever the device.
    use_gpu = not model.is_api and (device == "gpu" or (device == "auto" and gpus > 0))
    if use_gpu:
        if gpus <= 0:
            raise UserError(
                f'models.{index} ({model.name}) asks for GPUs (run.device = "gpu") but the Ray cluster has none',
                'set run.device = "cpu" or "auto", or pass --ray-address of a GPU cluster',
            )
        need = replicas * model.tensor_parallel_size
        if need > gpus:
            raise UserError(
                f"models.{index} ({model.name}) needs {replicas} replicas x {model.tensor_parallel_size} GPUs "
                f"= {need:g} GPUs; the cluster has {gpus:g}",
                "lower models.replicas / --actors or tensor_parallel_size",
            )
        return {"num_gpus": model.tensor_parallel_size, "num_cpus": 1}
    cpus = cluster.get("CPU", 0.0)
    need = replicas * model.num_cpus
    if need > cpus:
        raise UserError(
            f"models.{index} ({model.name}) needs {replicas} replicas x {model.num_cpus} CPUs = {need:g} CPUs; "
            f"Ray has {cpus:g}",
            "lower models.replicas / --actors or models.num_cpus",
        )
    return {"num_cpus": model.num_cpus, "num_gpus": 0}


class _Progress:
    """A progress bar per model (tqdm, on stderr). The tok/s rate uses the actors' generate time
    (not their start-up), divided by the number of actors working in parallel."""

    def __init__(
        self, model: str, total_units: int, total_rows: int, actors: int, enabled: bool
    ) -> None:
        from tqdm import tqdm

        self.model, self.total_units, self.total_rows = model, total_units, total_rows
        self.actors = max(actors, 1)
        self.units = self.rows = self.tokens = 0
        self.gen_seconds = 0.0
        self.bar = tqdm(
            total=total_rows,
            desc=f"[{model}]",
            unit="row",
            disable=not enabled,
            mininterval=2.0,
            dynamic_ncols=True,
        )

    def update(self, result: dict[str, Any], force: bool = False) -> None:
        if result:
            self.units += 1
            self.rows += result["rows"]
            self.tokens += result["generated_tokens"]
            self.gen_seconds += result["gen_seconds"]
            busy = self.gen_seconds / self.actors
            rate = self.tokens / busy if busy > 0 else 0.0
            self.bar.set_postfix_str(
                f"{self.units}/{self.total_units} units, {rate:,.0f} generated tok/s",
                refresh=False,
            )
            self.bar.update(result["rows"])
        if force or self.units >= self.total_units:
            self.bar.close()


def run_sweep(
    spec: SweepSpec,
    out: str,
    *,
    ray_address: str | None = None,
    new_run: bool = False,
    actors: int | None = None,
    backend_factory: Any = None,
    progress: bool = True,
    overlap_writes: bool = True,
    ray_num_cpus: int | None = None,
    only: Collection[str] | None = None,
    schedule: str = "fill",
    placement_timeout: float = PLACEMENT_TIMEOUT_S,
) -> dict[str, Any]:
    """Run (or resume) a sweep into `out`.

    Args:
        spec: The validated spec.
        out: Output location (local path or pyarrow filesystem URI).
        ray_address: Join this Ray cluster instead of starting a local one.
        new_run: If `out` holds a run of a different spec, move it to `superseded/` and start over.
        actors: Actors per model (overrides `models.replicas`).
        backend_factory: `(ModelSpec, max_logprobs) -> Backend` (default: vLLM).
        progress: Print progress lines with ETA to stderr.
        overlap_writes: Write shards on a thread while the next unit generates.
        ray_num_cpus: CPUs of a local Ray (default: all).
        only: Run only these units of the plan (unit ids; None: all). The manifest then lists
            them as the plan, so scoring sees a complete run of those units (a study growing in
            waves); finished units outside them are kept for a later call.
        schedule: "fill" (models side by side, filling the GPUs) or "sequential" (model after
            model, the order before the node-filling scheduler; see `engine.generate.scheduler`).
        placement_timeout: Seconds a started actor may wait for Ray to find its resources.

    Returns:
        The summary written to `out/summary.json`.

    Raises:
        UserError: A bad option, a locked or mismatched output directory, impossible resources.
        RunIncomplete: Units still failed after `run.max_attempts` tries (finished units are kept).
    """
    if actors is not None and actors < 1:
        raise UserError(f"--actors is {actors}", "use 1 or more")
    units = plan_units(spec)
    store = RunStore(out)
    started = time.time()
    with store.locked():
        # Resume over the whole plan: a unit outside `only` is kept, not collected as garbage.
        mode, records, todo = store.resume(spec, units, new_run=new_run)
        plan_shards = {r.shard for r in records.values()}  # finished before this call, whole plan
        units, todo = select_units(units, only), select_units(todo, only)
        records = {u.unit_id: records[u.unit_id] for u in units if u.unit_id in records}
        order = [u.unit_id for u in units]
        rows = {u.unit_id: u.n_rows for u in units}
        if progress:
            logger.info(
                f"{mode} run {spec.run_id} in {store.location}: {len(units)} units, "
                f"{len(records)} already finished, {len(todo)} to run"
            )
        stats: dict[str, ModelStats] = {}
        failed: dict[str, str] = {}
        report = None
        if todo:
            for i, model in enumerate(spec.models):
                if not any(u.model.name == model.name for u in todo):
                    continue
                if model.is_api:
                    from engine.generate.backends.openai import check_api_key

                    check_api_key(model, f"models.{i} ({model.name})")
                else:
                    check_model_available(model.path, f"models.{i}.path ({model.name})")
            init_ray(ray_address, num_cpus=ray_num_cpus, env=engine_env(spec))
            scheduler = SweepScheduler(
                spec,
                store,
                todo,
                actors=actors,
                backend_factory=backend_factory,
                progress=progress,
                overlap_writes=overlap_writes,
                failed=failed,
                schedule=schedule,
                placement_timeout=placement_timeout,
            )
            stats = scheduler.run()
            report = scheduler.report()
        records = store.finished(order, rows)
        # A shard an actor wrote before dying (no done-record) is garbage now, not at the next
        # resume: a study scores its wave right after this call and refuses a stray shard. With
        # `only`, the finished units outside it (found at resume) are kept.
        store.collect_garbage(plan_shards | {r.shard for r in records.values()})
        try:
            manifest = store.write_manifest(spec, order, records)
            summary = write_summary(
                spec, store, stats, manifest, failed, time.time() - started, report
            )
        except OSError as exc:
            if not is_storage_error(exc):
                raise
            # The done-records are the truth; the manifest is a view the next run rebuilds.
            raise RunIncomplete(
                f"cannot write the manifest in {store.location} ({exc.strerror}); "
                f"{len(records)} of {len(order)} units are finished and kept -- free space and "
                "re-run the same command to resume"
            ) from None
    storage = _storage_failures(failed)
    if storage:
        raise RunIncomplete(
            f"stopped: cannot write to {store.location} ({storage[0]}); "
            f"{manifest['units_finished']} of {len(order)} units are finished and kept -- free "
            "space (or fix permissions) and re-run the same command to resume"
        )
    if failed:
        first = next(iter(failed.items()))
        raise RunIncomplete(
            f"{len(failed)} unit(s) failed after {spec.run.max_attempts} attempts (first: {first[0]}: {first[1]}); "
            f"{manifest['units_finished']} finished units are kept -- fix the cause and re-run to resume"
        )
    if manifest["units_finished"] < len(order):
        # No unit failed, yet not every one is done: one was lost on the way (an actor released
        # with work in flight). Never a success: the next run finds and runs what is missing.
        raise RunIncomplete(
            f"{len(order) - manifest['units_finished']} of {len(order)} units did not finish and "
            "none reported a failure; finished units are kept -- re-run the same command to resume"
        )
    return summary


def select_units(units: list[WorkUnit], only: Collection[str] | None) -> list[WorkUnit]:
    """The units whose id is in `only`, in plan order (all of them when `only` is None)."""
    if only is None:
        return units
    wanted = set(only)
    return [u for u in units if u.unit_id in wanted]


_STORAGE = "storage: "


def _storage_failures(failed: dict[str, str]) -> list[str]:
    return [e[len(_STORAGE) :] for e in failed.values() if e.startswith(_STORAGE)]


@dataclass
class _Actor:
    name: str
    run: _ModelRun
    handle: Any
    group: Any  # its placement group (one bundle)
    node: str
    span: ActorSpan
    placed: bool = False
    outstanding: set[str] = field(default_factory=set)
    calls: int = 0  # run_unit / drain calls in flight
    idle: bool = False
    retiring: bool = False
    exiting: bool = False  # closed, ending its own process (`GenerationActor.exit`)
    deadline: float | None = None


@dataclass
class _ModelRun:
    index: int
    model: ModelSpec
    queue: deque[WorkUnit]
    by_id: dict[str, WorkUnit]
    attempts: dict[str, int]
    cap: int
    options: dict[str, Any]  # Ray resources of one actor
    need: dict[str, float]
    stats: ModelStats = field(default_factory=ModelStats)
    counter: int = 0
    actors: set[str] = field(default_factory=set)
    started: float | None = None
    finished_at: float | None = None
    last_freed: float = 0.0
    show: Any = None
    elastic: bool = False
    spans: list[ActorSpan] = field(default_factory=list)  # actors gone

    def demand(self, live: dict[str, _Actor]) -> Demand:
        mine = [live[a] for a in self.actors if not live[a].retiring]
        per_node: dict[str, int] = {}
        for a in mine:
            per_node[a.node] = per_node.get(a.node, 0) + 1
        spans = [a.span for a in live.values() if a.run is self] + [
            s for s in self.spans if s.ready is not None
        ]
        loads = [s.ready - s.born for s in spans if s.ready is not None]
        done = [b - a for s in spans for a, b in s.units]
        return Demand(
            index=self.index,
            need=self.need,
            cap=self.cap,
            queued=len(self.queue),
            actors=len(mine),
            per_node=per_node,
            busy=sum(len(a.outstanding) for a in mine)
            + sum(len(live[a].outstanding) for a in self.actors if live[a].retiring),
            unit_seconds=sum(done) / len(done) if done else None,
            load_seconds=max(loads) if loads else None,
            closing=len(self.actors) - len(mine),
            elastic=self.elastic,
        )


class SweepScheduler:
    """The driver loop of `run_sweep`: one unit queue per model, the live actors, the accounting.

    Actors of several models run at once, each holding a placement group of its GPUs (or CPUs)
    on the node the policy chose (`engine.generate.scheduler.choose_starts`); an idle actor pulls
    the next unit of its model (no static split). An actor that dies is replaced and its units
    retried (a unit already committed is counted, not redone); a model that cannot load ends the
    run with its cause; a full disk stops every model. Per model the figures are those of
    `ModelStats`; `report()` gives the busy share of the slots and the idle time by cause.

    Args:
        spec: The validated spec.
        store: The run directory.
        todo: Units still to run (all models).
        actors: Actors per model (overrides `models.replicas`).
        backend_factory: `(ModelSpec, max_logprobs) -> Backend` (default: vLLM).
        progress: Progress bars per model on stderr.
        overlap_writes: Write shards on a thread while the next unit generates.
        failed: Unit id -> error of units that failed for good (filled in).
        schedule: "fill" (models side by side) or "sequential" (one model after another).
        placement_timeout: Seconds an actor may wait for its resources.
    """

    def __init__(
        self,
        spec: SweepSpec,
        store: RunStore,
        todo: list[WorkUnit],
        *,
        actors: int | None,
        backend_factory: Any,
        progress: bool,
        overlap_writes: bool,
        failed: dict[str, str],
        schedule: str = "fill",
        placement_timeout: float = PLACEMENT_TIMEOUT_S,
    ) -> None:
        import ray

        from engine.generate.actors import GenerationActor

        if schedule not in SCHEDULES:
            raise UserError(f"schedule is {schedule!r}", f"use one of {', '.join(SCHEDULES)}")
        self.ray = ray
        self.spec, self.store, self.failed = spec, store, failed
        self.backend_factory, self.overlap_writes = backend_factory, overlap_writes
        self.progress, self.schedule = progress, schedule
        self.placement_timeout = placement_timeout
        self.actor_cls = ray.remote(GenerationActor)
        self.env = actor_env(spec)
        cluster = ray.cluster_resources()
        self.runs: list[_ModelRun] = []
        for index, model in enumerate(spec.models):
            mine = [u for u in todo if u.model.name == model.name]
            if not mine:
                continue
            cap = min(actors or model.replicas, len(mine))
            options = _actor_resources(model, spec.run.device, cluster, index, cap)
            need = {"CPU": float(options["num_cpus"])}
            if options["num_gpus"]:
                need["GPU"] = float(options["num_gpus"])
            self.runs.append(
                _ModelRun(
                    index=index,
                    model=model,
                    queue=deque(mine),
                    by_id={u.unit_id: u for u in mine},
                    attempts=dict.fromkeys((u.unit_id for u in mine), 0),
                    cap=cap,
                    options=options,
                    need=need,
                    # More replicas than asked on GPUs nothing else wants; never with --actors
                    # (a hard limit) nor on CPUs (each engine takes its share of the host).
                    elastic=actors is None and "GPU" in need,
                )
            )
        self.resource = "GPU" if any("GPU" in r.need for r in self.runs) else "CPU"
        self.capacity = self._nodes()
        for run in self.runs:
            if not any(_fits(run.need, res) for res in self.capacity.values()):
                raise UserError(
                    f"models.{run.index} ({run.model.name}) needs {_fmt(run.need)} on one node; "
                    f"no node of the Ray cluster has that much",
                    "lower tensor_parallel_size / models.num_cpus, or use larger nodes",
                )
        self.used: dict[str, dict[str, float]] = {n: {} for n in self.capacity}
        self.live: dict[str, _Actor] = {}
        self.inflight: dict[Any, tuple[str, str]] = {}  # ObjectRef -> (actor name, kind)
        self.started = time.time()
        self.clock = self.started
        self.waiting = 0.0  # slot-seconds free while units were queued (packing)

    # ---- resources ----

    def _nodes(self) -> dict[str, dict[str, float]]:
        nodes = {}
        for node in self.ray.nodes():
            if node.get("Alive"):
                res = node.get("Resources", {})
                nodes[node["NodeID"]] = {k: float(res.get(k, 0.0)) for k in ("CPU", "GPU")}
        return nodes

    def _free(self) -> dict[str, dict[str, float]]:
        return {
            n: {k: cap[k] - self.used[n].get(k, 0.0) for k in cap}
            for n, cap in self.capacity.items()
        }

    def _take(self, node: str, need: dict[str, float], sign: float) -> None:
        used = self.used.setdefault(node, {})
        for k, v in need.items():
            used[k] = used.get(k, 0.0) + sign * v

    def _tick(self) -> None:
        now = time.time()
        if any(r.queue for r in self.runs):
            free = sum(max(f.get(self.resource, 0.0), 0.0) for f in self._free().values())
            self.waiting += free * (now - self.clock)
        self.clock = now

    # ---- actors ----

    def _start(self, run: _ModelRun, node: str) -> None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        name = f"{run.model.name}/{run.counter}"
        run.counter += 1
        bundle = {k: v for k, v in run.need.items() if v}
        # One bundle, reserved on the chosen node: `ready()` says the resources were found, so
        # an actor waiting for resources is told apart from one loading its engine.
        group = placement_group([bundle], strategy="STRICT_PACK", _soft_target_node_id=node)
        handle = self.actor_cls.options(
            max_concurrency=1,
            runtime_env={"env_vars": self.env},
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=0
            ),
            **run.options,
        ).remote(
            name,
            self.store,
            run.model,
            self.spec.sampling.logprobs,
            self.backend_factory,
            self.overlap_writes,
        )
        now = time.time()
        actor = _Actor(
            name,
            run,
            handle,
            group,
            node,
            ActorSpan(run.model.name, slots(run.need), now),
            deadline=now + self.placement_timeout,
        )
        self.live[name] = actor
        run.actors.add(name)
        self._take(node, run.need, +1)
        if run.started is None:
            run.started = now
            run.show = _Progress(
                run.model.name,
                len(run.queue),
                sum(u.n_rows for u in run.queue),
                run.cap,
                self.progress,
            )
        self.inflight[group.ready()] = (name, "placed")
        self.inflight[handle.info.remote()] = (name, "ready")

    def _fill(self) -> None:
        demands = [r.demand(self.live) for r in self.runs]
        for i, node in choose_starts(self.schedule, demands, self._free()):
            self._start(self.runs[i], node)

    def _dispatch(self, actor: _Actor) -> None:
        run = actor.run
        if actor.span.ready is None or actor.retiring:
            return
        actor.idle = False
        # While the queue is long, each actor holds a second unit behind the one it runs, so the
        # driver's round trip is not a gap on the GPU; near the end, one at a time (a unit queued
        # behind another would wait while a peer idles).
        depth = 2 if len(run.queue) > 2 * len(run.actors) else 1
        while run.queue and actor.calls < depth:
            unit = run.queue.popleft()
            actor.outstanding.add(unit.unit_id)
            actor.calls += 1
            self.inflight[actor.handle.run_unit.remote(unit)] = (actor.name, "run")
        if actor.calls:
            return
        if actor.outstanding:
            actor.calls += 1
            self.inflight[actor.handle.drain.remote()] = (actor.name, "drain")
        else:
            actor.idle = True

    def _retire_idle(self) -> None:
        for run in self.runs:
            if run.queue:
                continue
            mine = [self.live[a] for a in run.actors if not self.live[a].retiring]
            if self.schedule == "sequential" and not all(a.idle for a in mine):
                continue  # the old order: a model's actors go together
            for actor in mine:
                if actor.idle:
                    actor.retiring = True
                    actor.deadline = time.time() + CLOSE_TIMEOUT_S
                    self.inflight[actor.handle.close.remote()] = (actor.name, "close")

    def _exit(self, actor: _Actor) -> None:
        """Let a closed actor end its own process (`GenerationActor.exit`: atexit handlers run,
        no signal); it is released when it has gone, or killed by `_expired` after
        `EXIT_TIMEOUT_S`."""
        actor.exiting = True
        actor.deadline = time.time() + EXIT_TIMEOUT_S
        self.inflight[actor.handle.exit.remote()] = (actor.name, "exit")

    def _release(self, actor: _Actor, died: str | None = None, kill: bool = True) -> None:
        """Give the actor's resources back and book its life (`kill`: end its process first;
        not for an actor that has exited by itself — the call resolves as its process ends, and
        a kill then could still reach it)."""
        ray = self.ray
        for ref, (name, _kind) in list(self.inflight.items()):
            if name == actor.name:
                self.inflight.pop(ref)
        if kill:
            with contextlib.suppress(Exception):
                ray.kill(actor.handle)
        with contextlib.suppress(Exception):
            ray.util.remove_placement_group(actor.group)
        self.live.pop(actor.name, None)
        run = actor.run
        run.actors.discard(actor.name)
        self._take(actor.node, run.need, -1)
        now = time.time()
        actor.span.freed = now
        run.spans.append(actor.span)
        run.last_freed = max(run.last_freed, now)
        per = run.stats.actor(actor.name)
        if died:
            per["died"] = died
        per["lifetime_seconds"] = now - actor.span.born
        per["started_at"], per["freed_at"] = actor.span.born, now  # the driver's clock
        key = "gpu_seconds" if run.options["num_gpus"] else "cpu_seconds"
        per[key] = per["lifetime_seconds"] * (run.options["num_gpus"] or run.options["num_cpus"])
        if not run.actors and not run.queue and run.show is not None:
            run.show.update({}, force=True)

    # ---- results ----

    def _account(self, actor: _Actor, result: dict[str, Any]) -> None:
        run = actor.run
        actor.outstanding.discard(result["unit_id"])
        if result["ok"]:
            run.stats.add(actor.name, result)
            run.show.update(result)
            run.finished_at = time.time()
            span = result.get("gen_span")
            if span:
                actor.span.units.append((float(span[0]), float(span[1])))
        elif result.get("storage"):
            self._stop_for_storage(run, result["unit_id"], result["error"])
        elif result.get("user_error"):
            self._kill_all()
            message, fix = result["user_error"]
            raise UserError(message, f"{fix}; finished units are kept" if fix else None)
        else:
            self._retry(run, result["unit_id"], result["error"], actor.name)

    def _stop_for_storage(self, run: _ModelRun, unit_id: str, error: str) -> None:
        # Disk full / read-only: every further unit would be generated only to fail its write.
        self.failed[unit_id] = f"{_STORAGE}{error}"
        left = sum(len(r.queue) for r in self.runs)
        if left:
            logger.warning(
                f"[{run.model.name}] cannot write to {self.store.location} ({error}); stopping "
                f"({left} units not started, finished units are kept)"
            )
        for r in self.runs:
            r.queue.clear()

    def _retry(self, run: _ModelRun, unit_id: str, error: str, actor: str) -> None:
        run.attempts[unit_id] += 1
        stats = run.stats
        # Kept in summary.json: which unit failed where and why, even when a retry succeeded.
        stats.retries.append(
            {"unit_id": unit_id, "actor": actor, "attempt": run.attempts[unit_id], "error": error}
        )
        record = self.store.done_record(unit_id)
        if record is not None:
            # Committed before its actor died: count its rows (tokens are not known).
            node = stats.actors.get(actor, {}).get("node", "unknown")
            stats.add(
                actor,
                {
                    "rows": record.rows,
                    "errors": 0,
                    "prompt_tokens": 0,
                    "generated_tokens": 0,
                    "gen_seconds": 0.0,
                    "write_seconds": 0.0,
                    "node": node,
                },
            )
            return
        if run.attempts[unit_id] >= self.spec.run.max_attempts:
            self.failed[unit_id] = error
            logger.warning(f"[{run.model.name}] unit {unit_id} failed for good: {error}")
        elif _storage_failures(self.failed):
            self.failed[unit_id] = error  # the run is stopping: do not hand it out again
        else:
            logger.warning(f"[{run.model.name}] unit {unit_id} failed ({error}); retrying")
            run.queue.appendleft(run.by_id[unit_id])

    def _died(self, actor: _Actor, exc: BaseException) -> None:
        run = actor.run
        # A model that cannot load fails the same way every time: say why once, no retries.
        cause = load_failure(exc)
        if cause is not None and not run.stats.units:
            self._kill_all()
            raise UserError(
                f"model {run.model.name!r} ({run.model.path}) cannot be loaded: {cause}",
                "fix the model path or engine_args; finished units are kept",
            ) from None
        # The actor died (OOM, segfault, lost node) or raised: release it, retry its units; the
        # policy starts a replacement where there is room.
        run.stats.restarts += 1
        outstanding = sorted(actor.outstanding)
        self._release(actor, died=type(exc).__name__)
        logger.warning(
            f"[{run.model.name}] actor {actor.name} died ({root_cause(exc, 160)}); restarting"
        )
        for unit_id in outstanding:
            self._retry(run, unit_id, f"actor died: {root_cause(exc)}", actor.name)
        if run.stats.restarts > self.spec.run.max_attempts * run.cap:
            for unit in run.queue:
                self.failed[unit.unit_id] = "too many actor restarts"
            run.queue.clear()
        self.capacity = self._nodes() or self.capacity  # a lost node takes its resources along
        for name in list(self.used):
            if name not in self.capacity and not any(a.node == name for a in self.live.values()):
                self.used.pop(name)
        for other in run.actors:  # wake idle actors: units came back
            if self.live[other].idle:
                self._dispatch(self.live[other])

    def _expired(self) -> None:
        now = time.time()
        for actor in list(self.live.values()):
            if actor.deadline is None or now < actor.deadline:
                continue
            run = actor.run
            if actor.retiring:
                what = "end its process within" if actor.exiting else "free its engine within"
                logger.warning(
                    f"[{run.model.name}] actor {actor.name} did not {what} "
                    f"{EXIT_TIMEOUT_S if actor.exiting else CLOSE_TIMEOUT_S:.0f} s; killed"
                )
                self._release(actor)
                continue
            self._release(actor)
            logger.warning(
                f"[{run.model.name}] actor {actor.name} found no node with {_fmt(run.need)} free "
                f"within {self.placement_timeout:.0f} s"
            )
            if not run.actors and run.queue:
                error = (
                    f"no resources: no node had {_fmt(run.need)} free for an actor of "
                    f"{run.model.name} within {self.placement_timeout:.0f} s"
                )
                for unit in run.queue:
                    self.failed[unit.unit_id] = error
                run.queue.clear()

    def _kill_all(self) -> None:
        for actor in list(self.live.values()):
            self._release(actor)

    # ---- the loop ----

    def run(self) -> dict[str, ModelStats]:
        """Run every queued unit; return the figures per model (models that ran)."""
        ray = self.ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            self._fill()
            while self.inflight:
                deadlines = [a.deadline for a in self.live.values() if a.deadline is not None]
                wait = max(min(deadlines) - time.time(), 0.0) + 0.05 if deadlines else None
                done, _ = ray.wait(list(self.inflight), num_returns=1, timeout=wait)
                self._tick()
                if not done:
                    self._expired()
                else:
                    self._handle(done[0], (RayActorError, RayTaskError))
                self._retire_idle()
                self._fill()
                if not self.inflight and any(r.queue for r in self.runs):
                    self._stuck()
        except BaseException:
            self._kill_all()
            raise
        return {r.model.name: self._finish(r) for r in self.runs if r.started is not None}

    def _handle(self, ref: Any, errors: tuple[type[BaseException], ...]) -> None:
        name, kind = self.inflight.pop(ref)
        actor = self.live.get(name)
        if actor is None:
            return
        if kind == "exit":  # resolves (with the actor's death) as it exits
            self._release(actor, kill=False)
            return
        try:
            value = self.ray.get(ref)
        except errors as exc:
            if kind == "close":
                self._exit(actor)
            else:
                self._died(actor, exc)
            return
        if kind == "placed":
            actor.placed = True
            actor.deadline = None
            actor.node = self._placed_node(actor)
        elif kind == "ready":
            actor.span.ready = time.time()
            actor.run.stats.actor(name).update(value)
            self._dispatch(actor)
        elif kind == "close":
            self._exit(actor)
        else:
            actor.calls -= 1
            for result in value:
                self._account(actor, result)
            self._dispatch(actor)
            for other in actor.run.actors:  # a retried unit may wake an idle actor
                peer = self.live[other]
                if peer is not actor and peer.idle and actor.run.queue:
                    self._dispatch(peer)

    def _placed_node(self, actor: _Actor) -> str:
        """Where Ray put the bundle (the chosen node is a soft target)."""
        try:
            table = self.ray.util.placement_group_table(actor.group)
            node = table["bundles_to_node_id"][0]
        except Exception:  # noqa: BLE001 - accounting only: keep the chosen node
            return actor.node
        if node != actor.node:
            self._take(actor.node, actor.run.need, -1)
            self._take(node, actor.run.need, +1)
        return node

    def _stuck(self) -> None:
        """Units are queued, nothing runs and nothing fits: the cluster shrank under the run."""
        free = self._free()
        for run in self.runs:
            if not run.queue:
                continue
            error = (
                f"no resources: no live node has {_fmt(run.need)} for an actor of {run.model.name} "
                f"(free: {', '.join(_fmt(f) for f in free.values()) or 'no nodes'})"
            )
            logger.warning(f"[{run.model.name}] {error}")
            for unit in run.queue:
                self.failed[unit.unit_id] = error
            run.queue.clear()

    def _finish(self, run: _ModelRun) -> ModelStats:
        stats = run.stats
        stats.wall_seconds = (run.last_freed or time.time()) - (run.started or self.started)
        ready = [s.ready for s in run.spans if s.ready is not None]
        end = run.finished_at or run.last_freed or time.time()
        # Busy time: first actor ready -> last unit committed (Ray, writes and drain included).
        stats.busy_seconds = end - min(ready) if ready else stats.wall_seconds
        stats.startup_seconds = max(
            (a.get("startup_seconds", 0.0) for a in stats.actors.values()), default=0.0
        )
        return stats

    def report(self) -> dict[str, Any]:
        """The busy share of the cluster's slots over the run, idle slot-seconds by cause."""
        spans = [s for r in self.runs for s in r.spans]
        end = max((s.freed for s in spans if s.freed is not None), default=self.started)
        total = sum(c.get(self.resource, 0.0) for c in self.capacity.values())
        return schedule_report(
            self.schedule, total, self.started, end, spans, self.waiting, self.resource
        )


def _fits(need: dict[str, float], res: dict[str, float]) -> bool:
    return all(res.get(k, 0.0) >= v - 1e-9 for k, v in need.items())


def _fmt(res: dict[str, float]) -> str:
    return " + ".join(f"{v:g} {k}" for k, v in sorted(res.items()) if v) or "nothing"


def api_account(spec: SweepSpec, name: str, usage: dict[str, int]) -> dict[str, Any]:
    """The token and cost account of API model `name` in this invocation (`summary.json`).

    Cost uses the model's `price_in` / `price_out` (USD per 1M tokens); None when unpriced.
    """
    model = next(m for m in spec.models if m.name == name)
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    priced = model.price_in > 0 or model.price_out > 0
    cost = (prompt * model.price_in + completion * model.price_out) / 1e6 if priced else None
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "requests": usage.get("requests", 0),
        "retries": usage.get("retries", 0),
        "price_in_per_1m": model.price_in,
        "price_out_per_1m": model.price_out,
        "cost_usd": cost,
    }


def write_summary(
    spec: SweepSpec,
    store: RunStore,
    stats: dict[str, ModelStats],
    manifest: dict[str, Any],
    failed: dict[str, str],
    seconds: float,
    schedule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `summary.json` (keeping the previous figures when nothing ran) and return it.

    `schedule` is the scheduler's `report()` (busy share of the GPUs, idle time by cause).
    """
    summary = _summary(spec, store, stats, manifest, failed, seconds)
    if schedule is not None:
        summary["schedule"] = schedule
    previous = store.read_json(RunLayout.SUMMARY) or {}
    if not stats and previous.get("config_hash") == spec.hash:
        summary["models"] = previous.get("models", {})  # nothing ran: keep the figures
        if "schedule" in previous:
            summary["schedule"] = previous["schedule"]
        engine = previous.get("settings", {}).get("engine")
        if engine:
            summary["settings"]["engine"] = engine
    store.write_json(RunLayout.SUMMARY, summary)
    return summary


def _summary(
    spec: SweepSpec,
    store: RunStore,
    stats: dict[str, ModelStats],
    manifest: dict[str, Any],
    failed: dict[str, str],
    seconds: float,
) -> dict[str, Any]:
    models = {}
    for name, s in stats.items():
        busy = max(s.busy_seconds, 1e-9)
        models[name] = {
            "units": s.units,
            "rows": s.rows,
            "error_rows": s.error_rows,
            "prompt_tokens": s.prompt_tokens,
            "generated_tokens": s.generated_tokens,
            "wall_seconds": s.wall_seconds,
            "busy_seconds": s.busy_seconds,
            "startup_seconds": s.startup_seconds,
            "prompt_tokens_per_second": s.prompt_tokens / busy,
            "generated_tokens_per_second": s.generated_tokens / busy,
            "generate_seconds": s.gen_seconds,
            "write_seconds": s.write_seconds,
            "actor_restarts": s.restarts,
            **({"api": api_account(spec, name, s.usage)} if s.usage else {}),
            "retries": s.retries,
            "cpu_seconds": sum(a.get("cpu_seconds", 0.0) for a in s.actors.values()),
            "gpu_seconds": sum(a.get("gpu_seconds", 0.0) for a in s.actors.values()),
            "actors": {
                actor: {
                    **a,
                    "generated_tokens_per_second": a["generated_tokens"] / a["gen_seconds"]
                    if a["gen_seconds"]
                    else 0.0,
                    "prompt_tokens_per_second": a["prompt_tokens"] / a["gen_seconds"]
                    if a["gen_seconds"]
                    else 0.0,
                }
                for actor, a in s.actors.items()
            },
        }
    engine_settings = {}
    for name, s in stats.items():
        found = [a["engine_settings"] for a in s.actors.values() if a.get("engine_settings")]
        if found:
            engine_settings[name] = found[0]
    nodes: dict[str, dict[str, Any]] = {}
    for s in stats.values():
        for node, counts in s.nodes.items():
            total = nodes.setdefault(node, dict.fromkeys(counts, 0))
            for key, value in counts.items():
                total[key] += value
    return {
        "run_id": spec.run_id,
        "config_hash": spec.hash,
        "location": store.location,
        "nodes": nodes,
        "seconds": seconds,
        "units_planned": manifest["units_planned"],
        "units_finished": manifest["units_finished"],
        "rows": manifest["rows"],
        "failed_units": failed,
        "settings": {
            "stop_strings": STOP_STRING_MODE if spec.sampling.stop else "none",
            "detokenize": "batch_decode after generation",
            "logprobs": spec.sampling.logprobs,
            "seed_mode": spec.sampling.seed_mode,
            # Per model: the vLLM build its actors found and each build setting with its reason.
            "engine": engine_settings,
        },
        "models": models,
    }
