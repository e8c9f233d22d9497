"""Canonicalization of raw markers (docs/method.md §2-3): one map per model over all tasks.

Order of operations for each raw marker:

1. The optional LLM merge map (a dict raw -> merged form, e.g. from a judge that maps
   "I am fairly certain" to "fairly certain") is applied first; keys are looked up as written, then
   lowercased.
2. Deterministic surface rules: lowercase, straighten curly apostrophes, collapse whitespace, trim
   surrounding punctuation; strip a leading "it is" / "it's" / "it" ("it is likely" -> "likely");
   remove the word "also" ("i also think" -> "i think"). A rule never empties a marker.
3. Variant merge over the whole marker set: two forms that differ in one word, where one word is the
   plural ("doubt" / "doubts") or the -ly adverb ("certain" / "certainly", "possible" / "possibly",
   "definite" / "definitely") of the other, merge only when *both* forms occur in the set. The
   merged group takes its most frequent form (counts when given), ties broken by the shorter form,
   then alphabetically - so the map does not depend on input order.

`<no_hedge>` maps to itself.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

from engine.contract import NO_HEDGE

_PUNCT_EDGES = re.compile(r"^[\s\"'`.,;:!?()\[\]{}*_-]+|[\s\"'`.,;:!?()\[\]{}*_-]+$")
_LEADING_IT = re.compile(r"^(?:it is|it's|it)\s+")
_ALSO = re.compile(r"\balso\b")


def normalize_marker(raw: str) -> str:
    """Apply the deterministic surface rules (step 2) to one marker.

    Args:
        raw: A raw marker as extracted.

    Returns:
        The normalized form; `<no_hedge>` is returned unchanged.
    """
    if raw == NO_HEDGE:
        return raw
    text = raw.replace("\u2019", "'").replace("\u2018", "'").lower()
    text = " ".join(text.split())
    text = _PUNCT_EDGES.sub("", text)
    stripped = _LEADING_IT.sub("", text)
    if stripped:
        text = stripped
    no_also = _PUNCT_EDGES.sub("", " ".join(_ALSO.sub(" ", text).split()))
    if no_also:
        text = no_also
    return text or raw.strip().lower()


def _ly_forms(word: str) -> set[str]:
    forms = {word + "ly"}
    if word.endswith("le"):
        forms.add(word[:-2] + "ly")  # possible -> possibly
    if word.endswith("y"):
        forms.add(word[:-1] + "ily")
    return forms


def _plural_forms(word: str) -> set[str]:
    forms = {word + "s", word + "es"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    return forms


def _variants(a: str, b: str) -> bool:
    wa, wb = a.split(), b.split()
    if len(wa) != len(wb):
        return False
    diff = [(x, y) for x, y in zip(wa, wb) if x != y]
    if len(diff) != 1:
        return False
    x, y = diff[0]
    return y in _ly_forms(x) | _plural_forms(x) or x in _ly_forms(y) | _plural_forms(y)


def build_canonical_map(
    markers: Iterable[str] | Mapping[str, int],
    llm_merge: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build the raw -> canonical map for one model over all its tasks.

    Args:
        markers: Raw markers of the model (repeats allowed), or a mapping raw marker -> count.
        llm_merge: Optional LLM merge map, applied before the rules.

    Returns:
        A dict from every distinct raw marker to its canonical form.
    """
    counts: Counter[str] = Counter()
    if isinstance(markers, Mapping):
        counts.update({k: int(v) for k, v in markers.items()})
    else:
        counts.update(markers)
    merge = dict(llm_merge or {})
    merge_lower = {k.lower(): v for k, v in merge.items()}

    first: dict[str, str] = {}
    for raw in counts:
        merged = merge.get(raw, merge_lower.get(raw.lower(), raw)) if raw != NO_HEDGE else raw
        first[raw] = normalize_marker(merged)

    form_counts: Counter[str] = Counter()
    for raw, form in first.items():
        form_counts[form] += counts[raw]

    # union-find over forms that are plural / -ly variants of each other
    parent = {f: f for f in form_counts}

    def find(f: str) -> str:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    forms = sorted(f for f in form_counts if f != NO_HEDGE)
    by_len: dict[int, list[str]] = {}
    for f in forms:
        by_len.setdefault(len(f.split()), []).append(f)
    for group in by_len.values():
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if _variants(a, b):
                    parent[find(a)] = find(b)

    members: dict[str, list[str]] = {}
    for f in form_counts:
        members.setdefault(find(f), []).append(f)
    representative: dict[str, str] = {}
    for group in members.values():
        best = min(group, key=lambda f: (-form_counts[f], len(f), f))
        for f in group:
            representative[f] = best
    return {raw: representative[form] for raw, form in first.items()}


def apply_canonical_map(raw_markers: Iterable[str], mapping: Mapping[str, str]) -> list[str]:
    """Map raw markers through a canonical map; markers missing from it get the surface rules.

    Args:
        raw_markers: Raw markers in row order.
        mapping: A map from `build_canonical_map`.

    Returns:
        Canonical markers in the same order.
    """
    return [mapping[m] if m in mapping else normalize_marker(m) for m in raw_markers]
