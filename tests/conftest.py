"""Fixtures of the whole suite: the environment, the tiny model, one Ray, one vLLM engine.

Real-engine tests share ONE in-process vLLM engine (`tiny_engine`), built lazily and released
before tests that start engines in other processes (Ray actors, `mic run` subprocesses), so at
most one engine is alive at a time on a small machine; tests of OpenAI-compatible clients share
ONE local vLLM server (`vllm_server`), started on first use. Helpers live in the `helpers` package
(`tests/` is on the path because this conftest sits there).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Set before Ray or vLLM is imported anywhere in the session.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A stable compile cache across sessions keeps engine start-up short.
os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(tempfile.gettempdir()) / "mic-test-vllm-cache"))

from helpers.engine_helpers import TINY_ENGINE_ARGS  # noqa: E402  (after the environment)


@pytest.fixture(scope="session", autouse=True)
def _mic_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build `builtin:tiny` into a session cache directory (unless the caller set one)."""
    if "MIC_CACHE_DIR" not in os.environ:
        session_cache = tmp_path_factory.mktemp("mic-cache")
        _copy_built_planted_models(Path.home() / ".cache" / "mic", session_cache)
        os.environ["MIC_CACHE_DIR"] = str(session_cache)


def _copy_built_planted_models(user_cache: Path, session_cache: Path) -> None:
    """Start the session cache with a copy of the planted models `mic demo` trained in the user's
    cache, when they are complete and of the current version, seed and steps (2-4 minutes of
    training on 2 cores saved; CI's first command trains them from nothing just before the suite).
    The copy, never the user's directory, is what the tests use. Training is tested on its own
    (`test_planted.py`: bit-for-bit builds, an interrupted build); `MIC_TEST_TRAIN_PLANTED=1`
    makes the suite train its own copy instead."""
    import shutil

    from engine import planted

    if os.environ.get("MIC_TEST_TRAIN_PLANTED") == "1":
        return
    name = f"planted-v{planted.PLANTED_VERSION}"
    source = user_cache / "models" / name
    complete = all(
        (source / model / f).is_file()
        for model in planted.MODEL_NAMES
        for f in ("config.json", "model.safetensors", "tokenizer.json")
    ) and all((source / "tasks" / f"{task}.jsonl").is_file() for task in planted.TASKS)
    if complete and planted._is_built(source):
        shutil.copytree(source, session_cache / "models" / name)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny model, built once per session into the cache directory."""
    from engine.generate.tiny_model import resolve_model

    return Path(resolve_model("builtin:tiny"))


class EngineHolder:
    """Lazily builds the shared in-process vLLM engine; `release` frees it."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.backend: Any = None

    def get(self) -> Any:
        """Return the engine, building it if needed."""
        if self.backend is None:
            from engine.generate.backends.vllm import VLLMBackend

            self.backend = VLLMBackend(str(self.model_dir), dict(TINY_ENGINE_ARGS), max_logprobs=20)
        return self.backend

    def release(self) -> None:
        """Free the engine (before tests start engines in other processes)."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None


@pytest.fixture(scope="session")
def engine_holder(tiny_model_dir: Path) -> Any:
    """The session's single in-process engine holder."""
    holder = EngineHolder(tiny_model_dir)
    yield holder
    holder.release()


@pytest.fixture(scope="session")
def tiny_engine(engine_holder: EngineHolder) -> Any:
    """The shared in-process `VLLMBackend` on the tiny model."""
    return engine_holder.get()


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path) -> Any:
    """A real vLLM OpenAI-compatible server on 127.0.0.1 serving the tiny model as "tiny"
    (one per session; its base URL, ".../v1"). Used by the HTTP judge and the API subjects."""
    from helpers.engine_helpers import openai_server

    with openai_server(tiny_model_dir) as url:
        yield url


@pytest.fixture(scope="session")
def ray_local() -> Any:
    """One local Ray for the session, declaring 4 logical GPUs for the placement tests."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # never join another process's Ray found in /tmp/ray by accident
            num_cpus=4,  # logical: four fake GPU actors need one CPU each
            num_gpus=4,
            include_dashboard=False,
            object_store_memory=200 << 20,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()
