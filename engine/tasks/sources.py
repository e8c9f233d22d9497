"""Where a task's items come from: the one parser of `source` prefixes, and the one `Item`.

A task `source` in a spec is one of

- ``builtin:NAME``  a JSONL task shipped in `engine/data/tasks` (`engine.tasks.builtin`);
- ``sample:NAME``   a bundled sample task of the studies (`engine.tasks.samples`);
- ``registry:NAME`` a registry task of the two studies, loaded from the hub (`engine.tasks.registry`);
- anything else     a local task file.
"""

from __future__ import annotations

from dataclasses import dataclass

BUILTIN_PREFIX = "builtin:"
SAMPLE_PREFIX = "sample:"
REGISTRY_PREFIX = "registry:"
PREFIXES = {"builtin": BUILTIN_PREFIX, "sample": SAMPLE_PREFIX, "registry": REGISTRY_PREFIX}


def parse_source(source: str) -> tuple[str, str]:
    """Split a task source into its kind and name.

    Args:
        source: A spec's task source.

    Returns:
        ("builtin" | "sample" | "registry", NAME) for a prefixed source, else ("file", source).
    """
    for kind, prefix in PREFIXES.items():
        if source.startswith(prefix):
            return kind, source[len(prefix) :]
    return "file", source


@dataclass(frozen=True)
class Item:
    """One question of a task.

    Attributes:
        task: Task name.
        item_id: Unique id within the task.
        question: Question text shown to the model (with lettered options for multiple choice).
        answers: Gold answers (option letters for multiple choice, "yes" / "no" for yes / no).
        split: The split the item belongs to ("train" or "test" for the studies).
        choices: Option texts in letter order, for multiple choice.
    """

    task: str
    item_id: str
    question: str
    answers: tuple[str, ...]
    split: str
    choices: tuple[str, ...] | None = None
