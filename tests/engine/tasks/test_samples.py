"""The bundled sample set loads through the plain loader and is well formed."""

from __future__ import annotations

import json

import pytest

from engine.errors import UserError
from engine.score.rules.correctness import is_correct
from engine.tasks.samples import SAMPLE_TASKS, load_sample_task


@pytest.mark.parametrize("name", sorted(SAMPLE_TASKS))
def test_sample_task_loads_both_roles(name: str) -> None:
    train = load_sample_task(name, "train")
    test = load_sample_task(name, "test")
    assert len(train) + len(test) == 40
    assert len(train) >= 20 and len(test) >= 10
    assert {it.split for it in train} == {"train"} and {it.split for it in test} == {"test"}
    assert {it.task for it in train} == {name}
    rows = [json.loads(line) for line in SAMPLE_TASKS[name].path.read_text().splitlines()]
    assert {tuple(sorted(r)) for r in rows} <= {
        ("answers", "id", "question", "split"),
        ("answers", "choices", "id", "question", "split"),
    }


def test_sample_answers_match_their_type() -> None:
    for it in load_sample_task("sample_science_mc", limit=None):
        assert it.choices is not None and len(it.choices) == 4
        assert it.answers[0] in "ABCD" and it.question.count("\n") == 4
        gold_text = it.choices["ABCD".index(it.answers[0])]
        assert is_correct(f"The answer is {it.answers[0]}.", it.answers, "mc")
        assert is_correct(gold_text, it.answers, "mc", choices=it.choices)
    for it in load_sample_task("sample_yesno", limit=None):
        assert it.answers in (("yes",), ("no",))
    for it in load_sample_task("sample_facts", limit=None):
        assert is_correct(f"I think it is {it.answers[0]}.", it.answers, "free")


def test_unknown_sample() -> None:
    with pytest.raises(UserError, match="unknown sample task"):
        load_sample_task("nope")
