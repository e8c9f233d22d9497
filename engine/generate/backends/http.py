"""An OpenAI-compatible HTTP client for API judges (vLLM's server, hosted APIs).

`OpenAICompatClient` sends `/completions` requests with asyncio + httpx: at most `concurrency`
requests in flight, retries with exponential backoff and jitter on connection errors, timeouts,
429 and 5xx (a `Retry-After` header is honoured), and per-prompt errors returned in place of
results so one bad prompt never fails a batch. `HTTPJudge` implements `engine.score.judges.vllm.Judge` on it.

The API key is read from an environment variable (named by `api_key_env`) and only ever placed in
the Authorization header: it is not stored in settings, manifests, ledgers, reprs or error messages.

httpx is used directly rather than the `openai` package: the retry policy (which statuses, how long,
the Retry-After header) is then ours, explicit and testable against a real local server.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import CallFailure, UserError, redact_url, scrub

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class HTTPSettings:
    """Where and how to call an OpenAI-compatible server.

    Attributes:
        base_url: e.g. "http://127.0.0.1:8000/v1".
        model: Model name sent with each request.
        api_key_env: Environment variable holding the API key ("" = send no key).
        concurrency: Requests in flight at most.
        max_retries: Retries per request after the first attempt.
        backoff: First retry delay in seconds (doubles each retry, with jitter).
        max_backoff: Longest delay between retries.
        timeout: Seconds per request.
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    timeout: float = 120.0


class OpenAICompatClient:
    """Batched `/completions` calls with a concurrency limit, retries and backoff.

    Args:
        settings: Server and policy.

    Raises:
        UserError: A bad base URL or concurrency.
    """

    def __init__(self, settings: HTTPSettings) -> None:
        if not settings.base_url.startswith(("http://", "https://")):
            raise UserError(
                f"judges.base_url is {settings.base_url!r}",
                "give an http(s) URL such as http://127.0.0.1:8000/v1",
            )
        if settings.concurrency < 1:
            raise UserError(f"judges.concurrency is {settings.concurrency}", "use 1 or more")
        self.settings = settings
        self.retries_done = 0  # for accounting and tests

    def __repr__(self) -> str:  # never shows the key
        s = self.settings
        return f"OpenAICompatClient(base_url={redact_url(s.base_url)!r}, model={s.model!r})"

    def _key(self) -> str:
        return os.environ.get(self.settings.api_key_env, "") if self.settings.api_key_env else ""

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def complete(self, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """POST each body to `/completions` (model added) and return the JSON or the failure.

        Args:
            bodies: Request bodies (prompt, max_tokens, temperature, logprobs, seed, ...).

        Returns:
            Per body: the response JSON, or a `RuntimeError` naming the status (never the key).
        """
        return asyncio.run(self._complete_all(bodies))

    async def _complete_all(self, bodies: Sequence[dict[str, Any]]) -> list[Any]:
        import httpx

        limit = asyncio.Semaphore(self.settings.concurrency)
        limits = httpx.Limits(max_connections=self.settings.concurrency)
        async with httpx.AsyncClient(
            timeout=self.settings.timeout, limits=limits, headers=self._headers()
        ) as client:
            return await asyncio.gather(*(self._one(client, limit, body) for body in bodies))

    async def _one(self, client: Any, limit: asyncio.Semaphore, body: dict[str, Any]) -> Any:
        import httpx

        url = self.settings.base_url.rstrip("/") + "/completions"
        payload = {"model": self.settings.model, **body}
        last = "no attempt"
        for attempt in range(self.settings.max_retries + 1):
            retry_after: float | None = None
            async with limit:
                try:
                    response = await client.post(url, json=payload)
                except (httpx.TransportError, httpx.TimeoutException) as exc:
                    last = f"{type(exc).__name__}"
                else:
                    if response.status_code == 200:
                        return response.json()
                    if response.status_code in (401, 403):
                        # Every further call would fail the same way: stop the stage now.
                        raise UserError(
                            f"the judge endpoint {redact_url(self.settings.base_url)} answered "
                            f"HTTP {response.status_code} (not authorized)",
                            f"check the API key in ${self.settings.api_key_env} and the judge model "
                            f"{self.settings.model!r}",
                        )
                    # A server may echo the request (Authorization header included) in its body.
                    last = scrub(f"HTTP {response.status_code}: {response.text[:200]}", self._key())
                    if response.status_code not in RETRY_STATUS:
                        return RuntimeError(last)
                    retry_after = _retry_after(response.headers.get("retry-after"))
            if attempt == self.settings.max_retries:
                break
            self.retries_done += 1
            delay = min(self.settings.max_backoff, self.settings.backoff * 2**attempt)
            delay = retry_after if retry_after is not None else delay * (0.5 + random.random())
            await asyncio.sleep(min(delay, self.settings.max_backoff))
        return RuntimeError(f"gave up after {self.settings.max_retries + 1} attempts: {last}")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class HTTPJudge:
    """`engine.score.judges.vllm.Judge` over an OpenAI-compatible server.

    Servers return top logprobs as token *strings*, so tokens are keyed by their normalized text
    (stripped, lowercased): "yes" and " Yes" are one key, their probabilities summed. The key
    plays the role of the token id in `engine.score.judges.vllm.yes_no_probability` / `expected_rating`.

    Args:
        settings: Server and policy.
        top_k: Next-token alternatives asked for (vLLM's server allows up to its max_logprobs).
    """

    def __init__(self, settings: HTTPSettings, top_k: int = 20) -> None:
        self.client = OpenAICompatClient(settings)
        self.top_k = top_k
        self._ids: dict[str, int] = {}

    def _id(self, text: str) -> int:
        key = text.strip().lower()
        return self._ids.setdefault(key, len(self._ids))

    def token_ids_for(self, words: Iterable[str]) -> dict[str, set[int]]:
        """Each word's key (see the class docstring)."""
        return {w: {self._id(w)} for w in words}

    def next_token_logprobs(self, prompts: Sequence[str]) -> list[dict[int, float] | str]:
        """Top-k next-token logprobs per prompt, merged by normalized token text."""
        bodies = [
            {"prompt": p, "max_tokens": 1, "temperature": 0.0, "logprobs": self.top_k}
            for p in prompts
        ]
        out: list[dict[int, float] | str] = []
        for result in self.client.complete(bodies):
            if isinstance(result, Exception):
                out.append(CallFailure(str(result)))
                continue
            try:
                tops = result["choices"][0]["logprobs"]["top_logprobs"][0] or {}
            except (KeyError, IndexError, TypeError):
                out.append("the server returned no top_logprobs")
                continue
            merged: dict[int, float] = {}
            for text, lp in tops.items():
                key = self._id(text)
                merged[key] = float(lp) if key not in merged else _logaddexp(merged[key], lp)
            out.append(merged)
        return out

    def generate_texts(
        self, prompts: Sequence[str], max_tokens: int, temperature: float, seeds: Sequence[int]
    ) -> list[str | None | Exception]:
        """A short completion per prompt (seeded where the server supports `seed`)."""
        bodies = [
            {"prompt": p, "max_tokens": max_tokens, "temperature": temperature, "seed": int(s)}
            for p, s in zip(prompts, seeds)
        ]
        out: list[str | None | Exception] = []
        for result in self.client.complete(bodies):
            if isinstance(result, Exception):
                out.append(result)
            else:
                out.append(str(result["choices"][0].get("text", "")))
        return out

    def close(self) -> None:
        """Nothing to free (connections close after each batch)."""


def _logaddexp(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))
