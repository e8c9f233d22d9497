"""What a sweep will cost before it runs: GPU-hours per open model, tokens and dollars per API model.

Both are upper bounds from the plan's token counts: every sample is assumed to run to
`sampling.max_tokens`. GPU time comes from a throughput assumption by model size (stated in
`THROUGHPUT_ASSUMPTION`; `mic bench` measures the real figure on a node); prompt tokens of API
models are estimated at 4 characters per token of the rendered prompt text.
"""

from __future__ import annotations

import re
from typing import Any

from engine.config.sweep import ModelSpec

# Generated tokens/s of one GPU running vLLM at a large batch, for a model of P billion
# parameters: about 80,000 / P (memory-bound decoding: 8B -> 10,000, 32B -> 2,500, 70B -> 1,150),
# at most 30,000 (small models hit compute and scheduling limits first).
TOKENS_PER_GPU_SECOND_TIMES_B = 80_000.0
MAX_TOKENS_PER_GPU_SECOND = 30_000.0
THROUGHPUT_ASSUMPTION = (
    "generated tokens/s per GPU = 80,000 / parameters in billions (at most 30,000): vLLM at a "
    "large batch on an H100-class GPU in bf16 -- an assumption; measure yours with `mic bench` "
    "and pass --tokens-per-second"
)
CHARS_PER_TOKEN = 4.0

_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


def model_size_b(model: ModelSpec) -> float | None:
    """Parameters in billions: `params_b`, else the first "<number>B" in the name or path."""
    if model.params_b > 0:
        return model.params_b
    for text in (model.path, model.name):
        found = _SIZE.search(text.rsplit("/", 1)[-1])
        if found:
            return float(found.group(1))
    return None


def tokens_per_gpu_second(size_b: float | None) -> float | None:
    """The assumed generated tokens/s of one GPU for a model of `size_b` billion parameters."""
    if not size_b:
        return None
    return min(MAX_TOKENS_PER_GPU_SECOND, TOKENS_PER_GPU_SECOND_TIMES_B / size_b)


def requests_per_item(seed_mode: str, n: int) -> int:
    """API requests per item (each bills its prompt): two in "per-request" mode, else one."""
    return 2 if seed_mode == "per-request" and n > 1 else 1


def estimate_open_model(
    model: ModelSpec, max_tokens: int, tokens_per_second: float | None
) -> dict[str, Any]:
    """GPU-hours and wall hours of an open model generating at most `max_tokens` tokens.

    Args:
        model: The model spec.
        max_tokens: Generated tokens at most (samples x `sampling.max_tokens`).
        tokens_per_second: Measured generated tokens/s per replica (overrides the size rule).

    Returns:
        size_b, tokens_per_gpu_second (None when unknown), gpu_hours_estimate and
        wall_hours_estimate (0.0 when unknown), and the rate's source.
    """
    gpus = model.replicas * model.tensor_parallel_size
    size = model_size_b(model)
    if tokens_per_second:
        per_gpu, source = tokens_per_second / model.tensor_parallel_size, "--tokens-per-second"
    else:
        per_gpu, source = tokens_per_gpu_second(size), "size rule"
    gpu_hours = max_tokens / per_gpu / 3600 if per_gpu else 0.0
    return {
        "size_b": size,
        "tokens_per_gpu_second": per_gpu,
        "rate_source": source if per_gpu else "unknown size: give models.params_b",
        "gpu_hours_estimate": gpu_hours,
        "wall_hours_estimate": gpu_hours / gpus,
    }


def estimate_api_model(
    model: ModelSpec, requests: int, prompt_chars: int, max_tokens: int
) -> dict[str, Any]:
    """Tokens and cost of an API model, at most.

    Args:
        model: The model spec (`price_in` / `price_out` in USD per 1M tokens).
        requests: Requests the plan sends (each bills its prompt once, whatever its `n`).
        prompt_chars: Characters of the prompts of those requests.
        max_tokens: Completion tokens at most.

    Returns:
        requests, prompt_tokens_estimate, max_completion_tokens, prices and cost_usd_max (None
        without prices).
    """
    prompt_tokens = round(prompt_chars / CHARS_PER_TOKEN)
    priced = model.price_in > 0 or model.price_out > 0
    cost = (prompt_tokens * model.price_in + max_tokens * model.price_out) / 1e6
    return {
        "requests": requests,
        "prompt_tokens_estimate": prompt_tokens,
        "max_completion_tokens": max_tokens,
        "price_in_per_1m": model.price_in,
        "price_out_per_1m": model.price_out,
        "cost_usd_max": cost if priced else None,
    }
