"""`OpenAIBackend`: an API model as a subject -- a unit's rows from an OpenAI-compatible server.

The backend sits inside the same actor / unit / store machinery as `VLLMBackend` and produces the
same GENERATIONS table (`engine.generate.backends.base.build_table`), so resume, verify and
scoring see no difference. Requests go through `OpenAICompatClient` (concurrency limit, backoff
honouring Retry-After and rate-limit headers, the key from an environment variable only).

Requests mirror the vLLM backend's seed modes (`sampling.seed_mode`): per item one request with
`n` samples and the item's seed (vLLM's server gives sample j seed + j, as the offline engine
does); "per-request" sends sample 0 seeded and the rest unseeded; "none" sends no seed.

Servers differ in what they accept. When one refuses a request field with HTTP 400 (OpenAI names
it in `error.param`), the backend adapts once for the actor's lifetime and records what it did in
every later shard's settings (`api_refused`):
- `n`: one request per sample (sample j with seed + j);
- `seed`: no seed (the rows' `seed` column is then null: the samples were not seeded);
- `logprobs` / `top_logprobs`: none asked for (null logprob columns);
- `max_tokens`: sent as `max_completion_tokens` (OpenAI's reasoning models);
- `stop`: not sent; texts are cut at the first stop string after they arrive;
- `temperature` / `top_p`: dropped only at their default value 1.0 (else the unit fails).

Token ids: APIs return token *strings*. A vLLM server asked with
`engine_args = { return_tokens_as_token_ids = true }` answers "token_id:123", stored as the real
id; any other token is stored as a stable 31-bit hash of its text (`token_id`), so chosen tokens
and top-k alternatives still compare equal across rows and runs (recorded as `token_ids` in the
shard settings). The stored `text` is the server's text; `prompt_text` is the system and user
text (the server applies its own chat template).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from engine.config.sweep import ModelSpec
from engine.errors import UserError, redact_url
from engine.generate.backends.base import Completion, RawUnit, build_table, render_prompts
from engine.generate.backends.http import HTTPFailure, HTTPSettings, OpenAICompatClient
from engine.generate.units import WorkUnit, seed_mode_of

_TOKEN_ID = re.compile(r"token_id:(\d+)")
TOKEN_ID_HASH = "31-bit blake2b of the token text (the API returns no token ids)"


def check_api_key(model: ModelSpec, where: str) -> None:
    """Fail in one line when an API model's key variable is not set in this process.

    Args:
        model: An API model.
        where: The spec key, for the message (e.g. "models.3 (gpt-5)").

    Raises:
        UserError: `api_key_env` names a variable that is unset or empty.
    """
    if model.api_key_env and not os.environ.get(model.api_key_env):
        raise UserError(
            f"{where}: the API key variable ${model.api_key_env} is not set",
            f"export {model.api_key_env} (on every node of a Ray cluster), or set "
            'api_key_env = "" for a server that needs no key',
        )


def token_id(token: str) -> int:
    """The id stored for an API token string (see the module docstring)."""
    found = _TOKEN_ID.fullmatch(token)
    if found:
        return int(found.group(1))
    digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


@dataclass
class APIRawUnit(RawUnit):
    """A unit's API answers before assembly: texts come from the server, not from decoding.

    Attributes:
        texts: Per item: n texts, or None when the item failed.
        usage: Token account of the unit's requests (prompt_tokens, completion_tokens, requests,
            retries), as billed: a prompt sent in n calls counts n times.
        unseeded: The server refused `seed`: no row was seeded.
    """

    texts: list[list[str] | None] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    unseeded: bool = False

    @property
    def generated_tokens(self) -> int:
        """Completion tokens the server reported (reasoning tokens included where billed)."""
        return int(self.usage.get("completion_tokens", 0))


@dataclass(frozen=True)
class _Request:
    item: int
    first: int  # the first sample index this request fills
    count: int
    seed: int | None


def not_for_the_item(failure: Exception) -> bool:
    """Whether a failed request says nothing about its item: no answer, a timeout, a conflict, a
    rate limit or a server error after the client's retries, or a refused sampling setting that
    every request of the unit carries. Such a failure fails the unit (retried), never one row."""
    status = getattr(failure, "status", 0)
    if status in (0, 408, 409, 429) or status >= 500:
        return True
    return getattr(failure, "param", None) in ("temperature", "top_p", "n", "seed", "stop")


class OpenAIBackend:
    """A sweep model served by an OpenAI-compatible server (hosted API or vLLM's server).

    Args:
        model: The model spec (`backend = "openai"`; `path` is the served model name).
        max_logprobs: Largest top-k the units ask for (unused: each unit asks for its own).
    """

    def __init__(self, model: ModelSpec, max_logprobs: int = 0) -> None:
        check_api_key(model, f"model {model.name!r}")  # on this node: the actor's environment
        self.client = OpenAICompatClient(
            HTTPSettings(
                base_url=model.base_url,
                model=model.path,
                api_key_env=model.api_key_env,
                concurrency=model.concurrency,
                max_retries=model.max_retries,
                timeout=model.timeout,
            )
        )
        self.chat = model.use_chat_template
        self.endpoint = "/chat/completions" if self.chat else "/completions"
        self.extra = dict(model.engine_args)
        self.refused: dict[str, str] = {}  # request field -> what the backend does instead
        # Read by the actor's info() into summary.json: never the key, the URL without credentials.
        self.settings: dict[str, Any] = {
            "backend": "openai",
            "endpoint": redact_url(model.base_url).rstrip("/") + self.endpoint,
            "model": model.path,
            "concurrency": model.concurrency,
        }

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.settings['endpoint']!r}, model={self.settings['model']!r})"

    # ---- requests ------------------------------------------------------------------------------

    def _plan(self, unit: WorkUnit) -> list[_Request]:
        n = int(unit.sampling["n"])
        mode = seed_mode_of(unit)
        plan = []
        for i, base in enumerate(unit.seeds):
            if mode == "per-sample":
                plan.append(_Request(i, 0, n, base))
            elif mode == "per-request":
                plan.append(_Request(i, 0, 1, base))
                if n > 1:
                    plan.append(_Request(i, 1, n - 1, None))
            else:
                plan.append(_Request(i, 0, n, None))
        return plan

    def _split(self, requests: list[_Request]) -> list[_Request]:
        """One request per sample where the server refused `n` (sample j keeps seed + j)."""
        if "n" not in self.refused:
            return requests
        return [
            _Request(r.item, r.first + j, 1, None if r.seed is None else r.seed + j)
            for r in requests
            for j in range(r.count)
        ]

    def _body(self, unit: WorkUnit, request: _Request, user: str, prompt: str) -> dict[str, Any]:
        s = unit.sampling
        k = int(s["logprobs"])
        body: dict[str, Any] = {"temperature": float(s["temperature"]), "top_p": float(s["top_p"])}
        body["max_completion_tokens" if "max_tokens" in self.refused else "max_tokens"] = int(
            s["max_tokens"]
        )
        if request.count > 1:
            body["n"] = request.count
        if request.seed is not None and "seed" not in self.refused:
            body["seed"] = int(request.seed)
        if s.get("stop") and "stop" not in self.refused:
            body["stop"] = list(s["stop"])
        if self.chat:
            system = unit.prompt.system
            body["messages"] = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": user}
            ]
            if unit.model.chat_template_kwargs:  # vLLM's server passes them to its template
                body["chat_template_kwargs"] = dict(unit.model.chat_template_kwargs)
            if not self.refused.keys() & {"logprobs", "top_logprobs"}:
                body["logprobs"] = True
                body["top_logprobs"] = k
        else:
            body["prompt"] = prompt
            if "logprobs" not in self.refused:
                body["logprobs"] = k
        for name in ("temperature", "top_p"):
            if name in self.refused:
                body.pop(name)
        body.update(self.extra)
        return body

    def _adapt(self, failure: HTTPFailure, unit: WorkUnit) -> bool:
        """Adapt to a field the server refused; True when the request is worth sending again."""
        param = failure.param
        if failure.status != 400 or not param or param in self.refused:
            return False
        s = unit.sampling
        if param in ("temperature", "top_p"):
            if float(s[param]) != 1.0:
                return False  # dropping a non-default value would change what the rows mean
            self.refused[param] = "not sent (the server's default, 1.0, is the spec's value)"
        elif param == "n":
            self.refused[param] = "one request per sample (sample j seeded with seed + j)"
        elif param == "seed":
            self.refused[param] = "not sent: samples are unseeded (seed column null)"
        elif param in ("logprobs", "top_logprobs"):
            self.refused[param] = "not sent: no logprobs stored"
        elif param == "max_tokens" and "max_completion_tokens" in str(failure):
            self.refused[param] = "sent as max_completion_tokens"
        elif param == "stop":
            self.refused[param] = "not sent: texts cut at the first stop string on arrival"
        else:
            return False
        return True

    # ---- Backend protocol ----------------------------------------------------------------------

    def generate(self, unit: WorkUnit) -> APIRawUnit:
        """Send the unit's requests (concurrently, up to the model's concurrency) and parse them."""
        n = int(unit.sampling["n"])
        k = int(unit.sampling["logprobs"])
        stops = tuple(unit.sampling.get("stop") or ())
        users = unit.user_texts()
        prompts = render_prompts(unit, None, False)
        count = len(prompts)
        samples: list[list[tuple[str, Completion] | None]] = [[None] * n for _ in range(count)]
        errors: list[str | None] = [None] * count
        prompt_tokens = [0] * count
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "retries": 0}
        requests_before, retries_before = self.client.requests_done, self.client.retries_done
        started = time.perf_counter()
        pending = self._plan(unit)
        unit_failures: list[HTTPFailure] = []
        while pending:
            pending = self._split(pending)
            bodies = [self._body(unit, r, users[r.item], prompts[r.item]) for r in pending]
            known = set(self.refused)
            replies = self.client.complete(bodies, self.endpoint)
            again = []
            for request, reply in zip(pending, replies):
                # Adapt on the first refusal of a field; its siblings refused in the same round go
                # again with it (their bodies were built before the server said no).
                if isinstance(reply, HTTPFailure) and (
                    self._adapt(reply, unit) or (reply.param in self.refused.keys() - known)
                ):
                    again.append(request)
                elif isinstance(reply, Exception):
                    errors[request.item] = str(reply)
                    if not_for_the_item(reply):
                        unit_failures.append(reply)
                else:
                    self._take(reply, request, k, stops, samples, errors, prompt_tokens, usage)
            pending = again
        if unit_failures:
            # Not the items' fault (the server was busy, down or refused a setting every request
            # carries): the unit fails, so the driver retries it and a run that cannot finish says
            # so. Only a refusal of the one prompt (e.g. too long) stays as that item's error row.
            first = unit_failures[0]
            raise HTTPFailure(
                f"{len(unit_failures)} of {count} requests failed ({first}); the unit is not "
                "written and will be retried",
                first.status,
                first.param,
            )
        gen_seconds = time.perf_counter() - started
        usage["requests"] = self.client.requests_done - requests_before
        usage["retries"] = self.client.retries_done - retries_before
        completions: list[list[Completion] | None] = []
        texts: list[list[str] | None] = []
        for i, item in enumerate(samples):
            if errors[i] is None and any(s is None for s in item):
                errors[i] = "the server returned fewer samples than asked for"
            ok = errors[i] is None
            completions.append([s[1] for s in item] if ok else None)  # type: ignore[index]
            texts.append([s[0] for s in item] if ok else None)  # type: ignore[index]
        settings = {"backend": "openai " + self.endpoint}
        settings["token_ids"] = (
            TOKEN_ID_HASH if not self.extra.get("return_tokens_as_token_ids") else "server ids"
        )
        if self.refused:
            settings["api_refused"] = "; ".join(
                f"{p}: {w}" for p, w in sorted(self.refused.items())
            )
        return APIRawUnit(
            prompt_texts=prompts,
            prompt_tokens=prompt_tokens,
            completions=completions,
            errors=errors,
            gen_seconds=gen_seconds,
            settings=settings,
            texts=texts,
            usage=usage,
            unseeded="seed" in self.refused,
        )

    def _take(
        self,
        reply: dict[str, Any],
        request: _Request,
        k: int,
        stops: tuple[str, ...],
        samples: list[list[tuple[str, Completion] | None]],
        errors: list[str | None],
        prompt_tokens: list[int],
        usage: dict[str, int],
    ) -> None:
        """Parse one reply into its item's sample slots and add its token account."""
        reported = reply.get("usage") or {}
        usage["prompt_tokens"] += int(reported.get("prompt_tokens") or 0)
        usage["completion_tokens"] += int(reported.get("completion_tokens") or 0)
        prompt_tokens[request.item] = int(reported.get("prompt_tokens") or 0)
        choices = sorted(reply.get("choices") or [], key=lambda c: int(c.get("index", 0)))
        if len(choices) != request.count:
            errors[request.item] = (
                f"the server returned {len(choices)} choices for n = {request.count}"
            )
            return
        for j, choice in enumerate(choices):
            try:
                text, completion = _parse_choice(choice, self.chat, k, stops)
            except (KeyError, TypeError, ValueError) as exc:
                errors[request.item] = f"unreadable answer from the server ({type(exc).__name__})"
                return
            samples[request.item][request.first + j] = (text, completion)

    def to_table(self, unit: WorkUnit, raw: RawUnit) -> pa.Table:
        """Assemble the rows (the texts arrived with the answers: nothing to decode)."""
        assert isinstance(raw, APIRawUnit)
        n = int(unit.sampling["n"])
        texts: list[str | None] = []
        comps: list[Completion | None] = []
        for item_texts, item_comps in zip(raw.texts, raw.completions):
            texts.extend(item_texts if item_texts is not None else [None] * n)
            comps.extend(item_comps if item_comps is not None else [None] * n)
        table = build_table(unit, raw, texts, comps)
        if raw.unseeded:
            index = table.schema.get_field_index("seed")
            table = table.set_column(
                index, table.schema.field(index), pa.nulls(table.num_rows, pa.int64())
            )
        return table

    def close(self) -> None:
        """Nothing to free (connections close after each unit)."""


