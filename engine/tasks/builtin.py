"""The built-in JSONL tasks shipped in `engine/data/tasks` (`source = "builtin:NAME"`).

A task file holds one JSON object per line with an id, a question, a list of gold answers and a
split ("train" or "test"); `engine.tasks.loaders.load_items` reads them like any local file.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path

# The planted-behaviour tasks: generated with their models by engine.planted into the cache.
PLANTED_TASK_NAMES = ("planted_colour", "planted_city", "planted_food")


def builtin_task_names() -> list[str]:
    """Return the names of the built-in tasks shipped in `engine/data/tasks`."""
    folder = resources.files("engine") / "data" / "tasks"
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def builtin_task_path(name: str) -> Path:
    """Return the file of built-in task `name` (a planted task is built into the cache first)."""
    if name in PLANTED_TASK_NAMES:
        # engine.planted sits above the rooms (it trains a judge on the scoring prompt): a
        # by-name import keeps this room free of it.
        return importlib.import_module("engine.planted").task_path(name)
    return Path(str(resources.files("engine") / "data" / "tasks" / f"{name}.jsonl"))
