"""Judges on the same vLLM engine as generation: batched next-token logprobs and short samples.

A judge answers a batch of prompts in one `LLM.generate` call. Two ways of reading it:

- `next_token_logprobs`: one forward pass per prompt (max_tokens = 1), the top-k next-token logprobs
  as token id -> logprob. Scores read from them (`yes_no_probability`, `expected_rating`) are
  deterministic and continuous.
- `generate_texts`: a few sampled or greedy tokens per prompt, decoded in one batch (the seed's way).

Per-prompt failures (a prompt longer than the judge's context, a request vLLM rejects) come back as
error strings in place of results, so one bad prompt never fails a batch. The engine is started with
prefix caching on: callers order prompts so those sharing a prefix run together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from engine.errors import CallFailure  # the judges' failure marker (also used by the HTTP judge)

# Next-token answer words; a token counts when its decoded text, stripped and lowercased, is one.
YES, NO = "yes", "no"
RATING_WORDS = tuple(str(k) for k in range(11))

TopLogprobs = dict[int, float]


class Judge(Protocol):
    """What the judge stages need from an engine."""

    def next_token_logprobs(self, prompts: Sequence[str]) -> list[TopLogprobs | str]:
        """Top-k next-token logprobs per prompt, or an error string for a failed prompt."""
        ...

    def generate_texts(
        self, prompts: Sequence[str], max_tokens: int, temperature: float, seeds: Sequence[int]
    ) -> list[str | None | Exception]:
        """Generated text per prompt (an Exception for a failed prompt)."""
        ...

    def token_ids_for(self, words: Iterable[str]) -> dict[str, set[int]]:
        """Token ids whose decoded text, stripped and lowercased, equals each word."""
        ...

    def close(self) -> None:
        """Free the engine."""
        ...


class VLLMJudge:
    """A judge model in a `vllm.LLM` owned by this process.

    Args:
        model_path: Model id or path; `builtin:tiny` is resolved to the cached tiny model.
        engine_args: Extra `vllm.LLM` keyword arguments (prefix caching is turned on by default).
        top_k: Next-token alternatives read per prompt (at most the engine's max_logprobs, 20).
        chat: Wrap each prompt as one user turn of the tokenizer's chat template.
        chat_template_kwargs: Extra variables of that template (e.g. enable_thinking=False).
        backend: Reuse this already-started `engine.generate.backends.vllm.VLLMBackend` instead of starting one.
    """

    def __init__(
        self,
        model_path: str = "builtin:tiny",
        engine_args: Mapping[str, Any] | None = None,
        top_k: int = 20,
        chat: bool = False,
        backend: Any | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        from engine.generate.backends.vllm import VLLMBackend
        from engine.generate.tiny_model import resolve_model

        if backend is None:
            args = {"enable_prefix_caching": True, **dict(engine_args or {})}
            backend = VLLMBackend(resolve_model(model_path), args, max_logprobs=top_k)
            self._owned = True
        else:
            self._owned = False
        self.backend = backend
        self.llm = backend.llm
        self.tokenizer = backend.tokenizer
        self.max_model_len = int(backend.max_model_len)
        self.top_k = top_k
        self.chat = chat
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self._vocab: list[str] | None = None

    # ---- prompts -------------------------------------------------------------------------------

    def render(self, prompt: str) -> str:
        """The text sent to the engine for `prompt` (chat-wrapped when `chat`)."""
        if not self.chat:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
        )

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each rendered prompt."""
        texts = [self.render(p) for p in prompts]
        return self.tokenizer(texts, add_special_tokens=not self.chat)["input_ids"]

    def _run(
        self, prompts: Sequence[str], params: Sequence[Any]
    ) -> list[Any | str]:  # RequestOutput or error
        encoded = self.encode(prompts)
        results: list[Any | str] = [""] * len(prompts)
        todo = []
        for i, ids in enumerate(encoded):
            if len(ids) + 1 > self.max_model_len:
                results[i] = CallFailure(
                    f"judge prompt has {len(ids)} tokens; the judge's max_model_len is "
                    f"{self.max_model_len} (raise judges.engine_args.max_model_len)"
                )
            else:
                todo.append(i)
        if not todo:
            return results
        requests = [{"prompt_token_ids": encoded[i]} for i in todo]
        try:
            outs = self.llm.generate(
                requests, sampling_params=[params[i] for i in todo], use_tqdm=False
            )
            for i, out in zip(todo, outs):
                results[i] = out
        except (ValueError, TypeError):  # a request-level error: retry one by one
            for i, request in zip(todo, requests):
                try:
                    results[i] = self.llm.generate(
                        [request], sampling_params=[params[i]], use_tqdm=False
                    )[0]
                except (ValueError, TypeError) as exc:
                    results[i] = CallFailure(f"{type(exc).__name__}: {exc}")
        return results

    # ---- reading ---------------------------------------------------------------------------------

    def next_token_logprobs(self, prompts: Sequence[str]) -> list[TopLogprobs | str]:
        """Top-k next-token logprobs of each prompt (one forward pass each).

        Args:
            prompts: Judge prompts.

        Returns:
            Per prompt: token id -> logprob over the top-k (plus the greedy token), or an error.
        """
        from vllm import SamplingParams

        param = SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.top_k, detokenize=False)
        out: list[TopLogprobs | str] = []
        for result in self._run(prompts, [param] * len(prompts)):
            if isinstance(result, str):
                out.append(result)
                continue
            out.append(_first_position(result.outputs[0]))
        return out

    def generate_texts(
        self, prompts: Sequence[str], max_tokens: int, temperature: float, seeds: Sequence[int]
    ) -> list[str | None | Exception]:
        """A short completion of each prompt, decoded in one batch.

        Args:
            prompts: Judge prompts.
            max_tokens: Tokens to generate.
            temperature: Sampling temperature (0 = greedy).
            seeds: One seed per prompt, so a rerun reproduces the samples.

        Returns:
            Per prompt: the text, or a `RuntimeError` holding the failure.
        """
        from vllm import SamplingParams

        params = [
            SamplingParams(
                max_tokens=max_tokens, temperature=temperature, seed=int(s), detokenize=False
            )
            for s in seeds
        ]
        results = self._run(prompts, params)
        ok = [r for r in results if not isinstance(r, str)]
        decoded = iter(
            self.tokenizer.batch_decode(
                [list(r.outputs[0].token_ids) for r in ok], skip_special_tokens=True
            )
            if ok
            else []
        )
        return [RuntimeError(r) if isinstance(r, str) else next(decoded) for r in results]

    def token_ids_for(self, words: Iterable[str]) -> dict[str, set[int]]:
        """Token ids whose decoded text, stripped and lowercased, equals each word.

        Args:
            words: Lowercase answer words ("yes", "no", "0".."10").

        Returns:
            Word -> the set of matching token ids (possibly empty).
        """
        if self._vocab is None:
            size = len(self.tokenizer)
            self._vocab = [
                t.strip().lower() for t in self.tokenizer.batch_decode([[i] for i in range(size)])
            ]
        wanted = {w: set() for w in words}
        for token_id, text in enumerate(self._vocab):
            if text in wanted:
                wanted[text].add(token_id)
        return wanted

    def close(self) -> None:
        """Free the engine if this judge started it."""
        if self._owned:
            self.backend.close()


