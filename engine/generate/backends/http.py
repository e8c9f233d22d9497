"""An OpenAI-compatible HTTP client for API judges and API subjects (vLLM's server, hosted APIs).

`OpenAICompatClient` sends `/completions` (or `/chat/completions`) requests with asyncio + httpx:
at most `concurrency` requests in flight, retries with exponential backoff and jitter on
connection errors, timeouts, 429 and 5xx (`Retry-After`, `retry-after-ms` and the
`x-ratelimit-reset-*` headers are honoured; a response saying a rate limit is used up pauses every
request until its reset), and per-prompt errors returned in place of results so one bad prompt
never fails a batch. `HTTPJudge` implements `engine.score.judges.vllm.Judge` on it;
`engine.generate.backends.openai.OpenAIBackend` generates a sweep's rows with it.

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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import CallFailure, UserError, redact_url, scrub, url_secrets

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class HTTPFailure(RuntimeError):
    """A request the server refused for good (or that gave up after its retries).

    Attributes:
        status: The last HTTP status (0 when no answer came back).
        param: The request field the server named as the problem (OpenAI's `error.param`, or a
            quoted field name in the message), or None.
    """

    def __init__(self, message: str, status: int = 0, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


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
                f"base_url is {redact_url(settings.base_url)!r}",
                "give an http(s) URL such as http://127.0.0.1:8000/v1",
            )
        if settings.concurrency < 1:
            raise UserError(f"judges.concurrency is {settings.concurrency}", "use 1 or more")
        self.settings = settings
        self.retries_done = 0  # for accounting and tests
        self.requests_done = 0
        self._pause_until = 0.0  # event-loop time before which no request is sent (rate limit)

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

    def complete(
        self, bodies: Sequence[dict[str, Any]], path: str = "/completions"
    ) -> list[dict[str, Any] | Exception]:
        """POST each body to `path` (model added) and return the JSON or the failure.

        Args:
            bodies: Request bodies (prompt or messages, max_tokens, temperature, logprobs, ...).
            path: The endpoint under the base URL: "/completions" or "/chat/completions".

        Returns:
            Per body: the response JSON, or an `HTTPFailure` naming the status (never the key).
        """
        return asyncio.run(self._complete_all(bodies, path))

    async def _complete_all(self, bodies: Sequence[dict[str, Any]], path: str) -> list[Any]:
        import httpx

        limit = asyncio.Semaphore(self.settings.concurrency)
        limits = httpx.Limits(max_connections=self.settings.concurrency)
        self._pause_until = 0.0
        async with httpx.AsyncClient(
            timeout=self.settings.timeout, limits=limits, headers=self._headers()
        ) as client:
            return await asyncio.gather(*(self._one(client, limit, body, path) for body in bodies))

    async def _one(
        self, client: Any, limit: asyncio.Semaphore, body: dict[str, Any], path: str
    ) -> Any:
        import httpx

        url = self.settings.base_url.rstrip("/") + path
        payload = {"model": self.settings.model, **body}
        last = "no attempt"
        status = 0
        loop = asyncio.get_running_loop()
        for attempt in range(self.settings.max_retries + 1):
            retry_after: float | None = None
            async with limit:
                # A rate limit reported used up by any response holds every request back.
                while (wait := self._pause_until - loop.time()) > 0:
                    await asyncio.sleep(min(wait, self.settings.max_backoff))
                try:
                    self.requests_done += 1
                    response = await client.post(url, json=payload)
                except (httpx.TransportError, httpx.TimeoutException) as exc:
                    last = f"{type(exc).__name__}"
                    status = 0
                else:
                    status = response.status_code
                    exhausted = _exhausted_for(response.headers)
                    if exhausted is not None:
                        self._pause_until = max(self._pause_until, loop.time() + exhausted)
                    if response.status_code == 200:
                        return response.json()
                    if response.status_code in (401, 403):
                        # Every further call would fail the same way: stop the stage now.
                        raise UserError(
                            f"the endpoint {redact_url(self.settings.base_url)} answered "
                            f"HTTP {response.status_code} (not authorized)",
                            f"check the API key in ${self.settings.api_key_env} and the model "
                            f"{self.settings.model!r}",
                        )
                    # A server may echo the request (Authorization header included) in its body.
                    # Scrubbed before it is cut: a secret across the cut would leave its prefix.
                    body = scrub(response.text, self._key(), *url_secrets(self.settings.base_url))
                    last = f"HTTP {response.status_code}: {body[:300]}"
                    if response.status_code not in RETRY_STATUS:
                        return HTTPFailure(last, status, _error_param(response))
                    retry_after = _retry_after(response.headers)
            if attempt == self.settings.max_retries:
                break
            self.retries_done += 1
            delay = min(self.settings.max_backoff, self.settings.backoff * 2**attempt)
            delay = retry_after if retry_after is not None else delay * (0.5 + random.random())
            await asyncio.sleep(min(delay, self.settings.max_backoff))
        return HTTPFailure(
            f"gave up after {self.settings.max_retries + 1} attempts: {last}", status
        )


def _seconds(value: str | None) -> float | None:
    """Seconds in a header value: "2", "0.5", or OpenAI's durations "1s", "6m0s", "120ms"."""
    if value is None:
        return None
    text = value.strip().lower()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _retry_after(headers: Any) -> float | None:
    """How long a refused request should wait: `retry-after-ms`, `Retry-After`, else the
    longest `x-ratelimit-reset-*` (OpenAI's rate-limit headers); None when none is given."""
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    seconds = _seconds(headers.get("retry-after"))
    if seconds is not None:
        return seconds
    resets = [_seconds(headers.get(f"x-ratelimit-reset-{kind}")) for kind in ("requests", "tokens")]
    found = [r for r in resets if r is not None]
    return max(found) if found else None


def _exhausted_for(headers: Any) -> float | None:
    """Seconds until reset when a response says a rate limit is used up (remaining 0), else None."""
    waits = []
    for kind in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if remaining is not None and remaining.strip() == "0":
            reset = _seconds(headers.get(f"x-ratelimit-reset-{kind}"))
            if reset:
                waits.append(reset)
    return max(waits) if waits else None


def _error_param(response: Any) -> str | None:
    """The request field a 4xx answer names: OpenAI's `error.param`, else a quoted field name."""
    try:
        data = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("param"), str):
        return error["param"]
    # Without a `param`, only a message that says a field is not supported names one: "'max_tokens'
    # is too large" (an over-long prompt) must not read as the server refusing max_tokens.
    text = response.text[:500]
    if not _UNSUPPORTED.search(text):
        return None
    quoted = re.search(r"['\"`]([a-z_]+)['\"`]", text)
    return quoted.group(1) if quoted else None


_UNSUPPORTED = re.compile(r"unsupported|not supported|unrecognized|not allowed", re.IGNORECASE)


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
