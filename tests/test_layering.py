"""The house's layering (pyproject.toml `[tool.importlinter]`) holds: `lint-imports` passes.

CI runs only pytest, so this test is what checks the contracts there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(*args: str) -> subprocess.CompletedProcess:
    if not LINT.is_file():
        pytest.fail(f"{LINT} is missing: pip install -e '.[test]' (import-linter is a test extra)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [str(LINT), "--no-cache", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_are_kept() -> None:
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_contract_is_reported(tmp_path: Path) -> None:
    # The tool really reads the imports: study -> metrics exists, so forbidding it must fail.
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["engine", "metrics"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "study imports no metrics"\n'
        'type = "forbidden"\n'
        'source_modules = ["engine.study"]\n'
        'forbidden_modules = ["metrics"]\n'
    )
    result = _lint(str(config))
    assert result.returncode != 0
    assert "1 broken" in result.stdout
