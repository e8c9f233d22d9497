"""The bundled sample set: three small tasks written by the project for the offline demo and tests.

Each is a plain JSONL file in ``engine/data/samples/`` with rows
``{"id", "question", "answers": [...], "split": "train"|"test", "choices"?}`` (40 items, 27 train /
13 test): free-form factual questions in the shape of PopQA, four-option science multiple choice in
the shape of SciQ / ARC, and yes / no questions in the shape of BoolQ / StrategyQA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.tasks.loaders import DEFAULT_LIMIT, DEFAULT_SEED, load_local_task
from engine.tasks.registry import INSTRUCTIONS
from engine.tasks.sources import Item

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"


@dataclass(frozen=True)
class SampleTask:
    """A bundled sample task.

    Attributes:
        name: Task name.
        path: The JSONL file.
        answer_type: "free", "mc" or "yesno" (selects the rule-based correctness matcher).
        instruction: The per-task instruction.
    """

    name: str
    path: Path
    answer_type: str
    instruction: str


SAMPLE_TASKS: dict[str, SampleTask] = {
    name: SampleTask(name, SAMPLES_DIR / f"{name}.jsonl", kind, INSTRUCTIONS[kind])
    for name, kind in (
        ("sample_facts", "free"),
        ("sample_science_mc", "mc"),
        ("sample_yesno", "yesno"),
    )
}


def load_sample_task(
    name: str, role: str = "train", *, seed: int = DEFAULT_SEED, limit: int | None = DEFAULT_LIMIT
) -> list[Item]:
    """Load one role of a bundled sample task.

    Args:
        name: One of `SAMPLE_TASKS`.
        role: "train" or "test".
        seed: Shuffle seed.
        limit: Item limit.

    Returns:
        The items.

    Raises:
        UserError: For an unknown sample task.
    """
    if name not in SAMPLE_TASKS:
        raise UserError(f"unknown sample task {name!r}", f"use one of: {', '.join(SAMPLE_TASKS)}")
    task = SAMPLE_TASKS[name]
    return load_local_task(task.path, name=name, role=role, seed=seed, limit=limit)
