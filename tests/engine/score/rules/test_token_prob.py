"""token_prob confidence on hand examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.score.rules.sentences import split_sentences
from engine.score.rules.token_prob import (
    response_sentence_confidences,
    sentence_confidences,
    token_offsets_from_pieces,
)

TEXT = "Yes. It is Paris."
PIECES = ["Yes", ".", " It", " is", " Paris", "."]
LOGPROBS = [math.log(0.9), math.log(0.5), math.log(0.8), math.log(0.5), math.log(0.2), 0.0]


def test_offsets_from_pieces() -> None:
    off = token_offsets_from_pieces(PIECES, TEXT)
    assert off.tolist() == [[0, 3], [3, 4], [4, 7], [7, 10], [10, 16], [16, 17]]
    with pytest.raises(ValueError, match="offset mapping"):
        token_offsets_from_pieces(["Ye", "s!"], TEXT)


def test_geometric_and_mean_by_hand() -> None:
    sents = split_sentences(TEXT)
    spans = [(s.start, s.end) for s in sents]
    assert spans == [(0, 4), (5, 17)]
    geo = response_sentence_confidences(TEXT, spans, LOGPROBS, pieces=PIECES)
    # sentence 1: tokens "Yes", "." -> sqrt(0.9 * 0.5); sentence 2: " It" " is" " Paris" "."
    # (" It" starts at 4, before the sentence's start 5, but overlaps it)
    assert geo[0] == pytest.approx(math.sqrt(0.45))
    assert geo[1] == pytest.approx((0.8 * 0.5 * 0.2 * 1.0) ** 0.25)
    mean = response_sentence_confidences(TEXT, spans, LOGPROBS, pieces=PIECES, method="mean")
    assert mean[0] == pytest.approx(0.7)
    assert mean[1] == pytest.approx((0.8 + 0.5 + 0.2 + 1.0) / 4)


def test_missing_and_zero_width_tokens() -> None:
    offsets = [[0, 3], [3, 4], [4, 4]]  # last is EOS, zero width
    conf = sentence_confidences(
        [math.log(0.5), math.log(0.5), math.log(1e-9)], offsets, [(0, 4), (10, 12), (-1, -1)]
    )
    assert conf[0] == pytest.approx(0.5)
    assert np.isnan(conf[1]) and np.isnan(conf[2])
    assert response_sentence_confidences("abcd", [(20, 30)], [0.0], offsets=[[0, 4]]) == [None]
    assert sentence_confidences([], np.zeros((0, 2)), []).shape == (0,)


def test_minus_infinity_logprob() -> None:
    conf = sentence_confidences([-math.inf, 0.0], [[0, 1], [1, 2]], [(0, 2)])
    assert conf[0] == 0.0
    conf = sentence_confidences([-math.inf, 0.0], [[0, 1], [1, 2]], [(0, 2)], method="mean")
    assert conf[0] == pytest.approx(0.5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown token_prob method"):
        sentence_confidences([0.0], [[0, 1]], [(0, 1)], method="median")
    with pytest.raises(ValueError, match="1 logprobs but 2"):
        sentence_confidences([0.0], [[0, 1], [1, 2]], [(0, 1)])
    with pytest.raises(ValueError, match="token ids"):
        response_sentence_confidences("a", [(0, 1)], [0.0], offsets=[[0, 1]], token_ids=[1, 2])
    with pytest.raises(ValueError, match="offsets or their decoded"):
        response_sentence_confidences("a", [(0, 1)], [0.0])
