"""End to end: `mic demo` finishes offline, and its outputs pass the analysis side's validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.engine]


def test_mic_demo_end_to_end_and_resume(tmp_path: Path) -> None:
    from metrics.io import read_scored

    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "engine.cli", "demo", "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert Path(last).is_file()  # ends with the report's (or metrics.json's) path
    assert "meaningless" in done.stdout and "mic study" in done.stdout
    run = read_scored(out / "scored")  # `mic analyze` validation
    assert run.responses.height == 120
    metrics = json.loads((out / "analysis" / "metrics.json").read_text())
    assert metrics["settings"]["threshold"] == 2 and "tiny" in metrics["models"]
    assert (out / "analysis" / "mic.parquet").is_file()
    assert (out / "scored" / "canonical_map.json").is_file()
    print(f"mic demo: {seconds:.0f} s")

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to run" in again.stderr and "already done (skipped)" in again.stderr
    assert "starting judge engine" not in again.stderr  # nothing left to judge: no engine
