"""Helpers of the reliability tests: small specs, runs written without Ray, a fake-engine driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc  # noqa: F401  (pa.ipc)

from helpers import REPO
from helpers.engine_helpers import make_raw_spec, write_toml  # noqa: F401  (re-exported)

HERE = REPO / "tests" / "reliability"  # fake_driver.py

ROW_KEY = ["model", "task", "split", "prompt", "item_id", "sample_idx"]


def fake_raw_spec(tmp_path: Path, chunk_size: int = 8, seconds: float = 0.0, **engine: Any) -> dict:
    """A spec of the fake engine: 180 items (two tasks) x n = 2 in chunks of `chunk_size`."""
    args = {"fake_seconds": seconds, "fake_log": str(tmp_path / "units.log"), **engine}
    return make_raw_spec(
        run={"name": "rel", "chunk_size": chunk_size, "device": "cpu", "max_attempts": 3},
        models=[{"name": "fake", "path": "builtin:tiny", "engine_args": args}],
        tasks=[
            {"name": "arith", "source": "builtin:arithmetic"},
            {"name": "yesno", "source": "builtin:yesno", "splits": ["test"]},
        ],
    )


def write_run_without_ray(out: Path, raw: dict, finished: int | None = None) -> list[Any]:
    """Write a run directory as `mic run` would, in-process with the fake engine (no Ray).

    Args:
        out: The run directory.
        raw: The spec document.
        finished: Commit only the first `finished` units (default: all).

    Returns:
        The planned units.
    """
    from engine.config.sweep import validate
    from engine.generate.backends.fake import FakeBackend
    from engine.generate.store import RunStore
    from engine.generate.units import plan_units

    spec = validate(raw)
    units = plan_units(spec)
    store = RunStore(out)
    store.check_run(spec)
    backend = FakeBackend()
    done = store.finished([u.unit_id for u in units])
    for unit in units[:finished]:
        if unit.unit_id in done:
            continue
        store.commit_unit(unit.unit_id, backend.to_table(unit, backend.generate(unit)), "local")
    order = [u.unit_id for u in units]
    store.write_manifest(spec, order, store.finished(order))
    return units


def read_rows(out: Path) -> pl.DataFrame:
    """All rows of the shards the manifest lists (what a reader of the run sees)."""
    manifest = json.loads((out / "manifest.json").read_text())
    paths = [str(out / "shards" / u["shard"]) for u in manifest["units"]]
    return pl.concat([pl.from_arrow(pa.ipc.open_file(p).read_all()) for p in paths])


def assert_exactly_once(out: Path, expected_rows: int) -> pl.DataFrame:
    """Every (model, task, split, prompt, item, sample) once, in the manifest and on disk."""
    df = read_rows(out)
    assert df.height == expected_rows
    assert df.select(ROW_KEY).n_unique() == df.height
    on_disk = pl.scan_ipc(str(out / "shards" / "*.arrow")).select(ROW_KEY).collect()
    assert on_disk.height == expected_rows, "orphan shards left beside the manifest's"
    return df


def driver_env() -> dict[str, str]:
    """Environment of a driver subprocess (repo importable, unbuffered, Ray without auth)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["RAY_AUTH_MODE"] = "disabled"
    paths = [str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")]  # engine, helpers
    env["PYTHONPATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
    return env


def fake_driver(spec: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    """Start `mic run` with the fake engine (`fake_driver.py`), in its own session."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "fake_driver.py"), str(spec), str(out), *extra],
        cwd=str(REPO),
        env=driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a SIGKILL reaches Ray's processes too
    )


def kill_actor_at_unit(
    log: Path, nth: int, delay: float, timeout: float
) -> tuple[threading.Thread, list[tuple[str, int]]]:
    """Start a thread that SIGKILLs the actor running the `nth` unit (1-based) of a fake-backend
    unit log (`fake_log`: one "unit_id pid" line per unit started), `delay` s into that unit.

    Returns:
        The started thread (join it after the run) and the list it fills with (unit id, pid).
    """
    victims: list[tuple[str, int]] = []

    def killer() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = log.read_text().splitlines() if log.exists() else []
            if len(lines) >= nth:
                unit_id, pid = lines[nth - 1].split()
                time.sleep(delay)
                os.kill(int(pid), signal.SIGKILL)
                victims.append((unit_id, int(pid)))
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    return thread, victims
