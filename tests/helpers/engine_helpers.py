"""Helpers shared by the engine tests (spec documents, TOML writing)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TINY_ENGINE_ARGS = {"dtype": "float32", "max_model_len": 128, "enforce_eager": True}


def make_raw_spec(**sections: Any) -> dict[str, Any]:
    """Return a small valid spec document; keyword sections replace the defaults."""
    raw: dict[str, Any] = {
        "run": {"name": "t", "chunk_size": 16},
        "models": [{"name": "tiny", "path": "builtin:tiny", "engine_args": dict(TINY_ENGINE_ARGS)}],
        "tasks": [{"name": "arith", "source": "builtin:arithmetic", "splits": ["train"]}],
        "prompts": [{"id": "plain", "template": "Question: {question}\nAnswer:"}],
        "sampling": {"n": 2, "max_tokens": 8, "logprobs": 3, "seed": 7},
    }
    raw.update(sections)
    return raw


def generation_actors(ray: Any) -> dict[str, dict[str, Any]]:
    """The GCS's record of every GenerationActor of this Ray session, by actor id."""
    table = ray._private.state.state.actor_table(None)
    return {k: v for k, v in table.items() if v["ActorClassName"].endswith("GenerationActor")}


def assert_actors_exited_themselves(ray: Any, before: dict[str, Any], count: int) -> None:
    """The `count` GenerationActors started since `before` (a `generation_actors` snapshot) are
    dead, each having ended its own process after closing its engine: none was killed (a killed
    actor gets SIGTERM, which can print a stray traceback; one that overran the exit timeout is
    killed too)."""
    mine = {k: v for k, v in generation_actors(ray).items() if k not in before}
    assert len(mine) == count
    for record in mine.values():
        assert record["State"] == "DEAD"
        assert "exit_actor() is called" in str(record["DeathCause"]), record["DeathCause"]


def write_toml(path: Path, raw: dict[str, Any]) -> Path:
    """Write a spec document as TOML (the small subset the specs here use)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict | list)]
    for section, body in raw.items():
        if not isinstance(body, dict | list):
            continue
        entries = body if isinstance(body, list) else [body]
        for entry in entries:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines.extend(f"{k} = {value(v)}" for k, v in entry.items())
            lines.append("")
    path.write_text("\n".join(lines))
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def openai_server(model_dir: Path, timeout: float = 600.0) -> Iterator[str]:
    """Run vLLM's OpenAI-compatible server on 127.0.0.1 for `model_dir` (served as "tiny").

    Yields:
        The base URL (".../v1"). The server is terminated (then killed) on exit.
    """
    import os
    import subprocess
    import sys
    import time

    import httpx
    import pytest

    port = free_port()
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
    ]  # fmt: skip
    log = open(model_dir.parent / f"vllm-server-{port}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            pytest.fail(f"vLLM server did not start in {timeout:.0f} s; see {log.name}")
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
