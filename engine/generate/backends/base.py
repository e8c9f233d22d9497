"""What every generation backend shares: the `Backend` protocol, its raw results, prompt
rendering, stop strings and the GENERATIONS table a unit becomes.

A backend runs one work unit in two steps, so the caller can overlap them:

- `generate(unit)`: the hot path (`RawUnit`: token ids and logprobs, no text).
- `to_table(unit, raw)`: off the hot path. Texts are decoded in one `batch_decode`, stop strings
  are applied by cutting the decoded text, and the rows are assembled column-wise into the
  GENERATIONS schema (`build_table`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from engine.contract import GENERATIONS, TOPK_ENTRY, with_metadata
from engine.generate.units import WorkUnit, row_seeds

# Settings recorded in shard metadata and run summaries.
STOP_STRING_MODE = "cut after decoding (tokens kept up to the token completing the stop string)"


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


def render_prompts(
    unit: WorkUnit, tokenizer: Any | None, chat: bool, template_kwargs: dict[str, Any] | None = None
) -> list[str]:
    """Return each item's full prompt text (system text + filled template, or a chat template).

    `template_kwargs` are extra variables of the chat template (the model's
    `chat_template_kwargs`, e.g. `enable_thinking=False`).
    """
    users = unit.user_texts()
    system = unit.prompt.system
    if chat and tokenizer is not None:
        out = []
        for text in users:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": text}
            ]
            out.append(
                tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True, **(template_kwargs or {})
                )
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
    seeds = row_seeds(unit)

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
        "seed": pa.array(seeds, pa.int64()),
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
