"""Lock edge cases (fast, no Ray): empty or torn lock files, a lock write that fails."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.generate.store import STALE_EMPTY_LOCK_SECONDS, RunStore


@pytest.mark.parametrize("content", ["", '{"pid": ', "null"])
def test_an_old_lock_without_a_pid_is_taken_over(tmp_path: Path, content: str) -> None:
    store = RunStore(tmp_path / "run")
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    lock.write_text(content)
    with pytest.raises(UserError, match="locked"):  # young: its writer may be filling it
        with store.locked():
            pass
    old = time.time() - STALE_EMPTY_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    with store.locked():
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_lock_that_cannot_be_written_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    store = RunStore(tmp_path / "run")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("engine.generate.store.json.dump", full)
    with pytest.raises(OSError):
        with store.locked():
            pass
    monkeypatch.undo()
    assert not (tmp_path / "run" / ".lock").exists()
    with store.locked():  # space freed: the next run locks normally
        pass


def test_a_reused_pid_does_not_hold_the_lock(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from engine.generate.store import _process_start_ticks

    store = RunStore(tmp_path / "run")
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = _process_start_ticks(other.pid)
        if ticks is None:
            pytest.skip("no /proc here")
        holder = {"pid": other.pid, "host": socket.gethostname(), "start_ticks": ticks}
        lock.write_text(json.dumps(holder))
        with pytest.raises(UserError, match=f"pid {other.pid}"):  # the very holder: refused
            with store.locked():
                pass
        # The same pid, but the process that wrote the lock started at another time (the pid
        # was reused after a crash or a reboot): taken over.
        lock.write_text(json.dumps({**holder, "start_ticks": ticks - 1000}))
        with store.locked():
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        other.kill()
        other.wait()