def _first_position(output: Any) -> TopLogprobs:
    """Token id -> logprob of the first generated position (flat or dict logprobs)."""
    logprobs = output.logprobs
    if logprobs is None or len(output.token_ids) == 0:
        return {}
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs
        starts = list(logprobs.start_indices)
        end = starts[1] if len(starts) > 1 else len(logprobs.token_ids)
        ids = list(logprobs.token_ids)[:end]
        lps = list(logprobs.logprobs)[:end]
        return {int(t): float(lp) for t, lp in zip(ids, lps)}
    return {int(t): float(lp.logprob) for t, lp in logprobs[0].items()}


# ---- scores from logprobs and texts -------------------------------------------------------------


def yes_no_probability(top: TopLogprobs, yes_ids: set[int], no_ids: set[int]) -> float | None:
    """P(yes) / (P(yes) + P(no)) from next-token logprobs, over the yes / no tokens present.

    Args:
        top: Token id -> logprob of the next token (top-k).
        yes_ids: Tokens reading "yes".
        no_ids: Tokens reading "no".

    Returns:
        The ratio, or None when neither a yes nor a no token is among `top`.
    """
    p_yes = sum(math.exp(lp) for t, lp in top.items() if t in yes_ids)
    p_no = sum(math.exp(lp) for t, lp in top.items() if t in no_ids)
    if p_yes + p_no <= 0.0:
        return None
    return p_yes / (p_yes + p_no)


