"""One scoring stage's bookkeeping, written once: its key, done marker, outputs, error ledger
and resumable batches.

A stage's key is the hash of its name, `STAGE_VERSION`, the keys of its inputs, its settings and,
for a judge stage, the judge's identity (`judge_identity`: model, engine arguments, chat template,
top-k, and the endpoint URL without credentials), so changing any of them re-runs the stage and
nothing else does.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.config.judges import ScoreSettings
from engine.contract import RESPONSE_KEY, RunLayout, atomic_write, content_hash
from engine.errors import StageFailed, redact_url

STAGE_VERSION = "1"
RESPONSE_COLS = list(RESPONSE_KEY)
SENTENCE_COLS = [*RESPONSE_COLS, "sentence_idx"]

logger = logging.getLogger(__name__)


def _write_parquet(df: pl.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    """Write a table atomically (a reader never sees a torn file), cast to `schema` if given."""
    table = df.to_arrow()
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def judge_identity(settings: ScoreSettings, *, top_k: bool = False) -> list[Any]:
    """What makes a judge's answers what they are, for stage keys.

    Args:
        settings: The judge settings.
        top_k: The stage reads the judge's top-k next-token alternatives (their number counts).

    Returns:
        Model, engine arguments, chat flag (and top-k), plus the endpoint URL without credentials
        when the judge is a server: an HTTP judge and a local engine of the same name are
        different judges.
    """
    identity: list[Any] = [settings.model, settings.judge_engine_args(), settings.chat]
    if settings.chat_template_kwargs:  # absent when empty: earlier stages keep their keys
        identity.append({"chat_template_kwargs": settings.chat_template_kwargs})
    if top_k:
        identity.append(settings.top_k)
    if settings.base_url:
        identity.append({"endpoint": redact_url(settings.base_url)})
    return identity


class Stage:
    """One stage's directory: outputs, done marker, error ledger and batch parts.

    Args:
        run_dir: The run directory.
        name: Stage name.
        inputs: Keys of the stage\'s inputs and its settings (in a fixed order).
        log: Print progress lines.
        judge: `judge_identity(settings)` for a stage that calls the judge, else empty.
        extra: Further settings hashed after the judge identity.
    """

    def __init__(
        self,
        run_dir: Path,
        name: str,
        inputs: Sequence[Any],
        log: bool = True,
        *,
        judge: Sequence[Any] = (),
        extra: Sequence[Any] = (),
    ) -> None:
        self.key = content_hash([name, STAGE_VERSION, *inputs, *judge, *extra])
        self.dir = RunLayout(run_dir).stage(name)
        self.name = name
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

    def previous(self, name: str, reuse: str) -> pl.DataFrame | None:
        """Output `name` of the stage's last completion if it recorded the same `reuse` key (its
        reusable identity: settings and judge, not the inputs), else None."""
        marker = self.dir / RunLayout.STAGE_DONE
        path = self.dir / f"{name}.parquet"
        if not (marker.is_file() and path.is_file()):
            return None
        if json.loads(marker.read_text()).get("reuse") != reuse:
            return None
        return pl.read_parquet(path)

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
            logger.info(f"score: {self.name} done in {record['seconds']:.1f} s{extra}")

    def resume(self) -> bool:
        """Whether the stage is done with this key (then say it was skipped)."""
        if self.done():
            self.skip_note()
            return True
        return False

    def skip_note(self) -> None:
        """Say the stage was skipped."""
        if self.log:
            logger.info(f"score: {self.name} already done (skipped)")

    def parts(
        self, n_items: int, batch_size: int, compute: Callable[[int, int], pl.DataFrame]
    ) -> pl.DataFrame:
        """Run `compute(start, stop)` over batches, keeping each finished batch as a part file.

        A part's errors are stored beside it, so a resumed stage keeps its full ledger.
        """
        from tqdm import tqdm

        part_dir = self.dir / "parts" / self.key[:16]
        frames = []
        bar = tqdm(
            total=n_items,
            desc=f"score: {self.name}",
            unit="prompt",
            disable=not self.log,
            mininterval=2.0,
            dynamic_ncols=True,
        )
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
                    bar.update(stop - start)
                    continue
            before = len(self.errors)
            df = compute(start, min(start + batch_size, n_items))
            _write_parquet(df, path)
            atomic_write(ledger, json.dumps(self.errors[before:], default=str))
            frames.append(df)
            bar.update(stop - start)
        bar.close()
        return pl.concat(frames, how="vertical") if frames else pl.DataFrame()
