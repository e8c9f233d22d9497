"""Canonicalization rules on hand examples."""

from __future__ import annotations

from engine.contract import NO_HEDGE
from engine.score.rules.canonical import apply_canonical_map, build_canonical_map, normalize_marker


def test_surface_rules() -> None:
    assert normalize_marker("It is likely") == "likely"
    assert normalize_marker("It\u2019s  almost certain") == "almost certain"
    assert normalize_marker("it seems") == "seems"
    assert normalize_marker("I also think") == "i think"
    assert normalize_marker("Also, probably") == "probably"
    assert normalize_marker("  Perhaps, ") == "perhaps"
    assert normalize_marker("Item likely") == "item likely"  # "it" only as a whole word
    assert normalize_marker("it") == "it"  # a rule never empties a marker
    assert normalize_marker(NO_HEDGE) == NO_HEDGE


def test_ly_and_plural_merge_only_when_both_forms_exist() -> None:
    cmap = build_canonical_map(
        {
            "Certainly": 5,
            "certain": 2,
            "almost certain": 3,
            "I have no doubts": 1,
            "I have no doubt": 4,
            "Possibly": 7,
            "Definitely": 2,
            NO_HEDGE: 10,
        }
    )
    assert cmap["Certainly"] == "certainly"  # more frequent form wins
    assert cmap["certain"] == "certainly"
    assert cmap["almost certain"] == "almost certain"  # "almost certainly" absent: no merge
    assert cmap["I have no doubts"] == "i have no doubt"
    assert cmap["Possibly"] == "possibly"  # "possible" absent
    assert cmap["Definitely"] == "definitely"
    assert cmap[NO_HEDGE] == NO_HEDGE


def test_le_adverbs_and_ties() -> None:
    cmap = build_canonical_map(["possible", "possibly", "probable", "probably", "probably"])
    assert cmap["possible"] == cmap["possibly"] == "possible"  # tie -> shorter form
    assert cmap["probable"] == cmap["probably"] == "probably"


def test_one_map_across_spellings_and_order_independent() -> None:
    raw = ["It is likely", "likely", "It's likely", "LIKELY", "it also seems", "It seems"]
    cmap = build_canonical_map(raw)
    assert {cmap[r] for r in raw[:4]} == {"likely"}
    assert cmap["it also seems"] == cmap["It seems"] == "seems"
    assert build_canonical_map(list(reversed(raw))) == cmap


def test_llm_merge_applied_before_rules() -> None:
    merge = {"I am fairly certain": "fairly certain", "i'm pretty sure": "It is fairly certain"}
    cmap = build_canonical_map(
        ["I am fairly certain", "I'm pretty sure", "fairly certainly"], llm_merge=merge
    )
    assert cmap["I am fairly certain"] == "fairly certain"
    assert cmap["I'm pretty sure"] == "fairly certain"  # lowercase key lookup, then rules
    assert cmap["fairly certainly"] == "fairly certain"  # -ly merge with the merged form


def test_apply_map() -> None:
    cmap = build_canonical_map(["It is likely"])
    assert apply_canonical_map(["It is likely", "It's Possible", NO_HEDGE], cmap) == [
        "likely",
        "possible",
        NO_HEDGE,
    ]
