"""The Python API exported by `engine`: cheap to import, typed and frozen results."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine.api import StudyResult, study_result
from engine.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_import_engine_loads_no_heavy_module() -> None:
    code = (
        "import sys, engine; heavy = ('ray', 'vllm', 'torch', 'polars', 'engine.api');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert callable(engine.run_sweep) and "engine.api" in sys.modules  # loaded on first use


def test_load_spec_and_plan() -> None:
    spec = engine.load_spec(REPO / "configs" / "tiny.toml", ["sampling.n=2"])
    assert spec.sampling.n == 2
    report = engine.plan(spec)
    assert report["totals"]["units"] == len(report["units"]) > 0
    from_file = engine.plan(REPO / "configs" / "tiny.toml", ["sampling.n=2"])
    assert from_file["totals"] == report["totals"]


def test_bad_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="sampling.n"):
        engine.load_spec(REPO / "configs" / "tiny.toml", ["sampling.n=abc"])
    assert issubclass(UserError, ValueError)
    with pytest.raises(AttributeError):
        engine.no_such_function  # noqa: B018


def test_study_result_is_typed_and_frozen(tmp_path: Path) -> None:
    doc = {
        "run": str(tmp_path),
        "rows": 12,
        "scored": str(tmp_path / "scored"),
        "items_without_value": {"markers": 1},
        "judge_failures": "judge calls failed: none made",
        "analysis": str(tmp_path / "analysis"),
        "report": None,
        "seconds": {"generate": 1.0},
    }
    result = study_result(tmp_path, doc)
    assert isinstance(result, StudyResult)
    assert result.scored_dir == tmp_path / "scored" and result.report is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rows = 0  # type: ignore[misc]
