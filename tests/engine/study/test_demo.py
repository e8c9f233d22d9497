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
    """As a newcomer types it: a relative --out, from a directory that is not the repository;
    then the finished study is copied elsewhere and re-run: every stage is skipped."""
    import shutil

    from metrics.io import read_scored

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    cmd = [sys.executable, "-m", "engine.cli", "demo", "--out", "demo"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=cwd)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    out = cwd / "demo"
    last = done.stdout.strip().splitlines()[-1]
    assert last == "demo/report.html" and (cwd / last).is_file()  # the report's path, as given
    run = read_scored(out / "scored")  # `mic analyze` validation
    assert run.responses.height == 720  # 2 planted models x 3 tasks x 120 items
    metrics = json.loads((out / "analysis" / "metrics.json").read_text())
    assert metrics["settings"]["threshold"] == 5 and "faithful" in metrics["models"]
    assert (out / "analysis" / "mic.parquet").is_file()
    assert (out / "scored" / "canonical_map.json").is_file()
    # The story: intervals, the headline table printed, throughput in the report, no noise.
    assert metrics["settings"]["bootstrap"] > 0
    assert "I-AvgMAE" in done.stdout and "judge calls failed" in done.stdout
    # the planted story: markers against their planted values, and the paired comparison
    assert "Recovered MICs" in done.stdout and "Paired comparison" in done.stdout
    assert (out / "analysis" / "comparisons.parquet").is_file()
    assert (out / "summary.json").is_file()
    assert "Throughput" in (out / "report.html").read_text()
    assert "FutureWarning" not in done.stderr and "Traceback" not in done.stderr
    stored = json.loads((out / "run.json").read_text())
    assert all(not Path(t["source"]).is_absolute() for t in stored["full"]["tasks"])
    print(f"mic demo: {seconds:.0f} s")

    # A moved copy of the finished study re-runs with every stage skipped.
    moved = tmp_path / "moved" / "copy"
    moved.parent.mkdir()
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    again_cmd = [sys.executable, "-m", "engine.cli", "demo", "--out", str(moved)]
    again = subprocess.run(again_cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to run" in again.stderr and "already done (skipped)" in again.stderr
    assert "done in" not in again.stderr  # no stage ran again
    assert "starting judge engine" not in again.stderr  # nothing left to judge: no engine
