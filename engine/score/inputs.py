"""What the stages read: a run's spec and finished generations (`load_run`), and its gold answers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc  # noqa: F401  (pa.ipc)

from engine.contract import (
    RunLayout,
    content_hash,
)
from engine.errors import UserError
from engine.score.stage import RESPONSE_COLS


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
        data = store.read_bytes(f"{RunLayout.SHARDS}/{unit['shard']}")
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
