"""The data contract (docs/method.md §8), defined once and imported by the engine and the analysis.

- Arrow schemas of the generations and the scored run, and the polars dtypes derived from them
  (`polars_dtypes`). Every file written carries schema metadata: schema version, run id and the
  config hash of the stage that wrote it (`with_metadata`).
- `RunLayout`: the name of every file and folder of a run / study directory.
- `safe_file_name` and `inside`: a name from a spec or a run record becomes a file name only
  through `safe_file_name`, and every path written under a run / study directory is checked by
  `inside` to stay under it (a task named `../../x` or a tampered hash cannot escape).
- How those files are written and identified: `atomic_write` (all or nothing, fsynced) and
  `content_hash` (the key of a stage's inputs and settings).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from engine.errors import UserError

if TYPE_CHECKING:
    import pyarrow as pa

SCHEMA_VERSION = "1"
NO_HEDGE = "<no_hedge>"
# Keys that identify a response; `prompt` may be absent from user files (one prompt).
RESPONSE_KEY = ("model", "task", "split", "prompt", "item_id")

# The Arrow schemas (RESPONSES, SENTENCES, TOPK_ENTRY, GENERATIONS) are built on first use
# (module __getattr__, PEP 562): importing pyarrow costs ~0.25 s, and `mic --help` and the
# commands that never touch a file should not pay it.
_SCHEMA_NAMES = ("RESPONSES", "SENTENCES", "TOPK_ENTRY", "GENERATIONS")


@functools.cache
def _schemas() -> dict[str, Any]:
    import pyarrow as pa

    # ---- scored run (input of `mic analyze`) -------------------------------------------------------

    RESPONSES = pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("split", pa.string()),
            ("prompt", pa.string()),
            ("item_id", pa.string()),
            ("correct", pa.bool_()),
            ("n_sentences", pa.int32()),
        ]
    )

    SENTENCES = pa.schema(
        [
            ("model", pa.string()),
            ("task", pa.string()),
            ("split", pa.string()),
            ("prompt", pa.string()),
            ("item_id", pa.string()),
            ("sentence_idx", pa.int32()),
            ("marker", pa.string()),
            ("raw_marker", pa.string()),
            ("confidence", pa.float64()),
            ("decisiveness", pa.float64()),
        ]
    )

    # ---- generations (engine output; one row per item x sample) -----------------------------------

    TOPK_ENTRY = pa.struct([("token_id", pa.int32()), ("logprob", pa.float32())])

    GENERATIONS = pa.schema(
        [
            ("run_id", pa.string()),
            ("unit_id", pa.string()),
            ("model", pa.string()),
            ("task", pa.string()),
            ("split", pa.string()),
            ("prompt", pa.string()),
            ("item_id", pa.string()),
            ("sample_idx", pa.int32()),
            ("seed", pa.int64()),
            ("prompt_text", pa.string()),
            ("text", pa.string()),
            ("token_ids", pa.list_(pa.int32())),
            ("logprobs", pa.list_(pa.float32())),
            ("top_logprobs", pa.list_(pa.list_(TOPK_ENTRY))),
            ("cumulative_logprob", pa.float64()),
            ("finish_reason", pa.string()),
            ("error", pa.string()),
            ("prompt_tokens", pa.int32()),
            ("gen_seconds", pa.float64()),
        ]
    )
    built = {"RESPONSES": RESPONSES, "SENTENCES": SENTENCES, "TOPK_ENTRY": TOPK_ENTRY}
    built["GENERATIONS"] = GENERATIONS
    if tuple(RESPONSES.names[:5]) != RESPONSE_KEY:  # the literal above must follow the schema
        raise RuntimeError("engine.contract: RESPONSE_KEY differs from RESPONSES' first columns")
    return built


def __getattr__(name: str) -> Any:
    if name in _SCHEMA_NAMES:
        return _schemas()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def with_metadata(schema: pa.Schema, run_id: str, config_hash: str, **extra: str) -> pa.Schema:
    """Return `schema` carrying the contract's metadata (schema version, run id, config hash)."""
    meta = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "config_hash": config_hash}
    meta.update(extra)
    return schema.with_metadata({k: str(v) for k, v in meta.items()})


