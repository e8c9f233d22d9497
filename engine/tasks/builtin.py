"""The built-in JSONL tasks shipped in `engine/data/tasks` (`source = "builtin:NAME"`).

A task file holds one JSON object per line with an id, a question, a list of gold answers and a
split ("train" or "test"); `engine.tasks.loaders.load_items` reads them like any local file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def builtin_task_names() -> list[str]:
    """Return the names of the built-in tasks shipped in `engine/data/tasks`."""
    folder = resources.files("engine") / "data" / "tasks"
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def builtin_task_path(name: str) -> Path:
    """Return the file of built-in task `name`."""
    return Path(str(resources.files("engine") / "data" / "tasks" / f"{name}.jsonl"))
