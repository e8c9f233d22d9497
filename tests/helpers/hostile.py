"""Helpers of the hostile-input corpus: run `mic` as a subprocess and check what it wrote where.

A hostile case passes when the command exits with the expected code, prints at most one stderr
line naming the file or field, shows no traceback, and changes no file outside the output
directory (the whole temp folder is snapshotted before and after).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers import REPO

# Generous: an alias bomb that is not caught hangs far longer; a caught one exits in ~1 s.
CLI_TIMEOUT = 120


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and mtime (ns)."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@dataclass
class MicResult:
    """What a `mic` subprocess did."""

    code: int
    stdout: str
    stderr: str
    changed: list[str]  # files created / changed / removed under the watched folder


def run_mic(argv: list[str], watch: Path, cwd: Path | None = None) -> MicResult:
    """Run `python -m engine.cli ARGV` and report the files it changed under `watch`.

    Args:
        argv: The arguments after `mic`.
        watch: The folder to snapshot before and after (the test's temp folder).
        cwd: Working directory of the subprocess (default: `watch`).

    Returns:
        Exit code, output and the changed files (relative to `watch`).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_AUTH_MODE"] = "disabled"
    before = snapshot(watch)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", *argv],
        cwd=str(cwd or watch),
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    after = snapshot(watch)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return MicResult(proc.returncode, proc.stdout, proc.stderr, changed)


def outside(result: MicResult, watch: Path, out: Path | None) -> list[str]:
    """The changed files that are not under `out` (all of them when `out` is None)."""
    if out is None:
        return result.changed
    prefix = str(out.relative_to(watch)) + os.sep
    return [k for k in result.changed if not k.startswith(prefix)]


def assert_one_line(result: MicResult, *needles: str, code: int = 2) -> str:
    """Exit `code`, one stderr line holding every needle, no traceback; returns the line."""
    err = result.stderr
    assert result.code == code, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]
