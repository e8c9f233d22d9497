"""The driver of `mic run` and `mic plan`: units -> Ray actors -> shards, exactly once.

Flow of `run_sweep`: plan the units; lock the output directory; bind it to the spec (`run.json`);
verify done-records and delete orphan shards; then model by model, start one actor per replica,
let idle actors pull the next unit (no static split), restart actors that die and retry their
units, tear the actors down; finally rebuild the manifest and write `summary.json`.
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
from engine.generate.store import RunStore, is_storage_error
from engine.generate.units import WorkUnit, plan_units

logger = logging.getLogger(__name__)


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


# ---- plan ----------------------------------------------------------------------------------------


def plan_report(spec: SweepSpec, tokens_per_second: float = 1000.0) -> dict[str, Any]:
    """Describe the work of a spec without running anything.

    Args:
        spec: The validated spec.
        tokens_per_second: Assumed generated tokens/s per replica for the time estimate
            (measure it with `mic bench`).

    Returns:
        Units (model, task, split, prompt, chunk, items, rows, unit id), totals and estimates.
    """
    units = plan_units(spec)
    n = spec.sampling.n
    per_model: dict[str, dict[str, Any]] = {}
    for model in spec.models:
        mine = [u for u in units if u.model.name == model.name]
        items = sum(len(u.item_ids) for u in mine)
        tokens = items * n * spec.sampling.max_tokens
        hours = tokens / tokens_per_second / 3600 / model.replicas
        per_model[model.name] = {
            "units": len(mine),
            "prompts": items,
            "samples": items * n,
            "max_generated_tokens": tokens,
            "replicas": model.replicas,
            "gpus_per_replica": model.tensor_parallel_size,
            "wall_hours_estimate": hours,
            "gpu_hours_estimate": hours * model.replicas * model.tensor_parallel_size,
        }
    return {
        "run_id": spec.run_id,
        "config_hash": spec.hash,
        "assumed_tokens_per_second_per_replica": tokens_per_second,
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
        },
    }


def format_plan(report: dict[str, Any], max_units: int = 20) -> str:
    """Render a plan report as text."""
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
    lines.append("")
    rate = report["assumed_tokens_per_second_per_replica"]
    for name, m in report["models"].items():
        lines.append(
            f"{name}: {m['prompts']:,} prompts, {m['samples']:,} samples, <= {m['max_generated_tokens']:,} "
            f"generated tokens; {m['replicas']} replica(s) x {m['gpus_per_replica']} GPU: "
            f"~{m['wall_hours_estimate']:.3f} h wall, ~{m['gpu_hours_estimate']:.3f} GPU-h"
        )
    if report.get("estimated_tasks"):
        lines.append(
            f"estimated (hub tasks not loaded; `limit` placeholder items per split): "
            f"{', '.join(report['estimated_tasks'])}"
        )
    t = report["totals"]
    lines.append(
        f"total: {t['prompts']:,} prompts, {t['samples']:,} samples, <= {t['max_generated_tokens']:,} tokens, "
        f"~{t['gpu_hours_estimate']:.3f} GPU-h at {rate:,.0f} generated tokens/s per replica "
        "(an assumption: measure yours with `mic bench`)"
    )
    return "\n".join(lines)


# ---- run -----------------------------------------------------------------------------------------


def engine_env(spec: SweepSpec) -> dict[str, str]:
    """Environment defaults of the engine processes of `spec` (see `engine.generate.backends.vllm.hub_env`).

    The CPU build's variables are not among them: each actor's backend chooses those for the
    build installed on its own node (`engine.generate.backends.device.engine_settings`).
    """
    return {**ENGINE_ENV, **hub_env([m.path for m in spec.models])}


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
    use_gpu = device == "gpu" or (device == "auto" and gpus > 0)
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
        if todo:
            for i, model in enumerate(spec.models):
                if any(u.model.name == model.name for u in todo):
                    check_model_available(model.path, f"models.{i}.path ({model.name})")
            init_ray(ray_address, num_cpus=ray_num_cpus, env=engine_env(spec))
            for index, model in enumerate(spec.models):
                mine = [u for u in todo if u.model.name == model.name]
                if mine and not _storage_failures(failed):
                    stats[model.name] = _run_model(
                        spec,
                        index,
                        model,
                        mine,
                        store,
                        actors,
                        backend_factory,
                        progress,
                        overlap_writes,
                        failed,
                    )
        records = store.finished(order, rows)
        if only is None:  # with `only`, shards of the other finished units are not garbage
            store.collect_garbage({r.shard for r in records.values()})
        try:
            manifest = store.write_manifest(spec, order, records)
            summary = write_summary(spec, store, stats, manifest, failed, time.time() - started)
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


def _run_model(
    spec: SweepSpec,
    index: int,
    model: ModelSpec,
    units: list[WorkUnit],
    store: RunStore,
    actors: int | None,
    backend_factory: Any,
    progress: bool,
    overlap_writes: bool,
    failed: dict[str, str],
) -> ModelStats:
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from engine.generate.actors import GenerationActor

    replicas = min(actors or model.replicas, len(units))
    resources = _actor_resources(model, spec.run.device, ray.cluster_resources(), index, replicas)
    actor_cls = ray.remote(GenerationActor).options(
        max_concurrency=1,
        runtime_env={"env_vars": actor_env(spec)},
        # Replicas on different nodes where they fit: a lost node takes fewer of them along.
        scheduling_strategy="SPREAD",
        **resources,
    )
    stats = ModelStats()
    started = time.time()
    max_logprobs = spec.sampling.logprobs
    queue: deque[WorkUnit] = deque(units)
    by_id = {u.unit_id: u for u in units}
    attempts: dict[str, int] = dict.fromkeys(by_id, 0)
    show = _Progress(model.name, len(units), sum(u.n_rows for u in units), replicas, progress)
    counter = 0

    def start_actor() -> tuple[Any, str, float]:
        nonlocal counter
        name = f"{model.name}/{counter}"
        counter += 1
        handle = actor_cls.remote(name, store, model, max_logprobs, backend_factory, overlap_writes)
        return handle, name, time.time()

    live: dict[str, dict[str, Any]] = {}  # actor name -> {handle, outstanding, born, info}
    for _ in range(replicas):
        handle, name, born = start_actor()
        live[name] = {"handle": handle, "outstanding": set(), "born": born}
    inflight: dict[Any, tuple[str, str]] = {}  # ObjectRef -> (actor name, kind)

    def account(name: str, result: dict[str, Any]) -> None:
        live[name]["outstanding"].discard(result["unit_id"])
        if result["ok"]:
            stats.add(name, result)
            show.update(result)
        elif result.get("storage"):
            stop_for_storage(result["unit_id"], result["error"])
        else:
            retry(result["unit_id"], result["error"], name)

    def stop_for_storage(unit_id: str, error: str) -> None:
        # Disk full / read-only: every further unit would be generated only to fail its write.
        failed[unit_id] = f"{_STORAGE}{error}"
        if queue:
            logger.warning(
                f"[{model.name}] cannot write to {store.location} ({error}); stopping "
                f"({len(queue)} units not started, finished units are kept)"
            )
            queue.clear()

    def retry(unit_id: str, error: str, actor: str) -> None:
        attempts[unit_id] += 1
        # Kept in summary.json: which unit failed where and why, even when a retry succeeded.
        stats.retries.append(
            {"unit_id": unit_id, "actor": actor, "attempt": attempts[unit_id], "error": error}
        )
        record = store.done_record(unit_id)
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
        if attempts[unit_id] >= spec.run.max_attempts:
            failed[unit_id] = error
            logger.warning(f"[{model.name}] unit {unit_id} failed for good: {error}")
        else:
            logger.warning(f"[{model.name}] unit {unit_id} failed ({error}); retrying")
            queue.appendleft(by_id[unit_id])

    def dispatch(name: str) -> None:
        state = live[name]
        if queue:
            unit = queue.popleft()
            state["outstanding"].add(unit.unit_id)
            inflight[state["handle"].run_unit.remote(unit)] = (name, "run")
        elif state["outstanding"]:
            inflight[state["handle"].drain.remote()] = (name, "drain")
        else:
            state["idle"] = True

    for name in list(live):
        dispatch(name)
    while inflight:
        done, _ = ray.wait(list(inflight), num_returns=1)
        ref = done[0]
        name, _kind = inflight.pop(ref)
        try:
            results = ray.get(ref)
        except (RayActorError, RayTaskError) as exc:
            # A model that cannot load fails the same way every time: say why once, no retries.
            cause = load_failure(exc)
            if cause is not None and not stats.units:
                for actor in live.values():
                    with contextlib.suppress(Exception):
                        ray.kill(actor["handle"])
                raise UserError(
                    f"model {model.name!r} ({model.path}) cannot be loaded: {cause}",
                    "fix the model path or engine_args; finished units are kept",
                ) from None
            # The actor died (OOM, segfault, lost node) or raised: restart it, retry its units.
            state = live.pop(name)
            with contextlib.suppress(Exception):
                ray.kill(state["handle"])
            for other_ref, (other_name, _k) in list(inflight.items()):
                if other_name == name:
                    inflight.pop(other_ref)
            stats.restarts += 1
            dead = stats.actor(name)
            dead["died"] = f"{type(exc).__name__}"
            dead["lifetime_seconds"] = time.time() - state["born"]
            dead["gpu_seconds" if resources["num_gpus"] else "cpu_seconds"] = dead[
                "lifetime_seconds"
            ] * (resources["num_gpus"] or resources["num_cpus"])
            logger.warning(f"[{model.name}] actor {name} died ({type(exc).__name__}); restarting")
            for unit_id in sorted(state["outstanding"]):
                retry(unit_id, f"actor died: {root_cause(exc)}", name)
            if stats.restarts > spec.run.max_attempts * replicas:
                for unit in queue:
                    failed[unit.unit_id] = "too many actor restarts"
                queue.clear()
            if queue:
                handle, new_name, born = start_actor()
                live[new_name] = {"handle": handle, "outstanding": set(), "born": born}
                dispatch(new_name)
            for other, st in live.items():  # wake idle actors if units came back
                if st.pop("idle", False):
                    dispatch(other)
            continue
        for result in results:
            account(name, result)
        dispatch(name)
        for other, st in live.items():  # a retried unit may wake an idle actor
            if other != name and st.get("idle") and queue:
                st.pop("idle")
                dispatch(other)
    show.update({}, force=True)
    finished_at = time.time()
    infos = {}
    for name, state in live.items():
        with contextlib.suppress(Exception):
            infos[name] = ray.get(state["handle"].info.remote(), timeout=30)
        with contextlib.suppress(Exception):
            ray.get(state["handle"].close.remote(), timeout=120)
        with contextlib.suppress(Exception):
            ray.kill(state["handle"])
        lifetime = time.time() - state["born"]
        per = stats.actor(name)
        per.update(infos.get(name, {}))
        per["lifetime_seconds"] = lifetime
        per["gpu_seconds" if resources["num_gpus"] else "cpu_seconds"] = lifetime * (
            resources["num_gpus"] or resources["num_cpus"]
        )
    stats.wall_seconds = time.time() - started
    ready = [a["ready_at"] for a in stats.actors.values() if "ready_at" in a]
    # Busy time: first actor ready -> last unit committed (Ray, writes and drain included).
    stats.busy_seconds = finished_at - min(ready) if ready else stats.wall_seconds
    stats.startup_seconds = max(
        (a.get("startup_seconds", 0.0) for a in stats.actors.values()), default=0.0
    )
    return stats


def write_summary(
    spec: SweepSpec,
    store: RunStore,
    stats: dict[str, ModelStats],
    manifest: dict[str, Any],
    failed: dict[str, str],
    seconds: float,
) -> dict[str, Any]:
    """Write `summary.json` (keeping the previous figures when nothing ran) and return it."""
    summary = _summary(spec, store, stats, manifest, failed, seconds)
    previous = store.read_json(RunLayout.SUMMARY) or {}
    if not stats and previous.get("config_hash") == spec.hash:
        summary["models"] = previous.get("models", {})  # nothing ran: keep the figures
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
