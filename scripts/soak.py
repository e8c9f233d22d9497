"""Soak test of the engine: a long `mic run` under fire, then a full check of what it stored.

What it does:
  1. Starts `mic run` (the real CLI and driver, local Ray, 2 actors) in its own process group.
  2. SIGKILLs 3 actor processes at random moments (picked among the live `ray::GenerationActor`
     workers of that run, once a random number of units has been committed) and SIGKILLs the
     driver once (with its local Ray) at a random point in between.
  3. Re-runs the same command until it exits 0 (a resume), the remaining actor kills landing in
     the resumed run.
  4. Checks: `mic verify` says every unit is done and consistent; the shards hold exactly
     items x prompts x n rows, each (model, task, split, prompt, item, sample) once; no stray
     shard or temp file; no error rows; summary.json records the retried units; units
     regenerated in-process without faults (all with the fake engine, 3 random ones with vLLM)
     have the same tokens; and prints what it injected and what it checked.

Modes:
  default   the built-in tiny model on vLLM (configs/tiny.toml with n = 84: 240 items x 84 =
            20,160 generations), about 5-10 minutes on a 2-core CPU box.
  --small   the fake engine (`FakeBackend`: same driver, actors, shards and kills, no vLLM) on
            240 items x n = 4: the CI version (tests/reliability/test_soak.py). The real engine
            is too slow for CI on 2 cores: each actor kill costs a vLLM start (~15-25 s) and the
            driver kill a Ray start plus two engine starts.

    python scripts/soak.py [--small] [--seed 0] [--out DIR] [--keep]

Exit code 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = ["model", "task", "split", "prompt", "item_id", "sample_idx"]


def _driver_main(argv: list[str]) -> int:
    """`mic run` with the fake engine (the --small mode's driver process)."""
    import engine.generate.runner
    from engine.cli import main
    from engine.generate.actors import fake_backend_factory

    engine.generate.runner.run_sweep = functools.partial(
        engine.generate.runner.run_sweep, backend_factory=fake_backend_factory, ray_num_cpus=2
    )
    return main(["run", *argv])


def _spec_args(small: bool) -> list[str]:
    spec = str(REPO / "configs" / "tiny.toml")
    if small:
        return [
            spec,
            "--set",
            "sampling.n=4",
            "--set",
            "run.chunk_size=4",
            "--set",
            "models.0.engine_args.fake_seconds=0.5",  # long enough units to strike inside
        ]
    return [spec, "--set", "sampling.n=84", "--set", "run.chunk_size=8"]


def _start(small: bool, out: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env["PYTHONUNBUFFERED"] = "1"
    args = [*_spec_args(small), "--out", str(out), "--actors", "2"]
    if small:
        cmd = [sys.executable, __file__, "--_driver", *args]
    else:
        cmd = [sys.executable, "-m", "engine.cli", "run", *args]
    with open(log, "ab") as fh:  # a file, not a pipe: vLLM start-up logs would fill a pipe
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: driver, its local Ray, the actors
        )


def _actor_pids(pgid: int) -> list[int]:
    """Live generation actors of the run whose driver leads process group `pgid`.

    Ray puts each worker in its own process group, so an actor is found as a child of the
    raylet of that group (never another run's actor on a shared machine).
    """
    out = subprocess.run(
        ["ps", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True, text=True
    ).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    rows = [r for r in rows if len(r) == 4]
    raylets = {int(r[0]) for r in rows if int(r[2]) == pgid and "/raylet" in r[3].split()[0]}
    return [int(r[0]) for r in rows if int(r[1]) in raylets and r[3].startswith("ray::Generation")]


def _done(out: Path) -> int:
    return len(list((out / "done").glob("*.json"))) if (out / "done").is_dir() else 0


class Soak:
    """One soak run: the schedule of kills, the driver processes, the log of what happened."""

    def __init__(self, small: bool, out: Path, seed: int) -> None:
        self.small, self.out = small, out
        self.rng = random.Random(seed)
        self.events: list[str] = []
        self.started = time.monotonic()
        self.driver_log = out.parent / f"{out.name}-driver.log"

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:7.1f}s] {text}"
        self.events.append(line)
        print(line, flush=True)

    def _wait_units(self, proc: subprocess.Popen[bytes], target: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if _done(self.out) >= target:
                return True
            time.sleep(0.05)
        return False

    def _kill_an_actor(self, proc: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            pids = _actor_pids(proc.pid)
            if pids:
                victim = self.rng.choice(pids)
                time.sleep(self.rng.uniform(0.0, 0.5))  # somewhere inside a unit
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.log(f"SIGKILL actor pid {victim} ({_done(self.out)} units committed)")
                return True
            time.sleep(0.1)
        return False

    def run(self, units: int) -> tuple[int, int, int]:
        """Run with 3 actor kills and 1 driver kill; return (actor kills, driver kills, runs)."""
        # Commit points (units done) at which to strike: two actor kills, the driver kill,
        # then the third actor kill in the resumed run.
        # All within the first two thirds: the resumed run keeps a third of the units, so the
        # last actor kill lands before it ends (two units in flight per actor finish a short
        # tail before a kill can strike).
        points = sorted(self.rng.sample(range(2, max(units * 2 // 3, 8)), 4))
        actor_kills = driver_kills = runs = 0
        proc = _start(self.small, self.out, self.driver_log)
        runs += 1
        self.log(f"driver pid {proc.pid} started; kill points at units {points}")
        for target in points[:2]:
            if self._wait_units(proc, target, 900) and self._kill_an_actor(proc):
                actor_kills += 1
        if self._wait_units(proc, points[2], 900):
            time.sleep(self.rng.uniform(0.0, 1.0))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                driver_kills += 1
                self.log(f"SIGKILL driver pid {proc.pid} and its Ray ({_done(self.out)} units)")
                time.sleep(2.0)
        while runs < 10:
            if proc.poll() is not None:
                if proc.returncode == 0:
                    break
                proc = _start(self.small, self.out, self.driver_log)
                runs += 1
                self.log(f"resume: driver pid {proc.pid} started ({_done(self.out)} units done)")
            if actor_kills < 3 and _done(self.out) + 1 < units:
                target = max(points[3], _done(self.out) + 1)
                if self._wait_units(proc, target, 900) and self._kill_an_actor(proc):
                    actor_kills += 1
                continue
            proc.wait()
        self.log(f"driver pid {proc.pid} finished with exit code {proc.returncode}")
        return actor_kills, driver_kills, runs


def check(out: Path, expected_rows: int, units: int) -> list[tuple[str, bool, str]]:
    """The final checks: (what, passed, detail)."""
    import polars as pl

    from engine.generate.verify import verify_run

    checks = []
    report = verify_run(str(out))
    counts = {k: v for k, v in report.counts.items() if v}
    checks.append(("mic verify: every unit done and consistent", report.ok, f"{counts}"))
    manifest = json.loads((out / "manifest.json").read_text())
    paths = [str(out / "shards" / u["shard"]) for u in manifest["units"]]
    df = pl.concat([pl.scan_ipc(p) for p in paths]).select(*KEY, "error", "token_ids").collect()
    checks.append(
        ("units finished", manifest["units_finished"] == units, f"{manifest['units_finished']}")
    )
    checks.append(("rows = items x n", df.height == expected_rows, f"{df.height}/{expected_rows}"))
    unique = df.select(KEY).n_unique()
    checks.append(("each (unit, item, sample) once", unique == df.height, f"{unique} unique"))
    on_disk = len(list((out / "shards").iterdir()))
    checks.append(("no orphan shard or temp file", on_disk == units, f"{on_disk} files"))
    errors = df["error"].is_not_null().sum()
    checks.append(("no error rows", errors == 0, f"{errors}"))
    empty = df.filter(pl.col("error").is_null() & (pl.col("token_ids").list.len() == 0)).height
    checks.append(("every sample generated tokens", empty == 0, f"{empty} empty"))
    summary = json.loads((out / "summary.json").read_text())
    restarts = sum(m.get("actor_restarts", 0) for m in summary["models"].values())
    retried = sum(len(m.get("retries", [])) for m in summary["models"].values())
    # summary.json is the final driver run's account (a SIGKILLed driver writes none): it must
    # hold every retry that run logged. Over the whole soak, some unit must have been retried
    # (a kill can land on an actor between units, so the final run alone may have none).
    log = out.parent / f"{out.name}-driver.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    # A run's header may follow a progress bar on the same line (tqdm ends without a newline).
    runs = re.split(r"(?=(?:new|resume|replaced) run \S+ in )", text)
    final = runs[-1] if runs else ""
    logged_final = len(re.findall(r"; retrying$|failed for good", final, flags=re.MULTILINE))
    logged_all = len(re.findall(r"; retrying$|failed for good", text, flags=re.MULTILINE))
    checks.append(
        (
            "summary records the retried units",
            retried >= logged_final and max(retried, logged_all) >= 1,
            f"{retried} in summary.json, {logged_final} logged by the final run, "
            f"{logged_all} over the soak",
        )
    )
    checks.append(("summary: no failed units", not summary["failed_units"], f"restarts {restarts}"))
    return checks


def same_tokens(out: Path, small: bool, spec_args: list[str], seed: int) -> tuple[str, bool, str]:
    """Regenerate units in this process (no Ray, no kills) and compare their tokens with the
    stored rows: every unit with the fake engine, 3 random units with vLLM (one engine start)."""
    import polars as pl
    import pyarrow.ipc as ipc

    from engine.config.sweep import load_spec
    from engine.generate.actors import vllm_backend_factory
    from engine.generate.backends.fake import FakeBackend
    from engine.generate.backends.vllm import ENGINE_ENV
    from engine.generate.units import plan_units

    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # keep the report readable
    overrides = [spec_args[i + 1] for i, a in enumerate(spec_args) if a == "--set"]
    spec = load_spec(spec_args[0], overrides)
    units = plan_units(spec)
    if not small:
        units = random.Random(seed).sample(units, 3)
    if small:  # the same tokens as the actors' fake engine, without its per-unit sleep
        backend = FakeBackend()
    else:
        backend = vllm_backend_factory(units[0].model, spec.sampling.logprobs)
    manifest = {
        u["unit_id"]: u["shard"] for u in json.loads((out / "manifest.json").read_text())["units"]
    }
    key = ["item_id", "sample_idx"]
    differ = []
    try:
        for unit in units:
            fresh = pl.from_arrow(backend.to_table(unit, backend.generate(unit)))
            stored = pl.from_arrow(
                ipc.open_file(str(out / "shards" / manifest[unit.unit_id])).read_all()
            )
            a = fresh.sort(key).select(*key, "token_ids")
            b = stored.sort(key).select(*key, "token_ids")
            if not a.equals(b):
                differ.append(unit.unit_id)
    finally:
        backend.close()
    return (
        "same tokens as an uninterrupted in-process run",
        not differ,
        f"{len(units)} units regenerated, {len(differ)} differ",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="fake engine (the CI version)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--out", default=None, help="run directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)

    from engine.config.sweep import load_spec
    from engine.generate.runner import plan_report

    spec_args = _spec_args(args.small)
    overrides = [spec_args[i + 1] for i, a in enumerate(spec_args) if a == "--set"]
    plan = plan_report(load_spec(spec_args[0], overrides))
    units, rows = plan["totals"]["units"], plan["totals"]["samples"]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mic-soak-")) / "run"
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "fake engine (--small)" if args.small else "tiny model on vLLM"
    print(f"soak: {mode}, {units} units, {rows:,} generations, 2 actors, seed {args.seed}")
    print(f"soak: output {out}")
    soak = Soak(args.small, out, args.seed)
    actor_kills, driver_kills, runs = soak.run(units)
    results = check(out, rows, units)
    results.append(same_tokens(out, args.small, spec_args, args.seed))
    seconds = time.monotonic() - soak.started
    print(f"\ninjected: {actor_kills} actor SIGKILLs, {driver_kills} driver SIGKILL, {runs} runs")
    print("checked:")
    for what, ok, detail in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {what} ({detail})")
    passed = all(ok for _, ok, _ in results) and actor_kills == 3 and driver_kills == 1
    print(f"soak {'PASSED' if passed else 'FAILED'} in {seconds:.0f} s")
    if not passed:
        text = soak.driver_log.read_text(errors="replace") if soak.driver_log.exists() else ""
        print(f"\n--- {soak.driver_log} (last 4000 chars) ---\n{text[-4000:]}")
    if not args.keep and not args.out:
        shutil.rmtree(out.parent, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_driver":
        sys.exit(_driver_main(sys.argv[2:]))
    sys.exit(main())
