"""`mic score RUN_DIR`: stored generations -> a scored run (docs/method.md §8), stage by stage.

Stages, each resumable: its output goes to `RUN_DIR/stages/<stage>/` with a `done.json` holding a
key (a hash of the stage's inputs' keys and its settings); a stage whose key matches is skipped.
Judge stages also write their batches as parts under `stages/<stage>/parts/<key>/`, so an
interrupted stage resumes at the next unfinished batch. Per-item failures (a judge prompt too long,
no yes / no token in the judge's top-k, an unreadable judge output) become rows of
`stages/<stage>/errors.jsonl` and a missing value; the stage goes on. Where the contract has no
missing value (a sentence's markers, a response's `correct`), the deterministic method stands in
for the failed judgment (lexicon, rule) and the ledger row says so.

    sentences     sample 0 of each item -> sentences (pysbd; "please" sentences dropped)
    markers       lexicon | llm          -> raw markers per sentence (`<no_hedge>` for none)
    canonical     rules | llm (+ rules)  -> one raw -> canonical map per model, over all tasks
    confidence    consistency-logprob | consistency-sampled | token_prob -> per sentence
    correctness   rule | llm             -> per response
    decisiveness  llm | none             -> per sentence
    scored        RUN_DIR/scored/{responses,sentences}.parquet + canonical_map.json

Settings come from the run's spec (`[judges]`), then `RUN_DIR/study.json`, then the caller.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from engine.config.judges import ScoreSettings, safe_settings, settings_from
from engine.contract import (
    RESPONSES,
    SENTENCES,
    RunLayout,
    atomic_write,
    content_hash,
    with_metadata,
)
from engine.errors import UserError
from engine.score.inputs import load_run
from engine.score.judges.pool import JudgePool
from engine.score.stage import RESPONSE_COLS, SENTENCE_COLS
from engine.score.stages.canonical import stage_canonical
from engine.score.stages.confidence import stage_confidence
from engine.score.stages.correctness import stage_correctness
from engine.score.stages.decisiveness import stage_decisiveness
from engine.score.stages.markers import stage_markers
from engine.score.stages.sentences import stage_sentences


@dataclass(frozen=True)
class ScoreResult:
    """What `score_run` wrote.

    Attributes:
        scored_dir: `RUN_DIR/scored`.
        key: Hash of every stage key (the scored run's config hash).
        responses: Response rows.
        sentence_rows: Sentence-marker rows.
        errors: Ledger rows per stage.
        seconds: Wall time.
        failed_calls: Per stage, (failed judge calls, judge calls).
    """

    scored_dir: Path
    key: str
    responses: int
    sentence_rows: int
    errors: dict[str, int]
    seconds: float
    failed_calls: dict[str, list[int]] = field(default_factory=dict)

    def failure_summary(self) -> str:
        """One line: the failed share of every stage that called a judge."""
        parts = [
            f"{name} {failed}/{calls} ({failed / calls:.0%})"
            for name, (failed, calls) in self.failed_calls.items()
            if calls
        ]
        return "judge calls failed: " + (", ".join(parts) if parts else "none made")


def score_run(
    run_dir: str | Path,
    settings: ScoreSettings | Mapping[str, Any] | None = None,
    *,
    judge: Any | None = None,
    log: bool = True,
    redo: Sequence[str] = (),
) -> ScoreResult:
    """Score a run while holding its lock (see `_score_run`): two `mic score` at once, or a
    `mic run` into the same directory, are refused; a dead holder's lock is taken over.

    Args:
        run_dir: A run directory written by `mic run` / `mic study`.
        settings: Judge settings, or a `[judges]` table laid over the run's own.
        judge: A judge to use instead of starting a vLLM engine.
        log: Print one line per stage.
        redo: Stage names to run again even though they are done (their batches included);
            the stages after them follow through their keys.

    Raises:
        UserError: The directory is locked by a live process, an unknown stage in `redo`, or
            see `_score_run`.
        StageFailed: A judge stage failed more often than `settings.max_failed_share`.
    """
    from engine.generate.store import RunStore

    unknown = sorted(set(redo) - set(STAGE_NAMES))
    if unknown:
        raise UserError(f"--redo {unknown[0]!r} is not a stage", f"use one of {list(STAGE_NAMES)}")
    store = RunStore(str(run_dir))
    if store.kind(RunLayout.RUN) != "file":  # not a run: let the scorer say so (create nothing)
        return _score_run(run_dir, settings, judge=judge, log=log)
    with store.locked():
        for name in redo:
            forget_stage(Path(run_dir), name)
        return _score_run(run_dir, settings, judge=judge, log=log)


STAGE_NAMES = ("sentences", "markers", "canonical", "confidence", "correctness", "decisiveness")


def forget_stage(run_dir: Path, name: str) -> None:
    """Make stage `name` run again: drop its done marker and its batch parts (outputs stay
    until the new ones replace them). Later stages re-run when the stage's output changes."""
    import shutil

    for stage in (name, *STAGE_DEPENDENTS.get(name, ())):
        stage_dir = RunLayout(run_dir).stage(stage)
        (stage_dir / RunLayout.STAGE_DONE).unlink(missing_ok=True)
        if stage == name:
            shutil.rmtree(stage_dir / "parts", ignore_errors=True)


# Stages that read another stage's output (their keys do not change when it is redone).
STAGE_DEPENDENTS = {
    "sentences": STAGE_NAMES[1:],
    "markers": ("canonical",),
}


def _score_run(
    run_dir: str | Path,
    settings: ScoreSettings | Mapping[str, Any] | None = None,
    *,
    judge: Any | None = None,
    log: bool = True,
) -> ScoreResult:
    """Score a run: every stage (resumable), then `RUN_DIR/scored/{responses,sentences}.parquet`.

    Args:
        run_dir: A run directory written by `mic run` / `mic study`.
        settings: Judge settings, or a `[judges]` table laid over the run's own (spec, study.json).
        judge: A judge to use instead of starting a vLLM engine (a `engine.score.judges.vllm.Judge`).
        log: Print one line per stage.

    Returns:
        A `ScoreResult`.

    Raises:
        UserError: Not a run directory, bad settings, a task file that cannot be read.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    inputs = load_run(run_dir)
    if not isinstance(settings, ScoreSettings):
        study = RunLayout(run_dir).study
        study_judges = json.loads(study.read_text()).get("judges", {}) if study.is_file() else {}
        settings = settings_from(
            inputs.spec_full.get("judges", {}),
            study_judges,
            settings,
            source=f"{run_dir}/run.json + study.json",
        )
    pool = JudgePool(settings, judge)
    try:
        sentences = stage_sentences(inputs, settings, log)
        markers = stage_markers(inputs, sentences, settings, pool, log)
        canonical = stage_canonical(inputs, markers, settings, pool, log)
        confidence = stage_confidence(inputs, sentences, settings, pool, log)
        correctness = stage_correctness(inputs, sentences, settings, pool, log)
        decisiveness = stage_decisiveness(inputs, sentences, settings, pool, log)
    finally:
        pool.close()
    stages = [sentences, markers, canonical, confidence, correctness, decisiveness]
    records = {s.name: json.loads((s.dir / RunLayout.STAGE_DONE).read_text()) for s in stages}
    key = content_hash([[s.key, records[s.name].get("completion")] for s in stages])
    scored = RunLayout(run_dir).scored
    responses = (
        sentences.read("responses")
        .join(correctness.read().select(RESPONSE_COLS + ["correct"]), on=RESPONSE_COLS, how="left")
        .select([c for c in RESPONSES.names])
    )
    mapping = canonical.read()
    rows = (
        markers.read()
        .join(mapping, on=["model", "raw_marker"], how="left")
        .join(confidence.read(), on=SENTENCE_COLS, how="left")
        .join(decisiveness.read(), on=SENTENCE_COLS, how="left")
        .with_columns(pl.col("marker").fill_null(pl.col("raw_marker")))
        .sort([*SENTENCE_COLS])
        .select(SENTENCES.names)
    )
    meta = {
        "stage_keys": json.dumps({s.name: s.key for s in stages}),
        "settings": json.dumps(safe_settings(settings)),
    }
    table_r = (
        responses.to_arrow()
        .select(RESPONSES.names)
        .cast(with_metadata(RESPONSES, inputs.run_id, key, **meta))
    )
    table_s = (
        rows.to_arrow()
        .select(SENTENCES.names)
        .cast(with_metadata(SENTENCES, inputs.run_id, key, **meta))
    )
    scored.mkdir(parents=True, exist_ok=True)
    for name, table in (("responses", table_r), ("sentences", table_s)):
        atomic_write(
            RunLayout(run_dir).scored_table(name),
            lambda tmp, table=table: pq.write_table(table, tmp, compression="zstd"),
        )
    maps: dict[str, dict[str, str]] = {}
    for model, raw, canon in mapping.rows():
        maps.setdefault(model, {})[raw] = canon
    atomic_write(RunLayout(run_dir).canonical_map, json.dumps(maps, indent=2, sort_keys=True))
    errors = {s.name: int(records[s.name].get("errors", 0)) for s in stages}
    failed = {
        s.name: [
            int(records[s.name].get("failed_calls", 0)),
            int(records[s.name].get("judge_calls", 0)),
        ]
        for s in stages
    }
    atomic_write(
        RunLayout(run_dir).score_record,
        json.dumps(
            {
                "key": key,
                "run_id": inputs.run_id,
                "settings": safe_settings(settings),
                "stage_keys": {s.name: s.key for s in stages},
                "ledger_rows": errors,
                "failed_calls": failed,
            },
            indent=2,
        ),
    )
    return ScoreResult(
        scored,
        key,
        table_r.num_rows,
        table_s.num_rows,
        errors,
        time.perf_counter() - started,
        failed,
    )
