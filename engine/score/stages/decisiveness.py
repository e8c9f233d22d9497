"""The `decisiveness` stage: per-sentence decisiveness (expected few-shot judge rating)."""

from __future__ import annotations

import polars as pl

from engine.config.judges import ScoreSettings
from engine.errors import CallFailure
from engine.score.inputs import RunInputs
from engine.score.judges.pool import JudgePool
from engine.score.stage import SENTENCE_COLS, Stage, judge_identity


def stage_decisiveness(
    inputs: RunInputs, sentences: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """Per-sentence decisiveness in [0, 1]: expected few-shot rating under the judge's logprobs."""
    from engine.score.judges.prompts import decisiveness_prompt
    from engine.score.judges.vllm import RATING_WORDS, expected_rating

    llm = settings.decisiveness == "llm"
    judge = judge_identity(settings, top_k=True) if llm else []
    stage = Stage(
        inputs.run_dir, "decisiveness", [sentences.key, settings.decisiveness], log, judge=judge
    )
    if stage.resume():
        return stage
    sents = sentences.read("sentences")
    if not llm:
        out = sents.select(SENTENCE_COLS).with_columns(
            pl.lit(None, pl.Float64).alias("decisiveness")
        )
        stage.finish({"output": out})
        return stage
    texts = sents.get_column("text").to_list()

    def compute(start: int, stop: int) -> pl.DataFrame:
        judge = judges.get()
        ids = judge.token_ids_for(RATING_WORDS)
        chunk = sents.slice(start, stop - start)
        values: list[float | None] = []
        tops = judge.next_token_logprobs([decisiveness_prompt(t) for t in texts[start:stop]])
        for row, top in zip(chunk.iter_rows(named=True), tops):
            value = None if isinstance(top, str) else expected_rating(top, ids)
            if value is None:
                stage.error(
                    row,
                    top if isinstance(top, str) else "no rating token 0..10 in the top-k",
                    call_failed=isinstance(top, CallFailure),
                )
            values.append(value)
        return chunk.select(SENTENCE_COLS).with_columns(
            pl.Series("decisiveness", values, dtype=pl.Float64)
        )

    out = stage.parts(sents.height, settings.batch_size, compute)
    if out.is_empty():
        out = sents.select(SENTENCE_COLS).with_columns(
            pl.lit(None, pl.Float64).alias("decisiveness")
        )
    stage.finish({"output": out}, max_failed_share=settings.max_failed_share)
    return stage
