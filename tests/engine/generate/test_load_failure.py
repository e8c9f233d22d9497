"""A model that cannot load ends with one line naming the real cause: no traceback, no retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.engine_helpers import make_raw_spec, write_toml

from engine.generate.backends.vllm import hub_env


def _mic(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=600,
    )


def test_hub_model_missing_from_cache_while_offline_is_one_line(tmp_path: Path) -> None:
    raw = make_raw_spec(models=[{"name": "m", "path": "no-such-org/no-such-model-123"}])
    spec = write_toml(tmp_path / "s.toml", raw)
    done = _mic(["run", "s.toml", "--out", "run"], tmp_path, HF_HUB_OFFLINE="1")
    assert done.returncode == 2
    lines = [x for x in done.stderr.splitlines() if x.startswith("mic run: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no-such-org/no-such-model-123" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert "models.0.path" in lines[0] and spec.is_file()


def test_hub_access_is_switched_off_only_when_nothing_needs_it(tmp_path: Path) -> None:
    assert hub_env(["builtin:tiny", str(tmp_path)]) == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    assert hub_env(["builtin:tiny", "meta-llama/Llama-3.1-8B-Instruct"]) == {}


@pytest.mark.slow
@pytest.mark.engine
def test_a_model_folder_that_cannot_load_fails_once_with_its_cause(tmp_path: Path) -> None:
    """A real Ray actor tries to load a broken local model: one line, exit 2, no restart storm."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    raw = make_raw_spec(models=[{"name": "bad", "path": str(broken)}])
    write_toml(tmp_path / "s.toml", raw)
    done = _mic(["run", "s.toml", "--out", "run", "--quiet"], tmp_path, RAY_AUTH_MODE="disabled")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [x for x in done.stderr.splitlines() if x.startswith("mic run: error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "cannot be loaded" in errors[0] and "bad" in errors[0]
    assert "Traceback" not in done.stderr
    assert "restarting" not in done.stderr  # a deterministic failure is not retried
