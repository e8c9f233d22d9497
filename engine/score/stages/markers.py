"""The `markers` stage: raw epistemic markers per sentence (lexicon or a judge)."""

from __future__ import annotations

import polars as pl

from engine.config.judges import ScoreSettings
from engine.contract import NO_HEDGE
from engine.score.inputs import RunInputs
from engine.score.judges.pool import JudgePool
from engine.score.stage import SENTENCE_COLS, Stage, judge_identity


def stage_markers(
    inputs: RunInputs, sentences: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """Raw markers per sentence (one row per marker; `<no_hedge>` when none)."""
    from engine.score.judges.prompts import extraction_prompt
    from engine.score.judges.vllm import parse_markers
    from engine.score.rules.extract import markers_for_sentences

    llm = settings.extract == "llm"
    judge = judge_identity(settings) if llm else []
    stage = Stage(inputs.run_dir, "markers", [sentences.key, settings.extract], log, judge=judge)
    if stage.resume():
        return stage
    sents = sentences.read("sentences")
    texts = sents.get_column("text").to_list()
    if not llm:
        found = markers_for_sentences(texts)
        out = _explode_markers(sents, found)
    else:

        def compute(start: int, stop: int) -> pl.DataFrame:
            judge = judges.get()
            chunk = sents.slice(start, stop - start)
            ctexts = texts[start:stop]
            outs = judge.generate_texts(
                [extraction_prompt(t) for t in ctexts], 24, 0.0, [0] * len(ctexts)
            )
            found: list[list[str]] = []
            for row, text, out in zip(chunk.iter_rows(named=True), ctexts, outs):
                markers = None if isinstance(out, Exception) else parse_markers(out, text)
                if markers is None:  # the lexicon stands in, so the sentence keeps its rows
                    why = str(out) if isinstance(out, Exception) else f"not readable: {out!r}"
                    stage.error(
                        row,
                        f"extraction output {why}; used the lexicon",
                        call_failed=isinstance(out, Exception),
                    )
                    markers = [m for m in markers_for_sentences([text])[0] if m != NO_HEDGE]
                found.append(markers or [NO_HEDGE])
            return _explode_markers(chunk, found)

        out = stage.parts(sents.height, settings.batch_size, compute)
        if out.is_empty():
            out = _explode_markers(sents.head(0), [])
    stage.finish({"output": out}, max_failed_share=settings.max_failed_share)
    return stage


def _explode_markers(sents: pl.DataFrame, found: list[list[str]]) -> pl.DataFrame:
    return (
        sents.select(SENTENCE_COLS)
        .with_columns(pl.Series("raw_marker", found, dtype=pl.List(pl.String)))
        .explode("raw_marker")
        .drop_nulls("raw_marker")
    )
