"""The judge stages under the same faults: `mic score` takes the run's lock (a second scorer or a
`mic run` is refused, a dead holder's lock is taken over), refuses shards that fail their
checksum, and a scorer SIGKILLed mid-stage resumes to the same scored run (fake judge)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from helpers.reliability_helpers import driver_env
from helpers.study_helpers import FakeJudge, fake_run

from engine.cli import main
from engine.errors import UserError
from engine.score.pipeline import score_run

SCORER = """
import time
from helpers.study_helpers import FakeJudge
from engine.score.pipeline import score_run

class SlowJudge(FakeJudge):
    def next_token_logprobs(self, prompts):
        time.sleep(0.2)
        return super().next_token_logprobs(prompts)

score_run({run!r}, {{"batch_size": 8}}, judge=SlowJudge(), log=True)
"""


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _lock_of(pid: int) -> str:
    return json.dumps({"pid": pid, "host": socket.gethostname(), "since": time.time()})


def test_score_refuses_a_live_lock_and_takes_over_a_dead_one(tmp_path: Path, capsys) -> None:
    run = fake_run(tmp_path / "run")
    holder = _sleeper()
    try:
        (run / ".lock").write_text(_lock_of(holder.pid))
        with pytest.raises(UserError, match=f"locked by another run \\(pid {holder.pid}"):
            score_run(run, judge=FakeJudge(), log=False)
        assert not (run / "stages").exists()  # refused before touching anything
        assert main(["score", str(run)]) == 2  # the CLI refuses before starting a judge engine
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "locked" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()
    result = score_run(run, judge=FakeJudge(), log=False)  # the holder is dead: taken over
    assert (result.scored_dir / "sentences.parquet").is_file()
    assert not (run / ".lock").exists()


def test_score_refuses_a_shard_that_fails_its_checksum(tmp_path: Path, capsys) -> None:
    run = fake_run(tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    shard = run / "shards" / manifest["units"][1]["shard"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        score_run(run, judge=FakeJudge(), log=False)
    assert main(["score", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and shard.name in err and "mic verify" in err
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_scorer_sigkilled_mid_stage_resumes_to_the_same_scored_run(tmp_path: Path) -> None:
    reference = fake_run(tmp_path / "reference")
    score_run(reference, {"batch_size": 8}, judge=FakeJudge(), log=False)
    run = fake_run(tmp_path / "run")
    code = SCORER.format(run=str(run))
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=driver_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parts = run / "stages" / "confidence" / "parts"
    deadline = time.monotonic() + 120
    while not (parts.is_dir() and len(list(parts.rglob("*.parquet"))) >= 2):
        assert proc.poll() is None, "the scorer ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / ".lock").exists()  # left by the killed scorer, naming a dead pid
    assert not (run / "stages" / "confidence" / "done.json").exists()

    score_run(run, {"batch_size": 8}, judge=FakeJudge(), log=False)
    for name in ("responses", "sentences"):
        a = pl.read_parquet(run / "scored" / f"{name}.parquet")
        b = pl.read_parquet(reference / "scored" / f"{name}.parquet")
        assert a.equals(b), name
    assert not (run / ".lock").exists()


def test_score_refuses_an_incomplete_run(tmp_path: Path, capsys) -> None:
    from helpers.reliability_helpers import fake_raw_spec, write_run_without_ray

    run = tmp_path / "run"
    write_run_without_ray(run, fake_raw_spec(tmp_path), finished=5)  # e.g. stopped by a full disk
    assert main(["score", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "incomplete" in err and "5 of 24" in err
    assert not (run / "stages").exists() and not (run / ".lock").exists()
