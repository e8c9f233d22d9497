"""Real processes, real signals: SIGKILLed drivers, a refused second driver, a stale lock, an
actor SIGKILLed mid-unit. Drivers are the real `mic run` CLI in subprocesses with the fake
engine, joining the session's Ray (as drivers on a cluster do), so a kill costs no Ray start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers.reliability_helpers import (
    assert_exactly_once,
    fake_driver,
    fake_raw_spec,
    kill_actor_at_unit,
    read_rows,
    write_run_without_ray,
    write_toml,
)

from engine.generate.verify import verify_run

pytestmark = pytest.mark.slow

ROWS = 180 * 2
KEY = ["task", "split", "item_id", "sample_idx"]


def _valid_shards(out: Path) -> dict[str, str]:
    """Unit id -> sha256 of its shard, for units `verify` finds done."""
    report = verify_run(str(out), check_duplicates=False)
    bad = [u for u in report.units if u.state not in ("done", "missing", "torn")]
    assert not bad, f"a kill left damaged units: {[(u.unit_id, u.state) for u in bad]}"
    return {
        u.unit_id: hashlib.sha256((out / "shards" / u.shard).read_bytes()).hexdigest()
        for u in report.units
        if u.state == "done"
    }


def _wait_for(predicate: Any, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"driver ended early: {proc.stdout.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _lock_holder(out: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads((out / ".lock").read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the driver's own session (see fake_driver)
    proc.wait()
    time.sleep(1.0)  # Ray reaps the dead driver's actors


def _finish(spec: Path, out: Path, address: str) -> str:
    proc = fake_driver(spec, out, "--actors", "2", "--ray-address", address)
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    # The driver prints no traceback. Lines Ray streams from actors (prefixed "(GenerationActor
    # pid=...)") may carry the interpreter-exit noise of the killed driver's actors as they die.
    own = [line for line in output.splitlines() if "GenerationActor pid=" not in line]
    assert not any("Traceback" in line for line in own), output[-3000:]
    return output


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    """The rows of an uninterrupted run (fake engine, no Ray) of the spec the kill tests use."""
    base = tmp_path_factory.mktemp("kills")
    write_run_without_ray(base / "reference", fake_raw_spec(base, chunk_size=4, seconds=0.1))
    return base, read_rows(base / "reference").sort(KEY)


@pytest.mark.parametrize("seed", [1, 2, 9])  # kills while units run, at start-up, at the end
def test_sigkilled_driver_resumes_exactly_once(
    seed: int, ray_address: str, reference: tuple[Path, pl.DataFrame]
) -> None:
    base, ref = reference
    rng = random.Random(seed)
    out = base / f"out-{seed}"
    spec = write_toml(base / "spec.toml", fake_raw_spec(base, chunk_size=4, seconds=0.1))
    proc = fake_driver(spec, out, "--actors", "2", "--ray-address", ray_address)
    # Kill at a random point: while starting, after a random number of committed units, or
    # while finishing (manifest / summary / garbage collection).
    point = rng.choice(["start", "units", "units", "end"])
    if point == "start":
        time.sleep(rng.uniform(0.5, 3.0))
    elif point == "units":
        k = rng.randint(1, 40)
        _wait_for(lambda: len(list((out / "done").glob("*.json"))) >= k, proc)
        time.sleep(rng.uniform(0.0, 0.3))
    else:
        _wait_for(lambda: len(list((out / "done").glob("*.json"))) >= 45, proc)
        time.sleep(rng.uniform(0.0, 0.05))
    assert proc.poll() is None, "the driver ended before the kill"
    _kill(proc)
    kept = _valid_shards(out) if (out / "run.json").exists() else {}

    output = _finish(spec, out, ray_address)
    assert f"{len(kept)} already finished" in output
    after = _valid_shards(out)
    for unit_id, digest in kept.items():  # units finished before the kill keep their bytes
        assert after[unit_id] == digest
    report = verify_run(str(out))
    assert report.ok, report.to_dict()
    df = assert_exactly_once(out, ROWS)
    assert (
        df.sort(KEY)
        .select(*KEY, "token_ids", "logprobs", "text")
        .equals(ref.select(*KEY, "token_ids", "logprobs", "text"))
    )
    print(f"seed {seed}: killed at {point}, {len(kept)} units kept")


def test_second_driver_is_refused_and_a_stale_lock_is_taken_over(
    ray_address: str, reference: tuple[Path, pl.DataFrame]
) -> None:
    base, ref = reference
    out = base / "locked"
    spec = write_toml(base / "spec-lock.toml", fake_raw_spec(base, chunk_size=4, seconds=0.1))
    first = fake_driver(spec, out, "--actors", "1", "--ray-address", ray_address)
    # The lock is created, then filled: wait for its content, not only its name.
    _wait_for(lambda: _lock_holder(out) is not None, first)
    holder = _lock_holder(out)
    assert holder is not None
    assert holder["pid"] == first.pid

    second = fake_driver(spec, out, "--actors", "1", "--ray-address", ray_address)
    output = second.communicate(timeout=120)[0].decode()
    assert second.returncode == 2, output
    assert "locked by another run" in output and f"pid {first.pid}" in output
    assert "Traceback" not in output
    assert first.poll() is None  # the refused driver disturbed nothing

    _wait_for(lambda: len(list((out / "done").glob("*.json"))) >= 3, first)
    _kill(first)  # the lock file survives the crash, naming a dead pid
    assert json.loads((out / ".lock").read_text())["pid"] == first.pid
    _finish(spec, out, ray_address)
    assert not (out / ".lock").exists()
    assert verify_run(str(out)).ok
    df = assert_exactly_once(out, ROWS)
    assert df.sort(KEY).select(*KEY, "token_ids").equals(ref.select(*KEY, "token_ids"))


def test_actor_sigkilled_mid_unit_is_replaced_and_its_unit_retried(
    ray_local: Any, tmp_path: Path
) -> None:
    from engine.config.sweep import validate
    from engine.generate.actors import fake_backend_factory
    from engine.generate.runner import run_sweep

    raw = fake_raw_spec(tmp_path, chunk_size=8, seconds=0.4)
    log = tmp_path / "units.log"
    # SIGKILL the actor running the 5th unit, in the middle of it.
    thread, victims = kill_actor_at_unit(log, 5, 0.15, 120)
    summary = run_sweep(
        validate(raw),
        str(tmp_path / "out"),
        backend_factory=fake_backend_factory,
        actors=2,
        progress=False,
    )
    thread.join()
    assert victims, "the killer never fired"
    unit_id, pid = victims[0]
    model = summary["models"]["fake"]
    assert model["actor_restarts"] == 1
    retried = [r for r in model["retries"] if r["unit_id"] == unit_id]
    assert retried and "actor died" in retried[0]["error"]  # the failure is in the summary
    assert summary["units_finished"] == summary["units_planned"] and not summary["failed_units"]
    runs = [line.split() for line in log.read_text().splitlines()]
    assert [u for u, _ in runs].count(unit_id) == 2  # tried on the dead actor, then again
    assert sum(p == str(pid) for _, p in runs) >= 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert next(u for u in manifest["units"] if u["unit_id"] == unit_id)["actor"] != ""
    assert verify_run(str(tmp_path / "out")).ok
    assert_exactly_once(tmp_path / "out", ROWS)


def test_interrupted_driver_releases_its_lock_and_resumes(
    ray_address: str, reference: tuple[Path, pl.DataFrame]
) -> None:
    base, ref = reference
    out = base / "interrupted"
    spec = write_toml(base / "spec-int.toml", fake_raw_spec(base, chunk_size=4, seconds=0.1))
    proc = fake_driver(spec, out, "--actors", "2", "--ray-address", ray_address)
    _wait_for(lambda: len(list((out / "done").glob("*.json"))) >= 5, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted; re-run the same command to resume" in output
    assert not (out / ".lock").exists()
    kept = _valid_shards(out)
    _finish(spec, out, ray_address)
    after = _valid_shards(out)
    assert all(after[u] == digest for u, digest in kept.items())
    assert verify_run(str(out)).ok
    df = assert_exactly_once(out, ROWS)
    assert df.sort(KEY).select(*KEY, "token_ids").equals(ref.select(*KEY, "token_ids"))
