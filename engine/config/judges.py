"""Judge settings of scoring (the `[judges]` table): one frozen, validated `ScoreSettings`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserError, redact_url

EXTRACT_MODES = ("lexicon", "llm")
CONFIDENCE_MODES = ("consistency-logprob", "consistency-sampled", "token_prob")
CORRECTNESS_MODES = ("rule", "llm")
DECISIVENESS_MODES = ("llm", "none")

# Judge engine defaults for the built-in tiny model (float32, no compile: fast start on CPU).
TINY_JUDGE_ENGINE_ARGS = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True}


@dataclass(frozen=True)
class ScoreSettings:
    """How a run is scored (the `[judges]` table of a spec; every field has a default).

    Attributes:
        extract: Marker extraction, "lexicon" (deterministic) or "llm" (few-shot judge).
        canonical: "rules" (deterministic) or "llm" (a judge proposes short forms first).
        confidence: "consistency-logprob" (deterministic P(yes) / (P(yes) + P(no))),
            "consistency-sampled" (the seed's yes / no / n-a -> 1 / 0 / 0.5 at temperature 1) or
            "token_prob" (the response's own token probabilities).
        correctness: "rule" (engine.score.rules.correctness) or "llm" (judge; ties to rule on failure).
        decisiveness: "llm" (few-shot rating, expected value under the judge's logprobs) or "none".
        model: Judge model (HF id, local path or `builtin:tiny`).
        engine_args: Extra `vllm.LLM` arguments of the judge engine.
        chat: Wrap judge prompts in the judge tokenizer's chat template.
        chat_template_kwargs: Extra variables of that chat template, e.g.
            `{ enable_thinking = false }` for a Qwen3 hybrid judge (needs `chat = true`).
        top_k: Next-token alternatives read from the judge (<= 20).
        batch_size: Judge prompts per batch (one part file each: the resume granularity).
        sampled_temperature: Temperature of the sampled consistency judge.
        token_prob_method: "geometric" or "mean" (token_prob confidence).
        keep_please: Keep sentences containing "please" (the seed drops them).
        answer_types: Task -> answer type for rule correctness (default: inferred from golds).
        seed: Base seed of sampled judges.
        base_url: An OpenAI-compatible server for the judge ("" = a vLLM engine in this process);
            `model` is then the served model's name.
        api_key_env: Environment variable holding that server's API key (the key itself is never
            stored or logged).
        concurrency: Requests in flight to the server at most.
        max_retries: Retries per request (backoff, Retry-After honoured).
        max_failed_share: A judge stage whose failed share of calls exceeds this is not done
            (the command exits 1 and a re-run retries the failed batches).
    """

    extract: str = "lexicon"
    canonical: str = "rules"
    confidence: str = "consistency-logprob"
    correctness: str = "rule"
    decisiveness: str = "llm"
    model: str = "builtin:tiny"
    engine_args: dict[str, Any] = field(default_factory=dict)
    chat: bool = False
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    top_k: int = 20
    batch_size: int = 2048
    sampled_temperature: float = 1.0
    token_prob_method: str = "geometric"
    keep_please: bool = False
    answer_types: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    max_retries: int = 5
    max_failed_share: float = 0.5

    def judge_engine_args(self) -> dict[str, Any]:
        """Engine arguments of the judge (tiny-model defaults under the user's)."""
        base = dict(TINY_JUDGE_ENGINE_ARGS) if self.model == "builtin:tiny" else {}
        return {**base, **self.engine_args}


_MODES = {
    "extract": EXTRACT_MODES,
    "canonical": ("rules", "llm"),
    "confidence": CONFIDENCE_MODES,
    "correctness": CORRECTNESS_MODES,
    "decisiveness": DECISIVENESS_MODES,
    "token_prob_method": ("geometric", "mean"),
}


def settings_from(*layers: Mapping[str, Any] | None, source: str = "[judges]") -> ScoreSettings:
    """Validate judge settings from layered tables (later layers win; None values are skipped).

    Args:
        *layers: `[judges]` tables (spec, study.json, command line).
        source: Where the settings come from, for error messages.

    Returns:
        The settings.

    Raises:
        UserError: An unknown key, an unknown mode or a value of the wrong type.
    """
    names = {f.name: f for f in dataclasses.fields(ScoreSettings)}
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key not in names:
                raise UserError(
                    f"{source}: unknown key 'judges.{key}'", f"allowed keys: {sorted(names)}"
                )
            merged[key] = value
    for key, allowed in _MODES.items():
        if key in merged and merged[key] not in allowed:
            raise UserError(
                f"{source}: 'judges.{key}' is {merged[key]!r}", f"use one of {list(allowed)}"
            )
    defaults = ScoreSettings()
    for key, value in merged.items():
        expected = type(getattr(defaults, key))
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            merged[key], ok = float(value), True
        if not ok:
            raise UserError(
                f"{source}: 'judges.{key}' is {value!r}", f"expected a {expected.__name__}"
            )
    if merged.get("chat_template_kwargs") and not merged.get("chat", False):
        raise UserError(
            f"{source}: 'judges.chat_template_kwargs' is set but 'judges.chat' is false "
            "(the variables reach only a chat template)",
            "set judges.chat = true, or remove chat_template_kwargs",
        )
    if not 1 <= merged.get("top_k", 20) <= 20:
        raise UserError(f"{source}: 'judges.top_k' is {merged['top_k']}", "use 1..20")
    if merged.get("batch_size", 1) < 1:
        raise UserError(f"{source}: 'judges.batch_size' is {merged['batch_size']}", "use >= 1")
    return ScoreSettings(**merged)


def safe_settings(settings: ScoreSettings) -> dict[str, Any]:
    """The settings as stored or printed: the judge URL without credentials."""
    data = dataclasses.asdict(settings)
    if data.get("base_url"):
        data["base_url"] = redact_url(data["base_url"])
    return data
