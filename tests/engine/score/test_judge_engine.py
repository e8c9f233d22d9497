"""The logprob consistency judge on the real engine agrees with a transformers forward pass."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.engine]

from helpers.study_helpers import ASSERTIONS, CONTEXTS  # noqa: E402


@pytest.fixture(scope="module")
def judge(tiny_model_dir: Path):
    """One in-process vLLM judge on the tiny model for this module."""
    from engine.config.judges import TINY_JUDGE_ENGINE_ARGS
    from engine.score.judges.vllm import VLLMJudge

    j = VLLMJudge(str(tiny_model_dir), TINY_JUDGE_ENGINE_ARGS)
    yield j
    j.close()


def test_logprob_consistency_matches_transformers(judge, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from engine.score.judges.prompts import consistency_prompt
    from engine.score.judges.vllm import NO, YES
    from engine.score.stages.confidence import consistency_logprob_values

    prompts = [consistency_prompt(c, a) for c in CONTEXTS for a in ASSERTIONS]
    values = consistency_logprob_values(judge, prompts)
    tops = judge.next_token_logprobs(prompts)
    ids = judge.token_ids_for([YES, NO])
    assert ids[YES] and ids[NO], "the tiny tokenizer has yes / no tokens"

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    compared = 0
    for prompt_ids, value, top in zip(judge.encode(prompts), values, tops):
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids])).logits[0, -1]
        logp = torch.log_softmax(logits.double(), dim=-1)
        present_yes = [t for t in top if t in ids[YES]]
        present_no = [t for t in top if t in ids[NO]]
        for t, lp in top.items():  # the top-k itself agrees with transformers
            assert abs(lp - float(logp[t])) < 1e-4
        if not present_yes and not present_no:
            assert isinstance(value, str)  # missing, with a reason for the ledger
            continue
        p_yes = sum(math.exp(float(logp[t])) for t in present_yes)
        p_no = sum(math.exp(float(logp[t])) for t in present_no)
        assert value == pytest.approx(p_yes / (p_yes + p_no), abs=1e-4)
        compared += 1
    assert compared >= 1, "no prompt had yes or no in the top-20; pick other prompts"


def test_decisiveness_and_sampled_readings(judge) -> None:
    from engine.score.judges.prompts import consistency_prompt, decisiveness_prompt
    from engine.score.judges.vllm import RATING_WORDS, expected_rating

    ids = judge.token_ids_for(RATING_WORDS)
    tops = judge.next_token_logprobs([decisiveness_prompt(s) for s in ASSERTIONS])
    for top in tops:
        value = expected_rating(top, ids)
        assert value is None or 0.0 <= value <= 1.0
    prompts = [consistency_prompt(CONTEXTS[0], a) for a in ASSERTIONS]
    first = judge.generate_texts(prompts, 3, 1.0, [1, 2, 3, 4])
    again = judge.generate_texts(prompts, 3, 1.0, [1, 2, 3, 4])
    assert first == again  # seeded: a rerun reproduces the sampled verdicts
    too_long = judge.next_token_logprobs(["word " * 2000])
    assert isinstance(too_long[0], str) and "max_model_len" in too_long[0]


def test_judge_chat_template_kwargs_reach_the_template(judge) -> None:
    # [judges] chat_template_kwargs = { enable_thinking = false } (a Qwen3 hybrid judge): the
    # variables reach the judge's chat template, and the engine reads the rendered prompt.
    from engine.score.judges.vllm import VLLMJudge

    template = (
        "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant:{% if enable_thinking is defined "
        "and enable_thinking is false %} <think> </think>{% else %} <think>{% endif %}{% endif %}"
    )
    rendered = {}
    for extra in ({}, {"enable_thinking": False}):
        chat = VLLMJudge(
            backend=judge.backend,
            chat=True,
            chat_template_kwargs={"chat_template": template, **extra},
        )
        rendered[bool(extra)] = chat.render("Is it so?")
        assert chat.next_token_logprobs(["Is it so?"])[0]  # the real engine on that prompt
    assert rendered[False] == "user: Is it so?\nassistant: <think>"
    assert rendered[True] == "user: Is it so?\nassistant: <think> </think>"
