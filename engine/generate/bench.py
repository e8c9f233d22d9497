"""`mic bench`: throughput of each model of a spec, and the cost curve of the logprobs setting.

Per model, one engine (in this process) runs the same N prompts (cycled from the spec's tasks)
once per top-k setting, unit by unit as `mic run` does: generation (hot path) and decoding +
Arrow assembly (off the hot path in `mic run`) are timed separately.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from engine.config.sweep import SweepSpec
from engine.errors import UserError
from engine.generate.units import WorkUnit, plan_units


def bench_units(spec: SweepSpec, model_index: int, prompts: int, logprobs: int) -> list[WorkUnit]:
    """Return units covering `prompts` prompts of the spec's first prompt, cycling the items."""
    units = [u for u in plan_units(spec) if u.model.name == spec.models[model_index].name]
    pool = [(u, i) for u in units for i in range(len(u.item_ids))]
    if not pool:
        raise UserError("the spec has no items to benchmark", "add tasks with items")
    sampling = {**units[0].sampling, "logprobs": logprobs}
    chunk = spec.run.chunk_size
    out = []
    for start in range(0, prompts, chunk):
        picks = [pool[j % len(pool)] for j in range(start, min(start + chunk, prompts))]
        out.append(
            dataclasses.replace(
                units[0],
                unit_id=f"bench-{logprobs}-{start}",
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
        backend_factory: `(ModelSpec, max_logprobs) -> Backend` (default: vLLM).

    Returns:
        {"prompts", "n", "max_tokens", "models": {model: {k: measurement}}}.
    """
    from engine.generate.actors import vllm_backend_factory

    ks = list(dict.fromkeys(logprobs if logprobs is not None else [0, 1, 5, 20]))
    if prompts < 1 or any(k < 0 for k in ks):
        raise UserError("--prompts must be >= 1 and --logprobs values >= 0")
    factory = backend_factory or vllm_backend_factory
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
