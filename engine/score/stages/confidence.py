"""The `confidence` stage: per-sentence intrinsic confidence (consistency judge or token probability)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from engine.config.judges import ScoreSettings
from engine.contract import content_hash
from engine.errors import CallFailure
from engine.score.inputs import RunInputs, load_run
from engine.score.judges.pool import JudgePool
from engine.score.stage import (
    RESPONSE_COLS,
    SENTENCE_COLS,
    STAGE_VERSION,
    Stage,
    judge_identity,
)


def stage_confidence(
    inputs: RunInputs, sentences: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """Per-sentence intrinsic confidence (consistency judge, or the response's token probability)."""
    mode = settings.confidence
    judged = mode.startswith("consistency")
    judge = judge_identity(settings, top_k=True) if judged else []
    extra = [] if judged else [settings.token_prob_method]
    if mode == "consistency-sampled":
        extra += [settings.sampled_temperature, settings.seed]
    stage = Stage(
        inputs.run_dir,
        "confidence",
        [sentences.key, inputs.key, mode],
        log,
        judge=judge,
        extra=extra,
    )
    if stage.resume():
        return stage
    sents = sentences.read("sentences")
    if mode == "token_prob":
        out = _token_prob_confidence(inputs, sentences.read("responses"), sents, settings, stage)
        stage.finish({"output": out})
        return stage
    # Judgments of an earlier completion with the same judge and settings are kept for the pairs
    # whose prompt is unchanged (a study growing in waves judges each pair once).
    reuse = content_hash(["confidence", STAGE_VERSION, mode, *judge, *extra])
    pairs = with_prompt_sha(consistency_pairs(inputs.generations, sents))
    kept, pairs = reusable_judgments(stage.previous("judgments", reuse), pairs)
    prompts_of = _consistency_prompts(pairs)
    if mode == "consistency-logprob":

        def compute(start: int, stop: int) -> pl.DataFrame:
            chunk = pairs.slice(start, stop - start)
            values = consistency_logprob_values(judges.get(), prompts_of(start, stop))
            return _judgment_frame(chunk, values, stage)

    else:

        def compute(start: int, stop: int) -> pl.DataFrame:
            from engine.score.judges.vllm import parse_verdict

            chunk = pairs.slice(start, stop - start)
            seeds = [
                _seed(settings.seed, r) for r in chunk.select(SENTENCE_COLS + ["sample_idx"]).rows()
            ]
            texts = judges.get().generate_texts(
                prompts_of(start, stop), 3, settings.sampled_temperature, seeds
            )
            values: list[float | str | None] = []
            for text in texts:
                if isinstance(text, Exception):
                    values.append(CallFailure(str(text)))
                    continue
                verdict = parse_verdict(text)
                values.append(
                    verdict
                    if verdict is not None
                    else f"unparseable verdict {text!r} (read as 0.5)"
                )
            frame = _judgment_frame(chunk, values, stage)
            # the seed reads an unparseable verdict as n/a = 0.5 (after recording it)
            unparseable = [isinstance(v, str) and v.startswith("unparseable") for v in values]
            return frame.with_columns(
                pl.when(pl.Series(unparseable))
                .then(0.5)
                .otherwise(pl.col("judgment"))
                .alias("judgment")
            )

    judgments = stage.parts(pairs.height, settings.batch_size, compute)
    if kept.height:
        # the order of a judgment of every pair at once (consistency_pairs)
        judgments = pl.concat([kept, judgments], how="vertical_relaxed").sort(
            [*RESPONSE_COLS, "sample_idx", "sentence_idx"]
        )
    out = _mean_per_sentence(sents, judgments)
    stage.finish(
        {"output": out, "judgments": judgments},
        {"judge_prompts": pairs.height, "reused_judgments": kept.height, "reuse": reuse},
        max_failed_share=settings.max_failed_share,
    )
    return stage


def with_prompt_sha(pairs: pl.DataFrame) -> pl.DataFrame:
    """`pairs` with `prompt_sha`, the sha256 (16 hex digits) of each pair's judge prompt."""
    prompts = _consistency_prompts(pairs)(0, pairs.height)
    shas = [hashlib.sha256(p.encode()).hexdigest()[:16] for p in prompts]
    return pairs.with_columns(pl.Series("prompt_sha", shas, dtype=pl.String))


def reusable_judgments(
    previous: pl.DataFrame | None, pairs: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split `pairs` into judgments kept from `previous` and the pairs still to judge.

    A judgment is kept when its pair (keys and prompt) is the same and it has a value; a pair
    that got none (the judge's answer had no yes / no, a failed call) is asked again, so its
    ledger entry is written again too.

    Returns:
        (kept judgment rows, pairs to judge).
    """
    keys = [*SENTENCE_COLS, "sample_idx", "prompt_sha"]
    columns = [*SENTENCE_COLS, "sample_idx", "prompt_sha", "judgment"]
    if previous is None or any(c not in previous.columns for c in columns):
        return pl.DataFrame(schema={c: pairs.schema.get(c, pl.Float64) for c in columns}), pairs
    kept = (
        previous.select(columns)
        .filter(pl.col("judgment").is_not_null())
        .join(pairs.select(keys), on=keys, how="inner")
    )
    return kept, pairs.join(kept.select(keys), on=keys, how="anti", maintain_order="left")


def consistency_pairs(generations: pl.DataFrame, sents: pl.DataFrame) -> pl.DataFrame:
    """Every (sentence, consistency sample) pair, sorted so prompts sharing a context are adjacent.

    Args:
        generations: Generation rows (samples 1..K are the contexts).
        sents: Sentence rows (from the sentences stage).

    Returns:
        Rows (response keys, sentence_idx, sample_idx, context, assertion), sorted by the context
        sample first, then the sentence: the judge sees each context's prompts back to back.
    """
    samples = generations.filter(
        (pl.col("sample_idx") > 0) & pl.col("error").is_null() & pl.col("text").is_not_null()
    ).select(RESPONSE_COLS + ["sample_idx", pl.col("text").alias("context")])
    return (
        sents.select(SENTENCE_COLS + [pl.col("text").alias("assertion")])
        .join(samples, on=RESPONSE_COLS, how="inner")
        .sort([*RESPONSE_COLS, "sample_idx", "sentence_idx"])
    )


def _consistency_prompts(pairs: pl.DataFrame) -> Callable[[int, int], list[str]]:
    from engine.score.judges.prompts import consistency_prompt

    contexts = pairs.get_column("context").to_list()
    assertions = pairs.get_column("assertion").to_list()

    def prompts(start: int, stop: int) -> list[str]:
        return [
            consistency_prompt(c, a) for c, a in zip(contexts[start:stop], assertions[start:stop])
        ]

    return prompts


def consistency_logprob_values(judge: Any, prompts: Sequence[str]) -> list[float | str | None]:
    """P(yes) / (P(yes) + P(no)) per prompt, or an error message (missing when neither is in top-k).

    Args:
        judge: A `engine.score.judges.vllm.Judge`.
        prompts: Consistency prompts.

    Returns:
        Per prompt: the value in [0, 1], or a string explaining why it is missing.
    """
    from engine.score.judges.vllm import NO, YES, yes_no_probability

    ids = judge.token_ids_for([YES, NO])
    out: list[float | str | None] = []
    for top in judge.next_token_logprobs(prompts):
        if isinstance(top, str):
            out.append(top)
            continue
        value = yes_no_probability(top, ids[YES], ids[NO])
        out.append(value if value is not None else "neither yes nor no in the judge's top-k")
    return out


def _judgment_frame(
    chunk: pl.DataFrame, values: Sequence[float | str | None], stage: Stage
) -> pl.DataFrame:
    numbers: list[float | None] = []
    for row, value in zip(
        chunk.select(SENTENCE_COLS + ["sample_idx"]).iter_rows(named=True), values
    ):
        if isinstance(value, str):
            stage.error(row, value, call_failed=isinstance(value, CallFailure))
            numbers.append(None)
        else:
            numbers.append(value)
    return chunk.select(SENTENCE_COLS + ["sample_idx", "prompt_sha"]).with_columns(
        pl.Series("judgment", numbers, dtype=pl.Float64)
    )


def _mean_per_sentence(sents: pl.DataFrame, judgments: pl.DataFrame) -> pl.DataFrame:
    if judgments.is_empty():
        return sents.select(SENTENCE_COLS).with_columns(
            pl.lit(None, pl.Float64).alias("confidence")
        )
    means = judgments.group_by(SENTENCE_COLS).agg(pl.col("judgment").mean().alias("confidence"))
    return sents.select(SENTENCE_COLS).join(means, on=SENTENCE_COLS, how="left")


def _seed(base: int, key: Sequence[Any]) -> int:
    digest = hashlib.sha256(json.dumps([base, *key], default=str).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _token_prob_confidence(
    inputs: RunInputs,
    responses: pl.DataFrame,
    sents: pl.DataFrame,
    settings: ScoreSettings,
    stage: Stage,
) -> pl.DataFrame:
    """Per-sentence token probability from the response's stored chosen-token logprobs."""
    from transformers import AutoTokenizer

    from engine.generate.tiny_model import resolve_model
    from engine.score.rules.token_prob import response_sentence_confidences

    run = load_run(inputs.run_dir, with_logprobs=True)
    gen = run.generations.filter(pl.col("sample_idx") == 0)
    paths = {m["name"]: m["path"] for m in inputs.spec_full["models"]}
    by_key = {
        tuple(r[:5]): r[5:]
        for r in gen.select(RESPONSE_COLS + ["text", "token_ids", "logprobs"]).rows()
    }
    spans: dict[tuple, list[tuple[int, int, int]]] = {}
    for r in sents.select(SENTENCE_COLS + ["start", "end"]).rows():
        spans.setdefault(tuple(r[:5]), []).append((r[5], r[6], r[7]))
    tokenizers: dict[str, Any] = {}
    values: dict[tuple, float | None] = {}
    for key, sent_spans in spans.items():
        text, token_ids, logprobs = by_key[key]
        model = key[0]
        if model not in tokenizers:
            tokenizers[model] = AutoTokenizer.from_pretrained(resolve_model(paths[model]))
        if not logprobs:
            for idx, _, _ in sent_spans:
                stage.error(
                    dict(zip(SENTENCE_COLS, (*key, idx))), "response has no stored logprobs"
                )
                values[(*key, idx)] = None
            continue
        tok = tokenizers[model]
        # token end offsets from decoding growing prefixes (robust to multi-byte tokens)
        prefixes = tok.batch_decode(
            [token_ids[: i + 1] for i in range(len(token_ids))], skip_special_tokens=True
        )
        ends = np.minimum([len(p) for p in prefixes], len(text))
        starts = np.concatenate([[0], ends[:-1]])
        offsets = np.stack([starts, ends], axis=1)
        conf = response_sentence_confidences(
            text,
            [(s, e) for _, s, e in sent_spans],
            logprobs,
            offsets=offsets,
            method=settings.token_prob_method,
        )
        for (idx, _, _), c in zip(sent_spans, conf):
            values[(*key, idx)] = c
            if c is None:
                stage.error(dict(zip(SENTENCE_COLS, (*key, idx))), "no token overlaps the sentence")
    keys = sents.select(SENTENCE_COLS).rows()
    return sents.select(SENTENCE_COLS).with_columns(
        pl.Series("confidence", [values.get(k) for k in keys], dtype=pl.Float64)
    )
