"""Reading and validating scored runs (docs/method.md §8) into two polars tables.

A scored run is a directory holding a `responses` and a `sentences` table, or one long table with
both sets of columns. Each table may be Parquet, Arrow IPC, CSV or JSONL, and may be a single file
(`responses.parquet`) or a folder of shards (`responses/*.parquet`). Several scored runs (several
models, or one run split over files) are concatenated; row order and file split never matter.

Every problem a user can fix raises `UserError` naming the file, the column and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from engine.contract import NO_HEDGE
from engine.errors import UserError
from metrics import kernels

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

RESPONSE_COLUMNS = {
    "model": pl.String,
    "task": pl.String,
    "split": pl.String,
    "prompt": pl.String,
    "item_id": pl.String,
    "correct": pl.Boolean,
    "n_sentences": pl.Int32,
}
SENTENCE_COLUMNS = {
    "model": pl.String,
    "task": pl.String,
    "split": pl.String,
    "prompt": pl.String,
    "item_id": pl.String,
    "sentence_idx": pl.Int32,
    "marker": pl.String,
    "confidence": pl.Float64,
    "decisiveness": pl.Float64,
}
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
    """

    responses: pl.DataFrame
    sentences: pl.DataFrame
    files: tuple[str, ...]


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
# full), they take 4 bytes a row instead of 16+. Linking hashes their string values.
COMPACT = ("model", "prompt", "task", "split", "item_id")


def _read(path: Path, compact: bool = False) -> pl.DataFrame:
    fmt = _format_of(path)
    try:
        if fmt in ("parquet", "ipc"):
            lazy = pl.scan_parquet(path) if fmt == "parquet" else pl.scan_ipc(path)
            schema = lazy.collect_schema()
            cols = []
            for c in schema.names():
                if c not in NEEDED:
                    continue
                if compact and c in COMPACT and schema[c] == pl.String:
                    cols.append(pl.col(c).cast(pl.Categorical))
                else:
                    cols.append(pl.col(c))
            return lazy.select(cols).collect(engine="streaming" if compact else "auto")
        if fmt == "csv":
            return pl.read_csv(
                path, infer_schema_length=10000, schema_overrides={"item_id": pl.String}
            )
        return pl.read_ndjson(path, infer_schema_length=10000)
    except UserError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:  # the user needs the file named
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: cannot be read as {fmt}: {first}",
            "check the file is complete and in that format",
        ) from None


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


