"""The task registry: the two studies' tasks and their fields."""

from __future__ import annotations

import pytest

from engine.errors import UserError
from engine.tasks.loaders import BUILDERS
from engine.tasks.registry import MARCON_TASKS, SEED_TASKS, TASKS, get_task


def test_study_task_lists() -> None:
    assert len(SEED_TASKS) == 11
    assert set(SEED_TASKS) == {
        "popqa", "selfaware", "simpleqa", "truthfulqa", "halueval", "ambignq", "wnli", "mmlu",
        "sciq", "arc_challenge", "superglue",
    }  # fmt: skip
    assert len(MARCON_TASKS) == 7
    assert set(MARCON_TASKS) == {
        "boolq", "strategyqa", "gsm8k", "mmlu", "commonsenseqa", "medmcqa", "casehold",
    }  # fmt: skip


def test_every_source_has_a_builder_and_fields() -> None:
    for spec in TASKS.values():
        assert spec.answer_type in ("free", "mc", "yesno", "number")
        assert spec.instruction
        for source in spec.sources:
            assert source.builder in BUILDERS
            assert source.question_fields and source.answer_field
            assert source.hf_id.count("/") == 1


def test_seed_facts() -> None:
    arc = get_task("ARC-Challenge")
    assert (arc.hf_id, arc.config, arc.answer_type) == ("allenai/ai2_arc", "ARC-Challenge", "mc")
    assert arc.sources[0].test_split == "test"
    assert get_task("popqa").hf_id == "akariasai/PopQA"
    assert not get_task("popqa").has_test_split
    assert [s.config for s in get_task("halueval").sources] == [
        "dialogue_samples", "general", "qa_samples", "summarization_samples",
    ]  # fmt: skip
    assert [s.config for s in get_task("superglue").sources] == ["boolq", "rte"]
    assert get_task("ambignq").sources[0].test_split == "validation"  # hidden test labels
    assert get_task("gsm8k").answer_type == "number"


def test_unknown_task() -> None:
    with pytest.raises(UserError, match="unknown task 'squad'.*sciq"):
        get_task("squad")


def test_specs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        get_task("sciq").name = "x"  # type: ignore[misc]
