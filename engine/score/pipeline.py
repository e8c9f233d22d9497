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

import dataclasses
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc  # noqa: F401  (pa.ipc)
import pyarrow.parquet as pq

from engine.contract import (
    NO_HEDGE,
    RESPONSE_KEY,
    RESPONSES,
    SENTENCES,
    RunLayout,
    atomic_write,
    content_hash,
    with_metadata,
)
from engine.errors import StageFailed, UserError, redact_url
from engine.errors import CallFailure

STAGE_VERSION = "1"
EXTRACT_MODES = ("lexicon", "llm")
CONFIDENCE_MODES = ("consistency-logprob", "consistency-sampled", "token_prob")
CORRECTNESS_MODES = ("rule", "llm")
DECISIVENESS_MODES = ("llm", "none")
RESPONSE_COLS = list(RESPONSE_KEY)
SENTENCE_COLS = [*RESPONSE_COLS, "sentence_idx"]

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
    if not 1 <= merged.get("top_k", 20) <= 20:
        raise UserError(f"{source}: 'judges.top_k' is {merged['top_k']}", "use 1..20")
    if merged.get("batch_size", 1) < 1:
        raise UserError(f"{source}: 'judges.batch_size' is {merged['batch_size']}", "use >= 1")
    return ScoreSettings(**merged)


# ---- stage bookkeeping ---------------------------------------------------------------------------


