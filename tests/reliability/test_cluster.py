"""The sweep on a multi-node Ray cluster, started the way users start one (`ray start`), with a
worker node lost mid-run and the driver killed and restarted on the head.

Three nodes on this machine: a head without CPUs for actors and two workers with two CPUs each;
the run directory is on the filesystem all three share (as an NFS mount or an object store would
be on a real cluster). Units run on the fake engine so node start-ups are the only cost.
Commands of this test: docs/cluster.md.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.reliability_helpers import (
    REPO,
    assert_exactly_once,
    driver_env,
    fake_driver,
    fake_raw_spec,
    write_toml,
)

from engine.generate.verify import verify_run

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

RAY = str(Path(sys.executable).parent / "ray")
ROWS = 180 * 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """Head + workers started with `ray start --block`, each in its own process group, so a node
    can be lost (SIGKILL of its group: raylet, object store and its actors at once) or stopped
    without touching any other Ray on the machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        # Lost nodes are noticed within seconds, not the default half minute; slow start-ups
        # under load are waited for.
        self.env = {
            **driver_env(),
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_failure_threshold": "4",
            "RAY_health_check_initial_delay_ms": "0",
            "RAY_raylet_start_wait_time_s": "120",
        }

    def start(self, name: str, *args: str) -> None:
        log = (self.root / f"{name}.log").open("w")
        self.nodes[name] = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in (self.root / f"{name}.log").read_text():
            assert self.nodes[name].poll() is None, (self.root / f"{name}.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"node {name} did not start"
            time.sleep(0.3)

    def lose(self, name: str) -> None:
        """The node dies at once: no drain, no goodbye (a power cut, a kernel panic)."""
        os.killpg(self.nodes[name].pid, signal.SIGKILL)
        self.nodes[name].wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL what is left after a few seconds: `ray start --block`'s graceful
        stop took ~34 s of every suite run, and nothing after it needs these nodes' state."""
        for proc in self.nodes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.nodes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group: raylet, store, workers
            except ProcessLookupError:
                pass
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start("head", "--head", f"--port={c.port}", "--num-cpus=0", "--include-dashboard=false")
        c.start("w1", f"--address={c.address}", "--num-cpus=2", '--resources={"w1": 1}')
        c.start("w2", f"--address={c.address}", "--num-cpus=2", '--resources={"w2": 1}')
        yield c
    finally:
        c.stop()


def _wait_done(out: Path, count: int, proc: subprocess.Popen[bytes], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(list((out / "done").glob("*.json"))) < count:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode()[-3000:])
        assert time.monotonic() < deadline, "timed out waiting for units"
        time.sleep(0.1)


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_node_lost_mid_run_and_driver_restarted(cluster: LocalCluster, tmp_path: Path) -> None:
    """Actors spread over both workers; one worker is lost with units in flight; the run goes on
    on the other, the lost units are retried there, and the run equals an uninterrupted one.
    Then the head's driver is SIGKILLed during a second run and restarted: it resumes."""
    raw = fake_raw_spec(tmp_path, chunk_size=8, seconds=1.5)
    raw["models"][0]["replicas"] = 2
    spec = write_toml(tmp_path / "spec.toml", raw)
    out = tmp_path / "run"
    started = time.monotonic()
    driver = fake_driver(spec, out, "--ray-address", cluster.address)
    _wait_done(out, 4, driver)
    cluster.lose("w1")
    log = driver.communicate(timeout=600)[0].decode()
    wall = time.monotonic() - started
    assert driver.returncode == 0, log[-3000:]

    df = assert_exactly_once(out, ROWS)
    report = verify_run(str(out))
    assert report.ok, report.to_dict()
    # Nothing half-written by the lost node is left unexplained.
    assert not report.stray_temp_files and not any(u.temp_files for u in report.units)
    summary = _summary(out)
    model = summary["models"]["fake"]
    assert model["actor_restarts"] >= 1
    lost = [r for r in model["retries"] if "node" in r["error"] or "died" in r["error"]]
    assert lost, model["retries"]
    nodes = summary["nodes"]
    assert len(nodes) >= 2, nodes  # the work was spread over both workers
    assert sum(n["rows"] for n in nodes.values()) == ROWS
    print(f"node-loss run: {wall:.1f} s, {len(lost)} units retried, {df.height} rows verified")

    # The driver on the head is killed mid-run and restarted: the run resumes exactly once.
    raw2 = fake_raw_spec(tmp_path / "second", chunk_size=8, seconds=1.0)
    raw2["run"]["name"] = "second"
    (tmp_path / "second").mkdir()
    spec2 = write_toml(tmp_path / "second" / "spec.toml", raw2)
    out2 = tmp_path / "run2"
    driver = fake_driver(spec2, out2, "--ray-address", cluster.address)
    _wait_done(out2, 3, driver)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = len(list((out2 / "done").glob("*.json")))
    again = fake_driver(spec2, out2, "--ray-address", cluster.address)
    log = again.communicate(timeout=600)[0].decode()
    assert again.returncode == 0, log[-3000:]
    assert f"{before} already finished" in log or "already finished" in log
    assert_exactly_once(out2, ROWS)
    assert verify_run(str(out2)).ok


def test_bootstrap_over_the_cluster_equals_the_local_one(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """`mic analyze --bootstrap B --ray ADDR` sums item shards in Ray tasks on the cluster's
    nodes; the counter-based draws make the result identical to the local computation."""
    example = REPO / "metrics" / "data" / "example"
    env = driver_env()
    runs = {}
    for name, extra in (("local", []), ("cluster", ["--ray", cluster.address])):
        out = tmp_path / name
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", "analyze", str(example), "--out", str(out)]
            + ["--bootstrap", "200", *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = json.loads((out / "metrics.json").read_text())
    # Identical draws; the shard sums are added in another order, so floats agree to ~1e-15.
    _assert_same(runs["cluster"]["models"], runs["local"]["models"], "models")


def _assert_same(a: object, b: object, where: str) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), where
    else:
        assert a == b, where
