"""Task loaders on small local files in each format, including hub-export shapes."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import UserError
from engine.tasks.loaders import (
    ColumnMap,
    _build_rows,
    assign_role,
    load_hub_task,
    load_local_task,
    load_task,
    shuffle_and_limit,
)
from engine.tasks.registry import get_task

PLAIN = [
    {"id": "q1", "question": "Capital of France?", "answers": ["Paris"], "split": "train"},
    {"id": "q2", "question": "Capital of Peru?", "answers": ["Lima"], "split": "train"},
    {"id": "q3", "question": "Capital of Chad?", "answers": ["N'Djamena"], "split": "test"},
    {
        "id": "q4",
        "question": "Largest planet?",
        "answers": ["B"],
        "split": "train",
        "choices": ["Mars", "Jupiter"],
    },
]

ARC_EXPORT = [
    {
        "id": "Mercury_7175875",
        "question": "Which property of a mineral can be determined just by looking at it?",
        "choices": {
            "text": ["luster", "mass", "weight", "hardness"],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "A",
    },
    {
        "id": "Mercury_SC_401169",
        "question": "Which is a renewable resource?",
        "choices": {"text": ["coal", "wind", "oil"], "label": ["1", "2", "3"]},
        "answerKey": "2",
    },
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_plain_jsonl(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "capitals.jsonl", PLAIN)
    train = load_local_task(path, role="train")
    assert sorted(it.item_id for it in train) == ["q1", "q2", "q4"]
    assert {it.task for it in train} == {"capitals"}
    q4 = next(it for it in train if it.item_id == "q4")
    assert q4.choices == ("Mars", "Jupiter") and q4.answers == ("B",)
    assert q4.question == "Largest planet?\nA. Mars\nB. Jupiter"
    (test,) = load_local_task(path, role="test")
    assert (test.item_id, test.answers, test.choices) == ("q3", ("N'Djamena",), None)


def test_parquet_with_column_mapping(tmp_path: Path) -> None:
    table = pa.table(
        {
            "qid": ["a", "b", "c"],
            "prompt": ["1+1?", "2+2?", "3+3?"],
            "gold": [["2"], ["4", "four"], ["6"]],
        }
    )
    path = tmp_path / "math.parquet"
    pq.write_table(table, path)
    cols = ColumnMap(id="qid", question="prompt", answers="gold", split=None, choices=None)
    items = load_local_task(path, columns=cols, split="test", role="test", name="arith")
    assert {it.item_id: it.answers for it in items} == {
        "a": ("2",),
        "b": ("4", "four"),
        "c": ("6",),
    }
    assert {it.split for it in items} == {"test"}


def test_csv_answers_as_json_or_plain_string(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "question", "answers", "split"])
        writer.writerow(
            ["1", "Who wrote Hamlet?", '["Shakespeare", "William Shakespeare"]', "train"]
        )
        writer.writerow(["2", "Boiling point of water in C?", "100", "train"])
    items = {it.item_id: it for it in load_local_task(path)}
    assert items["1"].answers == ("Shakespeare", "William Shakespeare")
    assert items["2"].answers == ("100",)


def test_arc_challenge_hub_export(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "arc_train.jsonl", ARC_EXPORT)
    items = {it.item_id: it for it in load_task("arc_challenge", "train", path=path, split="train")}
    first = items["Mercury_7175875"]
    assert first.answers == ("A",)
    assert first.question == (
        "Which property of a mineral can be determined just by looking at it?\n"
        "A. luster\nB. mass\nC. weight\nD. hardness"
    )
    assert first.choices == ("luster", "mass", "weight", "hardness")
    second = items["Mercury_SC_401169"]  # numeric labels are re-lettered
    assert second.answers == ("B",) and second.question.endswith("A. coal\nB. wind\nC. oil")


def test_sciq_hub_export_parquet_seeded_option_shuffle(tmp_path: Path) -> None:
    rows = [
        {
            "question": f"Question {i}?",
            "distractor1": f"d1-{i}",
            "distractor2": f"d2-{i}",
            "distractor3": f"d3-{i}",
            "correct_answer": f"right-{i}",
            "support": "",
        }
        for i in range(12)
    ]
    path = tmp_path / "sciq.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    items = load_local_task(path, task="sciq", split="test", role="test")
    assert len(items) == 12
    letters = set()
    for it in items:
        (letter,) = it.answers
        assert it.choices is not None and it.choices["ABCD".index(letter)].startswith("right-")
        assert sorted(it.choices)[:3] == sorted(c for c in it.choices if c.startswith("d"))
        letters.add(letter)
    assert len(letters) > 1  # the correct option is not always last
    again = load_local_task(path, task="sciq", split="test", role="test")
    assert again == items  # deterministic


def test_missing_columns_name_the_file_and_column(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", [{"id": "1", "query": "x", "answers": ["y"]}])
    with pytest.raises(UserError, match=r"bad\.jsonl: missing column 'question'"):
        load_local_task(path)
    path = _jsonl(tmp_path / "bad2.jsonl", [{"id": "1", "question": "x", "gold": "y"}])
    with pytest.raises(UserError, match=r"bad2\.jsonl: missing column 'answers'"):
        load_local_task(path)
    path = _jsonl(tmp_path / "arc.jsonl", [{"id": "1", "question": "x", "choices": {}}])
    rows = [PLAIN[0], {"id": "z", "answers": ["y"]}]
    path = _jsonl(tmp_path / "bad3.jsonl", rows)
    with pytest.raises(UserError, match=r"bad3\.jsonl: missing column 'question' in row 2"):
        load_local_task(path)
    path = _jsonl(tmp_path / "arc.jsonl", [{"id": "1", "question": "x", "choices": {}}])
    with pytest.raises(UserError, match=r"arc\.jsonl: missing column 'answerKey'"):
        load_local_task(path, task="arc_challenge")


def test_empty_and_duplicates(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match=r"empty\.jsonl: the task file is empty"):
        load_local_task(empty)
    dup = _jsonl(tmp_path / "dup.jsonl", [PLAIN[0], PLAIN[0]])
    with pytest.raises(UserError, match=r"dup\.jsonl: duplicate item id 'q1' in column 'id'"):
        load_local_task(dup)
    only_test = _jsonl(tmp_path / "t.jsonl", [PLAIN[2]])
    with pytest.raises(UserError, match="no items with split 'train'"):
        load_local_task(only_test, role="train")
    no_gold = _jsonl(tmp_path / "ng.jsonl", [{"id": "1", "question": "x", "answers": []}])
    with pytest.raises(UserError, match="no gold answer in column 'answers'"):
        load_local_task(no_gold)
    txt = tmp_path / "x.txt"
    txt.write_text("a")
    with pytest.raises(UserError, match="unknown task file type"):
        load_local_task(txt)
    with pytest.raises(UserError, match="task file not found"):
        load_local_task(tmp_path / "absent.jsonl")
    with pytest.raises(UserError, match="unknown split role"):
        load_local_task(dup, role="dev")


def test_seeded_shuffle_limit_and_fifty_fifty(tmp_path: Path) -> None:
    rows = [{"id": f"i{n:03d}", "question": f"q{n}", "answers": [str(n)]} for n in range(200)]
    path = _jsonl(tmp_path / "many.jsonl", rows)
    train = load_local_task(path, role="train", limit=None)
    test = load_local_task(path, role="test", limit=None)
    assert len(train) + len(test) == 200 and 70 < len(train) < 130
    assert {it.item_id for it in train}.isdisjoint({it.item_id for it in test})
    assert all(assign_role(it.item_id) == "train" for it in train)
    # limit takes a prefix of the same seeded order; the order ignores file order
    assert load_local_task(path, role="train", limit=10) == train[:10]
    reversed_path = _jsonl(tmp_path / "many_rev.jsonl", rows[::-1])
    rev = load_local_task(reversed_path, role="train", limit=None, name="many")
    assert [it.item_id for it in rev] == [it.item_id for it in train]
    other_seed = load_local_task(path, role="train", limit=None, seed=7)
    assert [it.item_id for it in other_seed] != [it.item_id for it in train]
    assert shuffle_and_limit([], limit=5) == []


def test_hub_loader_through_a_stand_in_datasets_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    arc_test = [dict(r, id=f"T{n}") for n, r in enumerate(ARC_EXPORT)]

    def load_dataset(hf_id: str, config: str | None, split: str) -> list[dict]:
        calls.append((hf_id, config, split))
        return arc_test if split == "test" else ARC_EXPORT

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    items = load_hub_task("arc_challenge", "test")
    assert calls == [("allenai/ai2_arc", "ARC-Challenge", "test")]
    assert sorted(it.item_id for it in items) == ["T0", "T1"]
    assert {it.split for it in items} == {"test"}

    popqa = [
        {"id": 1, "question": "Who directed X?", "prop": "director", "obj": "Ann Lee",
         "possible_answers": '["Ann Lee", "A. Lee"]'},
        {"id": 2, "question": "What is X's genre?", "prop": "genre", "obj": "rock",
         "possible_answers": '["rock"]'},
        {"id": 3, "question": "Who wrote Y?", "prop": "author", "obj": "Bo",
         "possible_answers": '["Bo"]'},
    ]  # fmt: skip
    monkeypatch.setitem(
        sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: popqa)
    )
    # relation and short-object filters leave item 1 only; no test split: seeded 50/50 by id
    role = assign_role("1")
    other = "test" if role == "train" else "train"
    items = load_hub_task("popqa", role, limit=None)
    assert [(it.item_id, it.answers, it.split) for it in items] == [
        ("1", ("Ann Lee", "A. Lee"), role)
    ]
    with pytest.raises(
        UserError, match=rf"akariasai/PopQA \(popqa, {other}\): the task has no items"
    ):
        load_hub_task("popqa", other)


def test_hub_loader_without_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match="needs the `datasets` package.*pip install datasets"):
        load_hub_task("sciq")


def test_builders_for_yes_no_and_number_tasks(tmp_path: Path) -> None:
    rte = [
        {"premise": "A man rides.", "hypothesis": "A man moves.", "idx": 0, "label": 0},
        {"premise": "A cat naps.", "hypothesis": "A dog runs.", "idx": 1, "label": 1},
        {"premise": "Hidden.", "hypothesis": "Label.", "idx": 2, "label": -1},
    ]
    path = _jsonl(tmp_path / "rte.jsonl", rte)
    spec = get_task("superglue")
    source = spec.sources[1]
    items = _build_rows(rte, source, "superglue", "rte:", "train", 42)
    assert [(it.item_id, it.answers) for it in items] == [("rte:0", ("yes",)), ("rte:1", ("no",))]
    assert path.exists()
    gsm = _jsonl(
        tmp_path / "gsm.jsonl",
        [{"question": "Tom has 1,000 pens ...", "answer": "1000 + 200 = 1200\n#### 1,200"}],
    )
    (item,) = load_local_task(gsm, task="gsm8k", split="train")
    assert item.answers == ("1200",)