def _number(value: Any) -> float:
    return float(value) if value is not None else math.nan


def _parse_choice(
    choice: dict[str, Any], chat: bool, k: int, stops: tuple[str, ...]
) -> tuple[str, Completion]:
    """One choice of a reply as (text, Completion): token strings, chosen and top-k logprobs."""
    positions: list[tuple[str, float, list[tuple[str, float]]]] = []
    if chat:
        text = (choice.get("message") or {}).get("content") or ""
        for entry in (choice.get("logprobs") or {}).get("content") or []:
            tops = [(t["token"], _number(t["logprob"])) for t in entry.get("top_logprobs") or []]
            # Rank order, as vLLM stores them (vLLM's server lists the sampled token first).
            tops.sort(key=lambda kv: -kv[1])
            positions.append((entry["token"], _number(entry["logprob"]), tops))
    else:
        text = choice.get("text") or ""
        logprobs = choice.get("logprobs") or {}
        tokens = logprobs.get("tokens") or []
        chosen = logprobs.get("token_logprobs") or []
        top = logprobs.get("top_logprobs") or []
        for j, token in enumerate(tokens):
            alts = top[j] if j < len(top) and top[j] else {}
            ranked = sorted(((t, _number(v)) for t, v in alts.items()), key=lambda kv: -kv[1])
            positions.append((token, _number(chosen[j] if j < len(chosen) else None), ranked))
    finish = str(choice.get("finish_reason") or "unknown")
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    if cuts:  # the server ignored (or was not sent) the stop strings: cut as the vLLM path does
        cut = min(cuts)
        text, finish = text[:cut], "stop"
        reached, keep = 0, 0
        while keep < len(positions) and reached <= cut:
            reached += len(positions[keep][0])
            keep += 1
        if not all(_TOKEN_ID.fullmatch(p[0]) for p in positions):
            positions = positions[:keep]
    token_ids: list[int] = []
    entry_ids: list[int] = []
    entry_lps: list[float] = []
    starts: list[int] = []
    for token, logprob, tops in positions:
        token_ids.append(token_id(token))
        starts.append(len(entry_ids))
        entry_ids.append(token_ids[-1])
        entry_lps.append(logprob)
        for alt, alt_lp in tops[:k]:
            entry_ids.append(token_id(alt))
            entry_lps.append(alt_lp)
    cumulative = float(sum(entry_lps[s] for s in starts)) if starts else None
    return text, Completion(token_ids, entry_ids, entry_lps, starts, cumulative, finish)
