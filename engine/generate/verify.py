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
    wrong_schema       the shard is a readable Arrow file without the generation columns

plus run-level findings: orphan shards (no done-record points to them), done-records of units
outside the plan, stray temp files, duplicate (model, task, split, prompt, item, sample) rows
across the shards that count, a manifest that disagrees with the done-records, and damage to
the directory itself (`shards` that is a file, a directory where a file belongs). Damage is
always reported, never raised: verify exists to diagnose it. Nothing is changed: a resume
(`mic run` again) is what redoes units, removes orphans and archives stale done-records.

Scoring reads its generations through `verify_run` (`keep_columns`), so what is scored is
exactly what verify calls done, each unit once.

Exit code of the CLI: 0 when every unit is done and nothing is inconsistent, 1 otherwise, 2 when
the directory holds no readable run.json (no plan to check against).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.contract import RunLayout
from engine.errors import UserError
from engine.generate.store import DONE, SHARDS, RunStore

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
    "wrong_schema",
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
        sha256: The shard's sha256 from the done-record.
        detail: Why the state is not "done", naming the file or field.
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
    sha256: str | None = None
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
        problems: Damage to the run directory itself (a file where a directory belongs, ...).
        lock: The lock holder, if the directory is locked (a live run makes the report a snapshot).
        tables: With `keep_columns`, the kept columns of every done unit's shard by unit id
            (not part of `to_dict`).
    """

    location: str
    run_id: str
    units: list[UnitState]
    orphan_shards: list[str] = field(default_factory=list)
    unknown_records: list[str] = field(default_factory=list)
    stray_temp_files: list[str] = field(default_factory=list)
    duplicate_rows: list[dict[str, Any]] = field(default_factory=list)
    manifest_problems: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lock: dict[str, Any] | None = None
    tables: dict[str, pa.Table] = field(default_factory=dict, repr=False)

    @property
    def counts(self) -> dict[str, int]:
        """Units per state."""
        counts = Counter(u.state for u in self.units)
        return {s: counts.get(s, 0) for s in STATES}

    def findings(self) -> list[str]:
        """One line per problem, each naming the file or field (empty when all is well)."""
        lines = list(self.problems)
        for u in self.units:
            if u.state != "done":
                lines.append(f"unit {u.unit_id}: {u.state}: {u.detail}")
            lines.extend(f"unit {u.unit_id}: leftover temp file {t}" for t in u.temp_files)
        lines += [f"orphan shard: {SHARDS}/{n}" for n in self.orphan_shards]
        lines += [f"done-record outside the plan: {DONE}/{n}.json" for n in self.unknown_records]
        lines += [f"stray temp file: {t}" for t in self.stray_temp_files]
        lines += [f"duplicate row: {json.dumps(d, sort_keys=True)}" for d in self.duplicate_rows]
        lines += [f"manifest: {p}" for p in self.manifest_problems]
        return lines

    @property
    def ok(self) -> bool:
        """Every unit done and nothing inconsistent."""
        return not self.findings()

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
            "problems": self.problems,
            "lock": self.lock,
        }


def _plan(store: RunStore) -> tuple[str, list[Any]]:
    from engine.config.sweep import validate
    from engine.generate.units import plan_units

    where = f"{store.location}/{RunLayout.RUN}"
    fix = "pass the --out directory of `mic run` (or a study's generations directory)"
    kind = store.kind(RunLayout.RUN)
    if kind == "missing":
        raise UserError(f"{where} does not exist, so this is not a run directory", fix)
    if kind != "file":
        raise UserError(f"{where} is not a file", "move it away and restore the run's run.json")
    stored = store.read_json(RunLayout.RUN)
    restore = "restore it, or re-run the same `mic run` command into this directory"
    if not isinstance(stored, dict):
        raise UserError(f"{where} is not a readable JSON object (empty or torn?)", restore)
    if not isinstance(stored.get("full"), dict):
        raise UserError(
            f"{where}: field 'full' (the run's spec) is missing or not an object", restore
        )
    base = Path(store.root) if store.is_local else None  # task files stored relative to the run
    spec = validate(stored["full"], source=where, base_dir=base)
    run_id = stored.get("run_id", spec.run_id)
    return (run_id if isinstance(run_id, str) else spec.run_id), plan_units(spec)


def _entries(store: RunStore, sub: str, problems: list[str]) -> tuple[list[str], list[str]]:
    """(files, other entries) of `sub`; a `sub` that is not a directory becomes a problem."""
    try:
        return store.list_entries(sub)
    except UserError:
        problems.append(f"{sub} is a file, not a directory (move it away; a resume recreates it)")
        return [], []


def verify_run(
    location: str, check_duplicates: bool = True, keep_columns: list[str] | None = None
) -> VerifyReport:
    """Check every unit of a run directory against its done-record and the plan; change nothing.

    Every malformed record, shard or directory entry becomes a unit state or a run-level finding.

    Args:
        location: The run directory (local path or filesystem URI).
        check_duplicates: Also read the counted shards' key columns and look for duplicate rows.
        keep_columns: Keep these columns of every done unit's shard in `report.tables` (what a
            reader of the run reads, without reading the shards twice).

    Returns:
        The report.

    Raises:
        UserError: The directory holds no readable `run.json`, or its spec no longer validates
            (e.g. a task file moved): without the plan there are no units to check.
    """
    store = RunStore(location)
    run_id, units = _plan(store)
    planned = {u.unit_id for u in units}
    problems: list[str] = []
    shard_names, shard_others = _entries(store, SHARDS, problems)
    done_names, done_others = _entries(store, DONE, problems)
    problems += [f"{SHARDS}/{n} is a directory, not a shard" for n in shard_others]
    record_dirs = {n[: -len(".json")] for n in done_others if n.endswith(".json")}
    problems += [
        f"{DONE}/{n} is a directory, not a done-record"
        for n in done_others
        if n[: -len(".json")] not in planned
    ]
    temp = [f"{SHARDS}/{n}" for n in shard_names if RunLayout.TEMP_MARK in n]
    temp += [f"{DONE}/{n}" for n in done_names if RunLayout.TEMP_MARK in n]
    shards = {n for n in shard_names if RunLayout.TEMP_MARK not in n}
    records = {n[: -len(".json")] for n in done_names if n.endswith(".json")}

    def temps_of(unit_id: str) -> list[str]:
        return [t for t in temp if t.split("/", 1)[1].startswith(unit_id)]

    states: list[UnitState] = []
    referenced: set[str] = set()
    counted: list[pa.Table] = []
    tables: dict[str, pa.Table] = {}
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
        if unit.unit_id not in records and unit.unit_id not in record_dirs:
            if state.temp_files:
                state.state, state.detail = "torn", "an interrupted write left a temp file"
            else:
                state.detail = f"no {DONE}/{unit.unit_id}.json"
            continue
        check = store.inspect_unit(
            unit.unit_id, unit.n_rows, read=check_duplicates or keep_columns is not None
        )
        state.state, state.detail, state.rows_found = check.state, check.detail, check.rows
        if check.record is not None:
            state.shard, state.sha256 = check.record.shard, check.record.sha256
            state.rows_recorded = check.record.rows
            referenced.add(check.record.shard)
        table = check.table
        if check.state != "done" or table is None:  # None: not read (no columns asked for)
            continue
        if check_duplicates:
            counted.append(table.select(list(ROW_KEY)))  # keys only: a big run fits in memory
        if keep_columns is not None:
            tables[unit.unit_id] = table.select(keep_columns)

    report = VerifyReport(store.location, run_id, states, tables=tables)
    report.problems = problems
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
    report.lock = _lock(store, problems)
    return report


def _lock(store: RunStore, problems: list[str]) -> dict[str, Any] | None:
    kind = store.kind(RunLayout.LOCK)
    if kind not in ("file", "missing"):
        problems.append(f"{RunLayout.LOCK} is a directory, not a lock file (remove it)")
        return None
    lock = store.read_json(RunLayout.LOCK) if kind == "file" else None
    return lock if isinstance(lock, dict) else None


def _manifest_problems(store: RunStore, states: list[UnitState]) -> list[str]:
    name = RunLayout.MANIFEST
    rebuild = "a resume rebuilds it"
    data, _ = store.read_file(name)
    try:
        manifest = None if data is None else json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        manifest = None
    if manifest is None:
        return [f"{name} is missing or unreadable ({rebuild})"]
    if not isinstance(manifest, dict):
        return [f"{name} is not a JSON object ({rebuild})"]
    units = manifest.get("units")
    if not isinstance(units, list):
        return [f"{name}: field 'units' is not a list ({rebuild})"]
    problems = []
    listed: dict[str, dict[str, Any]] = {}
    seen: Counter[str] = Counter()
    for index, entry in enumerate(units):
        unit_id = entry.get("unit_id") if isinstance(entry, dict) else None
        if not isinstance(unit_id, str):
            problems.append(f"{name}: units.{index} is not a unit entry ({rebuild})")
            continue
        seen[unit_id] += 1
        listed[unit_id] = entry
    doubled = sorted(u for u, n in seen.items() if n > 1)
    if doubled:
        problems.append(
            f"{name} lists {len(doubled)} unit(s) more than once (first {doubled[0]}, "
            f"{seen[doubled[0]]} times; {rebuild})"
        )
    done = {s.unit_id: s for s in states if s.state == "done"}
    extra = sorted(set(listed) - set(done))
    if extra:
        problems.append(f"{name} lists {len(extra)} unit(s) that are not done (first {extra[0]})")
    absent = sorted(set(done) - set(listed))
    if absent:
        problems.append(
            f"{len(absent)} done unit(s) are not in the manifest (first {absent[0]}; {rebuild})"
        )
    for unit_id in sorted(set(listed) & set(done)):
        entry, unit = listed[unit_id], done[unit_id]
        if entry.get("shard") != unit.shard or entry.get("sha256") != unit.sha256:
            problems.append(f"{name} names another shard for unit {unit_id}")
    counts = {
        "units_finished": len(done),
        "rows": sum(s.rows_found or 0 for s in done.values()),
    }
    for field_name, actual in counts.items() if not problems else ():
        value = manifest.get(field_name)
        if value != actual or isinstance(value, bool):
            problems.append(f"{name}: field {field_name!r} is {value!r}, the done-records {actual}")
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
    lines.extend(f"run directory: {p}" for p in report.problems)
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
