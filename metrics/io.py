"""Reading and validating scored runs (docs/method.md §8) into two polars tables.

A scored run is a directory holding a `responses` and a `sentences` table, or one long table with
both sets of columns. Each table may be Parquet, Arrow IPC, CSV or JSONL, and may be a single file
(`responses.parquet`) or a folder of shards (`responses/*.parquet`). Several scored runs (several
models, or one run split over files) are concatenated; row order and file split never matter.

Every problem a user can fix raises `UserError` naming the file, the column and what to do.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from engine.contract import NO_HEDGE, RESPONSES, SENTENCES, polars_dtypes
from engine.errors import UserError
from metrics import kernels, keycodes

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "ipc",
    ".ipc": "ipc",
    ".feather": "ipc",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

# The contract's columns as polars dtypes, derived from its Arrow schemas (`raw_marker` is part of
# the contract but the analysis does not read it).
RESPONSE_COLUMNS = polars_dtypes(RESPONSES)
SENTENCE_COLUMNS = polars_dtypes(SENTENCES, exclude=("raw_marker",))
# Columns a user file may leave out, with the value they take.
OPTIONAL_DEFAULTS = {
    "prompt": "default",
    "split": "all",
    "decisiveness": None,  # all missing: faithfulness undefined
}
KEY = ["model", "prompt", "task", "split", "item_id"]
SOURCE = "_source"  # index of the file a row came from, for error messages


@dataclass(frozen=True)
class ScoredRun:
    """A validated scored run: `responses` and `sentences` with the contract's columns.

    Attributes:
        responses: one row per response; columns of `RESPONSE_COLUMNS` plus `_source`.
        sentences: one row per (sentence, marker); columns of `SENTENCE_COLUMNS` plus `_source`.
        files: the files read, indexed by `_source`.
        by_response: set by `validate`: `_r` and its CSR index (see `kernels.by_response`).
    """

    responses: pl.DataFrame
    sentences: pl.DataFrame
    files: tuple[str, ...]
    # (`_r` as numpy, ptr, order): the CSR index of rows by response validation built, for
    # `encode` to reuse after checking that `_r` is still the same.
    by_response: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(
        default=None, repr=False, compare=False
    )
    # The key hash of each sentence row (`_key_hash` of `KEY`), when the sentences were read
    # without their key columns (see `_read_keyed`); validation links by it and drops it.
    sentence_keys: np.ndarray | None = field(default=None, repr=False, compare=False)
    # Set by `validate`: the (model, prompt, task) group of each response (int32, groups in
    # order of first appearance) and each group's first response, for `encode` to take the
    # groups' names from a few rows instead of casting every response's strings.
    triples: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{path}: unknown file format {path.suffix or '(no extension)'!r}",
            "use Parquet (.parquet), Arrow IPC (.arrow), CSV (.csv) or JSONL (.jsonl)",
        )
    return fmt


# Columns the analysis reads (`raw_marker` is part of the contract but the analysis does not use
# it); anything else in a file (extra annotations) is
# not loaded from Parquet / Arrow, which keeps a 1e7-row run within a few GB.
NEEDED = set(RESPONSE_COLUMNS) | set(SENTENCE_COLUMNS)


# Key columns of a sentences table repeat a handful of values (and item ids per response) over
# millions of rows: stored as categoricals while reading (streamed, so the strings never exist in
# full), they take 4 bytes a row instead of 16+ (as strings, 1e7 rows peaked 0.35 GB higher for
# no gain in time). Linking hashes their string values. The marker too: its checks and codes
# then work on its few distinct values, not on every row's text.
COMPACT = ("model", "prompt", "task", "split", "item_id", "marker")


def _run_categories() -> dict[str, pl.Categories]:
    """Fresh categories for the `COMPACT` columns of one scored run.

    Codes of polars' default (global) categories number every string the process has seen, so a
    2-value column cast after 100k other strings gets codes 100000-100001 and every table sized
    by the codes (`_cat_column`) grew with each run a long-lived process analysed. Categories of
    the run's own count from 0 and are freed with it.
    """
    return {c: pl.Categories.random() for c in COMPACT}


def _categorical(cats: dict[str, pl.Categories] | None, name: str) -> pl.DataType:
    return pl.Categorical(cats[name]) if cats is not None else pl.Categorical


def _read(
    path: Path,
    compact: bool = False,
    cats: dict[str, pl.Categories] | None = None,
    columns: Collection[str] = NEEDED,
) -> pl.DataFrame:
    """The columns of `columns` a file has (Parquet / Arrow: only those are read).

    With `compact`, the `COMPACT` columns stored as text are read as categoricals (of `cats`).
    """
    fmt = _format_of(path)
    try:
        if fmt in ("parquet", "ipc"):
            lazy = pl.scan_parquet(path) if fmt == "parquet" else pl.scan_ipc(path)
            schema = lazy.collect_schema()
            cols = []
            for c in schema.names():
                if c not in columns:
                    continue
                if compact and c in COMPACT and schema[c] == pl.String:
                    cols.append(pl.col(c).cast(_categorical(cats, c)))
                else:
                    cols.append(pl.col(c))
            return lazy.select(cols).collect(engine="streaming" if compact else "auto")
        if fmt == "csv":
            _refuse_duplicate_columns(path, _csv_header(path))
            return pl.read_csv(
                path, infer_schema_length=10000, schema_overrides={"item_id": pl.String}
            )
        _check_jsonl_keys(path)
        return pl.read_ndjson(path, infer_schema_length=10000)
    except UserError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:  # the user needs the file named
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: cannot be read as {fmt}: {first}",
            "check the file is complete and in that format",
        ) from None


def _refuse_duplicate_columns(path: Path, names: list[str]) -> None:
    """A repeated column name would be renamed or dropped by the reader: refuse it instead."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UserError(
                f"{path}: column {name!r} appears more than once in the header",
                "give every column a distinct name (drop or rename the copy)",
            )
        seen.add(name)


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's first record, as written (a BOM is not part of a name)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        return next(csv.reader(fh), [])


