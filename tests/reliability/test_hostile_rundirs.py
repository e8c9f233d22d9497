"""Hostile and damaged run directories (issue 12, "Run directories"): `mic verify` reports every
kind of damage as a unit state or a run-level line (never a traceback, exit non-zero), `mic score`
reads exactly the units verify calls done and refuses anything else with the `mic verify` advice,
and a resume after a task-file edit archives the done-records that fell out of the plan.

One real run (fake engine, in-process) is built per module; every case damages its own copy and
runs the real CLI in subprocesses (`python -m engine.cli ...`) from a scratch working directory.
Each case asserts the exit code, one stderr line naming the damaged file or field, no traceback,
nothing written outside the run directory, and for `mic score` that the scored row count equals
the intact run's or that scoring is refused.

    python -m pytest -q tests/reliability/test_hostile_rundirs.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.reliability_helpers import HERE, driver_env, write_toml
from helpers.study_helpers import SAMPLES

from engine.config.sweep import validate
from engine.generate.backends.fake import FakeBackend
from engine.generate.store import RunStore
from engine.generate.units import plan_units

TASKS = ("sample_yesno", "sample_facts")
N = 3  # samples per item
# Rule-based scoring: no judge engine, so a scored run costs seconds.
SCORE_FLAGS = (
    "--extract",
    "lexicon",
    "--canonical",
    "rules",
    "--confidence",
    "token_prob",
    "--correctness",
    "rule",
    "--decisiveness",
    "none",
)


def _raw_spec(run: Path) -> dict[str, Any]:
    """The run's spec: its task files live inside the run directory (run.json stores them
    relative to it), so every copy of the run carries its own, editable task files."""
    return {
        "run": {"name": "hostile", "chunk_size": 16, "device": "cpu"},
        "models": [{"name": "m", "path": "builtin:tiny"}],
        "tasks": [
            {"name": t, "source": str(run / "tasks" / f"{t}.jsonl"), "splits": ["train", "test"]}
            for t in TASKS
        ],
        "prompts": [{"id": "plain", "template": "Q: {question}\nA:"}],
        "sampling": {"n": N, "max_tokens": 12, "logprobs": 2, "seed": 3},
    }


def _write_run(run: Path) -> None:
    """A finished run as `mic run` with the fake engine writes it (in-process, no Ray)."""
    (run / "tasks").mkdir(parents=True)
    for task in TASKS:
        shutil.copy(SAMPLES / f"{task}.jsonl", run / "tasks" / f"{task}.jsonl")
    spec = validate(_raw_spec(run), source="<test>")
    store = RunStore(str(run))
    store.check_run(spec)
    backend = FakeBackend()  # what the fake driver's actors use: a resume adds identical rows
    units = plan_units(spec)
    for unit in units:
        store.commit_unit(unit.unit_id, backend.to_table(unit, backend.generate(unit)), "local")
    order = [u.unit_id for u in units]
    store.write_manifest(spec, order, store.finished(order))


def _mic(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=str(cwd),
        env=driver_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _resume(cwd: Path, run: Path, ray_address: str) -> subprocess.CompletedProcess[str]:
    """`mic run SPEC --out RUN` with the fake engine (the real CLI and driver), joining the
    session's Ray; the spec names the run's own task files."""
    spec = write_toml(cwd / "spec.toml", _raw_spec(run))
    return subprocess.run(
        [sys.executable, str(HERE / "fake_driver.py"), str(spec), str(run)]
        + ["--ray-address", ray_address, "--quiet"],
        cwd=str(cwd),
        env=driver_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _files(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` (leaving out `skip`)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and p.is_relative_to(skip):
            continue
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif not p.is_dir():
            out[str(p.relative_to(root))] = "other"
    return out


def _scored_rows(run: Path) -> int:
    return pl.read_parquet(run / "scored" / "responses.parquet").height


@dataclass
class Base:
    """The module's intact run and what scoring it gives."""

    run: Path
    responses: int
    units: list[str]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("hostile-rundirs")
    run = root / "run"
    _write_run(run)
    reference = root / "reference"
    shutil.copytree(run, reference)
    done = _mic(root, "score", str(reference), *SCORE_FLAGS)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    return Base(run, _scored_rows(reference), [u["unit_id"] for u in manifest["units"]])


