"""Run storage: write-once Arrow shards, done-records, the manifest view, the run lock.

Layout of a run directory (a local path or a pyarrow filesystem URI such as `s3://bucket/run`)::

    run.json               the spec (canonical content and its hash), written at first start
    shards/<unit>-<attempt>.arrow    one Arrow IPC file (zstd) per finished unit, write-once name
    done/<unit>.json       done-record: unit id, shard name, rows, sha256 of the shard
    manifest.json          a view rebuilt from the done-records (never the only copy of the truth)
    summary.json           throughput accounting of the last run
    .lock                  pid + host of the run holding the directory
    stale/<time>/          done-records (and shards) of units a resume found outside the plan

A unit is finished iff its done-record exists and its shard's checksum matches. Object stores have
no atomic rename, so the commit never depends on one: the shard gets a fresh attempt id and the
done-record (a single small put) is the commit point. On a local disk files are also fsynced and
renamed into place, so a reader globbing `shards/*.arrow` never sees a torn file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from engine.config.sweep import SweepSpec
from engine.contract import RunLayout, atomic_write, inside, is_plain_file_name
from engine.errors import UserError, scrub, shown_location, url_secrets

SHARDS = RunLayout.SHARDS
DONE = RunLayout.DONE

logger = logging.getLogger(__name__)

# A lock file without a pid older than this is taken over (see RunStore._check_stale_lock).
STALE_EMPTY_LOCK_SECONDS = 10.0

# Write errors that retrying cannot cure: the run stops instead of regenerating unit after unit.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def is_storage_error(exc: BaseException) -> bool:
    """True for a write error no retry will cure (disk full, quota, read-only, permission)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


@dataclass(frozen=True)
class DoneRecord:
    """The commit record of one finished unit.

    Attributes:
        unit_id: The unit's content hash.
        shard: Shard file name (inside `shards/`).
        rows: Rows in the shard.
        sha256: Hex sha256 of the shard's bytes.
        bytes: Shard size in bytes.
        actor: Who wrote it (for accounting).
    """

    unit_id: str
    shard: str
    rows: int
    sha256: str
    bytes: int
    actor: str = ""


_SHA256 = re.compile(r"[0-9a-f]{64}")
_DONE_FIELDS = ("unit_id", "shard", "rows", "sha256", "bytes", "actor")


