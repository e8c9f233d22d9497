"""In-memory inputs of `analyze`: polars / pandas DataFrames and LazyFrames instead of files.

`as_scored_run` takes whatever a notebook holds - a scored-run directory or files (read by
`metrics.io.read_scored`), one long table, or a (responses, sentences) pair / mapping - and returns
the same validated `ScoredRun` the file reader does, with the same column checks and messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import UserError
from metrics.io import (
    RESPONSE_COLUMNS,
    SENTENCE_COLUMNS,
    ScoredRun,
    _conform,
    _split_long,
    read_scored,
    validate,
)


def _is_frame(obj: Any) -> bool:
    if isinstance(obj, pl.DataFrame | pl.LazyFrame):
        return True
    module = type(obj).__module__
    return module.startswith("pandas") and type(obj).__name__ == "DataFrame"


def _to_polars(obj: Any, what: str) -> pl.DataFrame:
    if isinstance(obj, pl.LazyFrame):
        return obj.collect()
    if isinstance(obj, pl.DataFrame):
        return obj
    if _is_frame(obj):  # pandas: through Arrow (pyarrow is a core dependency)
        return pl.from_pandas(obj)
    raise UserError(
        f"{what} is a {type(obj).__name__}, not a table",
        "pass a polars or pandas DataFrame / LazyFrame, a scored-run directory or files",
    )


def as_scored_run(scored: Any, pool: bool = False) -> ScoredRun:
    """A validated scored run from paths, one long table, or responses + sentences tables.

    Args:
        scored: A `ScoredRun` (taken as it is); a path or a list of paths (directories or long-table files); one
            DataFrame / LazyFrame holding both column sets (the long table); a
            (responses, sentences) tuple; or a mapping {"responses": ..., "sentences": ...}.
        pool: See `metrics.io.read_scored` (paths only).

    Returns:
        The validated `ScoredRun`.

    Raises:
        UserError: A missing column, a wrong type, an empty table, a value out of range, ... (the
            message names the table, e.g. "<sentences DataFrame>", and the column).
    """
    if isinstance(scored, ScoredRun):
        return scored  # built in memory by this package (e.g. `metrics.simulate.sample`)
    if isinstance(scored, Mapping):
        unknown = sorted(set(scored) - {"responses", "sentences"})
        if unknown or set(scored) != {"responses", "sentences"}:
            raise UserError(
                f"the tables given are {sorted(scored)}",
                'pass {"responses": ..., "sentences": ...} (or one long table)',
            )
        scored = (scored["responses"], scored["sentences"])
    if _is_frame(scored):
        df = _to_polars(scored, "the scored table")
        _require_rows(df, "<long-table DataFrame>")
        resp, sent = _split_long(df, Path("<long-table DataFrame>"), 0)
        return validate(ScoredRun(resp, sent, ("<long-table DataFrame>",)))
    if isinstance(scored, tuple) and len(scored) == 2 and any(_is_frame(x) for x in scored):
        names = ("<responses DataFrame>", "<sentences DataFrame>")
        resp = _to_polars(scored[0], "responses")
        sent = _to_polars(scored[1], "sentences")
        _require_rows(resp, names[0])
        _require_rows(sent, names[1])
        return validate(
            ScoredRun(
                _conform(resp, RESPONSE_COLUMNS, Path(names[0]), 0),
                _conform(sent, SENTENCE_COLUMNS, Path(names[1]), 1),
                names,
            )
        )
    return read_scored(scored, pool=pool)


def _require_rows(df: pl.DataFrame, name: str) -> None:
    if df.height == 0:
        raise UserError(f"{name}: the table has no rows", "pass the scored run's rows")
