"""A full disk (a tiny tmpfs): the run stops with a clear message, nothing committed is damaged,
and after space is freed the same command completes the run exactly once."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from helpers.reliability_helpers import assert_exactly_once, fake_driver, fake_raw_spec, write_toml

from engine.generate.verify import verify_run

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 256 KiB tmpfs (room for about a third of the run); unmounted afterwards."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_stops_cleanly_and_resumes(small_disk: Path, ray_address: str) -> None:
    spec = write_toml(small_disk.parent / "spec.toml", fake_raw_spec(small_disk.parent, 4, 0.02))
    out = small_disk / "run"
    proc = fake_driver(spec, out, "--actors", "2", "--ray-address", ray_address, "--quiet")
    output = proc.communicate(timeout=300)[0].decode()
    print(output[-3000:])
    assert proc.returncode in (1, 2), output[-3000:]
    assert "Traceback" not in output
    last = [line for line in output.splitlines() if line.startswith("mic run")][-1]
    assert "No space left on device" in last or "disk" in last.lower(), last
    report = verify_run(str(out), check_duplicates=False)
    states = {u.state for u in report.units}
    assert states <= {"done", "missing", "torn"}, report.to_dict()
    assert "done" in states and "missing" in states | {"torn"}
    assert not (out / ".lock").exists()

    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    proc = fake_driver(spec, out, "--actors", "2", "--ray-address", ray_address, "--quiet")
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    assert verify_run(str(out)).ok
    assert_exactly_once(out, 360)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["units_finished"] == manifest["units_planned"]