def parse_done_record(raw: Any, unit_id: str) -> tuple[DoneRecord | None, str]:
    """Check a done-record read from `done/<unit_id>.json` field by field.

    Resume, `mic verify` and scoring all read records through this one check, so they agree on
    what a record is; a tampered field is a reason to give, never an exception later on.

    Args:
        raw: The parsed JSON (anything).
        unit_id: The unit the file name says it belongs to.

    Returns:
        (the record, "") or (None, why it is not a record, naming the field).
    """
    if not isinstance(raw, dict):
        return None, f"done/{unit_id}.json is not a JSON object"
    unknown = sorted(set(raw) - set(_DONE_FIELDS))
    if unknown:
        return None, f"done/{unit_id}.json has unknown field {unknown[0]!r}"
    for name in ("unit_id", "shard", "rows", "sha256", "bytes"):
        if name not in raw:
            return None, f"done/{unit_id}.json has no field {name!r}"
    if raw["unit_id"] != unit_id:
        return None, f"done/{unit_id}.json: field 'unit_id' names another unit"
    shard = raw["shard"]
    # commit_unit writes `<unit>-<time>-<id>.arrow`: anything else (a path, another unit's shard)
    # was not written by a run.
    if (
        not is_plain_file_name(shard)
        or not shard.startswith(f"{unit_id}-")
        or not shard.endswith(".arrow")
    ):
        return None, f"done/{unit_id}.json: field 'shard' is not a shard name of this unit"
    for name in ("rows", "bytes"):
        value = raw[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return None, f"done/{unit_id}.json: field {name!r} is {value!r}, not a count"
    if not isinstance(raw["sha256"], str) or not _SHA256.fullmatch(raw["sha256"]):
        return None, f"done/{unit_id}.json: field 'sha256' is not a hex sha256"
    if not isinstance(raw.get("actor", ""), str):
        return None, f"done/{unit_id}.json: field 'actor' is not a string"
    return DoneRecord(**raw), ""


@dataclass(frozen=True)
class UnitCheck:
    """What `RunStore.inspect_unit` found for one unit.

    Attributes:
        state: "done", "missing" (no done-record), "bad_record", "shard_missing", "truncated"
            (short, or not a readable Arrow file), "checksum_mismatch", "wrong_schema" (no
            generation columns) or "row_mismatch" (rows differ from the record or the plan).
        detail: Why it is not done, naming the file or field.
        record: The parsed done-record, when it is one.
        rows: Rows read from the shard, when it was readable.
        table: The shard's rows, when done and asked for (`read`).
    """

    state: str
    detail: str = ""
    record: DoneRecord | None = None
    rows: int | None = None
    table: pa.Table | None = None


def table_to_ipc_bytes(table: pa.Table) -> bytes:
    """Serialize a table as an Arrow IPC file with zstd compression."""
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(compression="zstd")
    with ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


class RunStore:
    """A run directory on a pyarrow filesystem (local path by default).

    Picklable (it pickles as its URI), so Ray actors write their own shards.

    Args:
        location: A local path or a filesystem URI (`file://`, `s3://`, `gs://`, ...).
        filesystem: A pyarrow filesystem to use instead of resolving `location` (then
            `location` is the path inside it).
    """

    def __init__(
        self, location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None
    ) -> None:
        uri = str(location)
        # `location` is what messages, logs and summary.json show: an object-store URI loses
        # its credentials (s3://KEY:SECRET@bucket/run); the URI itself stays private.
        self._uri = uri
        self.location = shown_location(uri)
        self._given_fs = filesystem
        if filesystem is not None:
            self.fs, self.root = filesystem, uri.rstrip("/")
        elif "://" in uri:
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(uri)
            except (pa.ArrowInvalid, OSError) as exc:
                raise UserError(
                    f"output location {self.location!r} is not usable: "
                    f"{scrub(str(exc), *url_secrets(uri))}"
                ) from None
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(Path(uri).expanduser().resolve())
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RunStore, (self._uri, self._given_fs))

    # ---- low-level I/O -------------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        """Return the filesystem path of `parts` inside the run directory.

        Raises:
            UserError: The parts climb out of the run directory (`engine.contract.inside`): every
                read, write, move and delete of the store goes through here.
        """
        joined = "/".join([self.root.rstrip("/"), *parts])
        inside(self.root, joined)
        return joined

    def ensure_dirs(self) -> None:
        """Create the run directory and its sub-directories.

        Raises:
            UserError: `shards` or `done` exists as something other than a directory.
        """
        for sub in (SHARDS, DONE):
            if self.kind(sub) not in ("dir", "missing"):
                raise UserError(
                    f"{self.location}/{sub} is not a directory",
                    f"move it out of the run directory; the run recreates {sub}/",
                )
        for sub in ("", SHARDS, DONE):
            self.fs.create_dir(self.path(sub) if sub else self.root, recursive=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file so that readers see all of it or nothing (fsync + rename on local disks)."""
        target = self.path(rel)
        if self.is_local:
            # Removes its temp file when the write fails (disk full must not leave it eating space).
            atomic_write(target, data, root=self.root)
        else:  # an object-store put is atomic
            with self.fs.open_output_stream(target) as out:
                out.write(data)

    def read_bytes(self, rel: str) -> bytes | None:
        """Return a file's bytes, or None if it does not exist.

        A name read back from a record that points outside the run directory (a tampered
        done-record's `../../x` shard) reads as missing: readers (`mic verify`, scoring) then
        report the unit as damaged instead of reading someone else's file.
        """
        try:
            target = self.path(rel)
        except UserError:
            return None
        try:
            with self.fs.open_input_file(target) as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                return None
            raise

    def read_json(self, rel: str) -> Any | None:
        """Return a JSON file's content, or None if missing or unreadable."""
        data = self.read_bytes(rel)
        if data is None:
            return None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def write_json(self, rel: str, value: Any) -> None:
        """Write a JSON file atomically."""
        self.write_bytes(rel, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())

    def kind(self, rel: str) -> str:
        """Return what is at `rel`: "file", "dir", "missing" or "other"."""
        info = self.fs.get_file_info(self.path(rel))
        return {
            pafs.FileType.File: "file",
            pafs.FileType.Directory: "dir",
            pafs.FileType.NotFound: "missing",
        }.get(info.type, "other")

    def list_entries(self, sub: str) -> tuple[list[str], list[str]]:
        """Return (files, other entries such as directories) directly under `sub`, by base name.

        Raises:
            UserError: `sub` exists but is not a directory.
        """
        selector = pafs.FileSelector(self.path(sub), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except NotADirectoryError:
            raise UserError(
                f"{self.location}/{sub} is a file, not a directory",
                f"move it out of the run directory (a resume recreates {sub}/; "
                "`mic verify` lists the damage)",
            ) from None
        files = sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
        others = sorted(i.base_name for i in infos if i.type != pafs.FileType.File)
        return files, others

    def list_names(self, sub: str) -> list[str]:
        """Return the base names of the files directly under `sub` (see `list_entries`)."""
        return self.list_entries(sub)[0]

    # ---- units ---------------------------------------------------------------------------------

    def commit_unit(self, unit_id: str, table: pa.Table, actor: str = "") -> DoneRecord:
        """Write a finished unit: the shard under a write-once name, then its done-record.

        Args:
            unit_id: The unit's id.
            table: Its rows (GENERATIONS schema with metadata).
            actor: Name of the writer, kept in the record.

        Returns:
            The done-record written.
        """
        data = table_to_ipc_bytes(table)
        shard = f"{unit_id}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.arrow"
        self.write_bytes(f"{SHARDS}/{shard}", data)
        record = DoneRecord(
            unit_id=unit_id,
            shard=shard,
            rows=table.num_rows,
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
            actor=actor,
        )
        self.write_json(f"{DONE}/{unit_id}.json", record.__dict__)
        return record

    def inspect_unit(
        self, unit_id: str, expected_rows: int | None = None, read: bool = False
    ) -> UnitCheck:
        """Check one unit's done-record and shard: the one definition of "finished".

        Resume (`finished`), `mic verify` and scoring all decide through this method, so a unit
        one of them counts as done is done for the others. Damage is a state, never an exception.

        Args:
            unit_id: The unit.
            expected_rows: Rows the plan gives it (items x samples); None skips that check.
            read: Also decode the shard's rows into `table` (a resume only needs the count,
                which Arrow reads from the batch headers without decompressing).

        Returns:
            The check; `state` is "done" or the first problem found (see `UnitCheck`).
        """
        record_file = f"{DONE}/{unit_id}.json"
        kind = self.kind(record_file)
        if kind == "missing":
            return UnitCheck("missing", f"no {record_file}")
        data, why = self.read_file(record_file)
        raw = None
        if data is not None:
            try:
                raw = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                why = f"{record_file} is not readable JSON (empty or torn?)"
        record, bad = parse_done_record(raw, unit_id) if raw is not None else (None, why)
        if record is None:
            return UnitCheck("bad_record", bad)
        shard_file = f"{SHARDS}/{record.shard}"
        data, why = self.read_file(shard_file)
        if data is None:
            state = "shard_missing" if self.kind(shard_file) == "missing" else "truncated"
            return UnitCheck(state, f"shard {why}", record)
        if len(data) < record.bytes:
            return UnitCheck(
                "truncated", f"{shard_file}: {len(data)} of {record.bytes} bytes", record
            )
        if len(data) != record.bytes or hashlib.sha256(data).hexdigest() != record.sha256:
            detail = f"sha256 of {shard_file} differs from the done-record"
            return UnitCheck("checksum_mismatch", detail, record)
        table = None
        try:  # a checksum only proves these are the bytes recorded, not that they are a shard
            reader = ipc.open_file(pa.BufferReader(data))
            names, rows = reader.schema.names, reader.count_rows()  # footer + batch headers only
            if read:
                table = reader.read_all()
        except (pa.ArrowException, OSError, ValueError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            detail = f"{shard_file} is not a readable Arrow file ({first})"
            return UnitCheck("truncated", detail, record)
        from engine.contract import GENERATIONS

        absent = [c for c in GENERATIONS.names if c not in names]
        if absent:
            detail = f"{shard_file} has no column {absent[0]!r}"
            return UnitCheck("wrong_schema", detail, record, rows)
        if rows != record.rows or (expected_rows is not None and rows != expected_rows):
            detail = f"{shard_file} has {rows} rows, record {record.rows}, plan {expected_rows}"
            return UnitCheck("row_mismatch", detail, record, rows)
        return UnitCheck("done", "", record, rows, table)

    def read_file(self, rel: str) -> tuple[bytes | None, str]:
        """A file's bytes, or (None, why) when it is missing or not a readable file."""
        try:
            data = self.read_bytes(rel)
        except OSError as exc:
            if self.kind(rel) == "dir":
                return None, f"{rel} is a directory"
            return None, f"{rel}: {exc.strerror or exc}"
        return data, "" if data is not None else f"{rel} does not exist"

    def done_record(self, unit_id: str) -> DoneRecord | None:
        """Return the unit's done-record if it exists and its shard checks out, else None."""
        check = self.inspect_unit(unit_id)
        return check.record if check.state == "done" else None

    def finished(
        self, unit_ids: list[str], expected_rows: dict[str, int] | None = None
    ) -> dict[str, DoneRecord]:
        """Return the verified done-records among `unit_ids` (see `inspect_unit`).

        Args:
            unit_ids: Units to look up.
            expected_rows: Rows each unit must hold (items x samples of the plan); a record with
                another count is not finished (a checksum only proves the bytes are the ones
                written, not that the writer wrote every row).
        """
        present = {
            name[: -len(".json")] for name in self.list_names(DONE) if name.endswith(".json")
        }
        records = {}
        for unit_id in unit_ids:
            if unit_id in present:
                expected = None if expected_rows is None else expected_rows.get(unit_id, -1)
                check = self.inspect_unit(unit_id, expected)
                if check.state == "done" and check.record is not None:
                    records[unit_id] = check.record
        return records

    def resume(self, spec: SweepSpec, units: list, new_run: bool = False):
        """Prepare a (re)run under the lock: refuse a differing spec, keep verified units, drop
        orphan shards, and say what is left to do.

        Args:
            spec: The sweep spec of this run.
            units: The planned work units (`engine.generate.units.WorkUnit`).
            new_run: Replace a stored run of a different spec (see `check_run`).

        Returns:
            (mode, records, todo): "new" / "resume" / ... from `check_run`, the verified
            done-records by unit id, and the units still to run, in plan order.
        """
        mode = self.check_run(spec, new_run=new_run)
        self.archive_stale({u.unit_id for u in units})
        records = self.finished([u.unit_id for u in units], {u.unit_id: u.n_rows for u in units})
        self.collect_garbage({r.shard for r in records.values()})
        return mode, records, [u for u in units if u.unit_id not in records]

    def archive_stale(self, planned: set[str]) -> str | None:
        """Move done-records of units outside the plan, with their shards, to `stale/<time>/`.

        After a resumable edit of a task file (items removed or changed) some finished units are
        no longer planned; left in `done/` they would be reported by `mic verify` forever. Nothing
        is deleted: the archive keeps them for whoever wants the old rows. Entries of `done/` and
        `shards/` that are not files (a directory where a record should be) go there too, since a
        commit could never replace them. Only call while holding the run lock.

        Args:
            planned: Unit ids of the plan.

        Returns:
            The archive directory (relative to the run), or None when nothing was stale.
        """
        done_files, done_others = self.list_entries(DONE)
        shard_files, shard_others = self.list_entries(SHARDS)
        moves: list[str] = [f"{DONE}/{n}" for n in done_others]
        moves += [f"{SHARDS}/{n}" for n in shard_others]
        present = set(shard_files)
        stale_records = 0
        for name in done_files:
            unit_id = name[: -len(".json")]
            if not name.endswith(".json") or RunLayout.TEMP_MARK in name or unit_id in planned:
                continue
            stale_records += 1
            moves.append(f"{DONE}/{name}")
            try:
                record, _ = parse_done_record(self.read_json(f"{DONE}/{name}"), unit_id)
            except OSError:
                record = None
            if record is not None and record.shard in present:
                moves.append(f"{SHARDS}/{record.shard}")
        if not moves:
            return None
        archive = f"{RunLayout.STALE}/{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        for sub in (DONE, SHARDS):
            self.fs.create_dir(self.path(archive, sub), recursive=True)
        for rel in moves:
            self.fs.move(self.path(rel), self.path(archive, rel))
        logger.info(
            f"resume: moved {stale_records} done-record(s) of units no longer in the plan (a task "
            f"file changed?) and {len(moves) - stale_records} other file(s) to "
            f"{self.location}/{archive}/"
        )
        return archive

    def collect_garbage(self, keep: set[str]) -> list[str]:
        """Delete shards (and partial files) that no valid done-record points to.

        Only call while holding the run lock: a shard being written by a live run has no
        done-record yet.

        Args:
            keep: Shard names to keep.

        Returns:
            The names deleted.
        """
        removed = []
        for sub in (SHARDS, DONE):
            for name in self.list_names(sub):
                stale = (RunLayout.TEMP_MARK in name) or (sub == SHARDS and name not in keep)
                if stale:
                    self.fs.delete_file(self.path(sub, name))
                    removed.append(f"{sub}/{name}")
        return removed

    def write_manifest(
        self, spec: SweepSpec, order: list[str], records: dict[str, DoneRecord]
    ) -> dict[str, Any]:
        """Rebuild `manifest.json` from done-records, in plan order.

        Args:
            spec: The run's spec.
            order: Unit ids of the plan, in order.
            records: Verified done-records by unit id.

        Returns:
            The manifest written.
        """
        units = [records[u].__dict__ for u in order if u in records]
        manifest = {
            "run_id": spec.run_id,
            "config_hash": spec.hash,
            "units_planned": len(order),
            "units_finished": len(units),
            "rows": sum(u["rows"] for u in units),
            "units": units,
        }
        self.write_json(RunLayout.MANIFEST, manifest)
        return manifest

    def shard_paths(self) -> list[str]:
        """Return the filesystem paths of the shards listed in the manifest."""
        manifest = self.read_json(RunLayout.MANIFEST) or {"units": []}
        return [self.path(SHARDS, u["shard"]) for u in manifest["units"]]

    # ---- run identity ----------------------------------------------------------------------------

    def check_run(self, spec: SweepSpec, new_run: bool = False) -> str:
        """Bind the directory to `spec`: write run.json, or check it matches the stored one.

        Args:
            spec: The spec about to run.
            new_run: Start afresh when the stored spec differs: the old run's files move to
                `superseded/<old hash>/` (nothing is deleted).

        Returns:
            "new", "resume" or "replaced".

        Raises:
            UserError: The stored spec differs and `new_run` is false; the differing keys are named.
        """
        if self.kind(RunLayout.RUN) not in ("file", "missing"):
            raise UserError(
                f"{self.location}/run.json is not a file",
                "move it away; the run writes run.json",
            )
        stored = self.read_json(RunLayout.RUN)
        record = {
            "run_id": spec.run_id,
            "hash": spec.hash,
            "spec": spec.content_dict(),
            "full": spec.portable_dict(self.root if self.is_local else None),
        }
        if stored is None:
            self.ensure_dirs()
            self.write_json(RunLayout.RUN, record)
            return "new"
        if not isinstance(stored, dict):  # an edited run.json: a run of an unknown spec
            stored = {}
        if stored.get("hash") == spec.hash:
            self.ensure_dirs()
            return "resume"
        if not new_run:
            diffs = diff_keys(stored.get("spec", {}), spec.content_dict())
            raise UserError(
                f"{self.location} holds a run of a different spec (differing keys: "
                f"{', '.join(diffs[:10]) or 'unknown'})",
                "use another --out, restore the spec, or pass --new-run to start over "
                "(the old run moves to superseded/)",
            )
        old = self._superseded_dir(stored.get("hash"))
        self.fs.create_dir(self.path(old), recursive=True)
        for name in (RunLayout.RUN, RunLayout.MANIFEST, RunLayout.SUMMARY):
            if self.read_bytes(name) is not None:
                self.fs.move(self.path(name), self.path(old, name))
        for sub in (SHARDS, DONE):
            with contextlib.suppress(FileNotFoundError):
                if self.fs.get_file_info(self.path(sub)).type == pafs.FileType.Directory:
                    self.fs.move(self.path(sub), self.path(old, sub))
        self.ensure_dirs()
        self.write_json(RunLayout.RUN, record)
        return "replaced"

    def _superseded_dir(self, stored_hash: object) -> str:
        """`superseded/<first 12 hex digits of the old hash>`, unused so far.

        The hash is read back from run.json, which anyone may have edited: only hex digits are
        used as a folder name (`unknown` otherwise), and an existing folder (a spec that came
        back) gets a `-2`, `-3`, ... suffix instead of having its files overwritten.
        """
        text = str(stored_hash or "")[:12]
        name = text if re.fullmatch(r"[0-9a-f]{1,12}", text) else "unknown"
        folder, n = f"superseded/{name}", 1
        while self.fs.get_file_info(self.path(folder)).type != pafs.FileType.NotFound:
            n += 1
            folder = f"superseded/{name}-{n}"
        return folder

    # ---- lock ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory's lock (pid + host); a lock of a dead local pid is taken over.

        Raises:
            UserError: Another live run holds the directory.
        """
        self.fs.create_dir(self.root, recursive=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "start_ticks": _process_start_ticks(os.getpid()),
        }
        lock = self.path(RunLayout.LOCK)
        if self.is_local:
            for _ in range(2):
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    self._check_stale_lock()
                    continue
                try:
                    with os.fdopen(fd, "w") as fh:
                        json.dump(me, fh)
                except BaseException:
                    # An empty lock (disk full) would name no pid and refuse every later run.
                    with contextlib.suppress(OSError):
                        os.unlink(lock)
                    raise
                break
            else:  # pragma: no cover - the stale check either raises or removes the lock
                raise UserError(f"cannot lock {lock}")
        else:
            if self.read_bytes(RunLayout.LOCK) is not None:
                self._check_stale_lock()
            self.write_json(RunLayout.LOCK, me)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                self.fs.delete_file(lock)

    def _check_stale_lock(self) -> None:
        if self.kind(RunLayout.LOCK) not in ("file", "missing"):
            raise UserError(
                f"{self.path(RunLayout.LOCK)} is a directory, not a lock file",
                "remove it (no run can hold this directory while it is there)",
            )
        holder = self.read_json(RunLayout.LOCK)
        if not isinstance(holder, dict) or "pid" not in holder:
            # Empty or torn: its writer died between creating and filling it (a live writer
            # fills it within microseconds), so after a grace period it holds nothing.
            info = self.fs.get_file_info(self.path(RunLayout.LOCK))
            age = time.time() - info.mtime.timestamp() if info.mtime else 0.0
            if info.type == pafs.FileType.NotFound or age > STALE_EMPTY_LOCK_SECONDS:
                with contextlib.suppress(OSError):
                    self.fs.delete_file(self.path(RunLayout.LOCK))
                return
            holder = {}
        pid, host = holder.get("pid"), holder.get("host")
        if self.is_local and host == socket.gethostname() and isinstance(pid, int):
            recorded, now = holder.get("start_ticks"), _process_start_ticks(pid)
            # A live pid that started at another time is a reused pid (e.g. after a reboot).
            reused = recorded is not None and now is not None and recorded != now
            if reused or not _pid_alive(pid):
                with contextlib.suppress(OSError):
                    self.fs.delete_file(self.path(RunLayout.LOCK))
                return
        raise UserError(
            f"output directory {self.location} is locked by another run (pid {pid} on {host})",
            f"wait for it to finish, or delete {self.path('.lock')} if that process is gone",
        )


def _process_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux /proc), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        # Fields after the command name (which may hold spaces); starttime is field 22.
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Return the dotted keys where two JSON-like values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(dotted)
            else:
                out.extend(diff_keys(old[key], new[key], dotted))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out.extend(diff_keys(a, b, f"{prefix}.{i}"))
        return out
    return [] if old == new else [prefix or "<root>"]
