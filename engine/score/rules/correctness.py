"""Rule-based correctness (docs/method.md §2): fast, deterministic matchers of a response to gold answers.

Answer types and what counts as correct:

- ``exact``: SQuAD-style normalized exact match of the whole response to a gold answer (lowercase,
  punctuation and the articles a / an / the removed, whitespace collapsed).
- ``contains``: a normalized gold answer occurs in the normalized response as whole words.
- ``free``: ``exact`` or ``contains`` (the default for free-form tasks).
- ``mc``: the option letter the response commits to ("C", "(B)", "Answer: D", "the answer is C") equals
  the gold letter; a gold given as option text is turned into its letter with ``choices``; with no
  letter found, a response containing exactly one option's text (as whole words, ignoring options
  contained in a longer matched option) picks that option.
- ``yesno``: the response's verdict (yes / no, true / false) equals the gold's; "answer is X" wins, then a
  leading word, then the first verdict word anywhere.
- ``number``: the response's final number ("answer is 42", else the last number; commas, "$" and "%"
  ignored) equals a gold number within 1e-6 relative tolerance. GSM8K golds "... #### 42" are read after
  the "####".
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

from engine.errors import UserError

ANSWER_TYPES = ("free", "exact", "contains", "mc", "yesno", "number")
LETTERS = "ABCDEFGHIJ"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lowercase, drop punctuation and articles, collapse whitespace.

    Args:
        text: Any answer text.

    Returns:
        The normalized text.
    """
    text = text.lower().replace("\u2019", "'").translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(response: str, gold_answers: Sequence[str]) -> bool:
    """Whether the normalized response equals a normalized gold answer."""
    resp = normalize_answer(response)
    return any(resp == normalize_answer(g) for g in gold_answers if normalize_answer(g))


def contains_match(response: str, gold_answers: Sequence[str]) -> bool:
    """Whether a normalized gold answer occurs as whole words in the normalized response."""
    resp = f" {normalize_answer(response)} "
    return any(f" {g} " in resp for g in (normalize_answer(x) for x in gold_answers) if g)


_MC_PATTERNS = (
    re.compile(
        r"\banswer\s*(?:is|:)?[\s*:]*(?:option\s*)?[\s*:\-]*\(?([A-J])\)?(?![A-Za-z])", re.I
    ),
    re.compile(r"\b(?i:option|choice)\s*(?:is\s*)?\(?([A-J])\)?(?![A-Za-z])"),
    re.compile(r"^\W*\(?([A-J])\)?(?:[.:)]|\s*$)"),
    re.compile(r"\(([A-J])\)"),
)


def extract_choice(response: str) -> str | None:
    """The option letter a response commits to, or None.

    Args:
        response: The response text.

    Returns:
        An upper-case letter A-J, or None when none is found.
    """
    text = response.strip()
    for pattern in _MC_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    return None


def _gold_letters(gold_answers: Sequence[str], choices: Sequence[str] | None) -> set[str]:
    letters: set[str] = set()
    for gold in gold_answers:
        g = str(gold).strip().strip("()").strip()
        if len(g) == 1 and g.upper() in LETTERS:
            letters.add(g.upper())
        elif choices:
            for i, choice in enumerate(choices):
                if normalize_answer(choice) == normalize_answer(str(gold)):
                    letters.add(LETTERS[i])
    return letters


def _light(text: str) -> str:
    # no article stripping here: option texts like "vitamin A" must keep their letter
    return " ".join(text.lower().translate(_PUNCT).split())


def _choice_by_text(response: str, choices: Sequence[str]) -> str | None:
    resp = f" {_light(response)} "
    hits = {i: _light(c) for i, c in enumerate(choices) if _light(c) and f" {_light(c)} " in resp}
    # "vitamin d" hides inside no other hit; drop hits contained in a longer hit
    kept = [i for i, h in hits.items() if not any(h != o and h in o for o in hits.values())]
    return LETTERS[kept[0]] if len(kept) == 1 else None


_YES = {"yes": True, "true": True, "correct": True, "no": False, "false": False, "incorrect": False}
_VERDICT = r"(yes|no|true|false)"
_ANSWER_VERDICT = re.compile(r"\banswer\s*(?:is|:)\s*\**\s*" + _VERDICT + r"\b", re.I)
_LEADING_VERDICT = re.compile(r"^\W*" + _VERDICT + r"\b", re.I)
_ANY_VERDICT = re.compile(r"\b" + _VERDICT + r"\b", re.I)


def extract_yesno(response: str) -> bool | None:
    """The yes / no verdict of a response (true / false count as yes / no), or None."""
    for pattern in (_ANSWER_VERDICT, _LEADING_VERDICT, _ANY_VERDICT):
        match = pattern.search(response)
        if match:
            return _YES[match.group(1).lower()]
    return None


def _gold_bool(gold: object) -> bool | None:
    if isinstance(gold, bool):
        return gold
    text = str(gold).strip().lower().rstrip(".")
    if text in ("1", "entailment"):
        return True
    if text in ("0", "not_entailment", "not entailment"):
        return False
    return _YES.get(text)


_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
_ANSWER_NUMBER = re.compile(r"(?:answer\s*(?:is|:)|####)\s*\**\s*(-?\$?[\d,]*\.?\d+)", re.I)


def _to_float(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("$", "").rstrip("."))
    except ValueError:
        return None


def extract_number(response: str) -> float | None:
    """The final numeric answer of a response: after "answer is" / "####", else the last number."""
    match = _ANSWER_NUMBER.search(response)
    if match:
        return _to_float(match.group(1))
    numbers = _NUMBER.findall(response)
    return _to_float(numbers[-1]) if numbers else None


def _gold_number(gold: object) -> float | None:
    text = str(gold)
    if "####" in text:
        text = text.split("####")[-1]
    numbers = _NUMBER.findall(text)
    return _to_float(numbers[-1]) if numbers else None


def is_correct(
    response_text: str,
    gold_answers: Sequence[str] | str,
    answer_type: str,
    choices: Sequence[str] | None = None,
) -> bool:
    """Whether a response is correct under the rule for ``answer_type``.

    Args:
        response_text: The model's response.
        gold_answers: Gold answers (a single string is one answer).
        answer_type: One of ``ANSWER_TYPES`` (see the module docstring).
        choices: Option texts in letter order, for ``mc`` golds given as text.

    Returns:
        True when the response matches a gold answer.

    Raises:
        UserError: For an unknown answer type.
    """
    golds = [gold_answers] if isinstance(gold_answers, (str, bool)) else list(gold_answers)
    if answer_type == "exact":
        return exact_match(response_text, golds)
    if answer_type == "contains":
        return contains_match(response_text, golds)
    if answer_type == "free":
        return exact_match(response_text, golds) or contains_match(response_text, golds)
    if answer_type == "mc":
        wanted = _gold_letters(golds, choices)
        letter = extract_choice(response_text)
        if letter is None and choices:
            letter = _choice_by_text(response_text, choices)
        return letter is not None and letter in wanted
    if answer_type == "yesno":
        verdict = extract_yesno(response_text)
        return verdict is not None and any(_gold_bool(g) == verdict for g in golds)
    if answer_type == "number":
        value = extract_number(response_text)
        if value is None:
            return False
        for gold in golds:
            g = _gold_number(gold)
            if g is not None and math.isclose(value, g, rel_tol=1e-6, abs_tol=1e-9):
                return True
        return False
    raise UserError(
        f"unknown answer type {answer_type!r}", f"use one of: {', '.join(ANSWER_TYPES)}"
    )
