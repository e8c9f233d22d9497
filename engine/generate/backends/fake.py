"""`FakeBackend`: deterministic token streams without vLLM, for tests, soak runs and benchmarks."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa

from engine.generate.backends.base import (
    Completion,
    RawUnit,
    build_table,
    decode_rows,
    render_prompts,
)
from engine.generate.scheduler import TimingModel
from engine.generate.units import WorkUnit, row_seeds


class FakeBackend:
    """A deterministic stand-in engine for scheduler tests (no model, no vLLM).

    Tokens and logprobs are drawn from each sample's seed, so outputs do not depend on batching;
    a sample the seed mode leaves unseeded is drawn from fresh OS entropy (like vLLM's engine RNG,
    it differs between runs).

    Args:
        vocab_size: Token ids are drawn from [3, vocab_size).
        seconds_per_unit: Sleep this long in `generate` (to make scheduling observable).
        max_prompt_chars: Prompts longer than this become error rows (like max_model_len).
        log_path: Append "<unit id> <pid>" to this file for every unit generated.
        crash_once_marker: If this file does not exist, create it and kill the process in the
            middle of the next unit (simulates an actor dying once).
        timing: Sleep as a real engine would take instead (`TimingModel`: load in the
            constructor, prefill + batched decode + tail per unit), on top of `seconds_per_unit`.
        work_scale: With `timing`: each fake prompt, sample and token stands for this many (a
            scaled-down sweep keeps the real one's unit times).
        time_scale: With `timing`: wall seconds slept per modelled second (compresses a
            day-long sweep into minutes; ratios between phases are kept).
    """

    def __init__(
        self,
        vocab_size: int = 512,
        seconds_per_unit: float = 0.0,
        max_prompt_chars: int = 10_000,
        log_path: str | None = None,
        crash_once_marker: str | None = None,
        timing: TimingModel | None = None,
        work_scale: float = 1.0,
        time_scale: float = 1.0,
    ) -> None:
        self.timing = timing
        self.work_scale = work_scale
        self.time_scale = time_scale
        if timing is not None:
            time.sleep(timing.load_seconds * time_scale)  # the engine's start-up
        self.vocab_size = vocab_size
        self.seconds_per_unit = seconds_per_unit
        self.max_prompt_chars = max_prompt_chars
        self.log_path = log_path
        self.crash_once_marker = crash_once_marker

    def generate(self, unit: WorkUnit) -> RawUnit:
        """Draw fake completions from each item's seed."""
        started = time.perf_counter()
        if self.log_path:
            with open(self.log_path, "a") as fh:
                fh.write(f"{unit.unit_id} {os.getpid()}\n")
        if self.crash_once_marker:
            try:
                fd = os.open(self.crash_once_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os._exit(1)
        prompts = render_prompts(unit, None, False)
        s = unit.sampling
        k = int(s["logprobs"])
        completions: list[list[Completion] | None] = []
        errors: list[str | None] = []
        n = int(s["n"])
        seeds = row_seeds(unit)  # None: an unseeded sample (seed_mode), drawn from fresh entropy
        for index, prompt in enumerate(prompts):
            if len(prompt) > self.max_prompt_chars:
                completions.append(None)
                errors.append(
                    f"prompt has {len(prompt)} chars; the limit is {self.max_prompt_chars}"
                )
                continue
            samples = []
            for j in range(n):
                rng = np.random.default_rng(seeds[index * n + j])
                length = int(rng.integers(1, int(s["max_tokens"]) + 1))
                tokens = rng.integers(3, self.vocab_size, size=length).tolist()
                lps = (-rng.exponential(1.0, size=(length, k + 1))).astype(np.float32)
                alts = rng.integers(3, self.vocab_size, size=(length, k))
                entry_tokens = np.concatenate([np.asarray(tokens)[:, None], alts], axis=1).ravel()
                samples.append(
                    Completion(
                        tokens,
                        entry_tokens.tolist(),
                        lps.ravel().tolist(),
                        list(range(0, length * (k + 1), k + 1)),
                        float(lps[:, 0].sum()),
                        "length" if length == int(s["max_tokens"]) else "stop",
                    )
                )
            completions.append(samples)
            errors.append(None)
        prompt_tokens = [len(p.split()) for p in prompts]
        seconds = self.seconds_per_unit
        if self.timing is not None:
            generated = sum(len(c.token_ids) for cs in completions if cs for c in cs)
            seconds += self.time_scale * self.timing.unit_seconds(
                sum(prompt_tokens) * self.work_scale,
                generated * self.work_scale,
                len(prompts) * n * self.work_scale,
            )
        # What was already spent drawing the tokens counts toward the modelled time.
        seconds -= time.perf_counter() - started if self.timing is not None else 0.0
        if seconds > 0:
            time.sleep(seconds)
        return RawUnit(
            prompt_texts=prompts,
            prompt_tokens=prompt_tokens,
            completions=completions,
            errors=errors,
            gen_seconds=time.perf_counter() - started,
        )

    def to_table(self, unit: WorkUnit, raw: RawUnit) -> pa.Table:
        """Decode fake texts ("t<id>" words) and assemble the rows."""

        def batch_decode(ids: list[list[int]]) -> list[str]:
            return [" ".join(f"t{t}" for t in seq) for seq in ids]

        texts, comps = decode_rows(unit, raw, batch_decode, lambda ids: batch_decode([ids])[0])
        return build_table(unit, raw, texts, comps)

    def close(self) -> None:
        """Nothing to free."""
