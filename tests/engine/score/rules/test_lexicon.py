"""Lexicon extraction against the hand-labeled set, plus rule-level examples.

Run with ``-s`` to print the per-category precision / recall / F1 table.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from engine.contract import NO_HEDGE
from engine.score.rules.extract import (
    extract_markers,
    markers_for_sentences,
    sentence_markers,
    tokenize,
)
from engine.score.rules.lexicon import HAND_ENTRIES, lexicon

LABELED = Path(__file__).parent / "data" / "lexicon_labeled.jsonl"
CATEGORIES = ("hedged", "unhedged", "negated", "multi")


def _norm(marker: str) -> str:
    if marker == NO_HEDGE:
        return marker
    return " ".join(t.word for t in tokenize(marker))


def _load() -> list[dict]:
    return [json.loads(line) for line in LABELED.read_text().splitlines() if line.strip()]


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def score_labeled() -> dict[str, tuple[float, float, float, int]]:
    """Micro P/R/F1 per category and overall over marker multisets (`<no_hedge>` included)."""
    counts = {c: [0, 0, 0, 0] for c in (*CATEGORIES, "overall")}
    for row in _load():
        gold = Counter(_norm(m) for m in (row["markers"] or [NO_HEDGE]))
        pred = Counter(_norm(m) for m in sentence_markers(row["sentence"]))
        tp = sum((gold & pred).values())
        for key in (row["category"], "overall"):
            c = counts[key]
            c[0] += tp
            c[1] += sum(pred.values()) - tp
            c[2] += sum(gold.values()) - tp
            c[3] += 1
    return {k: (*_prf(*v[:3]), v[3]) for k, v in counts.items()}


def test_labeled_set_shape() -> None:
    rows = _load()
    assert len(rows) >= 100
    assert {r["category"] for r in rows} == set(CATEGORIES)
    assert len({r["sentence"] for r in rows}) == len(rows)
    for r in rows:
        assert (r["category"] == "unhedged") == (r["markers"] == [])
        if r["category"] == "multi":
            assert len(r["markers"]) >= 2


def test_lexicon_f1_on_labeled_set() -> None:
    table = score_labeled()
    print("\ncategory    n    precision  recall  F1")
    for key, (p, r, f, n) in table.items():
        print(f"{key:<10} {n:>4}  {p:>9.3f}  {r:>6.3f}  {f:.3f}")
    assert table["overall"][2] >= 0.9
    for key in CATEGORIES:
        assert table[key][2] >= 0.8, key


def test_lexicon_size() -> None:
    assert len(HAND_ENTRIES) >= 150
    assert len({p for p, _ in HAND_ENTRIES}) == len(HAND_ENTRIES)
    assert len(lexicon()) >= len(HAND_ENTRIES)
    for phrase in lexicon():
        assert phrase == phrase.lower() and "'" not in phrase


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("I'm fairly sure it is Paris.", ["I'm fairly sure"]),
        ("It is almost certain that it rained.", ["It is almost certain"]),
        ("This is not likely.", ["not likely"]),
        ("It's not definitely true.", ["It's not definitely"]),
        ("That is not definitely true.", ["not definitely"]),
        ("PROBABLY Paris.", ["PROBABLY"]),
        ("It\u2019s likely.", ["It\u2019s likely"]),
        ("Improbably, the probabilities were likelihoods.", [NO_HEDGE]),
        ("May be Rome.", ["May"]),
        ("Born in May.", [NO_HEDGE]),
    ],
)
def test_rules(sentence: str, expected: list[str]) -> None:
    assert sentence_markers(sentence) == expected


def test_match_spans_kinds_and_negation_flags() -> None:
    s = "I think it is probably Paris, but I'm not certain."
    found = extract_markers(s)
    assert [s[m.start : m.end] for m in found] == [m.text for m in found]
    assert [m.entry for m in found] == ["i think", "probably", "i am not certain"]
    assert [m.negated for m in found] == [False, False, True]
    assert [m.kind for m in found] == ["hedge", "hedge", "hedge"]
    (neg,) = extract_markers("That is not definitely so.")
    assert (neg.entry, neg.kind, neg.negated) == ("not definitely", "hedge", True)
    (boost,) = extract_markers("Definitely so.")
    assert (boost.kind, boost.negated) == ("booster", False)


def test_deterministic() -> None:
    rows = _load()
    first = [sentence_markers(r["sentence"]) for r in rows]
    assert first == [sentence_markers(r["sentence"]) for r in rows]


def test_markers_for_sentences_and_no_hedge_flag() -> None:
    sents = ["It is probably Rome.", "Rome is in Italy.", "I think so, without a doubt."]
    assert markers_for_sentences(sents) == [
        ["probably"],
        [NO_HEDGE],
        ["I think", "without a doubt"],
    ]
    assert markers_for_sentences(sents, keep_no_hedge=False)[1] == []
