"""Sentence splitting of model responses (docs/method.md §2, "sentence").

Splitter choice: **pysbd** (rule-based, pure Python, no model download), measured against spaCy's
``spacy.blank("en")`` + ``sentencizer`` on 400 synthetic model-like answers (1-6 sentences drawn from
answers with abbreviations, initials, decimals, quotes, "e.g.", "(B)", "Answer: A."):

- plain prose: identical boundary precision (1.00) and recall (0.94) for both; both miss the same
  boundary after a lone option letter ("The answer is C. Next ..."), which we repair with a rule below;
- model-style layout, where they differ: pysbd splits numbered lists ("1. Cost.\\n2. Speed.") and
  blank-line paragraphs ("Answer: Paris\\n\\nExplanation: ...") correctly and keeps "etc. and later"
  in one sentence; the sentencizer glues "1." to the previous line, keeps paragraphs together and
  splits after "etc.";
- speed: spaCy ~0.17 ms per answer, pysbd ~0.95 ms per answer on this machine. At the seed's scale
  (5,000 items x 11 tasks) pysbd needs about a minute on one core, negligible beside generation.
- pysbd has no dependencies; spaCy pulls in about 25 packages.

The seed study drops every sentence containing "please" (requests to the reader carry no claim);
we do the same by default, matching the word case-insensitively (``keep_please=True`` keeps them).
Sentences are renumbered 0..n-1 after dropping; each keeps its character span in the response text,
which the ``token_prob`` estimator needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_PLEASE = re.compile(r"\bplease\b", re.IGNORECASE)

# pysbd reads "answer is C. Next" as an initial; a lone option letter after an answer cue ends a
# sentence when a capitalised word follows.
_OPTION_LETTER_END = re.compile(
    r"(?:\b(?:answer|option|choice)\b(?:\s+is)?\s*:?\s*\(?[A-Ea-e]\)?\.)(?=\s+[A-Z\"'(*])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Sentence:
    """One sentence of a response.

    Attributes:
        idx: Position among the kept sentences of the response (0-based).
        text: The sentence, stripped of surrounding whitespace.
        start: Character offset of ``text`` in the response text.
        end: Character offset one past the end of ``text`` in the response text.
    """

    idx: int
    text: str
    start: int
    end: int


@lru_cache(maxsize=1)
def _segmenter():  # pysbd has no type stubs
    try:
        import pysbd
    except ImportError as exc:  # pragma: no cover - pysbd is a core dependency
        raise ImportError("sentence splitting needs pysbd: pip install pysbd") from exc
    return pysbd.Segmenter(language="en", clean=False)


def _raw_segments(text: str) -> list[str]:
    pieces: list[str] = []
    for segment in _segmenter().segment(text):
        cut = 0
        for match in _OPTION_LETTER_END.finditer(segment):
            pieces.append(segment[cut : match.end()])
            cut = match.end()
        pieces.append(segment[cut:])
    return [p.strip() for p in pieces if p.strip()]


def split_sentences(text: str, *, keep_please: bool = False) -> list[Sentence]:
    """Split one response into sentences with their character spans.

    Args:
        text: The response text (may be empty).
        keep_please: Keep sentences containing "please" (the seed drops them).

    Returns:
        The kept sentences in order, numbered from 0.
    """
    if not text or not text.strip():
        return []
    out: list[Sentence] = []
    cursor = 0
    for piece in _raw_segments(text):
        start = text.find(piece, cursor)
        end = start + len(piece)
        if start < 0:  # pysbd normalised something; fall back to a whitespace-insensitive search
            start, end = _fuzzy_find(text, piece, cursor)
        if start >= 0:
            cursor = end
        if not keep_please and _PLEASE.search(piece):
            continue
        out.append(Sentence(idx=len(out), text=piece, start=start, end=end))
    return out


def _fuzzy_find(text: str, piece: str, cursor: int) -> tuple[int, int]:
    pattern = r"\s+".join(re.escape(word) for word in piece.split())
    match = re.compile(pattern).search(text, cursor)
    return match.span() if match else (-1, -1)


def split_responses(texts: Iterable[str], *, keep_please: bool = False) -> list[list[Sentence]]:
    """Split many responses; see `split_sentences`.

    Args:
        texts: Response texts.
        keep_please: Keep sentences containing "please".

    Returns:
        One list of sentences per response, in input order.
    """
    return [split_sentences(t, keep_please=keep_please) for t in texts]
