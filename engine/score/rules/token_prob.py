"""Intrinsic confidence from the response's own token probabilities (`token_prob` estimator).

A sentence's confidence is computed over the generated tokens whose character span overlaps the
sentence's span in the response text (token start < sentence end and token end > sentence start;
zero-width tokens such as EOS are ignored):

- ``geometric`` (default): exp(mean logprob) - the per-token geometric mean probability;
- ``mean``: mean of exp(logprob) - the arithmetic mean token probability.

A sentence with no overlapping token (or an unknown span) gets NaN, i.e. *missing* confidence. Token
character offsets come from the tokenizer (``return_offsets_mapping``) or are rebuilt from the
per-token decoded strings when they concatenate to the response text. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHODS = ("geometric", "mean")


def token_offsets_from_pieces(pieces: Sequence[str], text: str | None = None) -> np.ndarray:
    """Character offsets of tokens from their decoded strings.

    Args:
        pieces: Decoded string of each generated token, in order.
        text: The response text; when given, the pieces must concatenate to it.

    Returns:
        An int64 array of shape (n_tokens, 2) with [start, end) offsets.

    Raises:
        ValueError: When the pieces do not concatenate to ``text`` (e.g. byte-level tokens that split
            a multi-byte character); pass the tokenizer's offsets instead.
    """
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    ends = np.cumsum(lengths)
    if text is not None and "".join(pieces) != text:
        raise ValueError(
            "token strings do not concatenate to the response text; "
            "use the tokenizer's offset mapping instead"
        )
    return np.stack([ends - lengths, ends], axis=1)


def sentence_confidences(
    logprobs: Sequence[float] | np.ndarray,
    offsets: Sequence[Sequence[int]] | np.ndarray,
    spans: Sequence[tuple[int, int]] | np.ndarray,
    method: str = "geometric",
) -> np.ndarray:
    """Confidence of each sentence span from per-token chosen logprobs.

    Args:
        logprobs: Chosen-token logprob of each generated token, shape (n_tokens,).
        offsets: Character [start, end) of each token in the response text, shape (n_tokens, 2).
        spans: Character [start, end) of each sentence; a negative start means unknown.
        method: "geometric" (exp of mean logprob) or "mean" (mean of probabilities).

    Returns:
        A float64 array of shape (n_sentences,), NaN where no token overlaps.

    Raises:
        ValueError: For an unknown method or mismatched lengths.
    """
    if method not in METHODS:
        raise ValueError(f"unknown token_prob method {method!r}; use one of {METHODS}")
    lp = np.asarray(logprobs, dtype=np.float64).reshape(-1)
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if len(lp) != len(off):
        raise ValueError(f"{len(lp)} logprobs but {len(off)} token offsets")
    sp = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if len(sp) == 0:
        return np.zeros(0, dtype=np.float64)
    tok_start, tok_end = off[:, 0], off[:, 1]
    nonempty = tok_end > tok_start
    # (n_sentences, n_tokens) overlap mask; responses are short, so this stays small
    overlap = (
        (tok_start[None, :] < sp[:, 1:2])
        & (tok_end[None, :] > sp[:, 0:1])
        & nonempty[None, :]
        & (sp[:, 0:1] >= 0)
    )
    counts = overlap.sum(axis=1)
    values = lp if method == "geometric" else np.exp(lp)
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = np.where(overlap, values[None, :], 0.0).sum(axis=1)
        means = sums / counts
    out = np.exp(means) if method == "geometric" else means
    out[counts == 0] = np.nan
    return out


def response_sentence_confidences(
    text: str,
    spans: Sequence[tuple[int, int]],
    logprobs: Sequence[float] | np.ndarray,
    *,
    offsets: Sequence[Sequence[int]] | np.ndarray | None = None,
    pieces: Sequence[str] | None = None,
    token_ids: Sequence[int] | None = None,
    method: str = "geometric",
) -> list[float | None]:
    """Per-sentence `token_prob` confidence of one response, None where missing.

    Args:
        text: The response text the spans and offsets refer to.
        spans: Character spans of the response's sentences (``Sentence.start``, ``Sentence.end``).
        logprobs: Chosen-token logprobs of the response.
        offsets: Token character offsets (preferred); or
        pieces: Per-token decoded strings, used when ``offsets`` is None.
        token_ids: Optional token ids, only checked against the number of logprobs.
        method: "geometric" or "mean".

    Returns:
        One confidence in [0, 1] or None per sentence.

    Raises:
        ValueError: When neither offsets nor pieces are given or lengths disagree.
    """
    if token_ids is not None and len(token_ids) != len(logprobs):
        raise ValueError(f"{len(token_ids)} token ids but {len(logprobs)} logprobs")
    if offsets is None:
        if pieces is None:
            raise ValueError("give the tokens' character offsets or their decoded strings")
        offsets = token_offsets_from_pieces(pieces, text)
    conf = sentence_confidences(logprobs, offsets, spans, method=method)
    return [None if np.isnan(c) else float(c) for c in conf]
