"""scripts/gpu_check.sh, exercised on CPU through its --dry-run flag."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_dry_run_lists_every_step_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    text = "\n".join(steps)
    assert "nvidia-smi" in text
    assert "-m gpu tests/engine" in text and "-m engine tests/engine" in text
    assert "benchmarks/engine_overhead.py" in text and "engine.cli bench" in text
    assert "nothing was executed" in result.stdout
    assert not out.exists()


def test_unknown_option_exits_2() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert result.returncode == 2 and "--bogus" in result.stderr
