"""`mic export`: a run's tables as JSONL or Parquet, for other tools (pandas, DuckDB, R, jq).

What is exported is whatever Arrow / Parquet table the run directory holds:

    shards/*.arrow                      -> generations      (the shards the manifest lists)
    scored/responses.parquet, ...       -> scored/responses, scored/sentences
    stages/<stage>/<name>.parquet       -> stages/<stage>/<name>  (per-stage scores)
    analysis/mic.parquet, ...           -> analysis/mic, analysis/comparisons
    any other *.parquet / *.arrow       -> its path without the extension

Judge batch parts (`parts/`), superseded runs (`superseded/`), stale done-records and their shards
(`stale/`), earlier exports (a directory with
an export.json) and hidden or temporary files are left out. Every table is streamed through a lazy polars plan (no whole-table copy in memory), and
`DIR/export.json` lists the tables with their rows, columns, sources and the contract metadata
(schema version, run id, config hash); Parquet outputs also carry that metadata themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from engine.contract import RunLayout, atomic_write, is_plain_file_name
from engine.errors import UserError

FORMATS = ("jsonl", "parquet")
ARROW_EXTS = (".arrow", ".ipc", ".feather")
PARQUET_EXTS = (".parquet",)
SKIP_DIRS = {"superseded", RunLayout.STALE, "parts", "__pycache__"}
DEFAULT_OUT = "export"


@dataclass(frozen=True)
class Table:
    """One table to export.

    Attributes:
        name: Output name, a relative path without extension ("generations", "scored/sentences").
        sources: The files read (all of one format, one schema).
        kind: "ipc" or "parquet".
    """

    name: str
    sources: tuple[Path, ...]
    kind: str


@dataclass
class ExportResult:
    """What `export_run` wrote.

    Attributes:
        out_dir: The output directory.
        fmt: "jsonl" or "parquet".
        tables: Per table name: path written, rows, columns, sources, metadata.
    """

    out_dir: Path
    fmt: str
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


def _hidden_or_temp(p: Path) -> bool:
    return (
        p.name.startswith(".")
        or p.name.endswith((".tmp", ".partial"))
        or RunLayout.TEMP_MARK in p.name
    )


def _manifest_shards(run_dir: Path) -> list[Path] | None:
    """Shards the manifest lists (finished units only), or None without a usable manifest."""
    path = run_dir / RunLayout.MANIFEST
    if not path.is_file():
        return None
    try:
        units = json.loads(path.read_text(encoding="utf-8")).get("units", [])
        # A tampered manifest must not make the export copy a file from outside the run.
        shards = [
            run_dir / RunLayout.SHARDS / u["shard"] for u in units if is_plain_file_name(u["shard"])
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    # Each shard once: a manifest listing a unit twice must not double its rows.
    return [p for p in dict.fromkeys(shards) if p.is_file()]


def find_tables(run_dir: str | Path, exclude: Path | None = None) -> list[Table]:
    """List the exportable tables of a run directory.

    Args:
        run_dir: A generation run, study, scored run or analysis directory.
        exclude: A directory to leave out (the export's own output, when inside RUN_DIR).

    Returns:
        The tables, generations first, then by name.

    Raises:
        UserError: RUN_DIR does not exist or is not a directory.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError(
            f"{root} is not a directory",
            "pass a run directory (from `mic run`, `mic study`, `mic score` or `mic analyze --out`)",
        )
    excluded = exclude.resolve() if exclude is not None else None
    tables: list[Table] = []
    shards_dir = root / RunLayout.SHARDS
    if shards_dir.is_dir():
        listed = _manifest_shards(root)
        shards = (
            listed
            if listed
            else sorted(p for p in shards_dir.glob("*.arrow") if not _hidden_or_temp(p))
        )
        if shards:
            tables.append(Table("generations", tuple(shards), "ipc"))
    # Earlier exports (a directory holding export.json) are outputs, not tables of the run.
    previous = {p.parent.resolve() for p in root.rglob("export.json")}
    others: list[Table] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or _hidden_or_temp(path):
            continue
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        resolved = path.resolve()
        if rel.parts[0] == RunLayout.SHARDS or any(
            resolved.is_relative_to(d) for d in ([excluded] if excluded else []) + list(previous)
        ):
            continue
        suffix = path.suffix.lower()
        if suffix in PARQUET_EXTS or suffix in ARROW_EXTS:
            kind = "parquet" if suffix in PARQUET_EXTS else "ipc"
            others.append(Table(rel.with_suffix("").as_posix(), (path,), kind))
    return tables + sorted(others, key=lambda t: t.name)


def _scan(table: Table) -> pl.LazyFrame:
    files = [str(p) for p in table.sources]
    try:
        if table.kind == "parquet":
            return pl.scan_parquet(files)
        return pl.scan_ipc(files)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _unreadable(table, exc) from None


def _unreadable(table: Table, exc: Exception) -> UserError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = table.sources[0] if len(table.sources) == 1 else f"{table.sources[0].parent}/*"
    return UserError(
        f"{where}: cannot be read as {table.kind} ({first})",
        "re-run the command that wrote it (a resumed `mic run` rewrites torn shards)",
    )


def _metadata(table: Table, run_dir: Path) -> dict[str, str]:
    """Contract metadata of a table: its Parquet key-value metadata, else the run's identity."""
    meta: dict[str, str] = {}
    if table.kind == "parquet":
        try:
            meta = {
                k: v
                for k, v in pl.read_parquet_metadata(table.sources[0]).items()
                if not k.startswith("ARROW:")
            }
        except (pl.exceptions.PolarsError, OSError):
            meta = {}
    if "run_id" not in meta and (run_dir / RunLayout.RUN).is_file():
        try:
            run = json.loads((run_dir / RunLayout.RUN).read_text(encoding="utf-8"))
            meta.setdefault("run_id", str(run.get("run_id", "")))
            meta.setdefault("config_hash", str(run.get("hash", "")))
        except (OSError, ValueError, AttributeError):
            pass
    return {k: v for k, v in meta.items() if v}


def export_run(
    run_dir: str | Path, to: str = "parquet", out: str | Path | None = None
) -> ExportResult:
    """Convert a run's tables to JSONL or Parquet.

    Args:
        run_dir: A generation run, study, scored run or analysis directory.
        to: "jsonl" (one JSON object per line) or "parquet" (zstd).
        out: Output directory; default RUN_DIR/export. Table names become relative paths in it
            (`generations.jsonl`, `scored/sentences.jsonl`, `analysis/mic.jsonl`, ...).

    Returns:
        What was written; also saved as OUT/export.json.

    Raises:
        UserError: Unknown format, RUN_DIR missing, no table found, or an unreadable table.
    """
    if to not in FORMATS:
        raise UserError(f"unknown export format {to!r}", f"use one of: {', '.join(FORMATS)}")
    root = Path(run_dir)
    out_dir = Path(out) if out is not None else root / DEFAULT_OUT
    tables = find_tables(root, exclude=out_dir)
    if not tables:
        raise UserError(
            f"{root} holds no Arrow or Parquet table (looked for shards/*.arrow, scored/, "
            "stages/, analysis/ and *.parquet)",
            "run `mic run`, `mic score` or `mic analyze --out DIR` first and export that directory",
        )
    result = ExportResult(out_dir, to)
    for table in tables:
        target = out_dir / f"{table.name}.{to}"
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = _metadata(table, root)
        lf = _scan(table)

        def write(tmp: str, lf: pl.LazyFrame = lf, meta: dict = meta) -> None:
            if to == "parquet":
                lf.sink_parquet(tmp, compression="zstd", metadata=meta or None)
            else:
                lf.sink_ndjson(tmp)

        try:
            atomic_write(target, write)  # a failed write leaves no temp file behind
            rows = _scan(table).select(pl.len()).collect().item()
            columns = list(lf.collect_schema().names())
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise _unreadable(table, exc) from None
        result.tables[table.name] = {
            "path": target.relative_to(out_dir).as_posix(),
            "rows": int(rows),
            "columns": columns,
            "sources": [p.relative_to(root).as_posix() for p in table.sources],
            "metadata": meta,
        }
    doc = {"format": to, "source": str(root), "tables": result.tables}
    (out_dir / "export.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return result
