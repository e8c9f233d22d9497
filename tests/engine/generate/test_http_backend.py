"""The OpenAI-compatible HTTP judge against real local servers (no mocks).

- A real vLLM OpenAI-compatible server on 127.0.0.1 with the tiny model (`vllm_server`,
  tests/conftest.py): the judge's
  P(yes) / (P(yes) + P(no)) equals a transformers forward pass over the same top-k tokens.
- A small real HTTP server that answers 429 (with Retry-After) and 503 before 200: retries,
  backoff and giving up; the API key is sent but appears in no error or repr.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.generate.backends.http import HTTPJudge, HTTPSettings, OpenAICompatClient

# ---- retries against a flaky local server ------------------------------------------------------


class _Flaky(BaseHTTPRequestHandler):
    plan: list[int] = []
    seen_auth: list[str] = []
    headers_429: dict[str, str] = {"Retry-After": "0.05"}
    headers_200: dict[str, str] = {}

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        json.loads(self.rfile.read(length))
        _Flaky.seen_auth.append(self.headers.get("Authorization", ""))
        status = _Flaky.plan.pop(0) if _Flaky.plan else 200
        self.send_response(status)
        for name, value in (_Flaky.headers_429 if status == 429 else _Flaky.headers_200).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        body = {"choices": [{"text": " yes", "logprobs": {"top_logprobs": [{" yes": -0.1}]}}]}
        # A careless server echoes the request headers in its error bodies (seen in the wild).
        error = {"error": "busy", "echo": self.headers.get("Authorization", "")}
        self.wfile.write(json.dumps(body if status == 200 else error).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def flaky_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_retries_rate_limits_and_keeps_the_key_secret(flaky_server, monkeypatch) -> None:
    monkeypatch.setenv("MIC_TEST_KEY", "sk-secret-123")
    settings = HTTPSettings(flaky_server, "m", "MIC_TEST_KEY", concurrency=2, backoff=0.01)
    client = OpenAICompatClient(settings)
    _Flaky.plan, _Flaky.seen_auth = [429, 503], []
    started = time.perf_counter()
    result = client.complete([{"prompt": "x", "max_tokens": 1}])[0]
    assert isinstance(result, dict) and client.retries_done == 2
    assert time.perf_counter() - started >= 0.05  # Retry-After honoured
    assert _Flaky.seen_auth[-1] == "Bearer sk-secret-123"
    _Flaky.plan = [503] * 10
    failed = OpenAICompatClient(
        HTTPSettings(flaky_server, "m", "MIC_TEST_KEY", max_retries=2, backoff=0.01)
    ).complete([{"prompt": "x"}])[0]
    assert isinstance(failed, RuntimeError) and "gave up after 3 attempts" in str(failed)
    _Flaky.plan = [400]
    bad = client.complete([{"prompt": "x"}])[0]
    assert isinstance(bad, RuntimeError) and "HTTP 400" in str(bad)  # not retried
    for text in (str(failed), str(bad), repr(client)):
        assert "sk-secret-123" not in text
    judge = HTTPJudge(settings)
    _Flaky.plan = []
    top = judge.next_token_logprobs(["x"])[0]
    assert top == {judge.token_ids_for(["yes"])["yes"].pop(): -0.1}


def test_unauthorized_stops_at_once_and_names_the_endpoint_not_the_key(
    flaky_server, monkeypatch
) -> None:
    from engine.errors import UserError

    monkeypatch.setenv("MIC_TEST_KEY", "sk-secret-123")
    with_credentials = flaky_server.replace("http://", "http://alice:pw-secret-9@")
    client = OpenAICompatClient(HTTPSettings(with_credentials, "m", "MIC_TEST_KEY", backoff=0.01))
    _Flaky.plan, _Flaky.seen_auth = [401] * 50, []
    with pytest.raises(UserError) as info:
        client.complete([{"prompt": "x"}] * 20)
    text = str(info.value)
    assert "HTTP 401" in text and "127.0.0.1" in text and "MIC_TEST_KEY" in text
    assert "sk-secret-123" not in text and "pw-secret-9" not in text and "alice" not in text
    assert len(_Flaky.seen_auth) <= 20  # no retries of a refused key
    _Flaky.plan = [500] * 10  # a 5xx body echoing the header: the key is scrubbed
    failed = OpenAICompatClient(
        HTTPSettings(flaky_server, "m", "MIC_TEST_KEY", max_retries=0, backoff=0.01)
    ).complete([{"prompt": "x"}])[0]
    assert "HTTP 500" in str(failed) and "sk-secret-123" not in str(failed)


def test_rate_limit_headers_set_the_wait() -> None:
    from engine.generate.backends.http import _exhausted_for, _retry_after, _seconds

    assert _seconds("6m0s") == 360.0 and _seconds("1.5s") == 1.5 and _seconds("120ms") == 0.12
    assert _seconds("2") == 2.0 and _seconds("soon") is None and _seconds(None) is None
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "3s"}) == 3
    assert _retry_after({}) is None
    used_up = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}
    assert _exhausted_for(used_up) == 0.02
    assert _exhausted_for({**used_up, "x-ratelimit-remaining-tokens": "5"}) is None


def test_a_refused_field_is_read_from_the_error_only_when_it_is_named_as_refused() -> None:
    import httpx

    from engine.generate.backends.http import _error_param

    openai_style = {
        "error": {"message": "Unsupported parameter: 'max_tokens'", "param": "max_tokens"}
    }
    assert _error_param(httpx.Response(400, json=openai_style)) == "max_tokens"
    assert _error_param(httpx.Response(400, text="'seed' is not supported by this model")) == "seed"
    # An over-long prompt names max_tokens without refusing it (vLLM's message): no field.
    too_long = {"error": {"message": "'max_tokens' or 'max_completion_tokens' is too large: 8."}}
    assert _error_param(httpx.Response(400, json=too_long)) is None


def test_rate_limit_reset_headers_are_honoured(flaky_server) -> None:
    client = OpenAICompatClient(HTTPSettings(flaky_server, "m", "", backoff=0.001))
    _Flaky.plan = [429]
    _Flaky.headers_429 = {"x-ratelimit-reset-requests": "80ms"}  # no Retry-After: the reset
    try:
        started = time.perf_counter()
        assert isinstance(client.complete([{"prompt": "x"}])[0], dict)
        assert time.perf_counter() - started >= 0.08 and client.retries_done == 1
        # A 200 that says the budget is used up holds the next request back until the reset.
        _Flaky.headers_200 = {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "0.1",
        }
        one_at_a_time = OpenAICompatClient(HTTPSettings(flaky_server, "m", "", concurrency=1))
        started = time.perf_counter()
        replies = one_at_a_time.complete([{"prompt": "x"}] * 2)
        assert all(isinstance(r, dict) for r in replies)
        assert time.perf_counter() - started >= 0.1
    finally:
        _Flaky.headers_429, _Flaky.headers_200 = {"Retry-After": "0.05"}, {}


# ---- a real vLLM server with the tiny model -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.engine
def test_http_judge_matches_transformers(vllm_server: str, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.score.judges.prompts import consistency_prompt
    from engine.score.stages.confidence import consistency_logprob_values

    judge = HTTPJudge(HTTPSettings(vllm_server, "tiny", api_key_env="", concurrency=4))
    from helpers.study_helpers import ASSERTIONS as assertions
    from helpers.study_helpers import CONTEXTS as contexts

    prompts = [consistency_prompt(c, a) for c in contexts for a in assertions]
    values = consistency_logprob_values(judge, prompts)
    tops = judge.next_token_logprobs(prompts)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    yes, no = judge.token_ids_for(["yes", "no"]).values()
    compared = 0
    for prompt, value, top in zip(prompts, values, tops):
        assert isinstance(top, dict) and len(top) >= 1
        ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
        best = torch.topk(logp, 20).indices.tolist()
        by_text: dict[str, float] = {}
        for t in best:
            key = tokenizer.decode([t]).strip().lower()
            by_text[key] = by_text.get(key, 0.0) + math.exp(float(logp[t]))
        if "yes" not in by_text and "no" not in by_text:
            assert isinstance(value, str)
            continue
        p_yes, p_no = by_text.get("yes", 0.0), by_text.get("no", 0.0)
        assert value == pytest.approx(p_yes / (p_yes + p_no), abs=1e-4)
        assert (yes & set(top)) or (no & set(top))
        compared += 1
    texts = judge.generate_texts(prompts[:4], 3, 1.0, [1, 2, 3, 4])
    assert texts == judge.generate_texts(prompts[:4], 3, 1.0, [1, 2, 3, 4])  # seeded
    assert compared >= 1


@pytest.mark.parametrize("userinfo", ["alice:pw-secret-9", "tok-secret-9"])
def test_userinfo_echoed_as_basic_auth_is_scrubbed(flaky_server, monkeypatch, userinfo) -> None:
    # httpx sends a URL's user:password as Basic auth ("user:" without a password); a server
    # echoing that header in an error body would put the credentials (base64) into the failure
    # text, a stage record and the log.
    import base64

    monkeypatch.setenv("MIC_TEST_KEY", "sk-secret-123")
    url = flaky_server.replace("http://", f"http://{userinfo}@")
    _Flaky.plan, _Flaky.seen_auth = [500], []
    failed = OpenAICompatClient(
        HTTPSettings(url, "m", "MIC_TEST_KEY", max_retries=0, backoff=0.01)
    ).complete([{"prompt": "x"}])[0]
    user, _, password = userinfo.partition(":")
    sent = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert _Flaky.seen_auth == [f"Basic {sent}"]  # the echo this test is about did happen
    assert "HTTP 500" in str(failed) and "Basic ***" in str(failed)
    assert sent not in str(failed) and "secret-9" not in str(failed)
