"""Judge prompts (ours, written from the descriptions in docs/method.md §2).

Every judge prompt is plain text ending where the judge's answer starts, so the answer is read from
the next token (logprob modes) or a few generated tokens (sampled modes). The consistency prompt puts
the context (a consistency sample) first and the assertion (a sentence) last: prompts that share a
context share a long prefix, which prefix caching reuses when they run together.
"""

from __future__ import annotations

from collections.abc import Sequence

CONSISTENCY_INSTRUCTION = (
    "You check whether an assertion agrees with a context.\n"
    "Reply yes if the context supports the assertion, no if the context contradicts it, "
    "and n/a if the context says nothing about it.\n"
)


def consistency_prompt(context: str, assertion: str) -> str:
    """Prompt asking whether `assertion` (a sentence) is consistent with `context` (a sample).

    Args:
        context: The text of one consistency sample.
        assertion: One sentence of the response.

    Returns:
        The prompt; the judge's next token is its verdict (yes / no / n/a).
    """
    return (
        f"{CONSISTENCY_INSTRUCTION}\nContext: {context.strip()}\n\n"
        f"Assertion: {assertion.strip()}\n\n"
        "Is the assertion consistent with the context (yes, no or n/a)? Answer:"
    )


DECISIVENESS_EXAMPLES: tuple[tuple[str, int], ...] = (
    ("The capital of France is Paris.", 10),
    ("I am fairly sure the answer is 42.", 8),
    ("It is probably the Nile, I think.", 6),
    ("It might be Lisbon, but I am not sure.", 3),
    ("I have no idea; perhaps it is blue, or maybe red.", 1),
)


def decisiveness_prompt(sentence: str) -> str:
    """Few-shot prompt rating how decisively a sentence asserts its claim, 0 (hesitant) to 10.

    Following Yona et al. 2024 (arXiv 2405.16908), decisiveness is how assertive the wording is,
    not whether the claim is true.

    Args:
        sentence: The sentence to rate.

    Returns:
        The prompt; the judge's next token is the rating.
    """
    shots = "".join(f"Sentence: {s}\nRating: {r}\n\n" for s, r in DECISIVENESS_EXAMPLES)
    return (
        "Rate how decisively each sentence states its claim, from 0 (very hesitant) to 10 "
        "(fully assertive). Judge only the wording, not whether the claim is true.\n\n"
        f"{shots}Sentence: {sentence.strip()}\nRating:"
    )


def correctness_prompt(question: str, gold_answers: Sequence[str], response: str) -> str:
    """Prompt asking whether a response contains an answer equivalent to any gold answer.

    Args:
        question: The item's question.
        gold_answers: Its gold answers.
        response: The model's response.

    Returns:
        The prompt; the judge's next token is yes or no.
    """
    golds = " | ".join(a.strip() for a in gold_answers)
    return (
        "Decide whether the response gives an answer with the same meaning as one of the gold "
        "answers. Reply yes or no.\n\n"
        f"Question: {question.strip()}\nGold answers: {golds}\nResponse: {response.strip()}\n\n"
        "Does the response contain a correct answer (yes or no)? Answer:"
    )


EXTRACTION_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("I think the answer is probably Paris.", "I think | probably"),
    ("The boiling point of water is 100 degrees Celsius.", "none"),
    ("I am not entirely sure, but it could be 1947.", "not entirely sure | could be"),
    ("It is almost certain that the author is Jane Austen.", "almost certain"),
)


def extraction_prompt(sentence: str) -> str:
    """Few-shot prompt listing the epistemic markers of a sentence, as written, separated by "|".

    Args:
        sentence: One sentence.

    Returns:
        The prompt; the judge completes one line: markers separated by "|", or "none".
    """
    shots = "".join(f"Sentence: {s}\nMarkers: {m}\n\n" for s, m in EXTRACTION_EXAMPLES)
    return (
        "List the expressions of certainty or uncertainty (hedges and boosters) in each sentence, "
        'exactly as written, separated by "|"; write none when there are none.\n\n'
        f"{shots}Sentence: {sentence.strip()}\nMarkers:"
    )


CANONICAL_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("I am fairly certain", "fairly certain"),
    ("it is highly likely", "highly likely"),
    ("I think", "I think"),
    ("most probably", "most probably"),
)


def canonical_prompt(marker: str) -> str:
    """Few-shot prompt asking for the shortest standard form of an epistemic marker.

    Args:
        marker: A raw marker as written.

    Returns:
        The prompt; the judge completes one line with the short form.
    """
    shots = "".join(f"Expression: {m}\nShort form: {c}\n\n" for m, c in CANONICAL_EXAMPLES)
    return (
        "Give the shortest form of each expression of certainty that keeps its meaning, using "
        f"only its own words.\n\n{shots}Expression: {marker.strip()}\nShort form:"
    )
