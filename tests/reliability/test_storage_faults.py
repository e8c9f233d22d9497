"""Torn, truncated, corrupt and orphan shards: `mic verify` names each without touching anything,
and a resume redoes exactly those units (fake engine; storage is the point)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from helpers.reliability_helpers import (
    assert_exactly_once,
    fake_raw_spec,
    read_rows,
    write_run_without_ray,
)

from engine.cli import main
from engine.config.sweep import validate
from engine.generate.actors import fake_backend_factory
from engine.generate.backends.fake import FakeBackend
from engine.generate.store import RunStore
from engine.generate.verify import verify_run

ROWS = 180 * 2  # items x samples of fake_raw_spec


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _record(out: Path, unit_id: str) -> dict[str, Any]:
    return json.loads((out / "done" / f"{unit_id}.json").read_text())


def _inject(out: Path, units: list[Any]) -> dict[str, str]:
    """Damage units 0..6 in seven different ways; return unit id -> expected state."""
    expected = {}
    # 0: killed mid-write: no done-record, only a temp file.
    u = units[0].unit_id
    (out / "shards" / _record(out, u)["shard"]).unlink()
    (out / "done" / f"{u}.json").unlink()
    (out / "shards" / f"{u}-20260101T000000-deadbeef.arrow.partial-0badf00d").write_bytes(b"ARROW1")
    expected[u] = "torn"
    # 1: truncated shard.
    u = units[1].unit_id
    shard = out / "shards" / _record(out, u)["shard"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    expected[u] = "truncated"
    # 2: flipped bytes, same size.
    u = units[2].unit_id
    shard = out / "shards" / _record(out, u)["shard"]
    data = bytearray(shard.read_bytes())
    for at in (len(data) // 3, len(data) // 2):
        data[at] ^= 0x5A
    shard.write_bytes(bytes(data))
    expected[u] = "checksum_mismatch"
    # 3: the shard is gone.
    u = units[3].unit_id
    (out / "shards" / _record(out, u)["shard"]).unlink()
    expected[u] = "shard_missing"
    # 4: a torn done-record.
    u = units[4].unit_id
    (out / "done" / f"{u}.json").write_text('{"unit_id": ')
    expected[u] = "bad_record"
    # 5: done-record lost after the shard was written: the shard is an orphan.
    u = units[5].unit_id
    (out / "done" / f"{u}.json").unlink()
    expected[u] = "missing"
    # 6: a consistent shard + record with rows missing (a writer bug): rows disagree with the plan.
    unit = units[6]
    backend = FakeBackend()
    table = backend.to_table(unit, backend.generate(unit))
    RunStore(out).commit_unit(unit.unit_id, table.slice(0, table.num_rows - 2), "buggy")
    expected[unit.unit_id] = "row_mismatch"
    return expected


def test_verify_names_every_damaged_unit_and_changes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    raw = fake_raw_spec(tmp_path)
    units = write_run_without_ray(out, raw)
    assert main(["verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out

    expected = _inject(out, units)
    before = _tree(out)
    report = verify_run(str(out))
    assert _tree(out) == before
    states = {u.unit_id: u.state for u in report.units}
    for unit_id, state in expected.items():
        assert states[unit_id] == state, unit_id
    assert sum(s == "done" for s in states.values()) == len(units) - len(expected)
    assert len(report.orphan_shards) == 3  # the shards of units 4 and 5, unit 6's first one
    mismatch = next(u for u in report.units if u.state == "row_mismatch")
    assert (mismatch.rows_found, mismatch.rows_expected) == (14, 16)
    assert report.manifest_problems  # the manifest still lists units that are not done
    assert not report.ok

    assert main(["verify", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ok"] is False and data["counts"]["torn"] == 1
    assert data["counts"]["truncated"] == data["counts"]["checksum_mismatch"] == 1
    assert {u["unit_id"]: u["state"] for u in data["units"]} == states
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert main(["verify", str(out)]) == 1
    text = capsys.readouterr().out
    for state in ("torn", "truncated", "checksum_mismatch", "shard_missing", "orphan shard"):
        assert state in text
    assert _tree(out) == before


def test_verify_finds_duplicate_rows_across_units(tmp_path: Path) -> None:
    out = tmp_path / "run"
    units = write_run_without_ray(out, fake_raw_spec(tmp_path))
    # A shard of unit 1 holding unit 0's rows (same length): checksums fine, rows doubled.
    store = RunStore(out)
    shard0 = _record(out, units[0].unit_id)["shard"]
    table = pa.ipc.open_file(str(out / "shards" / shard0)).read_all()
    store.commit_unit(units[1].unit_id, table, "confused")
    report = verify_run(str(out))
    assert report.duplicate_rows and report.duplicate_rows[0]["count"] == 2
    assert not report.ok


def test_verify_of_a_non_run_is_a_user_error(tmp_path: Path, capsys) -> None:
    assert main(["verify", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run.json" in err and "Traceback" not in err


@pytest.mark.slow
def test_resume_redoes_exactly_the_damaged_units(ray_local: Any, tmp_path: Path) -> None:
    from engine.generate.runner import run_sweep

    out, reference = tmp_path / "run", tmp_path / "reference"
    raw = fake_raw_spec(tmp_path)
    units = write_run_without_ray(out, raw)
    write_run_without_ray(reference, raw)
    expected = _inject(out, units)
    intact = {
        u.unit_id: _tree(out)[f"shards/{_record(out, u.unit_id)['shard']}"] for u in units[7:]
    }
    summary = run_sweep(
        validate(raw), str(out), backend_factory=fake_backend_factory, actors=2, progress=False
    )
    assert summary["units_finished"] == len(units)
    rerun = [line.split()[0] for line in (tmp_path / "units.log").read_text().splitlines()]
    not_redone = {expected[u] for u in set(expected) - set(rerun)}
    assert not not_redone, f"damaged units skipped by the resume: {not_redone}"
    assert sorted(rerun) == sorted(expected)  # exactly the damaged units, once each
    tree = _tree(out)
    for unit_id, digest in intact.items():  # untouched units keep their very bytes
        assert tree[f"shards/{_record(out, unit_id)['shard']}"] == digest
    assert not [name for name in tree if ".partial-" in name]
    report = verify_run(str(out))
    assert report.ok, report.to_dict()
    df = assert_exactly_once(out, ROWS)
    key = ["task", "split", "item_id", "sample_idx"]
    ref = read_rows(reference).sort(key).select(*key, "token_ids", "logprobs", "text")
    assert df.sort(key).select(*key, "token_ids", "logprobs", "text").equals(ref)


def test_verify_reads_filesystem_uris(tmp_path: Path) -> None:
    out = tmp_path / "run"
    units = write_run_without_ray(out, fake_raw_spec(tmp_path))
    (out / "shards" / _record(out, units[0].unit_id)["shard"]).unlink()
    report = verify_run(f"file://{out}")
    assert report.units[0].state == "shard_missing"
    assert sum(u.state == "done" for u in report.units) == len(units) - 1
