"""`mic analyze` on two hostile shapes, against a normal run of the same size, in one run.

    python benchmarks/hostile_scale.py [--rows 300000] [--markers 176000] [--bootstrap 0]

1. *Long marker tail*: free-form extraction gives nearly every row its own marker (176k distinct
   markers in a few MB). Work and memory should follow the markers that pass the threshold.
2. *One huge response*: one response carries 300k sentence rows (sentence order reversed, the
   worst case for an insertion sort). Work should stay O(rows log rows).

Each shape is compared with a baseline of the same row count with ordinary markers and
responses. Every analysis runs in its own child process; its wall time and peak RSS (VmHWM of
that process) are printed with the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

TASKS = [f"task{i:02d}" for i in range(11)]


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def child(data: str, out: str, bootstrap: int) -> None:
    from engine.cli import main

    t0 = time.perf_counter()
    code = main(["analyze", data, "--out", out, "--bootstrap", str(bootstrap)])
    wall = time.perf_counter() - t0
    print(json.dumps({"code": code, "wall": wall, "rss": _vm_hwm()}))


def write_run(path: Path, rows: int, markers: int, one_response: bool, seed: int = 0) -> Path:
    """A seeded scored run with `rows` sentence rows (one marker row per sentence)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    if one_response:
        # Rows of one big response in task00 (reversed sentence order), plus ordinary responses
        # so every task has items and markers.
        big = rows // 2
        small = rows - big
    else:
        big, small = 0, rows
    n_resp = max(small // 2, len(TASKS))
    r_task = np.array(TASKS)[np.arange(n_resp) % len(TASKS)]
    r_item = np.array([f"q{i:07d}" for i in range(n_resp)])
    n_sent = np.full(n_resp, 2, dtype=np.int32)
    s_resp = np.repeat(np.arange(n_resp), 2)[:small]
    s_idx = np.tile(np.arange(2, dtype=np.int32), n_resp)[:small]
    if big:
        r_task = np.concatenate([r_task, ["task00"]])
        r_item = np.concatenate([r_item, ["big"]])
        n_sent = np.r_[n_sent, np.int32(big)]
        s_resp = np.r_[s_resp, np.full(big, n_resp)]
        s_idx = np.r_[s_idx, np.arange(big, dtype=np.int32)[::-1]]
    n_all = len(r_task)
    # Marker k with probability ~ 1/(k+1) over `markers` names: a long tail of singletons.
    if markers > 100:
        head = rng.integers(0, 20, size=len(s_resp) // 2)
        tail = rng.integers(20, markers, size=len(s_resp) - len(head))
        codes = np.r_[head, tail]
    else:
        codes = rng.integers(0, markers, size=len(s_resp))
    rng.shuffle(codes)
    names = np.array([f"marker {k}" for k in range(markers)])
    split = np.where(rng.random(n_all) < 0.66, "train", "test")
    pl.DataFrame(
        {
            "model": ["m"] * n_all,
            "task": r_task,
            "split": split,
            "item_id": r_item,
            "correct": rng.random(n_all) < 0.6,
            "n_sentences": n_sent,
        }
    ).write_parquet(path / "responses.parquet")
    pl.DataFrame(
        {
            "model": ["m"] * len(s_resp),
            "task": r_task[s_resp],
            "split": split[s_resp],
            "item_id": r_item[s_resp],
            "sentence_idx": s_idx,
            "marker": names[codes],
            "confidence": rng.random(len(s_resp)).round(3),
            "decisiveness": rng.random(len(s_resp)).round(3),
        }
    ).write_parquet(path / "sentences.parquet")
    return path


def run(data: Path, out: Path, bootstrap: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(data), str(out), str(bootstrap)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"code": proc.returncode, "wall": float("nan"), "rss": 0, "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--markers", type=int, default=176_000)
    parser.add_argument("--bootstrap", type=int, default=0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        cases = {
            "baseline (20 markers)": write_run(t / "base", 2 * args.rows, 20, False),
            f"long tail ({args.markers} markers)": write_run(
                t / "tail", 2 * args.rows, args.markers, False
            ),
            f"one response, {args.rows} rows": write_run(t / "big", 2 * args.rows, 20, True),
        }
        results = {
            name: run(p, t / f"out{i}", args.bootstrap) for i, (name, p) in enumerate(cases.items())
        }
    base = results["baseline (20 markers)"]
    print(
        f"\n| case (2 x {args.rows} rows, B = {args.bootstrap}) | wall s | peak RSS MB | x wall | x RSS |"
    )
    print("|---|---|---|---|---|")
    for name, r in results.items():
        note = f" ({r['error']})" if "error" in r else ""
        print(
            f"| {name}{note} | {r['wall']:.2f} | {r['rss'] / 2**20:.0f} | "
            f"{r['wall'] / base['wall']:.2f} | {r['rss'] / max(base['rss'], 1):.2f} |"
        )
    print("\ncommand:", shlex.join([sys.executable, *sys.argv]))


if __name__ == "__main__":
    main()
