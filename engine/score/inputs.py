"""What the stages read: a run's spec and finished generations (`load_run`), and its gold answers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

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
        UserError: Not a run directory, or not every unit verified done (see `verify_run`).
    """
    from engine.generate.verify import verify_run

    run_dir = Path(run_dir)
    columns = GEN_COLUMNS + (["token_ids", "logprobs"] if with_logprobs else [])
    # Exactly the units verify calls done, each once. The manifest only says which units of
    # the plan this run is (all of them, or a study wave's); a tampered or stale one is a
    # finding of verify, never what decides the rows.
    report = verify_run(str(run_dir), check_duplicates=True, keep_columns=columns)
    selected, planned = _selection(run_dir)
    units = [u for u in report.units if selected is None or u.unit_id in selected]
    # Units of the plan outside this run's selection (a later wave) are simply not run yet, and
    # done units outside it (an earlier, larger run) are not part of what is scored now.
    later = {
        f"unit {u.unit_id}: missing: {u.detail}"
        for u in report.units
        if selected is not None and u.unit_id not in selected and u.state == "missing"
    }
    findings = [
        f
        for f in report.findings()
        if f not in later
        and not (selected is not None and f.startswith("manifest: ") and "not in the manifest" in f)
    ]
    if findings or not units or (planned is not None and planned != len(units)):
        # Scoring a part of a run would give metrics over whichever units happened to finish.
        done = sum(u.state == "done" for u in units)
        total = planned if planned is not None else len(units)
        unfinished = done < total or any(u.state in ("missing", "torn") for u in units)
        more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
        first = f"; {findings[0]}{more}" if findings else ""
        raise UserError(
            f"{run_dir}: the run is {'incomplete' if unfinished else 'not consistent'} "
            f"({done} of {total} units done{first})",
            f"see `mic verify {run_dir}`; re-run the same `mic run` command to redo those units "
            "(it keeps the done ones), then score",
        )
    frames = [pl.from_arrow(report.tables[u.unit_id]) for u in units]
    key = content_hash([(u.unit_id, u.sha256) for u in units])
    stored = json.loads((run_dir / RunLayout.RUN).read_text())  # verify read it: a dict
    return RunInputs(run_dir, report.run_id, stored["full"], pl.concat(frames), key)


def _selection(run_dir: Path) -> tuple[set[str] | None, int | None]:
    """The unit ids `manifest.json` lists and its `units_planned`, or (None, None) when it is
    not a readable manifest (verify reports that, and scoring refuses)."""
    try:
        manifest = json.loads((run_dir / RunLayout.MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):
        return None, None
    units = manifest.get("units") if isinstance(manifest, dict) else None
    if not isinstance(units, list):
        return None, None
    ids = {u.get("unit_id") for u in units if isinstance(u, dict)}
    planned = manifest.get("units_planned")
    ok = isinstance(planned, int) and not isinstance(planned, bool)
    return {i for i in ids if isinstance(i, str)}, planned if ok else None


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
