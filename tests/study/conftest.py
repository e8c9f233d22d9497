"""Fixtures of the study tests: environment for in-process vLLM, the tiny model, one judge engine.

Real-engine tests here share ONE in-process judge engine per module that needs it, released at the
module's end, so at most one engine of this package is alive at a time.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(tempfile.gettempdir()) / "mic-test-vllm-cache"))

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session", autouse=True)
def _study_mic_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build `builtin:tiny` into a session cache directory (unless the caller set one)."""
    if "MIC_CACHE_DIR" not in os.environ:
        os.environ["MIC_CACHE_DIR"] = str(tmp_path_factory.mktemp("mic-cache"))


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The tiny model directory (built once per session)."""
    from engine.generate.tiny_model import resolve_model

    return Path(resolve_model("builtin:tiny"))