def _write_parquet(df: pl.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    """Write a table atomically (a reader never sees a torn file), cast to `schema` if given."""
    table = df.to_arrow()
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


class Stage:
    """One stage's directory: outputs, done marker, error ledger and batch parts.

    Args:
        run_dir: The run directory.
        name: Stage name.
        key: Hash of the stage's inputs and settings.
        log: Print progress lines.
    """

    def __init__(self, run_dir: Path, name: str, key: str, log: bool = True) -> None:
        self.dir = RunLayout(run_dir).stage(name)
        self.name = name
        self.key = key
        self.log = log
        self.errors: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.calls = 0  # judge calls made (or reused from part files) by this stage
        self.failed_calls = 0  # of which the judge was never heard (see CallFailure)

    def done(self) -> bool:
        """Whether the stage finished with this key (and its outputs exist)."""
        marker = self.dir / RunLayout.STAGE_DONE
        if not marker.is_file():
            return False
        record = json.loads(marker.read_text())
        return record.get("key") == self.key and all(
            (self.dir / f"{name}.parquet").is_file() for name in record.get("outputs", [])
        )

    def read(self, name: str = "output") -> pl.DataFrame:
        """Read one output table of the stage."""
        return pl.read_parquet(self.dir / f"{name}.parquet")

    def error(self, row: Mapping[str, Any], message: str, call_failed: bool = False) -> None:
        """Record a per-item failure in the ledger.

        Args:
            row: The item's key columns.
            message: What went wrong.
            call_failed: The judge call itself failed (no answer at all); such rows count
                against `max_failed_share` and their batch is retried when the stage re-runs.
        """
        entry = {
            **{k: row.get(k) for k in (*SENTENCE_COLS, "sample_idx", "raw_marker") if k in row},
            "error": str(message),
        }
        if call_failed:
            entry["kind"] = "call_failed"
            self.failed_calls += 1
        self.errors.append(entry)

    def count_calls(self, n: int) -> None:
        """Count `n` judge calls (the denominator of the failed share)."""
        self.calls += n

    def failed_share(self) -> float:
        """The share of this stage's judge calls that failed (0 when it made none)."""
        return self.failed_calls / self.calls if self.calls else 0.0

    def check_failures(self, max_failed_share: float) -> None:
        """Refuse to finish when too many judge calls failed (the stage is then not done).

        The ledger is written so the causes can be read; batches holding failed calls are
        retried by the next run (see `parts`).

        Raises:
            StageFailed: The failed share exceeds `max_failed_share`.
        """
        if not self.calls or self.failed_share() <= max_failed_share:
            return
        ledger = "".join(json.dumps(e, default=str) + "\n" for e in self.errors)
        atomic_write(self.dir / RunLayout.STAGE_ERRORS, ledger)
        causes: list[str] = []
        for entry in self.errors:
            cause = str(entry.get("error", ""))[:120]
            if entry.get("kind") == "call_failed" and cause not in causes:
                causes.append(cause)
            if len(causes) == 3:
                break
        raise StageFailed(
            f"score stage {self.name!r}: {self.failed_calls} of {self.calls} judge calls failed "
            f"({self.failed_share():.0%} > the allowed {max_failed_share:.0%}); first causes: "
            + "; ".join(repr(c) for c in causes),
            f"fix the judge (endpoint, key, model, max_model_len) and re-run the same command "
            f"(finished batches are kept; see {self.dir / RunLayout.STAGE_ERRORS}), or raise "
            "--max-failed-share",
        )

    def finish(
        self,
        outputs: Mapping[str, pl.DataFrame],
        info: Mapping[str, Any] = (),
        max_failed_share: float = 1.0,
    ) -> None:
        """Write the outputs, the ledger and the done marker (the commit point).

        Args:
            outputs: Output tables by name.
            info: Extra fields of the done marker.
            max_failed_share: Refuse (StageFailed, no done marker) when a larger share of the
                stage's judge calls failed.
        """
        self.check_failures(max_failed_share)
        for name, df in outputs.items():
            _write_parquet(df, self.dir / f"{name}.parquet")
        ledger = "".join(json.dumps(e, default=str) + "\n" for e in self.errors)
        atomic_write(self.dir / RunLayout.STAGE_ERRORS, ledger)
        record = {
            "key": self.key,
            "outputs": sorted(outputs),
            "errors": len(self.errors),
            "judge_calls": self.calls,
            # A new id per completion: a redone stage with an unchanged key still changes the
            # scored run's key, so the analysis downstream is redone too.
            "completion": uuid.uuid4().hex,
            "failed_calls": self.failed_calls,
            "seconds": round(time.perf_counter() - self.started, 3),
            **dict(info),
        }
        atomic_write(self.dir / RunLayout.STAGE_DONE, json.dumps(record, indent=2))
        if self.log:
            extra = f", {len(self.errors)} items in errors.jsonl" if self.errors else ""
            if self.calls:
                extra += f", {self.failed_calls}/{self.calls} judge calls failed"
            print(
                f"score: {self.name} done in {record['seconds']:.1f} s{extra}",
                file=sys.stderr,
                flush=True,
            )

    def skip_note(self) -> None:
        """Say the stage was skipped."""
        if self.log:
            print(f"score: {self.name} already done (skipped)", file=sys.stderr, flush=True)

    def parts(
        self, n_items: int, batch_size: int, compute: Callable[[int, int], pl.DataFrame]
    ) -> pl.DataFrame:
        """Run `compute(start, stop)` over batches, keeping each finished batch as a part file.

        A part's errors are stored beside it, so a resumed stage keeps its full ledger.
        """
        part_dir = self.dir / "parts" / self.key[:16]
        frames = []
        for index, start in enumerate(range(0, n_items, batch_size)):
            path = part_dir / f"part-{index:05d}.parquet"
            ledger = part_dir / f"part-{index:05d}.errors.json"
            stop = min(start + batch_size, n_items)
            self.count_calls(stop - start)
            if path.is_file() and ledger.is_file():
                stored = json.loads(ledger.read_text())
                # A batch whose judge calls failed is retried, not reused.
                if not any(e.get("kind") == "call_failed" for e in stored):
                    frames.append(pl.read_parquet(path))
                    self.errors.extend(stored)
                    continue
            before = len(self.errors)
            t0 = time.perf_counter()
            df = compute(start, min(start + batch_size, n_items))
            _write_parquet(df, path)
            atomic_write(ledger, json.dumps(self.errors[before:], default=str))
            frames.append(df)
            if self.log:
                stop = min(start + batch_size, n_items)
                rate = (stop - start) / max(time.perf_counter() - t0, 1e-9)
                print(
                    f"score: {self.name} {stop}/{n_items} prompts ({rate:,.0f}/s)",
                    file=sys.stderr,
                    flush=True,
                )
        return pl.concat(frames, how="vertical") if frames else pl.DataFrame()


# ---- inputs ----------------------------------------------------------------------------------


@dataclass
class RunInputs:
    """What the stages read from a run directory.

    Attributes:
        run_dir: The run directory.
        run_id: The run's id.
        spec_full: The run's spec as stored in run.json (`full`).
        generations: Generation rows (without the logprob columns unless asked).
        key: Hash of the finished units' checksums (changes when generations change).
    """

    run_dir: Path
    run_id: str
    spec_full: dict[str, Any]
    generations: pl.DataFrame
    key: str


GEN_COLUMNS = [*RESPONSE_COLS, "sample_idx", "text", "error"]


def load_run(run_dir: str | Path, with_logprobs: bool = False) -> RunInputs:
    """Read a run's spec and its finished generation shards.

    Args:
        run_dir: A directory written by `mic run` / `mic study`.
        with_logprobs: Also read token ids and chosen logprobs (token_prob confidence).

    Returns:
        The run inputs.

    Raises:
        UserError: Not a run directory, or no finished units.
    """
    from engine.generate.store import RunStore

    run_dir = Path(run_dir)
    store = RunStore(str(run_dir))
    stored = store.read_json(RunLayout.RUN)
    manifest = store.read_json(RunLayout.MANIFEST)
    if stored is None or manifest is None:
        raise UserError(
            f"{run_dir}: not a finished run directory (no run.json / manifest.json)",
            "run `mic run SPEC --out DIR` (or `mic study`) first and pass that DIR",
        )
    if not manifest.get("units"):
        raise UserError(f"{run_dir}/manifest.json lists no finished units", "re-run `mic run`")
    planned, finished = manifest.get("units_planned"), manifest.get("units_finished")
    if isinstance(planned, int) and isinstance(finished, int) and finished < planned:
        # Scoring a part of a run would give metrics over whichever units happened to finish.
        raise UserError(
            f"{run_dir}/manifest.json: the run is incomplete ({finished} of {planned} units "
            "finished; 'units_finished')",
            "re-run the same `mic run` command to finish it (see `mic verify RUN_DIR`), then score",
        )
    columns = GEN_COLUMNS + (["token_ids", "logprobs"] if with_logprobs else [])
    frames = []
    for unit in manifest["units"]:
        # A shard damaged after its run would otherwise fail deep in Arrow, or be scored.
        data = store.read_bytes(f"shards/{unit['shard']}")
        if data is None or hashlib.sha256(data).hexdigest() != unit["sha256"]:
            raise UserError(
                f"{run_dir}/shards/{unit['shard']} (unit {unit['unit_id']}) is missing or does "
                "not match its checksum in manifest.json",
                "see `mic verify RUN_DIR`; re-run the same `mic run` command to redo that unit",
            )
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all().select(columns)
        frames.append(pl.from_arrow(table))
    key = content_hash([(u["unit_id"], u["sha256"]) for u in manifest["units"]])
    return RunInputs(run_dir, stored["run_id"], stored["full"], pl.concat(frames), key)


# ---- answers (for correctness) ----------------------------------------------------------------


def infer_answer_type(golds: Sequence[Sequence[str]]) -> str:
    """Guess a task's answer type from its gold answers: mc, yesno, number or free."""
    flat = [g.strip() for gs in golds for g in gs if g.strip()]
    if not flat:
        return "free"
    if all(len(g) == 1 and g.upper() in "ABCDEFGHIJ" for g in flat):
        return "mc"
    if all(g.lower() in ("yes", "no", "true", "false") for g in flat):
        return "yesno"
    try:
        [float(g.replace(",", "")) for g in flat]
        return "number"
    except ValueError:
        return "free"


def load_gold(spec_full: Mapping[str, Any], run_dir: Path) -> dict[str, dict[str, Any]]:
    """Task -> {"items": item id -> (question, answers), "path": file} from the run's task files."""
    from engine.config.sweep import validate
    from engine.tasks.loaders import load_items

    # Task files inside the run directory are stored relative to it (a moved run keeps working).
    spec = validate(dict(spec_full), source=f"{run_dir}/run.json", base_dir=Path(run_dir).resolve())
    out: dict[str, dict[str, Any]] = {}
    for task in spec.tasks:
        items = {}
        for split_items in load_items(task).values():
            for item in split_items:
                items[item.item_id] = (item.question, item.answers)
        out[task.name] = {"items": items, "source": task.source}
    return out


# ---- the stages --------------------------------------------------------------------------------


def stage_sentences(inputs: RunInputs, settings: ScoreSettings, log: bool) -> Stage:
    """Split each response (sample 0) into sentences; responses with an error row are dropped."""
    from engine.score.rules.sentences import split_responses

    stage = Stage(
        inputs.run_dir,
        "sentences",
        content_hash(["sentences", STAGE_VERSION, inputs.key, settings.keep_please]),
        log,
    )
    if stage.done():
        stage.skip_note()
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


def stage_markers(
    inputs: RunInputs, sentences: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """Raw markers per sentence (one row per marker; `<no_hedge>` when none)."""
    from engine.score.judges.prompts import extraction_prompt
    from engine.score.judges.vllm import parse_markers
    from engine.score.rules.extract import markers_for_sentences

    llm = settings.extract == "llm"
    key = content_hash(
        ["markers", STAGE_VERSION, sentences.key, settings.extract]
        + ([settings.model, settings.judge_engine_args(), settings.chat] if llm else [])
    )
    stage = Stage(inputs.run_dir, "markers", key, log)
    if stage.done():
        stage.skip_note()
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


def stage_canonical(
    inputs: RunInputs, markers: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """One raw -> canonical marker map per model, over all its tasks.

    `rules`: the deterministic rules of `engine.score.rules.canonical`. `llm`: a judge first proposes a
    short canonical form for each distinct raw marker (greedy, few-shot); a proposal is kept only
    when it is a sub-phrase of the raw marker (so the judge can shorten, never invent), and the
    rules then run over the merged forms. A rejected proposal is a ledger row.
    """
    from engine.score.judges.prompts import canonical_prompt
    from engine.score.judges.vllm import parse_canonical
    from engine.score.rules.canonical import build_canonical_map

    llm = settings.canonical == "llm"
    key = content_hash(
        ["canonical", STAGE_VERSION, markers.key, settings.canonical]
        + ([settings.model, settings.judge_engine_args(), settings.chat] if llm else [])
    )
    stage = Stage(inputs.run_dir, "canonical", key, log)
    if stage.done():
        stage.skip_note()
        return stage
    counts = markers.read().group_by(["model", "raw_marker"]).len().sort(["model", "raw_marker"])
    merge: dict[str, str] = {}
    if llm:
        raws = sorted({m for m in counts["raw_marker"].to_list() if m != NO_HEDGE})
        outs = judges.get().generate_texts(
            [canonical_prompt(m) for m in raws], 8, 0.0, [0] * len(raws)
        )
        stage.count_calls(len(raws))
        for raw, out in zip(raws, outs):
            form = None if isinstance(out, Exception) else parse_canonical(out, raw)
            if form is None:
                stage.error(
                    {"raw_marker": raw},
                    f"canonical form rejected: {out!r}",
                    call_failed=isinstance(out, Exception),
                )
            else:
                merge[raw] = form
    rows = []
    for (model,), group in counts.group_by(["model"], maintain_order=True):
        mapping = build_canonical_map(dict(zip(group["raw_marker"], group["len"])), merge)
        rows.extend((model, raw, canon) for raw, canon in mapping.items())
    out = pl.DataFrame(
        rows,
        schema={"model": pl.String, "raw_marker": pl.String, "marker": pl.String},
        orient="row",
    )
    stage.finish({"output": out}, max_failed_share=settings.max_failed_share)
    return stage


def stage_confidence(
    inputs: RunInputs, sentences: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """Per-sentence intrinsic confidence (consistency judge, or the response's token probability)."""
    mode = settings.confidence
    judge_part = (
        [settings.model, settings.judge_engine_args(), settings.chat, settings.top_k]
        if mode.startswith("consistency")
        else [settings.token_prob_method]
    )
    if mode == "consistency-sampled":
        judge_part += [settings.sampled_temperature, settings.seed]
    key = content_hash(["confidence", STAGE_VERSION, sentences.key, inputs.key, mode, *judge_part])
    stage = Stage(inputs.run_dir, "confidence", key, log)
    if stage.done():
        stage.skip_note()
        return stage
    sents = sentences.read("sentences")
    if mode == "token_prob":
        out = _token_prob_confidence(inputs, sentences.read("responses"), sents, settings, stage)
        stage.finish({"output": out})
        return stage
    pairs = consistency_pairs(inputs.generations, sents)
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
    out = _mean_per_sentence(sents, judgments)
    stage.finish(
        {"output": out, "judgments": judgments},
        {"judge_prompts": pairs.height},
        max_failed_share=settings.max_failed_share,
    )
    return stage


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
    return chunk.select(SENTENCE_COLS + ["sample_idx"]).with_columns(
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


def stage_correctness(
    inputs: RunInputs, sentences: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """Per-response correctness: rule matchers, or a yes / no judge (rule result on failure)."""
    from engine.score.rules.correctness import is_correct

    gold = load_gold(inputs.spec_full, inputs.run_dir)
    types = {
        task: settings.answer_types.get(task)
        or infer_answer_type([a for _, a in info["items"].values()])
        for task, info in gold.items()
    }
    judge_part = (
        [settings.model, settings.judge_engine_args(), settings.chat]
        if settings.correctness == "llm"
        else []
    )
    key = content_hash(
        ["correctness", STAGE_VERSION, sentences.key, settings.correctness, types, *judge_part]
        + [content_hash(sorted((t, sorted(i["items"].items())) for t, i in gold.items()))]
    )
    stage = Stage(inputs.run_dir, "correctness", key, log)
    if stage.done():
        stage.skip_note()
        return stage
    responses = sentences.read("responses")
    rows = responses.select(RESPONSE_COLS + ["text"]).rows(named=True)
    rule: list[bool] = []
    for row in rows:
        item = gold.get(row["task"], {}).get("items", {}).get(row["item_id"])
        if item is None:
            stage.error(row, "item not found in the task file; counted incorrect")
            rule.append(False)
            continue
        rule.append(is_correct(row["text"], item[1], types[row["task"]]))
    correct = list(rule)
    if settings.correctness == "llm" and rows:
        from engine.score.judges.prompts import correctness_prompt
        from engine.score.judges.vllm import NO, YES, yes_no_probability

        def compute(start: int, stop: int) -> pl.DataFrame:
            judge = judges.get()
            ids = judge.token_ids_for([YES, NO])
            chunk = rows[start:stop]
            prompts = []
            for row in chunk:
                q, answers = (
                    gold.get(row["task"], {}).get("items", {}).get(row["item_id"], ("", ()))
                )
                prompts.append(correctness_prompt(q, answers, row["text"]))
            verdicts: list[bool | None] = []
            for row, i, top in zip(chunk, range(start, stop), judge.next_token_logprobs(prompts)):
                p = None if isinstance(top, str) else yes_no_probability(top, ids[YES], ids[NO])
                if p is None:
                    why = top if isinstance(top, str) else "neither yes nor no in the top-k"
                    stage.error(
                        row,
                        f"correctness judge: {why}; used the rule result",
                        call_failed=isinstance(top, CallFailure),
                    )
                    verdicts.append(rule[i])
                else:
                    verdicts.append(p >= 0.5)
            return pl.DataFrame({"correct": verdicts}, schema={"correct": pl.Boolean})

        correct = (
            stage.parts(len(rows), settings.batch_size, compute).get_column("correct").to_list()
        )
    out = responses.select(RESPONSE_COLS).with_columns(
        pl.Series("correct", correct, dtype=pl.Boolean),
        pl.Series("correct_rule", rule, dtype=pl.Boolean),
    )
    stage.finish(
        {"output": out}, {"answer_types": types}, max_failed_share=settings.max_failed_share
    )
    return stage


def stage_decisiveness(
    inputs: RunInputs, sentences: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """Per-sentence decisiveness in [0, 1]: expected few-shot rating under the judge's logprobs."""
    from engine.score.judges.prompts import decisiveness_prompt
    from engine.score.judges.vllm import RATING_WORDS, expected_rating

    llm = settings.decisiveness == "llm"
    key = content_hash(
        ["decisiveness", STAGE_VERSION, sentences.key, settings.decisiveness]
        + (
            [settings.model, settings.judge_engine_args(), settings.chat, settings.top_k]
            if llm
            else []
        )
    )
    stage = Stage(inputs.run_dir, "decisiveness", key, log)
    if stage.done():
        stage.skip_note()
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


# ---- judge lifetime ------------------------------------------------------------------------------


class JudgePool:
    """Starts the judge engine on first use (only stages that are not done need it).

    Args:
        settings: Judge settings.
        judge: Use this judge instead of starting one (tests, a shared engine).
    """

    def __init__(self, settings: ScoreSettings, judge: Any | None = None) -> None:
        self.settings = settings
        self.judge = judge
        self._owned = judge is None

    def get(self) -> Any:
        """The judge, started if needed."""
        if self.judge is None and self.settings.base_url:
            from engine.generate.backends.http import HTTPJudge, HTTPSettings

            s = self.settings
            http = HTTPSettings(s.base_url, s.model, s.api_key_env, s.concurrency, s.max_retries)
            print(f"score: judge {s.model} at {s.base_url}", file=sys.stderr, flush=True)
            self.judge = HTTPJudge(http, top_k=s.top_k)
        if self.judge is None:
            from engine.score.judges.vllm import VLLMJudge

            s = self.settings
            print(f"score: starting judge engine {s.model}", file=sys.stderr, flush=True)
            self.judge = VLLMJudge(s.model, s.judge_engine_args(), top_k=s.top_k, chat=s.chat)
        return self.judge

    def close(self) -> None:
        """Free the judge engine if this pool started it."""
        if self._owned and self.judge is not None:
            self.judge.close()
            self.judge = None


# ---- the scored run -------------------------------------------------------------------------------


@dataclass
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
    if (
        store.read_json(RunLayout.RUN) is None
    ):  # not a run: let the scorer say so (and create nothing)
        return _score_run(run_dir, settings, judge=judge, log=log)
    with store.locked():
        for name in redo:
            forget_stage(Path(run_dir), name)
        return _score_run(run_dir, settings, judge=judge, log=log)


def safe_settings(settings: ScoreSettings) -> dict[str, Any]:
    """The settings as stored or printed: the judge URL without credentials."""
    data = dataclasses.asdict(settings)
    if data.get("base_url"):
        data["base_url"] = redact_url(data["base_url"])
    return data


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
