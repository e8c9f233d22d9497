"""Helpers shared by the engine tests (spec documents, TOML writing)."""

from __future__ import annotations

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
