"""Work units: a sweep expanded into model x task x split x prompt x chunk-of-items pieces.

A unit's id is a hash of everything that decides its rows (model, task, split, prompt, item ids
and texts, sampling settings, seed) and of nothing that does not (actor count, GPUs per replica),
so a resumed run finds its finished units whatever ran them before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from engine.config.sweep import (
    DEFAULT_SEED_MODE,
    ModelSpec,
    PromptSpec,
    SweepSpec,
    canonical_json,
    sampling_content,
)
from engine.tasks.loaders import load_items
from engine.tasks.sources import Item

_SEED_MASK = (1 << 62) - 1  # leaves room for base + sample index below 2**63


@dataclass(frozen=True)
class WorkUnit:
    """One unit of generation work, run by one actor in one `generate` call.

    Attributes:
        unit_id: Content hash (hex, 24 digits).
        run_id: Run id stored in every row.
        config_hash: Hash of the spec stored in the shard metadata.
        model: The model spec.
        task: Task name.
        split: Split name.
        prompt: The prompt spec.
        chunk_index: Position of the chunk within (model, task, split, prompt).
        item_ids: Ids of the items, in order.
        questions: Question texts, aligned with `item_ids`.
        seeds: Base seed per item; sample j uses seed + j (vLLM's parallel-sampling rule) when
            the seed mode seeds it.
        sampling: The sampling settings as a plain dict (`seed_mode` absent = "per-sample").
    """

    unit_id: str
    run_id: str
    config_hash: str
    model: ModelSpec
    task: str
    split: str
    prompt: PromptSpec
    chunk_index: int
    item_ids: tuple[str, ...]
    questions: tuple[str, ...]
    seeds: tuple[int, ...]
    sampling: dict[str, Any]

    @property
    def n_rows(self) -> int:
        """Rows this unit writes: items x samples."""
        return len(self.item_ids) * int(self.sampling["n"])

    def user_texts(self) -> list[str]:
        """Return the prompt template filled with each question."""
        return [self.prompt.template.format(question=q) for q in self.questions]


def seed_mode_of(unit: WorkUnit) -> str:
    """The unit's `sampling.seed_mode` ("per-sample" when absent)."""
    return str(unit.sampling.get("seed_mode", DEFAULT_SEED_MODE))


def row_seeds(unit: WorkUnit) -> list[int | None]:
    """The seed of each row (item-major, sample-minor) under the unit's seed mode; None for a
    sample drawn without a seed."""
    n = int(unit.sampling["n"])
    mode = seed_mode_of(unit)
    out: list[int | None] = []
    for base in unit.seeds:
        for j in range(n):
            seeded = mode == "per-sample" or (mode == "per-request" and j == 0)
            out.append(base + j if seeded else None)
    return out


def item_seed(base_seed: int, task: str, split: str, prompt_id: str, item_id: str) -> int:
    """Return the base seed of one item; sample j of the item uses this + j.

    It depends on the item's identity only (not on chunking or batching), so the same item gets
    the same samples in any unit layout, and two models see the same seeds (paired samples).
    """
    key = canonical_json([base_seed, task, split, prompt_id, item_id]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") & _SEED_MASK


def model_identity(model: ModelSpec) -> dict[str, Any]:
    """The part of a model spec that decides its outputs (the backend only for API models, so
    vLLM units keep the ids they had before API models existed)."""
    identity = {
        "name": model.name,
        "path": model.path,
        "use_chat_template": model.use_chat_template,
        "engine_args": model.engine_args,
    }
    if model.chat_template_kwargs:  # absent when empty: older units keep their ids
        identity["chat_template_kwargs"] = model.chat_template_kwargs
    if model.backend != "vllm":
        identity["backend"] = model.backend
    return identity


def unit_id_of(
    model: ModelSpec,
    task: str,
    split: str,
    prompt: PromptSpec,
    items: list[Item],
    sampling: dict[str, Any],
) -> str:
    """Return the content hash of a unit (24 hex digits)."""
    texts = hashlib.sha256("\x1f".join(i.question for i in items).encode()).hexdigest()
    content = {
        "model": model_identity(model),
        "task": task,
        "split": split,
        "prompt": {"id": prompt.id, "template": prompt.template, "system": prompt.system},
        "item_ids": [i.item_id for i in items],
        "questions_sha256": texts,
        "sampling": sampling,
    }
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:24]


def plan_units(spec: SweepSpec) -> list[WorkUnit]:
    """Expand a spec into its work units, ordered model by model.

    Args:
        spec: The validated sweep spec.

    Returns:
        The units; the same spec always gives the same units in the same order.
    """
    sampling = sampling_content(spec.to_dict()["sampling"])
    chunk = spec.run.chunk_size
    items_by_task = {task.name: load_items(task) for task in spec.tasks}
    # Computed once: the spec's hash serializes the whole spec, and an item's seed does not depend
    # on the model (a 13-model sweep of 110,000 items planned in minutes otherwise).
    run_id, config_hash = spec.run_id, spec.hash
    chunks: dict[tuple[str, str, str], list[tuple[list[Item], tuple[int, ...]]]] = {}
    for task in spec.tasks:
        for split in task.splits:
            items = items_by_task[task.name][split]
            for prompt in spec.prompts:
                chunks[task.name, split, prompt.id] = [
                    (
                        items[start : start + chunk],
                        tuple(
                            item_seed(spec.sampling.seed, task.name, split, prompt.id, i.item_id)
                            for i in items[start : start + chunk]
                        ),
                    )
                    for start in range(0, len(items), chunk)
                ]
    units: list[WorkUnit] = []
    for model in spec.models:
        for task in spec.tasks:
            for split in task.splits:
                for prompt in spec.prompts:
                    for index, (part, seeds) in enumerate(chunks[task.name, split, prompt.id]):
                        units.append(
                            WorkUnit(
                                unit_id=unit_id_of(model, task.name, split, prompt, part, sampling),
                                run_id=run_id,
                                config_hash=config_hash,
                                model=model,
                                task=task.name,
                                split=split,
                                prompt=prompt,
                                chunk_index=index,
                                item_ids=tuple(i.item_id for i in part),
                                questions=tuple(i.question for i in part),
                                seeds=seeds,
                                sampling=sampling,
                            )
                        )
    return units