def expected_rating(top: TopLogprobs, rating_ids: Mapping[str, set[int]]) -> float | None:
    """Expected rating in [0, 1] under the next-token distribution over "0".."10".

    The probabilities of the rating tokens present in `top` are renormalized over those tokens;
    the expectation is divided by 10.

    Args:
        top: Token id -> logprob of the next token.
        rating_ids: "0".."10" -> token ids reading that number.

    Returns:
        The expected rating / 10, or None when no rating token is among `top`.
    """
    total = weighted = 0.0
    for word, ids in rating_ids.items():
        p = sum(math.exp(lp) for t, lp in top.items() if t in ids)
        total += p
        weighted += p * int(word)
    if total <= 0.0:
        return None
    return weighted / total / 10.0


_VERDICT = re.compile(r"^\W*(yes|no|n\s*/\s*a|n-a|na|not applicable)\b", re.IGNORECASE)


def parse_verdict(text: str | None) -> float | None:
    """The seed's reading of a sampled verdict: yes -> 1, no -> 0, n/a -> 0.5.

    Args:
        text: The judge's completion.

    Returns:
        1.0, 0.0 or 0.5, or None when the text starts with none of them (the caller records it
        and uses 0.5, as the seed does).
    """
    match = _VERDICT.match(text or "")
    if not match:
        return None
    word = re.sub(r"\s", "", match.group(1).lower())
    return {"yes": 1.0, "no": 0.0}.get(word, 0.5)


def parse_markers(text: str | None, sentence: str) -> list[str] | None:
    """Markers listed by the extraction judge that occur in the sentence.

    Args:
        text: The judge's completion (markers separated by "|", or "none").
        sentence: The sentence the markers must come from.

    Returns:
        The markers in the order listed ([] for "none"), or None when the output cannot be read
        (empty, or naming nothing that occurs in the sentence).
    """
    line = (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""
    if not line:
        return None
    if line.lower().rstrip(".") == "none":
        return []
    lowered = sentence.lower()
    found = []
    for piece in re.split(r"[|;,]", line):
        piece = piece.strip().strip("\"'.")
        if not re.search(r"[a-z]", piece.lower()):  # a marker is words, not stray symbols
            continue
        at_words = re.search(r"(?<!\w)" + re.escape(piece.lower()) + r"(?!\w)", lowered)
        if at_words and piece.lower() not in (f.lower() for f in found):
            found.append(piece)
    return found or None


def parse_canonical(text: str | None, raw: str) -> str | None:
    """The canonical form proposed for `raw`, kept only when it is a sub-phrase of `raw`.

    Args:
        text: The judge's completion (first line is read).
        raw: The raw marker.

    Returns:
        The lowercased form, or None when empty or not made of words of `raw` in order.
    """
    line = (
        (text or "").strip().splitlines()[0].strip().strip("\"'.").lower()
        if (text or "").strip()
        else ""
    )
    if not line:
        return None
    padded = f" {' '.join(raw.lower().split())} "
    return line if f" {' '.join(line.split())} " in padded else None
