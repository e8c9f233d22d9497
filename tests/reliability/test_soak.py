"""The soak in CI: `scripts/soak.py --small` (fake engine, 3 actor kills, 1 driver kill, ~1.5 min)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.reliability_helpers import REPO, driver_env

pytestmark = pytest.mark.slow


def test_small_soak_passes(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "soak.py"),
            "--small",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "run"),
        ],
        env=driver_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "injected: 3 actor SIGKILLs, 1 driver SIGKILL" in result.stdout
    assert "soak PASSED" in result.stdout and "FAIL " not in result.stdout
