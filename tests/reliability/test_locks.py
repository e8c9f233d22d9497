"""Lock edge cases (fast, no Ray): empty or torn lock files, a lock write that fails."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.store import STALE_EMPTY_LOCK_SECONDS, RunStore


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

    monkeypatch.setattr("engine.store.json.dump", full)
    with pytest.raises(OSError):
        with store.locked():
            pass
    monkeypatch.undo()
    assert not (tmp_path / "run" / ".lock").exists()
    with store.locked():  # space freed: the next run locks normally
        pass
