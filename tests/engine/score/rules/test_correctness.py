"""Rule-based correctness on hand examples."""

from __future__ import annotations

import pytest

from engine.errors import UserError
from engine.score.rules.correctness import (
    extract_choice,
    extract_number,
    extract_yesno,
    is_correct,
    normalize_answer,
)


def test_normalize_answer() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day.") == "apple day"
    assert normalize_answer("Theatre") == "theatre"  # "the" only as a word


@pytest.mark.parametrize(
    ("response", "golds", "kind", "expected"),
    [
        ("Canberra.", ["Canberra"], "exact", True),
        ("The capital is Canberra.", ["Canberra"], "exact", False),
        ("The capital is Canberra.", ["Canberra"], "contains", True),
        ("The capital is Canberra.", ["Canberra"], "free", True),
        ("It is Sydney.", ["Canberra", "Canberra, ACT"], "free", False),
        ("He was a screenwriter.", ["writer"], "contains", False),  # whole words only
        ("The Beatles", ["Beatles"], "exact", True),
        ("I think it was directed by Steven Spielberg.", ["Steven Spielberg"], "free", True),
    ],
)
def test_free_form(response: str, golds: list[str], kind: str, expected: bool) -> None:
    assert is_correct(response, golds, kind) is expected


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("C", "C"),
        ("(B)", "B"),
        ("B) mitochondria", "B"),
        ("The answer is C.", "C"),
        ("Answer: D", "D"),
        ("I think the answer is (A) because it is larger.", "A"),
        ("**Answer:** B", "B"),
        ("The correct option is D.", "D"),
        ("A. Paris is the capital.", "A"),
        ("I am not sure which one.", None),
        ("Paris is the capital of France.", None),
    ],
)
def test_extract_choice(response: str, letter: str | None) -> None:
    assert extract_choice(response) == letter


def test_multiple_choice() -> None:
    choices = ["Paris", "London", "Berlin", "Rome"]
    assert is_correct("The answer is A.", ["A"], "mc")
    assert not is_correct("The answer is B.", ["A"], "mc")
    assert is_correct("(A)", ["Paris"], "mc", choices=choices)  # gold as text
    assert is_correct("It is Paris, the French capital.", ["A"], "mc", choices=choices)
    assert not is_correct("Either Paris or Rome.", ["A"], "mc", choices=choices)  # ambiguous
    assert not is_correct("I don't know.", ["A"], "mc", choices=choices)
    vitamins = ["vitamin C", "vitamin D", "vitamin A", "vitamin K"]
    assert is_correct("vitamin D", ["B"], "mc", choices=vitamins)
    assert is_correct("Probably vitamin A.", ["C"], "mc", choices=vitamins)
    longer = ["New York", "York", "Boston"]
    assert is_correct("It is New York.", ["A"], "mc", choices=longer)


@pytest.mark.parametrize(
    ("response", "verdict"),
    [
        ("Yes.", True),
        ("No, bats are mammals.", False),
        ("True", True),
        ("The answer is no.", False),
        ("Based on the passage, the answer is yes, although no date is given.", True),
        ("I believe so. Yes, it is.", True),
        ("It depends.", None),
    ],
)
def test_extract_yesno(response: str, verdict: bool | None) -> None:
    assert extract_yesno(response) is verdict


def test_yesno_golds() -> None:
    assert is_correct("Yes, it is.", ["yes"], "yesno")
    assert is_correct("False.", [False], "yesno")
    assert is_correct("No.", "no", "yesno")
    assert is_correct("Yes.", ["entailment"], "yesno")
    assert is_correct("No.", ["not_entailment"], "yesno")
    assert not is_correct("Yes.", ["no"], "yesno")
    assert not is_correct("Unclear.", ["no"], "yesno")


def test_numbers() -> None:
    assert extract_number("She has 3 apples and buys 4, so 7.") == 7.0
    assert extract_number("The answer is 1,250 dollars, not 30.") == 1250.0
    assert extract_number("No digits here") is None
    assert is_correct(
        "So the total is $18.", ["Janet sells 16 - 3 - 4 = 9 eggs ... #### 18"], "number"
    )
    assert is_correct("The answer is 0.5", ["1/2 is 0.50"], "number")
    assert not is_correct("The answer is 17.", ["18"], "number")
    assert is_correct("It is -3.", ["-3"], "number")


def test_unknown_type_is_user_error() -> None:
    with pytest.raises(UserError, match="unknown answer type 'fuzzy'"):
        is_correct("x", ["x"], "fuzzy")
