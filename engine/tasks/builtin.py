"""Question sets for the engine: the built-in JSONL tasks and local JSONL files.

A task file holds one JSON object per line with an id, a question, a list of gold answers and a
split ("train" or "test"). Column names can be remapped in the spec (`id_column`, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engine.config.sweep import BUILTIN_PREFIX, TaskSpec
from engine.errors import UserError


@dataclass(frozen=True)
class Item:
    """One question of a task.

    Attributes:
        id: Item id, unique within the task.
        question: The question text.
        answers: Gold answers.
        split: The split the item belongs to.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    split: str


def builtin_task_names() -> list[str]:
    """Return the names of the built-in tasks shipped in `engine/data/tasks`."""
    folder = resources.files("engine") / "data" / "tasks"
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def builtin_task_path(name: str) -> Path:
    """Return the file of built-in task `name`."""
    return Path(str(resources.files("engine") / "data" / "tasks" / f"{name}.jsonl"))


def load_items(task: TaskSpec) -> dict[str, list[Item]]:
    """Load a task's items grouped by split, in file order, honouring `splits` and `limit`.

    Args:
        task: The task spec.

    Returns:
        Split name -> items (every split of `task.splits`, possibly empty).

    Raises:
        UserError: The file is unreadable, a line is not JSON, a column is missing or an id repeats.
    """
    if task.source.startswith(BUILTIN_PREFIX):
        path = builtin_task_path(task.source[len(BUILTIN_PREFIX) :])
    else:
        path = Path(task.source)
    by_split: dict[str, list[Item]] = {split: [] for split in task.splits}
    seen: set[str] = set()
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise UserError(f"task '{task.name}': cannot read {path}: {exc}") from None
    for lineno, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})",
                "save the file as UTF-8",
            ) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}:{lineno}: not JSON ({exc})", "write one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise UserError(
                f"{path}:{lineno}: a JSON {type(row).__name__}, not an object",
                'write one object per line, e.g. {"id": "q1", "question": "..."}',
            )
        for column in (task.id_column, task.question_column):
            if column not in row:
                raise UserError(
                    f"{path}:{lineno}: missing column '{column}'",
                    f"add it, or map another column with tasks.{task.name}.{'id' if column == task.id_column else 'question'}_column",
                )
        item_id = str(row[task.id_column])
        if item_id in seen:
            raise UserError(f"{path}:{lineno}: item id '{item_id}' repeats", "make ids unique")
        seen.add(item_id)
        split = str(row.get(task.split_column, "test"))
        answers = row.get("answers", [])
        answers = [answers] if isinstance(answers, str) else answers
        items = by_split.get(split)
        if items is None or (task.limit and len(items) >= task.limit):
            continue
        items.append(Item(item_id, str(row[task.question_column]), tuple(map(str, answers)), split))
    empty = [split for split, items in by_split.items() if not items]
    if empty:
        # Most often a typo in `splits` or the wrong file: a sweep would silently skip it.
        raise UserError(
            f"{path}: task '{task.name}' has no items in split '{empty[0]}'",
            f"check tasks.{task.name}.splits / split_column ('{task.split_column}') and the file",
        )
    return by_split
