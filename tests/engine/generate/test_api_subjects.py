"""API models as subjects, end to end against a real vLLM OpenAI-compatible server (no mocks).

The session's `vllm_server` (tests/conftest.py) serves the tiny model on 127.0.0.1. A sweep model
with `backend = "openai"` generates through it:
- in-process: the GENERATIONS table of one unit, on `/completions` (the server's real token ids)
  and on `/chat/completions` (hashed token ids, greedy: chosen token = top-1 alternative);
- a server that refuses `n` (a real proxy in front of the real server): one call per sample;
- `mic run` subprocesses: rows, logprobs, the token and cost account in summary.json, no API key
  in any file written, and a run SIGKILLed mid-way that resumes with no duplicate or missing row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from helpers.engine_helpers import make_raw_spec, write_toml

from engine.config.sweep import load_spec, validate
from engine.contract import GENERATIONS
from engine.generate.backends.openai import OpenAIBackend, token_id
from engine.generate.units import plan_units

pytestmark = [pytest.mark.slow, pytest.mark.engine]

KEY_ENV = "MIC_TEST_API_KEY"
KEY = "sk-mic-test-9f8e7d6c5b4a3210"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)  # the local server takes any key; the backend needs one set


def api_raw(url: str, *, items: int = 8, chunk: int = 4, **model: Any) -> dict[str, Any]:
    """A sweep spec document with one API model on the local server."""
    entry = {
        "name": "tiny-api",
        "path": "tiny",
        "backend": "openai",
        "base_url": url,
        "api_key_env": KEY_ENV,
        "concurrency": 4,
        "price_in": 0.5,
        "price_out": 2.0,
        **model,
    }
    task = {"name": "arith", "source": "builtin:arithmetic", "splits": ["train"], "limit": items}
    return make_raw_spec(
        run={"name": "api", "chunk_size": chunk},
        models=[entry],
        tasks=[task],
        sampling={"n": 3, "max_tokens": 8, "logprobs": 3, "seed": 7},
    )


def test_completions_rows_have_the_servers_token_ids_and_logprobs(vllm_server: str) -> None:
    raw = api_raw(vllm_server, engine_args={"return_tokens_as_token_ids": True})
    unit = plan_units(validate(raw))[0]
    backend = OpenAIBackend(unit.model)
    table = backend.to_table(unit, backend.generate(unit))
    assert table.schema.remove_metadata() == GENERATIONS
    df = pl.from_arrow(table)
    assert df.height == 4 * 3
    assert df["sample_idx"].to_list() == [0, 1, 2] * 4
    assert df["error"].null_count() == df.height and df["text"].null_count() == 0
    assert (df["prompt_tokens"] > 0).all()
    lengths = df["token_ids"].list.len()
    assert (lengths > 0).all() and (df["logprobs"].list.len() == lengths).all()
    tops = df["top_logprobs"].explode().drop_nulls().list.len()
    assert tops.len() == lengths.sum() and (tops == 3).all()
    # Real vocabulary ids (the tiny model's vocabulary is ~512), not hashes.
    assert df["token_ids"].explode().max() < 1024
    # Seeded per sample: the same unit again gives the same tokens.
    again = pl.from_arrow(backend.to_table(unit, backend.generate(unit)))
    assert again["token_ids"].to_list() == df["token_ids"].to_list()
    settings = table.schema.metadata[b"settings"].decode()
    assert "openai /completions" in settings and "server ids" in settings


def test_chat_rows_hash_token_strings_consistently(vllm_server: str) -> None:
    raw = api_raw(vllm_server, use_chat_template=True)
    raw["sampling"].update(temperature=0.0, n=1)  # vLLM allows greedy with n = 1 only
    unit = plan_units(validate(raw))[0]
    backend = OpenAIBackend(unit.model)
    result = backend.generate(unit)
    df = pl.from_arrow(backend.to_table(unit, result))
    assert df.height == 4 and df["error"].null_count() == df.height
    assert result.usage["requests"] == 4
    assert result.usage["completion_tokens"] == df["token_ids"].list.len().sum()
    for ids, lps, tops in df.select("token_ids", "logprobs", "top_logprobs").rows():
        assert ids and len(ids) == len(lps) == len(tops)
        for chosen, lp, top in zip(ids, lps, tops):
            # Greedy: the chosen token is the top-1 alternative, under the same hashed id.
            assert top[0]["token_id"] == chosen and top[0]["logprob"] == pytest.approx(lp)
    assert token_id("token_id:42") == 42 and token_id(" the") == token_id(" the") < 2**31


def test_chat_template_kwargs_are_sent_to_the_server(vllm_server: str) -> None:
    # vLLM's OpenAI-compatible server applies `chat_template_kwargs` (Qwen3's enable_thinking);
    # the request carries them only when the spec sets them, and the real server accepts them.
    raw = api_raw(vllm_server, use_chat_template=True)
    raw["models"][0]["chat_template_kwargs"] = {"enable_thinking": False}
    raw["sampling"].update(temperature=0.0, n=1)
    unit = plan_units(validate(raw))[0]
    backend = OpenAIBackend(unit.model)
    request = backend._plan(unit)[0]
    body = backend._body(unit, request, "Q?", "Q?")
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    df = pl.from_arrow(backend.to_table(unit, backend.generate(unit)))
    assert df.height == 4 and df["error"].null_count() == df.height
    plain = plan_units(validate(api_raw(vllm_server, use_chat_template=True)))[0]
    assert "chat_template_kwargs" not in OpenAIBackend(plain.model)._body(
        plain, request, "Q?", "Q?"
    )


class _Proxy(BaseHTTPRequestHandler):
    """A proxy in front of the real server: `answer` decides a request's reply (status, JSON
    text), or None to forward it upstream."""

    upstream = ""

    def answer(self, body: dict[str, Any]) -> tuple[int, str] | None:
        return None

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        reply = self.answer(body)
        if reply is None:
            up = httpx.post(
                type(self).upstream + self.path.removeprefix("/v1"), json=body, timeout=120
            )
            reply = (up.status_code, up.text)
        self.send_response(reply[0])
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply[1].encode())

    def log_message(self, *args: object) -> None:
        pass


class _NoN(_Proxy):
    """A proxy in front of the real server that refuses `n` as OpenAI does for some models."""

    bodies: list[dict[str, Any]] = []
    auth: set[str] = set()

    def answer(self, body: dict[str, Any]) -> tuple[int, str] | None:
        _NoN.bodies.append(body)
        _NoN.auth.add(self.headers.get("Authorization", ""))
        if body.get("n", 1) == 1:
            return None
        return 400, json.dumps(
            {"error": {"message": "n is not supported", "param": "n", "code": None}}
        )


def test_a_server_refusing_n_gets_one_call_per_sample(vllm_server: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoN)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _NoN.upstream, _NoN.bodies, _NoN.auth = vllm_server, [], set()
    try:
        raw = api_raw(f"http://127.0.0.1:{server.server_address[1]}/v1")
        unit = plan_units(validate(raw))[0]
        backend = OpenAIBackend(unit.model)
        result = backend.generate(unit)
        df = pl.from_arrow(backend.to_table(unit, result))
    finally:
        server.shutdown()
    assert df.height == 12 and df["error"].null_count() == df.height
    sent = [b for b in _NoN.bodies if "n" not in b]
    assert len(sent) == 4 * 3  # after the refusal: every sample on its own
    # Sample j of an item is seeded seed + j, as the stored seeds say.
    assert sorted(b["seed"] for b in sent) == sorted(s for s in df["seed"].to_list())
    assert (
        "n: one request per sample"
        in backend.to_table(unit, result).schema.metadata[b"settings"].decode()
    )
    assert result.usage["prompt_tokens"] == sum(result.prompt_tokens) * 3  # billed per call
    assert _NoN.auth == {f"Bearer {KEY}"}  # the key from the environment, on every request


class _Busy(_Proxy):
    """A proxy in front of the real server that answers 503 to requests of one item (a server
    that stays busy past the client's retries), and forwards the rest."""

    busy_word = ""
    refused = 0

    def answer(self, body: dict[str, Any]) -> tuple[int, str] | None:
        if not (_Busy.busy_word and _Busy.busy_word in json.dumps(body)):
            return None
        _Busy.refused += 1
        return 503, json.dumps({"error": {"message": "overloaded"}})


def test_a_busy_server_fails_the_unit_not_the_item(vllm_server: str, tmp_path: Path) -> None:
    # A request that stays unanswered says nothing about its item: writing the unit with that
    # item as an error row would make a resume skip it forever and drop it from the MICs.
    from engine.generate.backends.http import HTTPFailure

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    raw = api_raw(url, items=4, chunk=4, max_retries=0)
    unit = plan_units(validate(raw))[0]
    _Busy.upstream, _Busy.refused = vllm_server, 0
    _Busy.busy_word = unit.user_texts()[1].splitlines()[0]  # one item's question
    try:
        with pytest.raises(HTTPFailure, match="1 of 4 requests failed .*503"):
            OpenAIBackend(unit.model).generate(unit)
        assert _Busy.refused >= 1
        # `mic run`: the unit is retried run.max_attempts times, then the run says it is
        # incomplete (exit 1) and writes no done-record for it; the other unit is kept.
        raw = api_raw(url, items=8, chunk=4, max_retries=0)
        raw["run"]["max_attempts"] = 2
        spec_path = write_toml(tmp_path / "busy.toml", raw)
        units = plan_units(load_spec(spec_path))
        _Busy.busy_word = units[0].user_texts()[0].splitlines()[0]
        out = tmp_path / "out"
        proc = _mic(spec_path, out)
        output = proc.communicate(timeout=600)[0].decode()
    finally:
        server.shutdown()
    assert proc.returncode == 1, output[-3000:]
    assert "503" in output and "Traceback" not in output
    done = {p.stem for p in (out / "done").glob("*.json")}
    assert units[0].unit_id not in done and units[1].unit_id in done
    assert _rows(out)["error"].null_count() == _rows(out).height  # no error row was written


class _Deny(_Proxy):
    """A server that refuses the key (HTTP 401) and counts the requests."""

    requests = 0

    def answer(self, body: dict[str, Any]) -> tuple[int, str] | None:
        _Deny.requests += 1
        return 401, json.dumps({"error": {"message": "invalid api key"}})


def test_a_refused_key_stops_the_run_at_once(tmp_path: Path) -> None:
    # Every unit would be refused the same way: one line naming the endpoint and the key
    # variable (exit 2), no retries of each unit `run.max_attempts` times.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Deny)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    raw = api_raw(f"http://127.0.0.1:{server.server_address[1]}/v1", items=8, chunk=4)
    raw["run"]["max_attempts"] = 3
    _Deny.requests = 0
    try:
        proc = _mic(write_toml(tmp_path / "deny.toml", raw), tmp_path / "out")
        output = proc.communicate(timeout=600)[0].decode()
    finally:
        server.shutdown()
    assert proc.returncode == 2, output[-3000:]
    assert "HTTP 401 (not authorized)" in output and KEY_ENV in output
    assert "Traceback" not in output and KEY not in output
    # Each of the two units asked at most once (4 requests each); retried, it would be 24.
    assert 1 <= _Deny.requests <= 8
    assert not list((tmp_path / "out" / "done").glob("*.json"))


# ---- `mic run` subprocesses ---------------------------------------------------------------------


def _mic(spec: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", KEY_ENV: KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(spec), "--out", str(out), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a SIGKILL reaches Ray's processes too
    )


def _no_secret_in(root: Path, *secrets: str) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"{secret!r} written to {path}"


def _rows(out: Path) -> pl.DataFrame:
    return pl.scan_ipc(str(out / "shards" / "*.arrow")).collect()


def test_mic_run_of_an_api_model_accounts_tokens_and_cost_and_stores_no_key(
    vllm_server: str, tmp_path: Path
) -> None:
    # (Credentials written into a spec's URL are refused: tests/engine/config/test_spec.py.)
    spec_path = write_toml(tmp_path / "api.toml", api_raw(vllm_server))
    out = tmp_path / "out"
    proc = _mic(spec_path, out)
    output = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    df = _rows(out)
    assert df.height == 8 * 3 and df["error"].null_count() == df.height
    assert df.select("item_id", "sample_idx").n_unique() == df.height
    assert (df["logprobs"].list.len() == df["token_ids"].list.len()).all()
    summary = json.loads((out / "summary.json").read_text())
    api = summary["models"]["tiny-api"]["api"]
    completion = int(df["token_ids"].list.len().sum())
    assert api["completion_tokens"] == completion
    assert api["prompt_tokens"] == int(df.filter(pl.col("sample_idx") == 0)["prompt_tokens"].sum())
    assert api["requests"] == 8  # one per item
    assert api["cost_usd"] == pytest.approx((api["prompt_tokens"] * 0.5 + completion * 2.0) / 1e6)
    engine = summary["settings"]["engine"]["tiny-api"]
    assert engine["backend"] == "openai" and "127.0.0.1" in engine["endpoint"]
    # No actor asked for a GPU (the session's Ray has none anyway): CPU seconds only.
    assert summary["models"]["tiny-api"]["gpu_seconds"] == 0
    _no_secret_in(out, KEY)


def test_api_run_killed_mid_way_resumes_to_exact_rows(vllm_server: str, tmp_path: Path) -> None:
    raw = api_raw(vllm_server, items=40, chunk=2, concurrency=2)
    spec_path = write_toml(tmp_path / "kill.toml", raw)
    units = plan_units(load_spec(spec_path))
    expected = sum(u.n_rows for u in units)
    out = tmp_path / "out"
    done = out / "done"
    proc = _mic(spec_path, out)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if done.is_dir() and len(list(done.glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:] if proc.stdout else ""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = {p.name: p.read_bytes() for p in done.glob("*.json")}
    assert 2 <= len(at_kill) < len(units)

    again = _mic(spec_path, out)
    output = again.communicate(timeout=600)[0].decode()
    assert again.returncode == 0, output[-3000:]
    df = _rows(out)
    assert df.height == expected  # nothing missing ...
    assert df.select("unit_id", "item_id", "sample_idx").n_unique() == expected  # ... or twice
    assert set(df["unit_id"].unique()) == {u.unit_id for u in units}
    # Units finished before the kill were not generated again: their done-records are unchanged.
    assert all((done / name).read_bytes() == data for name, data in at_kill.items())
    from engine.generate.verify import verify_run

    assert verify_run(str(out)).ok
    _no_secret_in(out, KEY)