def _conform(
    df: pl.DataFrame, columns: dict[str, pl.DataType], path: Path, source: int
) -> pl.DataFrame:
    """Check and cast the columns of one file to the contract's types."""
    missing = [c for c in columns if c not in df.columns and c not in OPTIONAL_DEFAULTS]
    if missing:
        raise UserError(
            f"{path}: missing column {missing[0]!r}"
            + (f" (and {missing[1:]})" if missing[1:] else ""),
            f"add it; a scored run's columns are {list(columns)} (docs/method.md §8)",
        )
    exprs = []
    for name, dtype in columns.items():
        if name not in df.columns:
            default = OPTIONAL_DEFAULTS[name]
            exprs.append(pl.lit(default, dtype=dtype).alias(name))
            continue
        have = df.schema[name]
        if dtype == pl.String and have == pl.Categorical:  # compact key column (see COMPACT)
            exprs.append(pl.col(name))
            continue
        if name == "item_id" and have != pl.String:
            if not (have.is_integer() or have == pl.String):
                raise UserError(
                    f"{path}: column 'item_id' has type {have}",
                    "use strings or integers for item ids",
                )
            exprs.append(pl.col(name).cast(pl.String))
            continue
        if have == dtype:
            exprs.append(pl.col(name))
            continue
        ok = (
            (dtype == pl.Float64 and (have.is_numeric() or have == pl.Null))
            or (dtype == pl.Int32 and have.is_integer())
            or (dtype == pl.String and have == pl.Null)
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
        exprs.append(pl.col(name).cast(dtype))
    return df.select(exprs).with_columns(pl.lit(source, dtype=pl.Int32).alias(SOURCE))


def _split_long(df: pl.DataFrame, path: Path, source: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split one long table (both column sets) into responses and sentences."""
    resp = _conform(df, RESPONSE_COLUMNS, path, source)
    sent = _conform(df, SENTENCE_COLUMNS, path, source)
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
    responses, sentences, files = [], [], []
    origins: dict[tuple[str, str], dict[str, str]] = {}  # (model, prompt) -> run -> a file
    for path in paths:
        for role, f in _resolve(path):
            source = len(files)
            files.append(str(f))
            df = _read(f, compact=role == "sentences")
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
                sentences.append(_conform(df, SENTENCE_COLUMNS, f, source))
            else:
                r, s = _split_long(df, f, source)
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
    return validate(ScoredRun(resp, sent, tuple(files)))


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
    for model, prompt in pairs.unique().rows():
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
    of the sentence's response (the join is done once here, on 64-bit key hashes, and verified
    against the key columns, so later stages never join on strings again).
    """
    r, s = run.responses, run.sentences
    for table, df, cols in (
        ("responses", r, ["model", "task", "item_id", "correct", "n_sentences"]),
        ("sentences", s, ["model", "task", "item_id", "sentence_idx", "marker"]),
    ):
        counts = df.select(pl.col(cols).null_count()).row(0)
        for c, k in zip(cols, counts):
            if k:
                nulls = df.filter(pl.col(c).is_null())
                raise UserError(
                    f"{_where(run, nulls)}: column {c!r} has {k} empty value(s) in the {table} table",
                    "every row needs a value there (missing confidences go in 'confidence' as null)",
                )
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
    if s.select((pl.col("marker").str.len_bytes() == 0).any()).item():
        empty_marker = s.filter(pl.col("marker").str.len_bytes() == 0)
        raise UserError(
            f"{_where(run, empty_marker)}: column 'marker' has {empty_marker.height} empty string(s)",
            f"write {NO_HEDGE!r} for a sentence with no hedge",
        )

    # Link each sentence row to its response by a 64-bit hash of the key (one hash table, no
    # string join). Responses are unique iff their hashes are (a collision falls back to an exact
    # join on the key columns). A valid row's own response is always found; a wrong link would
    # need a row with no response whose hash collides with another response's (odds ~ R/2^64 per
    # orphan row, and only on data that is invalid anyway).
    rh = _key_hash(r)
    sh = _key_hash(s)
    r_np, unique = kernels.hash_link(rh, sh)
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
    # (response, sentence, marker) rows: unique (a scan within each response's rows).
    marker_code = linked.get_column("marker").cast(pl.Categorical).to_physical().to_numpy()
    ptr, order = kernels.by_response(r_np, r.height)
    first = kernels.first_duplicate(ptr, order, sidx, marker_code)
    if first >= 0:
        row = linked.row(int(first), named=True)
        dup = linked.filter(
            (pl.col("sentence_idx") == row["sentence_idx"]) & (pl.col("marker") == row["marker"])
            & pl.Series(r_np == r_np[first])
        )  # fmt: skip
        _raise_duplicate(run, dup, [*KEY, "sentence_idx", "marker"], "(item, sentence, marker)")
    # A task with responses but not a single sentence row cannot give any MIC.
    has_rows = np.zeros(r.height, dtype=bool)
    has_rows[r_np] = True
    per_task = (
        r.with_columns(pl.Series("_has", has_rows))
        .group_by("model", "prompt", "task")
        .agg(pl.col("_has").any())
    )
    empty = per_task.filter(~pl.col("_has"))
    if empty.height:
        row = empty.row(0, named=True)
        raise UserError(
            f"{_where(run, r.filter(pl.col('task') == row['task']))}: task {row['task']!r} "
            f"(model {row['model']!r}) has responses but no sentence rows",
            "re-run the scoring stage for that task, or drop its responses",
        )
    # Later stages need only these sentence columns: let the string keys go.
    slim = s.select("sentence_idx", "marker", "confidence", "decisiveness", SOURCE)
    return ScoredRun(r, slim.with_columns(pl.Series("_r", r_np)), run.files)


def _string_hash(col: pl.Series, seed: int) -> np.ndarray:
    """Hash of each value's string, for a String or a Categorical column (equal for equal text).

    A categorical is hashed through its distinct values and their codes: no full string column
    is materialized.
    """
    if col.dtype != pl.Categorical:
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


def _key_hash(df: pl.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row's response key, column by column.

    Cheaper in memory than hashing a struct of the key columns, which builds a row encoding of
    all five strings at once (hundreds of MB at 1e7 rows).
    """
    h = np.zeros(df.height, dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for i, k in enumerate(KEY):
            col = _string_hash(df.get_column(k), seed=7 + i)
            h ^= col
            h *= mult
            h ^= h >> np.uint64(29)
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
