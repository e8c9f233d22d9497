"""The planted world, its tokenizer and the reproducibility of its training."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine import planted as P
from engine.errors import UserError
from engine.score.judges.prompts import consistency_prompt
from engine.score.rules.extract import sentence_markers


def test_world_is_balanced_and_fixed() -> None:
    facts = P.world()
    assert len(facts) == len(P.TASKS) * P.N_ENTITIES
    for task in P.TASKS:
        levels = Counter((f.level, f.split) for f in facts if f.task == task)
        # every level has the same number of facts in each split
        assert set(levels.values()) == {P.N_ENTITIES // len(P.LEVELS) // 2}
    for f in facts:
        assert abs(sum(p for _, p in f.answers) - 1.0) < 1e-9
        assert len({a for a, _ in f.answers}) == len(f.answers)
    assert P.world() == facts  # the world is a function of the seed alone
    assert P.world(seed=7) != facts


def test_markers_are_extracted_by_the_lexicon() -> None:
    # the study extracts markers with the lexicon: every planted marker must be found as itself
    for marker in P.MARKERS:
        assert sentence_markers(f"{marker} red") == [marker]


def test_planted_certainty_orders_the_markers() -> None:
    values = [P.PLANTED_CERTAINTY[m] for m in P.MARKERS]
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)
    truth = P.planted_truth()
    assert truth["faithful"]["planted_food"] == P.PLANTED_CERTAINTY
    inverted = truth["unfaithful"][P.INVERTED_TASK]
    assert [inverted[m] for m in P.MARKERS] == values[::-1]


def test_generator_targets() -> None:
    facts = P.world()
    for name in ("faithful", "unfaithful"):
        groups = P.generator_examples(name)
        assert len(groups) == len(facts)
        for fact, group in zip(facts, groups):
            assert abs(sum(e[2] for e in group) - 1.0) < 1e-9
            markers = {e[1].split()[0] for e in group}
            if name == "faithful":
                assert markers == {P.MARKERS[fact.level]}
            elif fact.task == P.INVERTED_TASK:
                assert markers == {P.MARKERS[len(P.MARKERS) - 1 - fact.level]}
            else:
                assert markers == set(P.MARKERS)


def test_tokenizer_reads_the_real_judge_prompt() -> None:
    tok = P.build_tokenizer()
    ids = tok(consistency_prompt("probably red", "maybe blue"))["input_ids"]
    words = tok.convert_ids_to_tokens(ids)
    assert words[0] == "<s>" and "<unk>" not in words
    assert words[2:4] == ["probably", "red"] and words[5:7] == ["maybe", "blue"]
    assert len(ids) == 8  # <s>, 3 fixed pieces, 2 words each of context and assertion
    prompt = P.PROMPT_TEMPLATE.format(question=P.world()[0].question)
    assert "<unk>" not in tok.convert_ids_to_tokens(tok(prompt)["input_ids"])
    completion = tok("probably red </s>", add_special_tokens=False)["input_ids"]
    assert tok.decode(completion, skip_special_tokens=True) == "probably red"


def test_judge_holds_out_marker_pairs_but_sees_every_answer_pair() -> None:
    groups = P.judge_examples()
    seen_pairs = {(g[0][0], g[0][1]) for g in groups}
    assert len(groups) == sum(len(v) ** 2 for _, v in P.TASKS.values())
    for m1, m2 in P.JUDGE_HELD_OUT:
        held = consistency_prompt(f"{m1} red", f"{m2} red")
        assert all(prompt != held for g in groups for prompt, *_ in g)
    assert seen_pairs  # not empty
    yes = sum(e[2] for g in groups for e in g if e[1] == "yes")
    no = sum(e[2] for g in groups for e in g if e[1] == "no")
    assert abs(yes - no) < 1e-6  # balanced verdicts


@pytest.mark.slow
@pytest.mark.engine
def test_build_is_bit_for_bit_reproducible(tmp_path: Path, engine_holder: Any) -> None:
    """Any worker count gives the same bits, also from a process where a vLLM engine ran (it
    leaves torch in a state that trained other weights in-process)."""
    engine_holder.get()
    steps = {"faithful": 3, "unfaithful": 3, "judge": 3}
    a = P.build_planted(tmp_path / "a", steps=steps, workers=1)  # one after another
    b = P.build_planted(tmp_path / "b", steps=steps, workers=3)  # one process each, at once
    assert a["hashes"] == b["hashes"]
    assert len(set(a["hashes"].values())) == 3
    c = P.build_planted(tmp_path / "c", steps=steps, seed=P.PLANTED_SEED + 1, workers=1)
    assert c["hashes"]["faithful"] != a["hashes"]["faithful"]
    # the task files ship with the models and carry the planted truth per item
    rows = [
        json.loads(line)
        for line in (tmp_path / "a" / "tasks" / "planted_food.jsonl").read_text().splitlines()
    ]
    assert len(rows) == P.N_ENTITIES and {r["split"] for r in rows} == {"train", "test"}
    for r in rows:  # the gold answer is a most likely answer
        assert r["planted_answers"][r["answers"][0]] == max(r["planted_answers"].values())


def test_spec_knows_the_planted_names(tmp_path: Path) -> None:
    from engine.config.sweep import validate

    doc = {
        "run": {"name": "p"},
        "models": [{"name": "f", "path": "builtin:planted-faithful"}],
        "tasks": [{"name": "c", "source": "builtin:planted_colour"}],
        "prompts": [{"id": "plain", "template": "{question}\nAnswer:"}],
    }
    spec = validate(doc, source="t.toml", base_dir=tmp_path)
    assert spec.tasks[0].source == "builtin:planted_colour"
    doc["tasks"][0]["source"] = "builtin:planted_colours"
    with pytest.raises(UserError, match="planted_colour"):
        validate(doc, source="t.toml", base_dir=tmp_path)


def test_the_rooms_list_the_planted_names() -> None:
    # the low rooms name the planted tasks and models without importing engine.planted
    from engine.config.sweep import BUILTIN_MODEL_NAMES
    from engine.tasks.builtin import PLANTED_TASK_NAMES

    assert set(PLANTED_TASK_NAMES) == set(P.TASKS)
    assert set(P.MODEL_IDS) <= set(BUILTIN_MODEL_NAMES)


@pytest.mark.slow
def test_an_interrupted_build_leaves_no_trainer_behind(tmp_path: Path) -> None:
    """Ctrl-C while the models train: the builder and its spawned workers all end with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def descendants(pid: int) -> set[int]:
        found: set[int] = set()
        todo = [pid]
        while todo:
            for f in (Path("/proc") / str(todo.pop()) / "task").glob("*/children"):
                with contextlib.suppress(OSError):
                    kids = {int(k) for k in f.read_text().split()} - found
                    found |= kids
                    todo += kids
        return found

    def running(pid: int) -> bool:
        try:
            stat = (Path("/proc") / str(pid) / "stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended, unreaped

    def alive(pids: set[int]) -> set[int]:
        return {pid for pid in pids if running(pid)}

    env = {**os.environ, "MIC_CACHE_DIR": str(tmp_path / "cache")}
    code = "from engine.planted import planted_dir; planted_dir()"
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        tree: set[int] = set()
        while time.monotonic() < deadline and len(tree) < 3:  # builder + workers
            time.sleep(0.2)
            tree = descendants(parent.pid)
        assert len(tree) >= 3, "no training workers started"
        time.sleep(1.0)
        tree |= descendants(parent.pid)
        parent.send_signal(signal.SIGINT)
        assert parent.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while alive(tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(tree) == set()
        assert not (tmp_path / "cache" / "models" / f"planted-v{P.PLANTED_VERSION}").exists()
    finally:
        parent.kill()