# JSONL objects checked for repeated keys (a JSON parser keeps the last copy silently); the first
# lines suffice for files written by a program, and the check stays O(1) in the file size.
JSONL_KEY_CHECK_LINES = 100


def _check_jsonl_keys(path: Path) -> None:
    def pairs(kv: list[tuple[str, object]]) -> dict:
        _refuse_duplicate_columns(path, [k for k, _ in kv])
        return dict(kv)

    with open(path, encoding="utf-8", errors="replace") as fh:
        for _, line in zip(range(JSONL_KEY_CHECK_LINES), fh):
            if line.strip():
                try:
                    json.loads(line, object_pairs_hook=pairs)
                except json.JSONDecodeError:
                    return  # the reader names the bad line


def _table_files(base: Path, name: str) -> list[Path]:
    """Files of table `name` in directory `base`: `name.<ext>` or `name/*.<ext>`."""
    found = [p for p in sorted(base.glob(f"{name}.*")) if p.is_file()]
    folder = base / name
    if folder.is_dir():
        found += [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return found


def _resolve(path: str | Path) -> list[tuple[str, Path]]:
    """Map one user path to (role, file) pairs; role is responses, sentences or long."""
    p = Path(path)
    try:
        os.stat(p)  # not Path.exists(), which answers False for a NUL byte
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (ValueError, OSError) as exc:  # a NUL byte, a name too long for the file system
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(
            f"{str(p)!r}: not a usable path ({reason})", "pass a scored-run path"
        ) from None
    if not p.exists():
        raise UserError(
            f"{p}: no such file or directory", "pass a scored-run directory or table file"
        )
    if p.is_file():
        return [("long", p)]
    resp, sent = _table_files(p, "responses"), _table_files(p, "sentences")
    if resp or sent:
        if not resp:
            raise UserError(
                f"{p}: has a sentences table but no responses table",
                "add responses.parquet (docs/method.md §8)",
            )
        if not sent:
            raise UserError(
                f"{p}: has a responses table but no sentences table",
                "add sentences.parquet (docs/method.md §8)",
            )
        return [("responses", f) for f in resp] + [("sentences", f) for f in sent]
    tables = [f for f in sorted(p.iterdir()) if f.is_file() and f.suffix.lower() in FORMATS]
    if not tables:
        raise UserError(
            f"{p}: no scored-run tables found",
            "expected responses.<ext> and sentences.<ext>, or one long table (.parquet/.arrow/.csv/.jsonl)",
        )
    return [("long", f) for f in tables]


def _is_categorical(dtype: pl.DataType) -> bool:
    """Dictionary-encoded strings: pandas `category`, pyarrow `dictionary`, polars Enum."""
    return isinstance(dtype, pl.Categorical | pl.Enum) or dtype in (pl.Categorical, pl.Enum)


def _int_range_error(
    df: pl.DataFrame, name: str, dtype: pl.DataType, path: Path
) -> UserError | None:
    """Integers that do not fit the contract's type (int32) would fail the cast deep in polars."""
    info = np.iinfo(np.int32) if dtype == pl.Int32 else None
    if info is None:
        return None
    col = df.get_column(name)
    lo, hi = col.min(), col.max()
    for value in (lo, hi):
        if value is not None and not info.min <= value <= info.max:
            what = (
                "counts a response's sentences" if name == "n_sentences" else "numbers them from 0"
            )
            return UserError(
                f"{path}: column {name!r} holds {value}, outside the 32-bit range of the contract",
                f"{name} {what}; check the column holds what its name says",
            )
    return None


def _conform(
    df: pl.DataFrame,
    columns: dict[str, pl.DataType],
    path: Path,
    source: int,
    compact: bool = False,
    cats: dict[str, pl.Categories] | None = None,
) -> pl.DataFrame:
    """Check and cast the columns of one file to the contract's types.

    String columns may arrive dictionary-encoded (categorical): with `compact`, the key columns
    of `COMPACT` are made categorical whatever the file held (with the run's categories `cats`,
    see `_run_categories`; fresh ones when None) and every other string column plain, so shards
    of either kind concatenate and compare by their text.
    """
    if compact and cats is None:
        cats = _run_categories()
    missing = [c for c in columns if c not in df.columns and c not in OPTIONAL_DEFAULTS]
    if missing:
        raise UserError(
            f"{path}: missing column {missing[0]!r}"
            + (f" (and {missing[1:]})" if missing[1:] else ""),
            f"add it; a scored run's columns are {list(columns)} (docs/method.md §8)",
        )
    exprs = []
    for name, dtype in columns.items():
        # An optional column written but left entirely empty (a blank CSV column, all None from
        # pandas) says the same as a missing one.
        absent = name not in df.columns or (
            name in OPTIONAL_DEFAULTS and df.get_column(name).null_count() == df.height
        )
        if absent:
            default = OPTIONAL_DEFAULTS[name]
            lit = pl.lit(default, dtype=dtype)
            if compact and name in COMPACT and default is not None:
                lit = lit.cast(_categorical(cats, name))
            exprs.append(lit.alias(name))
            continue
        have = df.schema[name]
        if dtype == pl.String and (_is_categorical(have) or have in (pl.String, pl.Null)):
            keep_compact = compact and name in COMPACT
            exprs.append(pl.col(name).cast(_categorical(cats, name) if keep_compact else pl.String))
            continue
        if name == "item_id":
            if not have.is_integer():
                raise UserError(
                    f"{path}: column 'item_id' has type {have}",
                    "use strings or integers for item ids",
                )
            item = pl.col(name).cast(pl.String)
            exprs.append(item.cast(_categorical(cats, name)) if compact else item)
            continue
        if have == dtype:
            exprs.append(pl.col(name))
            continue
        ok = (
            (dtype == pl.Float64 and (have.is_numeric() or have == pl.Null))
            or (dtype == pl.Int32 and have.is_integer())
            or (dtype == pl.Boolean and have == pl.Null)
        )
        if dtype == pl.Boolean and have.is_integer():
            bad = df.filter(~pl.col(name).is_in([0, 1]) & pl.col(name).is_not_null()).height
            ok = bad == 0
        if not ok:
            raise UserError(
                f"{path}: column {name!r} has type {have}, expected {dtype}",
                "fix the column's values (e.g. booleans true/false, numbers without quotes)",
            )
        if dtype == pl.Int32:
            err = _int_range_error(df, name, dtype, path)
            if err is not None:
                raise err
        exprs.append(pl.col(name).cast(dtype))
    return df.select(exprs).with_columns(pl.lit(source, dtype=pl.Int32).alias(SOURCE))


def _split_long(
    df: pl.DataFrame, path: Path, source: int, cats: dict[str, pl.Categories] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split one long table (both column sets) into responses and sentences."""
    resp = _conform(df, RESPONSE_COLUMNS, path, source)
    sent = _conform(df, SENTENCE_COLUMNS, path, source, compact=True, cats=cats)
    per_key = resp.group_by(KEY).agg(
        pl.col("correct").n_unique().alias("_nc"), pl.col("n_sentences").n_unique().alias("_nn")
    )
    bad = per_key.filter((pl.col("_nc") > 1) | (pl.col("_nn") > 1))
    if bad.height:
        row = bad.row(0, named=True)
        raise UserError(
            f"{path}: response {row['task']}/{row['item_id']} has different 'correct' or 'n_sentences' values on its rows",
            "a long table repeats the response columns unchanged on each sentence row",
        )
    return resp.unique(subset=KEY, keep="first", maintain_order=True), sent


def read_scored(paths: list[str | Path] | str | Path, pool: bool = False) -> ScoredRun:
    """Read and validate one or more scored runs.

    Args:
        paths: scored-run directories or long-table files.
        pool: Allow two different runs (scored-run ids, or folders for files without one) to hold
            the same (model, prompt); without it that is refused, since their tasks would be
            merged silently.

    Returns:
        The validated `ScoredRun`.

    Raises:
        UserError: a missing file or column, a wrong type, a value out of range, duplicates,
            an empty task, or responses and sentences that disagree.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise UserError("no scored run given", "pass at least one scored-run directory or file")
    try:
        return _read_scored(paths, pool, keyed=True)
    except _NotKeyed:
        pass  # nothing read yet: no second read of an unkeyable run (CSV, long tables)
    except Exception:  # noqa: BLE001 - whatever the keyed reader meets, the full one reports
        pass  # outside the handler: the first attempt's arrays are freed before the second
    # Every problem is reported by the full reader, so its messages do not depend on the path taken.
    return _read_scored(paths, pool, keyed=False)


class _NeedsFullRead(Exception):
    """The keyed reader (`_read_keyed`) cannot vouch for the run: read it in full instead."""


class _NotKeyed(Exception):
    """Some sentence file is not Parquet: the run is read in full, from the start."""


def _read_scored(paths: list[str | Path], pool: bool, keyed: bool) -> ScoredRun:
    """`read_scored`; with `keyed`, Parquet sentence files are read by `_read_keyed`.

    Raises:
        _NeedsFullRead: (`keyed` only) a sentence file the keyed reader does not handle, or any
            problem validation finds (the full reader names it).
        _NotKeyed: (`keyed` only) some sentence file is not Parquet; raised before any file
            is read.
    """
    # Files in the order given (resolved as they are read: the first problem is reported first).
    resolved = ((role, f) for path in paths for role, f in _resolve(path))
    if keyed:
        resolved = list(resolved)
        # Keyed only when every sentence file can be (the tables concatenate column for column).
        if not all(
            role == "responses" or (role == "sentences" and _format_of(f) == "parquet")
            for role, f in resolved
        ):
            raise _NotKeyed
    cats = _run_categories()
    responses, sentences, keys, files = [], [], [], []
    origins: dict[tuple[str, str], dict[str, str]] = {}  # (model, prompt) -> run -> a file
    for role, f in resolved:
        source = len(files)
        files.append(str(f))
        if keyed and role == "sentences":
            df, h = _read_keyed(f, source, cats)
            sentences.append(df)
            keys.append(h)
            continue
        df = _read(f, compact=role == "sentences", cats=cats)
        if role != "sentences" and df.height:
            _note_origin(df, f, origins)
        if df.height == 0:
            raise UserError(
                f"{f}: the table has no rows",
                "remove the empty file or re-run the scoring stage",
            )
        if role == "responses":
            responses.append(_conform(df, RESPONSE_COLUMNS, f, source))
        elif role == "sentences":
            sentences.append(_conform(df, SENTENCE_COLUMNS, f, source, compact=True, cats=cats))
        else:
            r, s = _split_long(df, f, source, cats)
            responses.append(r)
            sentences.append(s)
        del df  # the raw frame: only the conformed columns are kept
    if not pool:
        _refuse_mixed_runs(origins)
    resp = (
        responses[0] if len(responses) == 1 else pl.concat(responses, how="vertical", rechunk=False)
    )
    sent = (
        sentences[0] if len(sentences) == 1 else pl.concat(sentences, how="vertical", rechunk=False)
    )
    del responses, sentences
    sentence_keys = (keys[0] if len(keys) == 1 else np.concatenate(keys)) if keys else None
    del keys
    return validate(ScoredRun(resp, sent, tuple(files), sentence_keys=sentence_keys))


# `_read_keyed` hashes the keys in a second thread while polars reads the value columns (the
# Arrow reader, polars and the hash kernels release the GIL); False: one after the other.
KEYED_OVERLAP = True
# Rows of row groups `_key_hashes` reads at a time (their key indices: 4 bytes a row per column).
KEYED_BATCH = 1 << 20
# Sentence columns other than the key: what `_read_keyed` keeps as a table.
SENTENCE_VALUES = {c: t for c, t in SENTENCE_COLUMNS.items() if c not in KEY}


def _is_text(dtype: pa.DataType) -> bool:
    """An Arrow string type, or a dictionary of one."""
    import pyarrow as pa

    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return (
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    )


def _read_keyed(
    path: Path, source: int, cats: dict[str, pl.Categories]
) -> tuple[pl.DataFrame, np.ndarray]:
    """A Parquet sentences file as its value columns plus the key hash of each row.

    The key columns are read row group by row group as Arrow dictionaries (Parquet stores them
    so: one small dictionary per row group plus an index per row) and hashed through each
    dictionary: no string or categorical column of the 1e7 rows is built, which was the largest
    part of reading one (0.35-0.4 s of CPU per column to cast to a categorical). The hash is
    `_key_hash`'s.

    Returns:
        (the value columns conformed as `_conform` does, the key hash per row).

    Raises:
        _NeedsFullRead: anything out of the ordinary (a key column missing, not text, with an
            empty value; an unreadable file; a value column `_conform` refuses): the full reader
            reports it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError, pa.ArrowException):
        raise _NeedsFullRead from None
    names = schema.names
    if len(set(names)) != len(names) or any(
        k not in OPTIONAL_DEFAULTS and k not in names for k in KEY
    ):
        raise _NeedsFullRead
    if not all(_is_text(schema.field(k).type) for k in KEY if k in names):
        raise _NeedsFullRead
    # (A problem `_read` finds is a UserError: `read_scored` then reads the run in full.)
    if KEYED_OVERLAP:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_key_hashes, path, names)
            df = _read(path, compact=True, cats=cats, columns=SENTENCE_VALUES)
            h = pending.result()
    else:
        h = _key_hashes(path, names)
        df = _read(path, compact=True, cats=cats, columns=SENTENCE_VALUES)
    try:
        if df.height != len(h):
            raise _NeedsFullRead
        return _conform(df, SENTENCE_VALUES, path, source, compact=True, cats=cats), h
    except UserError:
        raise _NeedsFullRead from None


def _key_hashes(path: Path, names: list[str]) -> np.ndarray:
    """`_key_hash` of each row of a Parquet file whose key columns are text (see `_read_keyed`).

    Raises:
        _NeedsFullRead: the file cannot be read or has no rows, or a key is null (an empty key
            is caught later, by the link, which sends the run to the full reader as well).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [k for k in KEY if k in names]
    # The default of an optional column left out, hashed once: every row holds it.
    defaults = {
        k: pl.Series([OPTIONAL_DEFAULTS[k]], dtype=pl.String)
        .hash(seed=_column_seed(i))
        .to_numpy()[0]
        for i, k in enumerate(KEY)
        if k not in names
    }
    try:
        with pq.ParquetFile(path, read_dictionary=keys) as pf:
            return _hash_row_groups(pf, keys, defaults)
    except (OSError, ValueError, pa.ArrowException):
        raise _NeedsFullRead from None


def _hash_row_groups(pf: Any, keys: list[str], defaults: dict[str, Any]) -> np.ndarray:
    """`_key_hashes` of an open `pyarrow.parquet.ParquetFile` (raises `_NeedsFullRead`)."""
    h = np.zeros(pf.metadata.num_rows, dtype=np.uint64)
    if len(h) == 0:
        raise _NeedsFullRead
    start = 0
    # About KEYED_BATCH rows of row groups at a time: not the whole file's indices at once,
    # and not one small polars call per column of each small row group.
    batches, batch, rows = [], [], 0
    for g in range(pf.num_row_groups):
        batch.append(g)
        rows += pf.metadata.row_group(g).num_rows
        if rows >= KEYED_BATCH:
            batches.append(batch)
            batch, rows = [], 0
    batches += [batch] if batch else []
    for batch in batches:
        table = pf.read_row_groups(batch, columns=keys)
        part = h[start : start + table.num_rows]
        start += table.num_rows
        for i, k in enumerate(KEY):
            seed = _column_seed(i)
            if k in defaults:  # code 0 of a one-value table (the warmed kernel signature)
                zeros = _read_only(np.zeros(len(part), dtype=np.uint32))
                keycodes.mix_codes(part, zeros, np.array([defaults[k]], dtype=np.uint64))
                continue
            column = table.column(k)
            if column.null_count:
                raise _NeedsFullRead
            _mix_arrow(part, column, seed)
    if start != len(h):
        raise _NeedsFullRead
    return h


def _mix_arrow(h: np.ndarray, column: pa.ChunkedArray, seed: int) -> None:
    """Mix one text column into the key hash `h` (of the column's rows), chunk by chunk."""
    import pyarrow as pa

    # The dictionaries of all chunks hashed in one polars call; each chunk's table is a slice.
    # A writable table and read-only codes: the signature `_key_hash` compiles (and the
    # install's warm-up caches), not a second one.
    dicts = [c.dictionary for c in column.chunks if pa.types.is_dictionary(c.type)]
    if dicts:
        texts = pl.Series(_ArrowStream(pa.chunked_array(dicts)))
        luts = np.array(texts.cast(pl.String).hash(seed=seed))
    at = 0  # where the next dictionary's hashes start in `luts`
    start = 0
    for chunk in column.chunks:
        part = h[start : start + len(chunk)]
        start += len(chunk)
        if pa.types.is_dictionary(chunk.type):
            lut = luts[at : at + len(chunk.dictionary)]
            at += len(chunk.dictionary)
            codes = _index_codes(chunk.indices)
            codes = codes.view(np.uint32) if codes.dtype == np.int32 else codes.astype(np.uint32)
            keycodes.mix_codes(part, _read_only(codes), lut)
        else:
            text_hash = pl.from_arrow(chunk).cast(pl.String).hash(seed=seed).to_numpy()
            keycodes.mix_hashes(part, _read_only(text_hash))


class _ArrowStream:
    """An Arrow array seen only through the Arrow C stream interface.

    `pl.from_arrow` (and `pl.Series` of a pyarrow object) imports pyarrow.compute on every call
    (~0.1 s of a fresh process, the GIL held), for a cast of multi-chunk dictionary arrays that
    plain text never needs; through this wrapper polars reads the stream as it is. Same values,
    same String hashes (tests/metrics/test_keycodes.py).
    """

    def __init__(self, array: pa.ChunkedArray) -> None:
        self._array = array

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self._array.__arrow_c_stream__(requested_schema)


def _index_codes(indices: pa.Array) -> np.ndarray:
    """A dictionary chunk's indices (no nulls: the caller checked) as a numpy view of their buffer.

    Not `Array.to_numpy`: even zero-copy, pyarrow's conversion imports pandas (~0.7 s of a fresh
    `mic analyze`, the GIL held most of it) to check for pandas types.
    """
    import pyarrow as pa

    kind = "i" if pa.types.is_signed_integer(indices.type) else "u"
    dtype = np.dtype(f"{kind}{indices.type.bit_width // 8}")
    data = indices.buffers()[1]
    if len(indices) == 0 or data is None:  # an empty chunk may have no data buffer at all
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(data, dtype=dtype)[indices.offset : indices.offset + len(indices)]


def _run_identity(path: Path) -> str:
    """The scored run a file belongs to: its run id and config hash when the file carries them
    (Parquet / Arrow written by `mic score`), else its folder."""
    import pyarrow.ipc
    import pyarrow.parquet as pq

    try:
        if _format_of(path) == "parquet":
            meta = pq.read_schema(path).metadata or {}
        elif _format_of(path) == "ipc":
            with pyarrow.ipc.open_file(path) as reader:
                meta = reader.schema.metadata or {}
        else:
            meta = {}
    except Exception:  # noqa: BLE001 - unreadable metadata: fall back to the folder
        meta = {}
    run_id, config = meta.get(b"run_id"), meta.get(b"config_hash")
    if run_id:
        return f"run {run_id.decode(errors='replace')} ({(config or b'').decode()[:12]})"
    return f"folder {path.resolve().parent}"


def _note_origin(df: pl.DataFrame, path: Path, origins: dict) -> None:
    if "model" not in df.columns:
        return  # the missing column is reported by validation
    prompts = df.get_column("prompt") if "prompt" in df.columns else None
    pairs = (
        df.select(pl.col("model").cast(pl.String), prompts.cast(pl.String).alias("prompt"))
        if prompts is not None
        else df.select(pl.col("model").cast(pl.String), pl.lit("default").alias("prompt"))
    )
    identity = _run_identity(path)
    # Lazily: the eager `unique` of two string columns took 3x the CPU at 1e6+ rows.
    for model, prompt in pairs.lazy().unique().collect().rows():
        origins.setdefault((str(model), str(prompt)), {}).setdefault(identity, str(path))


def _refuse_mixed_runs(origins: dict) -> None:
    for (model, prompt), runs in sorted(origins.items()):
        if len(runs) > 1:
            (a, fa), (b, fb) = list(runs.items())[:2]
            raise UserError(
                f"model {model!r}, prompt {prompt!r} comes from two different runs: {fa} ({a}) "
                f"and {fb} ({b}); their tasks and items would be merged into one",
                "pass --pool to merge them on purpose, or rename the model in one of the runs",
            )


def _where(run: ScoredRun, df: pl.DataFrame) -> str:
    sources = sorted(set(df.get_column(SOURCE).to_list()))
    return ", ".join(run.files[s] for s in sources[:2])


def validate(run: ScoredRun) -> ScoredRun:
    """Check values and cross-table consistency; raise `UserError` on the first problem.

    Returns the run with its sentences linked to their responses: column `_r` is the row index
    of the sentence's response (the join is done once here, on 64-bit key hashes, so later
    stages never join on strings again). Responses whose hashes collide fall back to an exact
    join; a sentence row without a response whose hash equals a response's (odds ~ responses /
    2^64 per such row) would be linked to it unchecked.

    A run read by `_read_keyed` (`sentence_keys` set, no key columns in `sentences`) is only
    vouched for: any problem raises `_NeedsFullRead`, and `read_scored` reads the run in full
    to name it.
    """
    if run.sentence_keys is None:
        return _validate(run)
    try:
        return _validate(run)
    except Exception as exc:  # noqa: BLE001 - a message asks for key columns the run lacks
        raise _NeedsFullRead from exc


def _validate(run: ScoredRun) -> ScoredRun:
    """`validate`."""
    r, s = run.responses, run.sentences
    # Codes and distinct values of the categorical key columns, found by the blank check and
    # reused by the key hash (each column is scanned once).
    codes: dict[str, dict[str, _CatColumn | None]] = {"responses": {}, "sentences": {}}
    for table, df, cols in (
        ("responses", r, [*KEY, "correct", "n_sentences"]),
        ("sentences", s, [*KEY, "sentence_idx", "marker"]),
    ):
        if table == "sentences" and run.sentence_keys is not None:
            cols = ["sentence_idx", "marker"]  # the keyed reader found no empty key
        counts = df.select(pl.col(cols).null_count()).row(0)
        for c, k in zip(cols, counts):
            if k:
                nulls = df.filter(pl.col(c).is_null())
                fix = (
                    "every row needs a value there (missing confidences go in 'confidence' as null)"
                )
                if c in OPTIONAL_DEFAULTS:
                    fix = f"fill it on every row, or leave the column out (it then reads {OPTIONAL_DEFAULTS[c]!r})"
                raise UserError(
                    f"{_where(run, nulls)}: column {c!r} has {k} empty value(s) in the {table} table",
                    fix,
                )
        if table == "sentences":
            # Link first (it raises nothing): a blank key in a sentence row is looked for only
            # when some row found no response, as such a row must (responses have no blank key).
            link = _link(r, s, codes["responses"], run.sentence_keys)
            if link[1] and not (link[0] < 0).any():
                break
        # The distinct values of the key columns, computed together (polars runs them on every
        # core), then checked one by one in key order.
        cats = {c: _cat_column(df.get_column(c)) for c in KEY}
        plain = [c for c in KEY if cats[c] is None]
        distinct = df.select(pl.col(c).unique().implode() for c in plain) if plain else None
        for c in KEY:
            values = cats[c].strings if cats[c] is not None else distinct.get_column(c).explode()
            _refuse_blank(run, df, c, table, values)
            codes[table][c] = cats[c]
    for c in ("confidence", "decisiveness"):
        bad_expr = pl.col(c).is_nan() | pl.col(c).is_infinite() | (pl.col(c) < 0) | (pl.col(c) > 1)
        if s.select(bad_expr.any()).item():
            bad = s.filter(bad_expr)
            v = bad.get_column(c)[0]
            raise UserError(
                f"{_where(run, bad)}: column {c!r} has {bad.height} value(s) outside [0, 1] or NaN (first: {v})",
                "use numbers in [0, 1]; write a missing value as null (empty in CSV), not NaN",
            )
    if r.select((pl.col("n_sentences") < 0).any()).item():
        neg = r.filter(pl.col("n_sentences") < 0)
        raise UserError(
            f"{_where(run, neg)}: column 'n_sentences' has negative values",
            "use the response's sentence count",
        )
    marker = _cat_column(s.get_column("marker"))  # None unless categorical (a file's is)
    blank_marker = pl.col("marker").cast(pl.String).str.strip_chars().str.len_bytes() == 0
    distinct = marker.strings if marker is not None else None
    any_blank = (
        distinct.str.strip_chars().str.len_bytes().eq(0).any()
        if distinct is not None
        else s.select(blank_marker.any()).item()
    )
    if any_blank:
        empty_marker = s.filter(blank_marker)
        raise UserError(
            f"{_where(run, empty_marker)}: column 'marker' has {empty_marker.height} empty or blank value(s)",
            f"write {NO_HEDGE!r} for a sentence with no hedge",
        )

    r_np, unique, rh, rh3 = link
    del link, codes
    if not unique:
        dup = r.filter(pl.Series(_duplicated(rh))).filter(pl.struct(KEY).is_duplicated())
        if dup.height:
            _raise_duplicate(run, dup, KEY, "response")
        rr = r.select(KEY).with_row_index("_r")
        joined = s.select(KEY).join(rr, on=KEY, how="left", nulls_equal=True, maintain_order="left")
        r_np = joined.get_column("_r").fill_null(-1).to_numpy().astype(np.int64)
    missing = r_np < 0
    if missing.any():
        orphan = s.filter(pl.Series(missing))
        row = orphan.row(0, named=True)
        raise UserError(
            f"{_where(run, orphan)}: {orphan.height} sentence row(s) have no response row "
            f"(first: model={row['model']!r} task={row['task']!r} split={row['split']!r} item_id={row['item_id']!r})",
            "responses and sentences must come from the same scoring run",
        )
    linked = s  # row order kept: `_r` is added as a column at the end
    nsent = r.get_column("n_sentences").to_numpy()[r_np]
    sidx = linked.get_column("sentence_idx").to_numpy()
    over = (sidx < 0) | (sidx >= nsent)
    if over.any():
        k = int(np.flatnonzero(over)[0])
        row = linked.row(k, named=True)
        raise UserError(
            f"{_where(run, linked.filter(pl.Series(over)))}: column 'sentence_idx' is {row['sentence_idx']} for item "
            f"{row['item_id']!r} whose n_sentences is {nsent[k]}",
            "sentence_idx counts from 0 and must be below the response's n_sentences",
        )
    # (response, sentence, marker) rows: unique; and n_sentences is the response's own count.
    marker_code = (
        marker.codes
        if marker is not None
        else linked.get_column("marker").cast(pl.Categorical).to_physical().to_numpy()
    )
    ptr, order = kernels.by_response(r_np, r.height)
    first, n_seen = kernels.sentence_rows(ptr, order, sidx, marker_code)
    if first >= 0:
        row = linked.row(int(first), named=True)
        dup = linked.filter(
            (pl.col("sentence_idx") == row["sentence_idx"]) & (pl.col("marker") == row["marker"])
            & pl.Series(r_np == r_np[first])
        )  # fmt: skip
        _raise_duplicate(run, dup, [*KEY, "sentence_idx", "marker"], "(item, sentence, marker)")
    _check_sentence_counts(run, r.get_column("n_sentences").to_numpy(), n_seen)
    # A task with responses but not a single sentence row cannot give any MIC.
    has_rows = np.zeros(r.height, dtype=bool)
    has_rows[r_np] = True
    # Grouped on a 64-bit hash of (model, prompt, task) in a compiled pass: a polars group_by
    # on the three columns of every response was the peak of a 1e7-row analysis (+0.8 GB), and
    # sorting the hashes (np.unique) took longer than the pass.
    uniq, first_row, n_with_rows, triple = keycodes.groups_with_rows(rh3, has_rows)
    empty = np.flatnonzero(n_with_rows == 0)
    if empty.size:
        # The group with the smallest hash: the one reported first when they were sorted.
        k = int(empty[np.argmin(uniq[empty])])
        row = r.row(int(first_row[k]), named=True)
        raise UserError(
            f"{_where(run, r.filter(pl.col('task') == row['task']))}: task {row['task']!r} "
            f"(model {row['model']!r}) has responses but no sentence rows",
            "re-run the scoring stage for that task, or drop its responses",
        )
    # Later stages need only these sentence columns: let the string keys go.
    slim = s.select("sentence_idx", "marker", "confidence", "decisiveness", SOURCE)
    return ScoredRun(
        r,
        slim.with_columns(pl.Series("_r", r_np)),
        run.files,
        by_response=(r_np, ptr, order),
        triples=(triple, first_row),
    )


# No response has a million sentences: a count above this is a wrong column or a corrupt value,
# and it would pass for a response whose sentences are all missing.
MAX_SENTENCES = 1_000_000


def _check_sentence_counts(run: ScoredRun, n_sentences: np.ndarray, n_seen: np.ndarray) -> None:
    """n_sentences must be the number of sentences the response has rows for.

    Every sentence has at least one row (marker `<no_hedge>` when it carries no hedge; missing
    confidences are null), so a larger count would invent sentences: f(r) = 1 - sum / |S(r)|
    drifts to 1 as |S(r)| grows. A response without any row only needs a sane count.
    """
    bad = ((n_seen > 0) & (n_sentences != n_seen)) | (n_sentences > MAX_SENTENCES)
    if not bad.any():
        return
    k = int(np.flatnonzero(bad)[0])
    rows = run.responses.filter(pl.Series(bad))
    row = run.responses.row(k, named=True)
    raise UserError(
        f"{_where(run, rows)}: column 'n_sentences' is {n_sentences[k]} for item {row['item_id']!r} "
        f"(task {row['task']!r}), which has rows for {n_seen[k]} sentence(s); {rows.height} response(s) disagree",
        f"n_sentences counts the response's sentences, each with at least one row (marker {NO_HEDGE!r} "
        f"when it has no hedge), and is at most {MAX_SENTENCES:,}",
    )


@dataclass(frozen=True)
class _CatColumn:
    """A categorical column without nulls as numpy codes, with its distinct codes and texts."""

    codes: np.ndarray  # uint32 per row
    n_codes: int  # codes are below this
    present: np.ndarray  # the distinct codes
    strings: pl.Series  # their texts (String), in the order of `present`


def _read_only(a: np.ndarray) -> np.ndarray:
    """`a` marked read-only. Polars hands out its own memory read-only for a column in one
    chunk and a writable copy for one in several; numba compiles a kernel once per kind, and the
    install script's warm-up (a small single-chunk file) only reaches the read-only kind."""
    a.flags.writeable = False
    return a


def _cat_column(col: pl.Series) -> _CatColumn | None:
    """The codes and distinct texts of a Categorical column; None for another dtype or nulls.

    The distinct codes come from one compiled pass over the codes (a polars `unique` of a
    categorical of 1e7 rows took ~0.1 s per column), their texts from one row each.
    """
    if not isinstance(col.dtype, pl.Categorical) or col.null_count():
        return None
    codes = _read_only(col.to_physical().to_numpy())
    n_codes = int(codes.max(initial=0)) + 1
    first = keycodes.first_rows(codes, n_codes)
    present = np.flatnonzero(first >= 0)
    strings = col.gather(first[present]).cast(pl.String)
    return _CatColumn(codes, n_codes, present, strings)


def _link(
    r: pl.DataFrame,
    s: pl.DataFrame,
    cats: dict[str, _CatColumn | None],
    sh: np.ndarray | None = None,
) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
    """Link each sentence row to its response by a 64-bit hash of the key (one hash table, no
    string join).

    Responses are unique iff their hashes are (a collision falls back to an exact join on the
    key columns). A valid row's own response is always found; a wrong link would need a row with
    no response whose hash collides with another response's (odds ~ R/2^64 per orphan row, and
    only on data that is invalid anyway).

    Args:
        r: the responses.
        s: the sentences.
        cats: `_CatColumn`s of the responses' key columns already built.
        sh: the sentences' key hashes when already computed (`_read_keyed`).

    Returns:
        (response index per row or -1, whether the response hashes are unique, the response key
        hashes, their (model, prompt, task) hashes).
    """
    # (model, prompt, task) is the key's first three columns: its hash is a step of the full one.
    rh3 = _key_hash(r, KEY[:3], cats)
    rh = _key_hash(r, KEY[3:], cats, h=rh3.copy(), start=3)
    if sh is None:
        sh = _key_hash(s, KEY)
    r_np, unique = keycodes.link(rh, sh)
    return r_np, unique, rh, rh3


def _refuse_blank(
    run: ScoredRun, df: pl.DataFrame, name: str, table: str, distinct: pl.Series
) -> None:
    """A key made of white space only names nothing (and prints as nothing): refuse it.

    Checked on the distinct values of the column (`distinct`), so a categorical column of 1e7
    rows costs a few lookups.
    """
    distinct = distinct.drop_nulls().cast(pl.String)
    blank = distinct.filter(distinct.str.strip_chars().str.len_bytes() == 0)
    if blank.len():
        rows = df.filter(pl.col(name).cast(pl.String).is_in(blank.implode()))
        raise UserError(
            f"{_where(run, rows)}: column {name!r} has {rows.height} blank value(s) in the {table} table",
            f"give every row a {name} that is not empty or white space",
        )


def _string_hash(col: pl.Series, seed: int) -> np.ndarray:
    """Hash of each value's string, for a String or a Categorical column (equal for equal text).

    A categorical is hashed through its distinct values and their codes: no full string column
    is materialized.
    """
    if not isinstance(col.dtype, pl.Categorical):
        return col.hash(seed=seed).to_numpy()
    distinct = col.unique().drop_nulls()
    codes = distinct.to_physical().to_numpy().astype(np.int64)
    lut = np.zeros(int(codes.max(initial=0)) + 1, dtype=np.uint64)
    lut[codes] = distinct.cast(pl.String).hash(seed=seed).to_numpy()
    physical = col.to_physical()
    out = lut[physical.fill_null(0).to_numpy()]
    if physical.null_count():
        null_hash = pl.Series([None], dtype=pl.String).hash(seed=seed).to_numpy()[0]
        out[physical.is_null().to_numpy()] = null_hash
    return out


def _column_seed(position: int) -> int:
    """The polars hash seed of the key column at `position`: `_key_hash` and the keyed reader
    (`_key_hashes`) must agree on it, or a keyed run would link nothing."""
    return 7 + position


def _key_hash(
    df: pl.DataFrame,
    key: tuple[str, ...] | list[str] = KEY,
    cats: dict[str, _CatColumn | None] | None = None,
    h: np.ndarray | None = None,
    start: int = 0,
) -> np.ndarray:
    """A 64-bit hash of each row's response key (or of the columns `key`), column by column.

    Cheaper in memory than hashing a struct of the key columns, which builds a row encoding of
    all five strings at once (hundreds of MB at 1e7 rows).

    Args:
        df: the table.
        key: the columns to hash, in order.
        cats: `_CatColumn`s already built for some columns (hashed through their codes).
        h: the hash of the columns before `key`, extended in place (None: start from zero).
        start: how many columns `h` already covers (each column's seed is its position).
    """
    if h is None:
        h = np.zeros(df.height, dtype=np.uint64)
    for i, k in enumerate(key, start=start):
        seed = _column_seed(i)
        col = df.get_column(k)
        cat = (cats or {}).get(k) or _cat_column(col)
        if cat is not None:
            lut = np.zeros(cat.n_codes, dtype=np.uint64)
            lut[cat.present] = cat.strings.hash(seed=seed).to_numpy()
            keycodes.mix_codes(h, cat.codes, lut)
        else:
            keycodes.mix_hashes(h, _read_only(_string_hash(col, seed)))
    return h


def _duplicated(values: np.ndarray) -> np.ndarray:
    """Mask of entries whose value occurs more than once (sort-based; numpy beats a hash here)."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    same = v[1:] == v[:-1]
    mask_sorted = np.zeros(len(v), dtype=bool)
    mask_sorted[1:] |= same
    mask_sorted[:-1] |= same
    mask = np.empty(len(v), dtype=bool)
    mask[order] = mask_sorted
    return mask


def _raise_duplicate(run: ScoredRun, dup: pl.DataFrame, key: list[str], what: str) -> None:
    row = dup.row(0, named=True)
    desc = " ".join(f"{k}={row[k]!r}" for k in key)
    raise UserError(
        f"{_where(run, dup)}: duplicate {what} rows ({dup.height} rows; first: {desc})",
        "each key must appear once; drop the duplicates or give repeated runs different model/prompt names",
    )
