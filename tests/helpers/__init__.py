"""Helpers shared by the tests (importable as `helpers.*`: the root conftest puts `tests/` on the
path). Builders of specs and runs, a fake judge, fake-engine drivers, numeric comparison."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "metrics" / "data" / "example"
