"""Helpers of the study tests: an in-process fake run (no Ray, no vLLM) and a fake judge."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.config.sweep import validate
from engine.generate.backends.fake import FakeBackend
from engine.generate.store import RunStore
from engine.generate.units import plan_units
from helpers import REPO

SAMPLES = REPO / "engine" / "data" / "samples"


def fake_run(
    out: Path, n: int = 3, tasks: Sequence[str] = ("sample_yesno", "sample_facts")
) -> Path:
    """Write a finished run of the FakeBackend over sample tasks into `out` (no Ray)."""
    raw = {
        "run": {"name": "fake", "chunk_size": 16},
        "models": [{"name": "m", "path": "builtin:tiny"}],
        "tasks": [
            {"name": t, "source": str(SAMPLES / f"{t}.jsonl"), "splits": ["train", "test"]}
            for t in tasks
        ],
        "prompts": [{"id": "plain", "template": "Q: {question}\nA:"}],
        "sampling": {"n": n, "max_tokens": 12, "logprobs": 2, "seed": 3},
    }
    spec = validate(raw, source="<test>")
    store = RunStore(str(out))
    store.check_run(spec)
    backend = FakeBackend(vocab_size=60)
    units = plan_units(spec)
    for unit in units:
        store.commit_unit(unit.unit_id, backend.to_table(unit, backend.generate(unit)))
    order = [u.unit_id for u in units]
    store.write_manifest(spec, order, store.finished(order))
    return out


class FakeJudge:
    """A deterministic judge: next-token logprobs drawn from a hash of the prompt.

    Token 1 reads "yes", 2 "no", 10..20 read "0".."10"; every third prompt has neither yes nor no
    in its top-k, and prompts containing "TOO LONG" fail.
    """

    vocab = {1: "yes", 2: "no", **{10 + k: str(k) for k in range(11)}}

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _u(self, prompt: str, salt: int) -> float:
        digest = hashlib.sha256(f"{salt}:{prompt}".encode()).digest()
        return int.from_bytes(digest[:4], "little") / 2**32

    def next_token_logprobs(self, prompts: Sequence[str]) -> list[dict[int, float] | str]:
        self.calls.append(list(prompts))
        out: list[dict[int, float] | str] = []
        for p in prompts:
            if "TOO LONG" in p:
                out.append("judge prompt too long")
                continue
            top = {t: math.log(0.01 + self._u(p, t)) for t in range(10, 21)}
            if self._u(p, 0) > 1 / 3:
                top[1] = math.log(0.01 + self._u(p, 1))
                top[2] = math.log(0.01 + self._u(p, 2))
            out.append(top)
        return out

    def generate_texts(
        self, prompts: Sequence[str], max_tokens: int, temperature: float, seeds: Sequence[int]
    ) -> list[Any]:
        words = ["yes", "no", "n/a", "maybe"]
        return [words[int(self._u(p, s) * 4)] for p, s in zip(prompts, seeds)]

    def token_ids_for(self, words: Iterable[str]) -> dict[str, set[int]]:
        return {w: {t for t, text in self.vocab.items() if text == w} for w in words}

    def close(self) -> None:
        pass


# Consistency prompts shared by the judge tests (in-process engine and HTTP server).
CONTEXTS = [
    "I think the answer is probably yes.",
    "It is almost certain that the value is correct.",
    "Maybe the capital is a large city near the river.",
    "The result of the sum is a small number.",
]
ASSERTIONS = [
    "The answer is yes.",
    "I am not sure, although it could be true.",
    "Clearly the river flows into the sea.",
    "Question: what is the answer? Answer: I think it is no.",
]


class MarkerBackend(FakeBackend):
    """The FakeBackend whose samples read "<marker> <colour>." (a marker and an answer drawn from
    the sample's seed), so the lexicon finds markers and the analysis has MICs to put intervals on.
    """

    MARKERS = ("definitely", "probably", "maybe", "possibly")
    COLOURS = ("red", "blue", "green")

    def to_table(self, unit, raw):
        from engine.generate.backends.base import build_table, decode_rows

        def one(ids: list[int]) -> str:
            return f"{self.MARKERS[ids[0] % 4].capitalize()} {self.COLOURS[ids[-1] % 3]}."

        texts, comps = decode_rows(unit, raw, lambda seqs: [one(s) for s in seqs], one)
        return build_table(unit, raw, texts, comps)


def marker_backend_factory(model, max_logprobs):
    """`(ModelSpec, max_logprobs) -> MarkerBackend`, the `backend_factory` of the wave tests."""
    return MarkerBackend(vocab_size=40)


def wave_study_spec(folder: Path, items_per_split: int = 120, tasks: int = 2) -> Path:
    """A study spec over `tasks` local tasks of `items_per_split` items per split (gold "red")."""
    lines = []
    for t in range(tasks):
        rows = [
            {"id": f"{s}-{k}", "question": f"What colour is thing {t}.{k}?", "answers": ["red"],
             "split": s}
            for s in ("train", "test")
            for k in range(items_per_split)
        ]  # fmt: skip
        path = folder / f"task{t}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        lines.append(f'[[tasks]]\nname = "t{t}"\nsource = "{path}"\nanswer_type = "free"\n')
    spec = folder / "waves.toml"
    spec.write_text(
        '[run]\nname = "waves"\nchunk_size = 64\n\n'
        '[[models]]\nname = "m"\npath = "builtin:tiny"\n\n'
        + "\n".join(lines)
        + '\n[[prompts]]\nid = "plain"\ntemplate = "{question}\\nAnswer:"\n\n'
        "[sampling]\nn = 4\nmax_tokens = 3\nlogprobs = 1\nseed = 0\n\n"
        '[judges]\nextract = "lexicon"\nconfidence = "consistency-logprob"\n'
        'correctness = "rule"\ndecisiveness = "none"\n\n'
        "[analysis]\nthreshold = 3\nbootstrap = 200\n"
    )
    return spec