def polars_dtypes(schema: pa.Schema, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The polars dtype of every column of an Arrow schema, in the schema's order.

    Args:
        schema: One of the contract's schemas.
        exclude: Columns to leave out (e.g. those a reader does not use).

    Returns:
        Column name -> polars dtype (`pl.String` for `pa.string()`, `pl.Int32`, ...).
    """
    import polars as pl  # the generation engine's hot path does not need polars
    import pyarrow as pa

    # The flat types of the scored-run schemas map directly. Anything else goes through an empty
    # Arrow table, which makes pyarrow import pandas (half a second of every `mic analyze`).
    flat = {
        pa.string(): pl.String,
        pa.large_string(): pl.String,
        pa.bool_(): pl.Boolean,
        pa.int32(): pl.Int32,
        pa.int64(): pl.Int64,
        pa.float32(): pl.Float32,
        pa.float64(): pl.Float64,
    }
    skip = set(exclude)
    if all(field.type in flat for field in schema):
        return {f.name: flat[f.type] for f in schema if f.name not in skip}
    frame = pl.from_arrow(schema.empty_table())
    return {name: dtype for name, dtype in frame.schema.items() if name not in skip}


# ---- names that become paths ------------------------------------------------------------------

# A name already safe as a file name on every file system we write to (and not hidden).
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str) -> str:
    """The file name (without extension) that stands for `name` (a task, model or prompt name).

    Names made of letters, digits, `.`, `_` and `-` (not starting with `.`, `_` or `-`, at most 100
    characters) are used as they are, so existing runs keep their file names. Any other name
    (`org/model`, `../../x`, `/abs/path`, spaces, non-ASCII) is mapped to its safe characters plus
    the first 10 hex digits of its sha256: distinct names stay distinct, and none can leave the
    directory it is written into.

    Args:
        name: The name.

    Returns:
        A file name of 1-100 characters from `[A-Za-z0-9._-]`.
    """
    if _SAFE_NAME.fullmatch(name):
        return name
    slug = _UNSAFE_CHARS.sub("_", name).strip("._-")[:64] or "name"
    return f"{slug}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def is_plain_file_name(name: object) -> bool:
    """True for a string usable as one file name inside a folder (no separator, not `.`/`..`).

    For names read back from a run's records (a done-record's shard): a tampered record must not
    point a read, move or delete outside the run directory.
    """
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in ("/", "\\", "\0"))
    )


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """`path` if it lies under `root` (after making both absolute and removing `..`), else raise.

    The one guard every write of a run / study directory goes through (`RunLayout`'s named paths,
    `atomic_write(..., root=)`, `RunStore.path`, a study's prepared task files, `--new-run`'s move
    to `superseded/`). The check is lexical: symbolic links the user made inside the directory
    (e.g. `shards/` on another disk) keep working; what it stops is a name that climbs out.

    Args:
        root: The output directory.
        path: A path meant to lie under it (absolute, or relative to the working directory).

    Returns:
        `path` as given (as a `Path`).

    Raises:
        UserError: The path is not under `root`.
    """
    base = os.path.normpath(os.path.abspath(root))
    target = os.path.normpath(os.path.abspath(path))
    if target != base and not target.startswith(base.rstrip(os.sep) + os.sep):
        raise UserError(
            f"refusing to use {path}: it is outside the output directory {root}",
            "a name in the spec or a run record climbs out of the directory; rename it "
            "(names become file names) or restore the damaged record",
        )
    return Path(path)


# ---- run directory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLayout:
    """Every path of a run / study directory (class attributes are the names, relative to it).

    Generation (`engine.generate.store`) writes `run.json`, `manifest.json`, `summary.json`, `.lock`,
    `shards/` and `done/`; scoring writes `stages/<stage>/` and `scored/`; a study adds
    `study.json`, `tasks/`, `analysis/` and `report.html`.

    Args:
        root: The directory.
    """

    root: Path

    RUN: ClassVar[str] = "run.json"
    MANIFEST: ClassVar[str] = "manifest.json"
    SUMMARY: ClassVar[str] = "summary.json"
    LOCK: ClassVar[str] = ".lock"
    SHARDS: ClassVar[str] = "shards"
    DONE: ClassVar[str] = "done"
    STALE: ClassVar[str] = (
        "stale"  # done-records (+ shards) of units a resume found outside the plan
    )
    STAGES: ClassVar[str] = "stages"
    STAGE_DONE: ClassVar[str] = "done.json"
    STAGE_ERRORS: ClassVar[str] = "errors.jsonl"
    SCORED: ClassVar[str] = "scored"
    SCORE_RECORD: ClassVar[str] = "score.json"
    CANONICAL_MAP: ClassVar[str] = "canonical_map.json"
    STUDY: ClassVar[str] = "study.json"
    WAVES: ClassVar[str] = "waves.json"  # `mic study --target-width`: the wave log
    TASKS: ClassVar[str] = "tasks"
    ANALYSIS: ClassVar[str] = "analysis"
    METRICS: ClassVar[str] = "metrics.json"
    MIC: ClassVar[str] = "mic.parquet"
    COMPARISONS: ClassVar[str] = "comparisons.parquet"
    REPORT: ClassVar[str] = "report.html"
    TEMP_MARK: ClassVar[str] = ".partial-"  # in the name of a file being written (`atomic_write`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def run_record(self) -> Path:
        return self.root / self.RUN

    @property
    def stages(self) -> Path:
        return self.root / self.STAGES

    def stage(self, name: str) -> Path:
        """The directory of scoring stage `name`."""
        return inside(self.root, self.root / self.STAGES / name)

    def stage_done(self, name: str) -> Path:
        return self.stage(name) / self.STAGE_DONE

    def stage_errors(self, name: str) -> Path:
        return self.stage(name) / self.STAGE_ERRORS

    @property
    def scored(self) -> Path:
        return self.root / self.SCORED

    def scored_table(self, name: str) -> Path:
        """`scored/<name>.parquet` (name: "responses" or "sentences")."""
        return inside(self.root, self.scored / f"{name}.parquet")

    @property
    def score_record(self) -> Path:
        return self.scored / self.SCORE_RECORD

    @property
    def canonical_map(self) -> Path:
        return self.scored / self.CANONICAL_MAP

    @property
    def study(self) -> Path:
        return self.root / self.STUDY

    @property
    def waves(self) -> Path:
        return self.root / self.WAVES

    def task_file(self, name: str) -> Path:
        """`tasks/<file name>.jsonl`, a study's prepared task file (`safe_file_name` of the task)."""
        return inside(self.root, self.root / self.TASKS / f"{safe_file_name(name)}.jsonl")

    @property
    def analysis(self) -> Path:
        return self.root / self.ANALYSIS

    @property
    def report(self) -> Path:
        return self.root / self.REPORT


