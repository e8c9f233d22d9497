"""The `sentences` stage: sample 0 of each response split into sentences."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.config.judges import ScoreSettings
from engine.score.inputs import RunInputs
from engine.score.stage import RESPONSE_COLS, Stage


def stage_sentences(inputs: RunInputs, settings: ScoreSettings, log: bool) -> Stage:
    """Split each response (sample 0) into sentences; responses with an error row are dropped."""
    from engine.score.rules.sentences import split_responses

    stage = Stage(inputs.run_dir, "sentences", [inputs.key, settings.keep_please], log)
    if stage.resume():
        return stage
    gen = inputs.generations.filter(pl.col("sample_idx") == 0).sort(RESPONSE_COLS)
    failed = gen.filter(pl.col("error").is_not_null() | pl.col("text").is_null())
    for row in failed.iter_rows(named=True):
        stage.error(row, f"generation failed: {row['error']}")
    ok = gen.filter(pl.col("error").is_null() & pl.col("text").is_not_null())
    texts = ok.get_column("text").to_list()
    split = split_responses(texts, keep_please=settings.keep_please)
    counts = np.fromiter((len(s) for s in split), dtype=np.int32, count=len(split))
    responses = ok.select(RESPONSE_COLS + ["text"]).with_columns(
        pl.Series("n_sentences", counts, dtype=pl.Int32)
    )
    rep = np.repeat(np.arange(len(split)), counts)
    keys = ok.select(RESPONSE_COLS)[rep.tolist()] if len(rep) else ok.select(RESPONSE_COLS).head(0)
    flat = [s for sents in split for s in sents]
    sentences = keys.with_columns(
        pl.Series("sentence_idx", [s.idx for s in flat], dtype=pl.Int32),
        pl.Series("text", [s.text for s in flat], dtype=pl.String),
        pl.Series("start", [s.start for s in flat], dtype=pl.Int32),
        pl.Series("end", [s.end for s in flat], dtype=pl.Int32),
    )
    stage.finish({"responses": responses, "sentences": sentences})
    return stage
