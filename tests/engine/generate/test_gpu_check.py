"""scripts/gpu_check.sh, exercised on CPU through its --dry-run flag."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, timeout=60
    )


def test_dry_run_lists_every_step_within_the_budget_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = _dry_run("--out", str(out))
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("+ [")]
    text = "\n".join(steps)
    assert "nvidia-smi" in text and "detect_build" in result.stdout
    assert "-m gpu tests/engine" in text
    assert "engine.cli bench configs/tiny.toml --determinism" in text
    assert "bench_model" not in text  # no --model: the tiny model only
    budgets = [int(b) for b in re.findall(r"<= (\d+)s\]", text)]
    assert len(budgets) == 4 and sum(budgets) <= 8 * 60
    assert "nothing was executed" in result.stdout
    assert not out.exists()


def test_dry_run_with_a_model_adds_its_table_and_stays_within_8_minutes() -> None:
    result = _dry_run("--model", "/models/qwen-0.5b")
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("+ [")]
    model_steps = [s for s in steps if "bench_model.json" in s]
    assert len(model_steps) == 1 and 'models.0.path="/models/qwen-0.5b"' in model_steps[0]
    budgets = [int(b) for b in re.findall(r"<= (\d+)s\]", "\n".join(steps))]
    assert len(budgets) == 5 and sum(budgets) <= 8 * 60


def test_unknown_option_exits_2() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert result.returncode == 2 and "--bogus" in result.stderr


def test_missing_model_folder_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = subprocess.run(
        ["bash", str(SCRIPT), "--model", str(missing)], capture_output=True, text=True
    )
    assert result.returncode == 2 and str(missing) in result.stderr