# ---- the damage ---------------------------------------------------------------------------------


def _record_path(run: Path, unit_id: str) -> Path:
    return run / "done" / f"{unit_id}.json"


def _record(run: Path, unit_id: str) -> dict[str, Any]:
    return json.loads(_record_path(run, unit_id).read_text())


def _set_record(run: Path, unit_id: str, **fields: Any) -> None:
    _record_path(run, unit_id).write_text(json.dumps({**_record(run, unit_id), **fields}))


def _shard(run: Path, unit_id: str) -> Path:
    return run / "shards" / _record(run, unit_id)["shard"]


def _replace_shard(run: Path, unit_id: str, data: bytes) -> str:
    """Put other bytes in a unit's shard and make its done-record agree (a careful forger)."""
    shard = _shard(run, unit_id)
    shard.write_bytes(data)
    _set_record(run, unit_id, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    return shard.name


def doubled_manifest(run: Path, units: list[str]) -> str:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["units"].append(manifest["units"][0])  # counts left as they were: looks plausible
    (run / "manifest.json").write_text(json.dumps(manifest))
    return "manifest.json"


def deleted_done_record(run: Path, units: list[str]) -> str:
    _record_path(run, units[1]).unlink()
    return f"done/{units[1]}.json"


def record_rows_not_a_number(run: Path, units: list[str]) -> str:
    _set_record(run, units[0], rows="many")
    return "'rows'"


def record_bytes_a_float(run: Path, units: list[str]) -> str:
    _set_record(run, units[2], bytes=1.5)
    return "'bytes'"


def record_is_a_list(run: Path, units: list[str]) -> str:
    _record_path(run, units[0]).write_text("[1, 2, 3]")
    return f"done/{units[0]}.json"


def record_is_empty(run: Path, units: list[str]) -> str:
    _record_path(run, units[3]).write_text("")
    return f"done/{units[3]}.json"


def record_is_a_directory(run: Path, units: list[str]) -> str:
    _record_path(run, units[0]).unlink()
    _record_path(run, units[0]).mkdir()
    return f"done/{units[0]}.json"


def record_shard_escapes(run: Path, units: list[str]) -> str:
    _set_record(run, units[0], shard="../run.json")
    return "'shard'"


def record_names_another_units_shard(run: Path, units: list[str]) -> str:
    other = _record(run, units[1])
    _set_record(run, units[0], **{k: other[k] for k in ("shard", "sha256", "bytes", "rows")})
    return "'shard'"


def manifest_is_a_list(run: Path, units: list[str]) -> str:
    (run / "manifest.json").write_text("[]")
    return "manifest.json"


def manifest_truncated(run: Path, units: list[str]) -> str:
    data = (run / "manifest.json").read_bytes()
    (run / "manifest.json").write_bytes(data[: len(data) // 2])
    return "manifest.json"


def manifest_units_not_a_list(run: Path, units: list[str]) -> str:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["units"] = {"a": 1}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return "'units'"


def shards_is_a_file(run: Path, units: list[str]) -> str:
    shutil.rmtree(run / "shards")
    (run / "shards").write_text("not a directory")
    return "shards"


def done_is_a_file(run: Path, units: list[str]) -> str:
    shutil.rmtree(run / "done")
    (run / "done").write_text("not a directory")
    return "done"


def lock_is_a_directory(run: Path, units: list[str]) -> str:
    (run / ".lock").mkdir()
    return ".lock"


def shard_is_parquet(run: Path, units: list[str]) -> str:
    table = pa.ipc.open_file(str(_shard(run, units[0]))).read_all()
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return _replace_shard(run, units[0], sink.getvalue().to_pybytes())


def shard_is_garbage(run: Path, units: list[str]) -> str:
    return _replace_shard(run, units[1], b"ARROW1" + bytes(range(256)) * 8)


def shard_is_a_directory(run: Path, units: list[str]) -> str:
    shard = _shard(run, units[0])
    shard.unlink()
    shard.mkdir()
    return shard.name


def shard_has_other_columns(run: Path, units: list[str]) -> str:
    table = pa.table({"model": ["m"] * 48, "x": list(range(48))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return _replace_shard(run, units[0], sink.getvalue().to_pybytes())


def extra_shard_copy(run: Path, units: list[str]) -> str:
    shard = _shard(run, units[0])
    copy = shard.with_name(shard.name.replace(".arrow", "-copy.arrow"))
    shutil.copy(shard, copy)
    return copy.name


def run_json_missing(run: Path, units: list[str]) -> str:
    (run / "run.json").unlink()
    return "run.json"


def run_json_empty(run: Path, units: list[str]) -> str:
    (run / "run.json").write_text("")
    return "run.json"


def run_json_is_a_list(run: Path, units: list[str]) -> str:
    (run / "run.json").write_text("[]")
    return "run.json"


def run_json_full_wrong_type(run: Path, units: list[str]) -> str:
    stored = json.loads((run / "run.json").read_text())
    stored["full"] = "a string"
    (run / "run.json").write_text(json.dumps(stored))
    return "'full'"


def run_json_field_wrong_type(run: Path, units: list[str]) -> str:
    stored = json.loads((run / "run.json").read_text())
    stored["full"]["sampling"]["n"] = "three"
    (run / "run.json").write_text(json.dumps(stored))
    return "sampling.n"


def run_json_is_a_directory(run: Path, units: list[str]) -> str:
    (run / "run.json").unlink()
    (run / "run.json").mkdir()
    return "run.json"


# (damage, verify exit code, the file / field the one line names). Exit 1: verify found damage
# and reported it; exit 2: no plan can be rebuilt (no readable run.json), a user error.
CASES: list[tuple[Callable[[Path, list[str]], str], int]] = [
    (doubled_manifest, 1),
    (deleted_done_record, 1),
    (record_rows_not_a_number, 1),
    (record_bytes_a_float, 1),
    (record_is_a_list, 1),
    (record_is_empty, 1),
    (record_is_a_directory, 1),
    (record_shard_escapes, 1),
    (record_names_another_units_shard, 1),
    (manifest_is_a_list, 1),
    (manifest_truncated, 1),
    (manifest_units_not_a_list, 1),
    (shards_is_a_file, 1),
    (done_is_a_file, 1),
    (lock_is_a_directory, 1),
    (shard_is_parquet, 1),
    (shard_is_garbage, 1),
    (shard_is_a_directory, 1),
    (shard_has_other_columns, 1),
    (extra_shard_copy, 1),
    (run_json_missing, 2),
    (run_json_empty, 2),
    (run_json_is_a_list, 2),
    (run_json_full_wrong_type, 2),
    (run_json_field_wrong_type, 2),
    (run_json_is_a_directory, 2),
]


def _one_line(proc: subprocess.CompletedProcess[str], needle: str, command: str) -> str:
    """The single stderr line of a refused command: names `needle`, no traceback."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"mic {command}") and needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("damage, verify_code", CASES, ids=[c[0].__name__ for c in CASES])
def test_damaged_run_is_diagnosed_and_never_scored(
    base: Base, tmp_path: Path, damage: Callable[[Path, list[str]], str], verify_code: int
) -> None:
    run = tmp_path / "run"
    shutil.copytree(base.run, run)
    needle = damage(run, base.units)
    outside = _files(tmp_path, skip=run)
    damaged = _files(run)

    verify = _mic(tmp_path, "verify", str(run))
    assert verify.returncode == verify_code, verify.stdout + verify.stderr
    _one_line(verify, needle, "verify")
    if verify_code == 1:  # the report itself names the damage too
        assert needle in verify.stdout and "NOT OK" in verify.stdout
        as_json = _mic(tmp_path, "verify", str(run), "--json")
        assert as_json.returncode == 1 and json.loads(as_json.stdout)["ok"] is False
    assert _files(run) == damaged, "verify changed the run directory"

    score = _mic(tmp_path, "score", str(run), *SCORE_FLAGS)
    assert score.returncode == 2, score.stdout + score.stderr
    line = _one_line(score, needle, "score")
    # The lock is taken before anything is read: that refusal says what to remove instead.
    assert verify_code == 2 or needle == ".lock" or "mic verify" in line
    assert not (run / "scored").exists()
    assert _files(run) == damaged, "a refused score changed the run directory"
    assert _files(tmp_path, skip=run) == outside, "written outside the run directory"


def test_intact_copy_verifies_and_scores_every_row_once(base: Base, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(base.run, run)
    outside = _files(tmp_path, skip=run)
    verify = _mic(tmp_path, "verify", str(run))
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    score = _mic(tmp_path, "score", str(run), *SCORE_FLAGS)
    assert score.returncode == 0, score.stderr
    assert _scored_rows(run) == base.responses
    assert _files(tmp_path, skip=run) == outside


# Damage a resume repairs: afterwards verify is OK and the scored run has every row once.
HEALED = [
    doubled_manifest,
    deleted_done_record,
    record_rows_not_a_number,
    record_is_a_directory,
    shard_is_garbage,
    extra_shard_copy,
]


@pytest.mark.slow
@pytest.mark.parametrize("damage", HEALED, ids=[d.__name__ for d in HEALED])
def test_resume_repairs_the_damage_and_scores_every_row_once(
    base: Base, ray_address: str, tmp_path: Path, damage: Callable[[Path, list[str]], str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(base.run, run)
    damage(run, base.units)
    resumed = _resume(tmp_path, run, ray_address)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stdout + resumed.stderr
    verify = _mic(tmp_path, "verify", str(run))
    assert verify.returncode == 0, verify.stdout
    score = _mic(tmp_path, "score", str(run), *SCORE_FLAGS)
    assert score.returncode == 0, score.stderr
    assert _scored_rows(run) == base.responses


# Damage a resume must refuse (it cannot know what to do with it): one line, exit 2, untouched.
REFUSED = [shards_is_a_file, done_is_a_file, lock_is_a_directory, run_json_is_a_directory]


@pytest.mark.slow
@pytest.mark.parametrize("damage", REFUSED, ids=[d.__name__ for d in REFUSED])
def test_resume_refuses_a_broken_directory_in_one_line(
    base: Base, ray_address: str, tmp_path: Path, damage: Callable[[Path, list[str]], str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(base.run, run)
    needle = damage(run, base.units)
    damaged = _files(run)
    resumed = _resume(tmp_path, run, ray_address)
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    _one_line(resumed, needle, "run")
    assert _files(run) == damaged


@pytest.mark.slow
def test_resume_after_a_task_edit_archives_stale_done_records(
    base: Base, ray_address: str, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(base.run, run)
    task = run / "tasks" / "sample_facts.jsonl"
    lines = task.read_text().splitlines(keepends=True)
    task.write_text("".join(lines[5:]))  # five items removed: a resumable edit (same spec hash)
    outside = _files(tmp_path, skip=run)

    before = _mic(tmp_path, "verify", str(run))
    assert before.returncode == 1 and "done-record outside the plan" in before.stdout
    score = _mic(tmp_path, "score", str(run), *SCORE_FLAGS)
    assert score.returncode == 2
    _one_line(score, "incomplete", "score")

    resumed = _resume(tmp_path, run, ray_address)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    moved = [line for line in resumed.stderr.splitlines() if "no longer in the plan" in line]
    assert len(moved) == 1 and "stale/" in moved[0], resumed.stderr
    archived = list((run / "stale").glob("*/done/*.json"))
    assert archived and len(list((run / "stale").glob("*/shards/*.arrow"))) == len(archived)

    for _ in range(2):  # cleared for good: verify OK, and a second resume has nothing to move
        after = _mic(tmp_path, "verify", str(run), "--json")
        assert after.returncode == 0, after.stdout
        report = json.loads(after.stdout)
        assert report["unknown_records"] == [] and report["orphan_shards"] == []
        again = _resume(tmp_path, run, ray_address)
        assert again.returncode == 0 and "no longer in the plan" not in again.stderr
    score = _mic(tmp_path, "score", str(run), *SCORE_FLAGS)
    assert score.returncode == 0, score.stderr
    assert _scored_rows(run) == base.responses - 5 == report["rows_expected"] // N
    assert _files(tmp_path, skip=run).keys() - outside.keys() == {"spec.toml"}
