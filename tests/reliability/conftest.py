"""Fixtures of the reliability tests: the engine tests' fixtures (one Ray, one tiny model, at most
one vLLM engine per session) plus the address drivers in subprocesses join."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

_ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engine"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(_ENGINE_TESTS))

# Re-use the engine tests' session fixtures (environment, tiny model, the shared Ray), loaded
# under their own module name (both files are called conftest.py).
_spec = importlib.util.spec_from_file_location(
    "engine_tests_conftest", _ENGINE_TESTS / "conftest.py"
)
_engine_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_engine_conftest)
_mic_cache = _engine_conftest._mic_cache
tiny_model_dir = _engine_conftest.tiny_model_dir
engine_holder = _engine_conftest.engine_holder
tiny_engine = _engine_conftest.tiny_engine
ray_local = _engine_conftest.ray_local


@pytest.fixture(scope="session")
def ray_address(ray_local: Any) -> str:
    """The GCS address of the session's Ray: driver subprocesses join it with --ray-address, so a
    SIGKILLed driver costs no Ray start-up (its actors die with it, as on a cluster)."""
    return ray_local.get_runtime_context().gcs_address
