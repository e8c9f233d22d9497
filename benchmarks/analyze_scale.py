"""`mic analyze` at scale against a straightforward pandas implementation, in one run.

    python benchmarks/analyze_scale.py [--models 20] [--tasks 10] [--items 23000]
    python benchmarks/analyze_scale.py --bootstrap 1000 --skip-baseline   # intervals at 1e7 rows

Generates a seeded synthetic scored run (20 models x 10 tasks x 23,000 items, 1-3 sentences per
response, ~1.1 markers per sentence: about 1e7 sentence rows), writes it as Parquet the way
`mic score` does, then runs
`mic analyze` (no bootstrap) and the pandas baseline (benchmarks/pandas_baseline.py), each in its
own child process so that each peak memory (VmHWM of that process) is its own. Prints the
table, the ratio, `mic analyze`'s wall and CPU time by phase (imports, reading the files,
validation, encoding, the summary tables, the rest; each phase includes loading its numba
kernels from the cache and the modules it imports lazily), and the largest difference between
the two implementations' headline metrics.
Targets: >= 15x the pandas baseline, <= 8 s wall, peak memory <= 2.5 GB (`mic analyze`'s wall
time counts the whole analysis in its process after the interpreter started: reading, validation,
metrics, writing). `benchmarks/startup_scale.py` runs the same measurement as its 1e7-row row.
With `--bootstrap B`, `mic analyze` also computes every interval from B replicates (the
intervals' budget: within 1.5x of 53 s at B = 1,000, the figure before bias correction).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADLINE = ["I-AvgMAE (Mode 1)", "C-AvgMAE (Mode 1)", "I-AvgMAE (Mode 2)", "I-AvgMAE (Mode 3)",
            "I-AvgMAE (Mode 4)", "C-AvgMAE (Mode 4)", "MRC", "MAC", "MAC-P-all", "MCC",
            "I-AvgCV", "I-AvgCV (shared)", "C-AvgCV"]  # fmt: skip


def _vm_hwm() -> int:
    """This process's peak RSS in bytes (VmHWM). Not ru_maxrss: Linux carries that across exec,
    so a child spawned by the big data-generating parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed(module, name: str, label: str, phases: dict) -> None:
    """Wrap `module.name` to add its wall and CPU seconds (all threads) to `phases[label]`."""
    fn = getattr(module, name)

    def wrapper(*args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            pw, pc = phases.get(label, (0.0, 0.0))
            phases[label] = (pw + time.perf_counter() - w, pc + time.process_time() - c)

    setattr(module, name, wrapper)


def child(which: str, data: str, out: str) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    phases: dict[str, tuple[float, float]] = {}
    if which.startswith("ours"):
        import importlib

        from engine.cli import main

        analyze_module = importlib.import_module("metrics.analyze")
        io_module = importlib.import_module("metrics.io")
        phases["imports"] = (time.perf_counter() - t0, time.process_time() - c0)
        _timed(analyze_module, "as_scored_run", "read + validate", phases)
        _timed(io_module, "validate", "validate", phases)
        _timed(analyze_module, "encode", "encode", phases)
        _timed(analyze_module, "compute_tables", "compute_tables", phases)
        boot = which.partition(":")[2]
        code = main(["analyze", data, "--out", out, *(["--bootstrap", boot] if boot else [])])
        assert code == 0
        doc = json.loads((Path(out) / "metrics.json").read_text())
        values = {
            m: {k: doc["models"][m]["default"]["metrics"][k]["value"] for k in HEADLINE}
            for m in doc["models"]
        }
    else:
        import pandas as pd

        sys.path.insert(0, str(Path(__file__).parent))
        from pandas_baseline import analyze_pandas

        resp = pd.read_parquet(Path(data) / "responses.parquet")
        sent = pd.read_parquet(Path(data) / "sentences.parquet")
        values = analyze_pandas(resp, sent)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _vm_hwm()
    if phases:
        # Reading is what `read + validate` spent outside validation; the rest is everything
        # not wrapped (numba's cache load, the metrics, intervals, writing the outputs).
        rv, v = phases.pop("read + validate"), phases.get("validate", (0.0, 0.0))
        phases = {"imports": phases.pop("imports"), "read files": (rv[0] - v[0], rv[1] - v[1]),
                  **phases}  # fmt: skip
        phases["rest"] = (wall - sum(x[0] for x in phases.values()),
                          cpu - sum(x[1] for x in phases.values()))  # fmt: skip
    result = {"wall": wall, "cpu": cpu, "peak": peak, "values": values, "phases": phases}
    print("RESULT " + json.dumps(result))


def run_child(which: str, data: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", which, str(data), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def measure(
    models: int, tasks: int, items: int, skip_baseline: bool = False, bootstrap: int = 0
) -> dict:
    """Generate the run, warm numba's cache, then time `mic analyze` and the pandas baseline.

    Returns:
        {"rows": n sentence rows, "responses": n, "ours": child result, "base": child result or
        None}; a child result is {"wall", "peak", "values"}.
    """
    from metrics.synthetic import make_scored_run

    with tempfile.TemporaryDirectory(prefix="mic-bench-") as tmp:
        data = Path(tmp) / "run"
        data.mkdir()
        t0 = time.perf_counter()
        resp, sent = make_scored_run(
            n_models=models, n_tasks=tasks, n_items=items, n_markers=40, seed=1,
            tasks_without_test=0, test_fraction=0.5,
        )  # fmt: skip
        # Written as `mic score` writes a scored run (engine/score/pipeline.py: pyarrow, zstd,
        # its default row groups of 2^20 rows and dictionary pages), which the reader is tuned
        # for; polars' writer (81 row groups at 1e7 rows) costs its keyed reader ~0.3 s more.
        import pyarrow.parquet as pq

        for name, df in (("responses", resp), ("sentences", sent)):
            pq.write_table(df.to_arrow(), data / f"{name}.parquet", compression="zstd")
        n_resp, n_rows = resp.height, sent.height
        print(f"data: {n_resp:,} responses, {n_rows:,} sentence rows "
              f"(generated in {time.perf_counter() - t0:.1f} s)", flush=True)  # fmt: skip
        del resp, sent
        # Warm numba's on-disk cache first (as after any first use), so compile time and the
        # compiler's memory are not counted.
        example = Path(__file__).resolve().parents[1] / "metrics" / "data" / "example"
        run_child("ours", example, Path(tmp) / "warm")
        ours = run_child(f"ours:{bootstrap}" if bootstrap else "ours", data, Path(tmp) / "out")
        base = None if skip_baseline else run_child("pandas", data, Path(tmp) / "out-pd")
    return {"rows": n_rows, "responses": n_resp, "ours": ours, "base": base}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=int, default=20)
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--items", type=int, default=23000)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--bootstrap", type=int, default=0, help="B replicates for every interval")
    p.add_argument("--child", nargs=3, metavar=("WHICH", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"load average at start: {os.getloadavg()}, cpu count {os.cpu_count()}, "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', '(default)')}")  # fmt: skip
    r = measure(args.models, args.tasks, args.items, args.skip_baseline, args.bootstrap)
    ours, base = r["ours"], r["base"]
    label = f"mic analyze -B {args.bootstrap}" if args.bootstrap else "mic analyze"
    rows = [(label, ours)] + ([("pandas baseline", base)] if base else [])
    print(f"\n{'implementation':<22}{'wall s':>10}{'peak GB':>10}{'ratio':>8}")
    for name, res in rows:
        ratio = rows[-1][1]["wall"] / res["wall"]
        print(f"{name:<22}{res['wall']:>10.2f}{res['peak'] / 1e9:>10.2f}{ratio:>8.1f}x")
    if ours.get("phases"):
        print(f"\n{label} by phase{'':<8}{'wall s':>10}{'CPU s':>10}  (CPU: all threads)")
        for name, (w, c) in ours["phases"].items():
            print(f"  {name:<28}{w:>10.2f}{c:>10.2f}")
        print(f"  {'total':<28}{ours['wall']:>10.2f}{ours['cpu']:>10.2f}")
    if base:
        worst, where = 0.0, ""
        for m, vals in ours["values"].items():
            for k in HEADLINE:
                a, b = vals[k], base["values"][m][k]
                if a is None or b is None or b != b:
                    continue
                if abs(a - b) > worst:
                    worst, where = abs(a - b), f"{m} {k}"
        print(f"\nlargest |ours - pandas| over headline metrics: {worst:.2e} ({where or 'none'})")
    print(
        f"target with --bootstrap {args.bootstrap}: <= 1.5 x 53 s = 79.5 s at B = 1,000"
        if args.bootstrap
        else "targets: ratio >= 15x, mic analyze <= 8 s, peak <= 2.5 GB"
    )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
