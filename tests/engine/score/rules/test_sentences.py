"""Sentence splitting: boundaries, spans, the "please" rule."""

from __future__ import annotations

from engine.score.rules.sentences import split_responses, split_sentences


def _texts(text: str, **kw: bool) -> list[str]:
    return [s.text for s in split_sentences(text, **kw)]


def test_abbreviations_and_decimals_stay_inside_a_sentence() -> None:
    text = "Dr. Smith was born in St. Louis in 1950. The value is 3.14, e.g. in the U.S. today."
    assert _texts(text) == [
        "Dr. Smith was born in St. Louis in 1950.",
        "The value is 3.14, e.g. in the U.S. today.",
    ]


def test_numbered_list_and_paragraphs() -> None:
    text = "Answer: Paris\n\nThere are two reasons:\n1. History.\n2. Size."
    assert _texts(text) == [
        "Answer: Paris",
        "There are two reasons:",
        "1. History.",
        "2. Size.",
    ]


def test_lone_option_letter_ends_a_sentence() -> None:
    assert _texts("The answer is C. I am fairly sure.") == ["The answer is C.", "I am fairly sure."]
    assert _texts("Answer: (B). It is likely.") == ["Answer: (B).", "It is likely."]
    # an initial inside a name is not an option letter
    assert _texts("It was written by J. R. R. Tolkien.") == ["It was written by J. R. R. Tolkien."]


def test_spans_point_into_the_text() -> None:
    text = "  Yes.   It is  probably true.\nPlease check. Done."
    sents = split_sentences(text)
    assert [s.text for s in sents] == ["Yes.", "It is  probably true.", "Done."]
    assert [s.idx for s in sents] == [0, 1, 2]
    for s in sents:
        assert text[s.start : s.end] == s.text


def test_please_dropped_by_default_and_kept_on_request() -> None:
    text = "Paris is the capital. Please let me know if you need more. I am pleased to help."
    assert _texts(text) == ["Paris is the capital.", "I am pleased to help."]
    assert _texts(text, keep_please=True) == [
        "Paris is the capital.",
        "Please let me know if you need more.",
        "I am pleased to help.",
    ]
    assert _texts("PLEASE note this.") == []


def test_empty_and_blank() -> None:
    assert split_sentences("") == []
    assert split_sentences(" \n ") == []
    assert [len(x) for x in split_responses(["A b.", "", "One. Two."])] == [1, 0, 2]
