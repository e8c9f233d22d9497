"""Run storage: done-records decide, corrupt shards are redone, locks, spec binding (fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from helpers.engine_helpers import make_raw_spec

from engine.config.sweep import apply_overrides, validate
from engine.contract import GENERATIONS
from engine.errors import UserError
from engine.generate.backends.fake import FakeBackend
from engine.generate.store import RunStore
from engine.generate.units import plan_units


def _unit_table(unit_index: int = 0) -> tuple[str, pa.Table]:
    spec = validate(make_raw_spec())
    unit = plan_units(spec)[unit_index]
    backend = FakeBackend()
    return unit.unit_id, backend.to_table(unit, backend.generate(unit))


def test_commit_writes_shard_then_done_record(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.ensure_dirs()
    unit_id, table = _unit_table()
    record = store.commit_unit(unit_id, table, actor="a")
    assert record.rows == table.num_rows == 16 * 2
    assert store.done_record(unit_id) == record
    shard = tmp_path / "run" / "shards" / record.shard
    read = ipc.open_file(pa.memory_map(str(shard))).read_all()
    assert read.schema.remove_metadata() == GENERATIONS
    assert read.schema.metadata[b"run_id"] and read.schema.metadata[b"config_hash"]
    assert not list((tmp_path / "run").rglob("*.partial-*"))


def test_corrupt_or_missing_shard_means_unfinished(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.ensure_dirs()
    unit_id, table = _unit_table()
    record = store.commit_unit(unit_id, table)
    shard = tmp_path / "run" / "shards" / record.shard
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert store.done_record(unit_id) is None
    assert store.finished([unit_id]) == {}
    shard.unlink()
    assert store.done_record(unit_id) is None
    (tmp_path / "run" / "done" / f"{unit_id}.json").write_text("{torn")
    assert store.done_record(unit_id) is None


def test_garbage_collection_keeps_only_committed_shards(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.ensure_dirs()
    unit_id, table = _unit_table()
    kept = store.commit_unit(unit_id, table)
    orphan = store.commit_unit(unit_id, table)  # a second attempt whose record was overwritten
    (tmp_path / "run" / "shards" / "x.arrow.partial-1234").write_bytes(b"torn")
    removed = store.collect_garbage({orphan.shard})
    assert f"shards/{kept.shard}" in removed
    assert sorted(p.name for p in (tmp_path / "run" / "shards").iterdir()) == [orphan.shard]


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    with store.locked():
        with pytest.raises(UserError, match="locked by another run"):
            with RunStore(tmp_path / "run").locked():
                pass
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    lock = tmp_path / "run" / ".lock"
    import socket

    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with store.locked():
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_changed_spec_is_refused_naming_the_keys(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    spec = validate(make_raw_spec())
    assert store.check_run(spec) == "new"
    assert store.check_run(spec) == "resume"
    assert (
        store.check_run(validate(apply_overrides(make_raw_spec(), ["models.0.replicas=3"])))
        == "resume"
    )
    changed = validate(apply_overrides(make_raw_spec(), ["sampling.n=5", "sampling.max_tokens=4"]))
    with pytest.raises(UserError) as info:
        store.check_run(changed)
    assert "sampling.n" in str(info.value) and "sampling.max_tokens" in str(info.value)
    assert "--new-run" in str(info.value)
    assert store.check_run(changed, new_run=True) == "replaced"
    assert (tmp_path / "run" / "superseded" / spec.hash[:12] / "run.json").is_file()
    assert store.check_run(changed) == "resume"


def test_stop_strings_cut_text_and_tokens() -> None:
    spec = validate(apply_overrides(make_raw_spec(), ['sampling.stop=["t1"]']))
    unit = plan_units(spec)[0]
    backend = FakeBackend(vocab_size=20)
    table = backend.to_table(unit, backend.generate(unit)).to_pylist()
    stopped = [r for r in table if r["finish_reason"] == "stop"]
    assert stopped
    for row in table:
        assert "t1" not in row["text"]
        assert len(row["token_ids"]) == len(row["logprobs"]) == len(row["top_logprobs"])
        assert row["cumulative_logprob"] == pytest.approx(sum(row["logprobs"]), abs=1e-3)


def test_object_store_path_commits_without_rename(tmp_path: Path) -> None:
    """A non-local pyarrow filesystem (no atomic rename): done-records still decide."""
    import pickle

    import pyarrow.fs as pafs

    (tmp_path / "bucket").mkdir()
    fs = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    store = RunStore("runs/r1", filesystem=fs)
    assert not store.is_local
    spec = validate(make_raw_spec())
    with store.locked():
        assert store.check_run(spec) == "new"
        with pytest.raises(UserError, match="locked"):
            with RunStore("runs/r1", filesystem=fs).locked():
                pass
        unit_id, table = _unit_table()
        record = pickle.loads(pickle.dumps(store)).commit_unit(unit_id, table)
        assert store.finished([unit_id]) == {unit_id: record}
        assert store.collect_garbage({record.shard}) == []
        manifest = store.write_manifest(spec, [unit_id], {unit_id: record})
        assert manifest["rows"] == table.num_rows
    assert store.shard_paths() == [f"runs/r1/shards/{record.shard}"]
    assert (tmp_path / "bucket" / "runs" / "r1" / "done" / f"{unit_id}.json").is_file()
    assert not (tmp_path / "bucket" / "runs" / "r1" / ".lock").exists()


def test_object_store_credentials_stay_out_of_location_and_errors() -> None:
    """`location` (printed in messages and summary.json) loses an object-store URI's
    credentials; the store still pickles with them (actors open the same bucket)."""
    import pickle

    uri = "s3://AKIAEXAMPLE:wJalr-secret@bucket/run?region=us-east-1&endpoint_override=127.0.0.1:9"
    store = RunStore(uri)
    assert "wJalr-secret" not in store.location and "AKIAEXAMPLE" not in store.location
    assert store.location.startswith("s3://bucket/run") and store.root == "bucket/run"
    again = pickle.loads(pickle.dumps(store))
    assert again._uri == uri and again.location == store.location
    with pytest.raises(UserError) as info:
        RunStore("nosuch://AKIAEXAMPLE:wJalr-secret@bucket/run")  # pyarrow echoes the URI
    assert "not usable" in str(info.value)
    assert "wJalr-secret" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)


def test_a_shard_left_by_a_dying_writer_is_collected_at_the_end_of_a_partial_run(
    tmp_path: Path, monkeypatch
) -> None:
    """A shard written during a run without its done-record (an actor killed between the two
    writes) is removed when `run_sweep` ends, also with `only` (a study's wave, scored right
    after): the other finished units' shards stay."""
    from helpers.reliability_helpers import fake_raw_spec, write_run_without_ray

    from engine.generate.runner import run_sweep
    from engine.generate.verify import verify_run

    out = tmp_path / "out"
    raw = fake_raw_spec(tmp_path, chunk_size=64)
    units = write_run_without_ray(out, raw)
    before = sorted(p.name for p in (out / "shards").iterdir())
    orphan = out / "shards" / f"{units[0].unit_id}-20261129T000000-deadbeef.arrow"
    finished = RunStore.finished

    def finished_after_a_dying_write(self, *args, **kwargs):
        orphan.write_bytes(b"half a shard")  # what the killed actor left behind
        return finished(self, *args, **kwargs)

    monkeypatch.setattr(RunStore, "finished", finished_after_a_dying_write)
    # Every unit is finished, so no actor (and no Ray) is needed: only the bookkeeping runs.
    run_sweep(validate(raw), str(out), progress=False, only=[units[0].unit_id])
    assert not orphan.exists()
    assert sorted(p.name for p in (out / "shards").iterdir()) == before
    monkeypatch.setattr(RunStore, "finished", finished)
    assert verify_run(str(out)).orphan_shards == []  # what made scoring refuse the wave
