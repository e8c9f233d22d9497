"""Checks made before `mic analyze` / `mic report` start work: where they may write, and whether a
bootstrap fits in this machine's memory (with an estimate of its time and a progress line).

Each refusal is a `UserError`: one line naming the option, what is wrong and what to pass instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from engine.errors import UserError

T_ = TypeVar("T_")


# ----------------------------------------------------------------------------- output paths


def _probe(path: Path, option: str) -> None:
    """Raise a `UserError` for a path the OS cannot even look up (NUL byte, name too long)."""
    try:
        os.stat(path)  # not Path.exists(), which answers False for a NUL byte
    except (FileNotFoundError, NotADirectoryError):
        pass  # reported below, with the file that is in the way
    except (ValueError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(
            f"{option} {str(path)!r} is not a usable path ({reason})",
            "pass a plain directory or file name",
        ) from None


def _file_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is not a directory, if any."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_dir(out: str | Path | None, option: str = "--out") -> None:
    """Refuse an output directory that cannot be one, before any work is done.

    Args:
        out: the directory `mic analyze` writes into (None: nothing is written).
        option: the option's name, for the message.

    Raises:
        UserError: `out` is empty, an existing file, below a file, or has an unusable name.
    """
    if out is None:
        return
    if str(out).strip() == "":
        raise UserError(f"{option} is empty", "pass the directory to write results into")
    path = Path(out)
    _probe(path, option)
    if path.exists() and not path.is_dir():
        raise UserError(
            f"{option} {path} is an existing file, not a directory",
            "pass a directory (it is created if missing), or move the file away",
        )
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise UserError(
            f"{option} {path} lies below {blocker}, which is a file",
            "pass a directory whose parents are directories",
        )


def check_output_file(out: str | Path, option: str = "--out") -> Path:
    """Refuse an output file path that is a directory or lies below a file.

    Returns:
        The path as a `Path`.
    """
    if str(out).strip() == "":
        raise UserError(f"{option} is empty", "pass the file to write, e.g. report.html")
    path = Path(out)
    _probe(path, option)
    if path.is_dir():
        raise UserError(
            f"{option} {path} is a directory",
            f"pass the file to write, e.g. {path / 'report.html'}",
        )
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise UserError(
            f"{option} {path} lies below {blocker}, which is a file",
            "pass a file whose parent directories are directories",
        )
    return path


# ----------------------------------------------------------------------------- bootstrap


# Peak bytes per replicate of one (model, prompt) group, in float64 words: pass A keeps its sums
# and ratios over T (M + 12) cells (x 3 at the peak), pass B ten T x T arrays, and the metrics
# about six copies of the replicate MIC tensor (T x M); measured 16 KB per replicate on the
# bundled example (T = 5, M = 41) against 18 KB estimated.
_WORDS_PER_TASK_MARKER = 9
_WORDS_PER_TASK = 36
_WORDS_PER_TASK_PAIR = 10
# Seconds per replicate, per unit of work, measured on one core of the project's reference
# machine (bundled example, B = 8,000): pass A per reference row and item, pass B per evaluation
# row and reference task, the metrics per (task, marker) cell and task pair.
_SEC_PER_REF_ROW = 2e-9
_SEC_PER_EVAL_ROW_TASK = 3.5e-9
_SEC_PER_CELL = 3e-7
# Share of the available memory a bootstrap may plan to use (the rest: the data, the output).
_MEMORY_SHARE = 0.8
# Bootstraps estimated to take longer than this get a progress line.
PROGRESS_AFTER_S = 10.0


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


@dataclass(frozen=True)
class BootstrapEstimate:
    """What a bootstrap of B replicates is expected to need."""

    n_boot: int
    peak_bytes: int  # the largest group's peak
    seconds: float  # all groups, one core
    bytes_per_replicate: int


def estimate_bootstrap(enc, n_boot: int) -> BootstrapEstimate:
    """Memory and time of `n_boot` replicates over every group of an encoded run.

    Args:
        enc: the `metrics.encode.Encoded` run (markers below the threshold already dropped).
        n_boot: replicates B.
    """
    import numpy as np

    T, M = enc.n_tasks, enc.n_markers
    words = _WORDS_PER_TASK_MARKER * T * M + _WORDS_PER_TASK * T + _WORDS_PER_TASK_PAIR * T * T
    per_rep = 8 * words
    ref_rows = np.bincount(enc.r_g[enc.s_r[enc.r_ref[enc.s_r]]], minlength=enc.n_groups)
    eval_rows = np.bincount(enc.r_g[enc.s_r[enc.r_eval[enc.s_r]]], minlength=enc.n_groups)
    items = np.bincount(enc.r_g[enc.r_ref], minlength=enc.n_groups)
    per_group = (
        _SEC_PER_REF_ROW * (ref_rows + 3 * items)
        + _SEC_PER_EVAL_ROW_TASK * eval_rows * T
        + _SEC_PER_CELL * (T * M + 8 * T * T)
    )
    return BootstrapEstimate(
        n_boot=n_boot,
        peak_bytes=int(per_rep) * n_boot,
        seconds=float(per_group.sum()) * n_boot,
        bytes_per_replicate=int(per_rep),
    )


def _gb(n: float) -> str:
    return f"{n / 2**30:,.1f} GB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _round_down(n: int) -> int:
    """n rounded down to one or two significant digits (a number a person would type)."""
    if n < 100:
        return max(n, 0)
    digits = len(str(n)) - 2
    return n // 10**digits * 10**digits


def check_bootstrap(enc, n_boot: int, available: int | None = None) -> BootstrapEstimate:
    """Refuse a bootstrap that cannot fit in memory, naming the largest B that would.

    Raises:
        UserError: the estimated peak exceeds the memory available to the process.
    """
    est = estimate_bootstrap(enc, n_boot)
    budget = int(_MEMORY_SHARE * (available if available is not None else available_memory()))
    if est.peak_bytes > budget:
        fits = _round_down(budget // max(est.bytes_per_replicate, 1))
        fix = (
            f"use --bootstrap {fits} or less (95 % intervals are stable from about 2000)"
            if fits >= 100
            else "run on a machine with more memory, or analyze fewer tasks or markers at once"
        )
        raise UserError(
            f"--bootstrap {n_boot:,} needs about {_gb(est.peak_bytes)} of memory "
            f"({enc.n_tasks} tasks x {enc.n_markers} markers per replicate); "
            f"{_gb(budget / _MEMORY_SHARE)} are available",
            fix,
        )
    return est


def bootstrap_progress(
    items: Iterable[T_], n_items: int, est: BootstrapEstimate | None, label: str = "bootstrap"
) -> Iterator[T_]:
    """Yield `items` (the groups), with a progress line and ETA on stderr for long bootstraps.

    Short bootstraps (estimated under `PROGRESS_AFTER_S`) print nothing. The line shows the
    up-front estimate of memory and time, and tqdm's rate and ETA over the groups done.
    """
    if est is None or est.seconds < PROGRESS_AFTER_S:
        yield from items
        return
    from tqdm import tqdm

    # One line on stderr: the up-front estimate in the description, then tqdm's own rate and ETA
    # from the groups done.
    desc = (
        f"{label}: {est.n_boot:,} replicates, estimated {_duration(est.seconds)} and "
        f"{_gb(est.peak_bytes)} at the peak"
    )
    with tqdm(total=n_items, unit="group", file=sys.stderr, desc=desc) as bar:
        for item in items:
            yield item
            bar.update(1)
