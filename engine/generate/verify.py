"""`mic verify RUN_DIR`: the state of every unit of a generation run, read-only.

For each unit of the run's plan (rebuilt from `run.json`) it reports one state:

    done               done-record present, shard readable, checksum and row counts match
    missing            no done-record and no shard: never finished
    torn               a leftover temp file (`*.partial-*`) of the unit: a write was interrupted
    truncated          the shard is shorter than its done-record says, or is not a readable file
    checksum_mismatch  the shard has the recorded size but not the recorded sha256
    shard_missing      the done-record names a shard that does not exist
    bad_record         the done-record is not a readable record
    row_mismatch       the shard's rows differ from the record's or from the plan (items x n)

plus run-level findings: orphan shards (no done-record points to them), done-records of units
outside the plan, stray temp files, duplicate (model, task, split, prompt, item, sample) rows
across the shards that count, and a manifest that disagrees with the done-records. Nothing is
changed: a resume (`mic run` again) is what redoes units and removes orphans.

Exit code of the CLI: 0 when every unit is done and nothing is inconsistent, 1 otherwise.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from engine.contract import RunLayout
from engine.errors import UserError
from engine.generate.store import DONE, SHARDS, DoneRecord, RunStore

ROW_KEY = ("model", "task", "split", "prompt", "item_id", "sample_idx")
STATES = (
    "done",
    "missing",
    "torn",
    "truncated",
    "checksum_mismatch",
    "shard_missing",
    "bad_record",
    "row_mismatch",
)


@dataclass
class UnitState:
    """What `verify_run` found for one planned unit.

    Attributes:
        unit_id: The unit's content hash.
        model, task, split, prompt, chunk: Where it sits in the plan.
        state: One of `STATES`.
        rows_expected: Items x samples of the plan.
        rows_recorded: Rows in its done-record (None without one).
        rows_found: Rows read from its shard (None when not readable).
        shard: Shard name from the done-record.
        detail: Why the state is not "done".
        temp_files: Leftover temp files of this unit.
    """

    unit_id: str
    model: str
    task: str
    split: str
    prompt: str
    chunk: int
    state: str
    rows_expected: int
    rows_recorded: int | None = None
    rows_found: int | None = None
    shard: str | None = None
    detail: str = ""
    temp_files: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    """The result of `verify_run`.

    Attributes:
        location: The run directory.
        run_id: From `run.json`.
        units: One `UnitState` per planned unit, in plan order.
        orphan_shards: Shards no done-record of a planned unit points to.
        unknown_records: Done-records of units outside the plan.
        stray_temp_files: Temp files that belong to no planned unit.
        duplicate_rows: Row keys present more than once across the counted shards (first 20).
        manifest_problems: How `manifest.json` disagrees with the done-records.
        lock: The lock holder, if the directory is locked (a live run makes the report a snapshot).
    """

    location: str
    run_id: str
    units: list[UnitState]
    orphan_shards: list[str] = field(default_factory=list)
    unknown_records: list[str] = field(default_factory=list)
    stray_temp_files: list[str] = field(default_factory=list)
    duplicate_rows: list[dict[str, Any]] = field(default_factory=list)
    manifest_problems: list[str] = field(default_factory=list)
    lock: dict[str, Any] | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Units per state."""
        counts = Counter(u.state for u in self.units)
        return {s: counts.get(s, 0) for s in STATES}

    @property
    def ok(self) -> bool:
        """Every unit done and nothing inconsistent."""
        return (
            all(u.state == "done" and not u.temp_files for u in self.units)
            and not self.orphan_shards
            and not self.unknown_records
            and not self.stray_temp_files
            and not self.duplicate_rows
            and not self.manifest_problems
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-able data."""
        return {
            "location": self.location,
            "run_id": self.run_id,
            "ok": self.ok,
            "counts": self.counts,
            "rows_expected": sum(u.rows_expected for u in self.units),
            "rows_found": sum(u.rows_found or 0 for u in self.units if u.state == "done"),
            "units": [asdict(u) for u in self.units],
            "orphan_shards": self.orphan_shards,
            "unknown_records": self.unknown_records,
            "stray_temp_files": self.stray_temp_files,
            "duplicate_rows": self.duplicate_rows,
            "manifest_problems": self.manifest_problems,
            "lock": self.lock,
        }


def _plan(store: RunStore) -> tuple[str, list[Any]]:
    from engine.config.sweep import validate
    from engine.generate.units import plan_units

    stored = store.read_json(RunLayout.RUN)
    if not isinstance(stored, dict) or "full" not in stored:
        raise UserError(
            f"{store.location}: no readable run.json, so this is not a run directory",
            "pass the --out directory of `mic run` (or a study's generations directory)",
        )
    base = Path(store.root) if store.is_local else None  # task files stored relative to the run
    spec = validate(stored["full"], source=f"{store.location}/run.json", base_dir=base)
    return str(stored.get("run_id", spec.run_id)), plan_units(spec)


def _shard_rows(data: bytes) -> tuple[int | None, pa.Table | None, str]:
    try:
        reader = ipc.open_file(pa.BufferReader(data))
        table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        return None, None, f"not a readable Arrow file ({str(exc).splitlines()[0][:120]})"
    return table.num_rows, table, ""


def verify_run(location: str, check_duplicates: bool = True) -> VerifyReport:
    """Check every unit of a run directory against its done-record and the plan; change nothing.

    Args:
        location: The run directory (local path or filesystem URI).
        check_duplicates: Also read the counted shards' key columns and look for duplicate rows.

    Returns:
        The report.

    Raises:
        UserError: The directory holds no readable `run.json`, or its spec no longer validates
            (e.g. a task file moved).
    """
    store = RunStore(location)
    run_id, units = _plan(store)
    planned = {u.unit_id for u in units}
    shard_names = store.list_names(SHARDS)
    done_names = store.list_names(DONE)
    temp = [f"{SHARDS}/{n}" for n in shard_names if RunLayout.TEMP_MARK in n]
    temp += [f"{DONE}/{n}" for n in done_names if RunLayout.TEMP_MARK in n]
    shards = {n for n in shard_names if RunLayout.TEMP_MARK not in n}
    records = {n[: -len(".json")] for n in done_names if n.endswith(".json")}

    def temps_of(unit_id: str) -> list[str]:
        return [t for t in temp if t.split("/", 1)[1].startswith(unit_id)]

    states: list[UnitState] = []
    referenced: set[str] = set()
    counted: list[pa.Table] = []
    for unit in units:
        state = UnitState(
            unit_id=unit.unit_id,
            model=unit.model.name,
            task=unit.task,
            split=unit.split,
            prompt=unit.prompt.id,
            chunk=unit.chunk_index,
            state="missing",
            rows_expected=unit.n_rows,
            temp_files=temps_of(unit.unit_id),
        )
        states.append(state)
        if unit.unit_id not in records:
            if state.temp_files:
                state.state, state.detail = "torn", "an interrupted write left a temp file"
            else:
                state.detail = "no done-record"
            continue
        raw = store.read_json(f"{DONE}/{unit.unit_id}.json")
        try:
            record = DoneRecord(**raw) if isinstance(raw, dict) else None
        except TypeError:
            record = None
        if record is None:
            state.state, state.detail = "bad_record", "the done-record is not a readable record"
            continue
        state.shard, state.rows_recorded = record.shard, record.rows
        referenced.add(record.shard)
        data = store.read_bytes(f"{SHARDS}/{record.shard}")
        if data is None:
            state.state, state.detail = "shard_missing", f"shard {record.shard} does not exist"
            continue
        rows, table, why = _shard_rows(data)
        state.rows_found = rows
        if len(data) < record.bytes or table is None:
            state.state = "truncated"
            state.detail = f"{len(data)} of {record.bytes} bytes" + (f"; {why}" if why else "")
            continue
        if len(data) != record.bytes or hashlib.sha256(data).hexdigest() != record.sha256:
            state.state = "checksum_mismatch"
            state.detail = f"sha256 of {record.shard} differs from the done-record"
            continue
        if rows != record.rows or rows != unit.n_rows:
            state.state = "row_mismatch"
            state.detail = f"shard has {rows} rows, record {record.rows}, plan {unit.n_rows}"
            continue
        state.state = "done"
        if check_duplicates:
            counted.append(table.select(list(ROW_KEY)))  # keys only: a big run fits in memory

    report = VerifyReport(store.location, run_id, states)
    report.orphan_shards = sorted(shards - referenced)
    report.unknown_records = sorted(records - planned)
    owned = {t for s in states for t in s.temp_files}
    report.stray_temp_files = sorted(set(temp) - owned)
    if check_duplicates and counted:
        import polars as pl

        keys = pl.from_arrow(pa.concat_tables(counted, promote_options="default"))
        dups = keys.group_by(list(ROW_KEY)).len("count").filter(pl.col("count") > 1)
        report.duplicate_rows = dups.sort(list(ROW_KEY)).head(20).to_dicts()
    report.manifest_problems = _manifest_problems(store, states)
    lock = store.read_json(RunLayout.LOCK)
    report.lock = lock if isinstance(lock, dict) else None
    return report


def _manifest_problems(store: RunStore, states: list[UnitState]) -> list[str]:
    manifest = store.read_json(RunLayout.MANIFEST)
    if manifest is None:
        return ["manifest.json is missing or unreadable (a resume rebuilds it)"]
    listed = {u.get("unit_id"): u for u in manifest.get("units", []) if isinstance(u, dict)}
    done = {s.unit_id: s for s in states if s.state == "done"}
    problems = []
    extra = sorted(set(listed) - set(done))
    if extra:
        problems.append(f"manifest lists {len(extra)} unit(s) that are not done (first {extra[0]})")
    absent = sorted(set(done) - set(listed))
    if absent:
        problems.append(
            f"{len(absent)} done unit(s) are not in the manifest (first {absent[0]}; "
            "a resume rebuilds it)"
        )
    for unit_id in sorted(set(listed) & set(done)):
        if listed[unit_id].get("shard") != done[unit_id].shard:
            problems.append(f"manifest names another shard for unit {unit_id}")
    return problems


def format_report(report: VerifyReport, show_done: bool = False) -> str:
    """Render a report as text: one line per unit that is not done (all with `show_done`)."""
    lines = [f"run {report.run_id} in {report.location}"]
    header = f"{'unit':<26}{'model':<12}{'task':<14}{'split':<7}{'prompt':<10}{'chunk':>5}"
    lines.append(f"{header}{'rows':>11}  state")
    for u in report.units:
        if u.state == "done" and not u.temp_files and not show_done:
            continue
        found = "-" if u.rows_found is None else str(u.rows_found)
        lines.append(
            f"{u.unit_id:<26}{u.model[:11]:<12}{u.task[:13]:<14}{u.split[:6]:<7}"
            f"{u.prompt[:9]:<10}{u.chunk:>5}{found + '/' + str(u.rows_expected):>11}  {u.state}"
            + (f": {u.detail}" if u.detail else "")
            + (f" (+ temp file {', '.join(u.temp_files)})" if u.temp_files else "")
        )
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
    data = report.to_dict()
    lines.append(
        f"{len(report.units)} units: {counts}; rows {data['rows_found']}/{data['rows_expected']}"
    )
    for name, items in (
        ("orphan shard", report.orphan_shards),
        ("done-record outside the plan", report.unknown_records),
        ("stray temp file", report.stray_temp_files),
    ):
        for item in items:
            lines.append(f"{name}: {item}")
    for dup in report.duplicate_rows:
        lines.append(f"duplicate row: {json.dumps(dup, sort_keys=True)}")
    lines.extend(f"manifest: {p}" for p in report.manifest_problems)
    if report.lock:
        lines.append(
            f"locked by pid {report.lock.get('pid')} on {report.lock.get('host')} "
            "(a run may be writing: this is a snapshot)"
        )
    lines.append(
        "OK: every unit done and consistent"
        if report.ok
        else "NOT OK: re-run the same `mic run` command to redo these units (verify changed nothing)"
    )
    return "\n".join(lines)