# ---- writing and identifying files --------------------------------------------------------------


def atomic_write(
    path: str | Path,
    data: bytes | str | Callable[[str], Any],
    *,
    root: str | os.PathLike[str] | None = None,
) -> None:
    """Write a local file so that readers see all of it or nothing, and it survives a crash.

    The data goes to a temp file beside `path` (named with `RunLayout.TEMP_MARK`), which is
    fsynced and renamed over `path`; the directory is fsynced so the rename is durable too. A
    failed write (disk full) removes its temp file.

    Args:
        path: The target file; its directory is created.
        data: Bytes, text (UTF-8), or a function that writes the file at the path it is given
            (e.g. `lambda p: df.write_parquet(p)`).
        root: The output directory `path` must lie under (`inside`); pass it whenever part of
            the path comes from a name.

    Raises:
        UserError: `path` is not under `root`.
    """
    path = Path(path) if root is None else inside(root, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}{RunLayout.TEMP_MARK}{uuid.uuid4().hex[:8]}"
    try:
        if callable(data):
            data(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        else:
            with open(tmp, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def content_hash(data: Any) -> str:
    """SHA-256 of the canonical JSON of `data` (sorted keys, compact, `str` for other types).

    The key of a stage's inputs and settings: equal data give equal keys across runs and machines.
    """
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
