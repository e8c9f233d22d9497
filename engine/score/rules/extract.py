"""Marker extraction, `lexicon` mode: deterministic longest-match over the curated lexicon.

Rules:

- Matching is on words: the sentence is lowercased, curly apostrophes straightened, split into word
  tokens and contractions expanded ("I'm" -> "i am", "isn't" -> "is not"), so entries match at word
  boundaries only and case-insensitively. A marker's reported text is the sentence's own surface
  span (e.g. "I'm fairly sure"), so downstream canonicalization sees what the model wrote.
- Leftmost-longest, non-overlapping: scanning left to right, at each word the longest lexicon entry
  starting there wins and scanning resumes after it. A sentence returns every match in order.
- Negation: lexicalised negatives are entries of their own ("unlikely", "not sure", "I'm not
  certain", "I don't think", "it is not likely"), and being longer they win over the positive entry
  inside them. Any other match directly preceded by a negator ("not", "never", "hardly",
  "scarcely", or "n't"), optionally through one degree word ("not very likely"), is extended
  leftwards to include it (and a subject frame "I am" / "it is" right before the negator) and
  flagged ``negated``: so "not likely", "not definitely" never count as "likely", "definitely".
- "May" capitalised inside a sentence is the month, not the modal, and is skipped.
- A sentence with no match yields the `<no_hedge>` pseudo-marker (`sentence_markers`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from engine.contract import NO_HEDGE
from engine.score.rules.lexicon import DEGREE_WORDS, NEGATORS, lexicon

_TOKEN = re.compile(r"\d+(?:\.\d+)?%?|[a-z]+(?:'[a-z]+)*", re.IGNORECASE)

_WHOLE_CONTRACTIONS = {
    "can't": ("can", "not"),
    "cannot": ("can", "not"),
    "won't": ("will", "not"),
    "shan't": ("shall", "not"),
    "ain't": ("is", "not"),
    "let's": ("let", "us"),
}
_SUFFIXES = (("n't", "not"), ("'m", "am"), ("'re", "are"), ("'ve", "have"), ("'ll", "will"))
_S_IS = {"it", "that", "there", "what", "here", "this", "who", "where", "he", "she"}


@dataclass(frozen=True)
class Match:
    """One marker found in a sentence.

    Attributes:
        text: The marker as written in the sentence (surface span).
        entry: The normalized lexicon phrase (with the negator when ``negated``).
        kind: "hedge" or "booster" (a negated booster is a hedge).
        start: Character offset of the marker in the sentence.
        end: One past the last character of the marker.
        negated: Whether the marker is negated: a lexicalised negative containing a negator word
            ("I'm not sure") or a match the negation rule extended ("not definitely").
    """

    text: str
    entry: str
    kind: str
    start: int
    end: int
    negated: bool = False


@dataclass(frozen=True)
class _Token:
    word: str
    start: int
    end: int
    surface: str


def _expand(word: str) -> tuple[str, ...]:
    if word in _WHOLE_CONTRACTIONS:
        return _WHOLE_CONTRACTIONS[word]
    for suffix, full in _SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix):
            return (word[: -len(suffix)], full)
    if word.endswith("'s") and word[:-2] in _S_IS:
        return (word[:-2], "is")
    if word.endswith("'d") and word[:-2] in {"i", "we", "you", "they", "he", "she", "it"}:
        return (word[:-2], "would")
    return (word,)


def tokenize(sentence: str) -> list[_Token]:
    """Normalized word tokens with their character spans (contractions expanded).

    Args:
        sentence: Raw sentence text.

    Returns:
        Tokens; the parts of one expanded contraction share its span.
    """
    text = sentence.replace("\u2019", "'").replace("\u2018", "'")
    tokens: list[_Token] = []
    for m in _TOKEN.finditer(text):
        surface = m.group(0)
        for part in _expand(surface.lower()):
            tokens.append(_Token(part, m.start(), m.end(), surface))
    return tokens


@lru_cache(maxsize=1)
def _trie() -> dict:
    root: dict = {}
    for phrase, kind in lexicon().items():
        node = root
        for word in phrase.split():
            node = node.setdefault(word, {})
        node[None] = (phrase, kind)
    return root


_SUBJECT_FRAMES = (("i", "am"), ("i", "feel"), ("we", "are"), ("it", "is"))
_DEGREE_SINGLE = {w for w in DEGREE_WORDS if " " not in w}


def _longest_at(tokens: list[_Token], i: int) -> tuple[int, tuple[str, str]] | None:
    node = _trie()
    best = None
    j = i
    while j < len(tokens) and tokens[j].word in node:
        node = node[tokens[j].word]
        j += 1
        if None in node:
            best = (j, node[None])
    return best


def extract_markers(sentence: str) -> list[Match]:
    """All non-overlapping lexicon markers of one sentence, in order.

    Args:
        sentence: One sentence.

    Returns:
        The matches, leftmost-longest, negation-extended (see the module docstring).
    """
    tokens = tokenize(sentence)
    matches: list[Match] = []
    consumed = 0  # tokens before this index belong to an earlier match
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.word == "may" and tok.surface.startswith("May") and tok.start > 0:
            i += 1
            continue
        found = _longest_at(tokens, i)
        if found is None:
            i += 1
            continue
        j, (entry, kind) = found
        first, negated = i, False
        if entry.split()[0] not in NEGATORS:
            k = i - 1
            if k >= consumed and tokens[k].word in _DEGREE_SINGLE and k - 1 >= consumed:
                if tokens[k - 1].word in NEGATORS:
                    first, negated = k - 1, True
            if not negated and k >= consumed and tokens[k].word in NEGATORS:
                first, negated = k, True
        if negated:
            for subject in _SUBJECT_FRAMES:  # "I'm never fully certain": keep the subject too
                n = len(subject)
                if (
                    first - n >= consumed
                    and tuple(t.word for t in tokens[first - n : first]) == subject
                ):
                    first -= n
                    break
            words = [t.word for t in tokens[first:i]]
            entry = " ".join([*words, entry])
            kind = "hedge"
        negated = negated or any(w in NEGATORS for w in entry.split())
        start, end = tokens[first].start, tokens[j - 1].end
        matches.append(Match(sentence[start:end], entry, kind, start, end, negated))
        # the parts of a contraction share a span: skip to the first token past the match
        i = j
        while i < len(tokens) and tokens[i].start < end:
            i += 1
        consumed = i
    return matches


def sentence_markers(sentence: str) -> list[str]:
    """Raw markers of one sentence as written, or ``["<no_hedge>"]`` when it has none.

    Args:
        sentence: One sentence.

    Returns:
        The surface texts of the matches in order, or the no-hedge pseudo-marker.
    """
    found = [m.text for m in extract_markers(sentence)]
    return found or [NO_HEDGE]


def markers_for_sentences(
    sentences: Iterable[str], *, keep_no_hedge: bool = True
) -> list[list[str]]:
    """Raw markers of each sentence of a response (see `sentence_markers`).

    Args:
        sentences: Sentence texts of one or more responses.
        keep_no_hedge: Give a sentence without markers the `<no_hedge>` pseudo-marker (default);
            False gives it an empty list, so it yields no sentence-marker row.

    Returns:
        One list of raw markers per sentence.
    """
    out = [sentence_markers(s) for s in sentences]
    if not keep_no_hedge:
        out = [[] if m == [NO_HEDGE] else m for m in out]
    return out
