"""Benchmark of the bootstrap kernels against scipy.stats.bootstrap and against the RNG alone.

Run from the repository root:

    .venv/bin/python benchmarks/bootstrap.py [--quick] [--n-boot 10000]

Cases (B = 10,000 by default):

1. one group, mean of n = 1e5: ``bootstrap_mean`` vs ``scipy.stats.bootstrap`` (percentile, and
   BCa; scipy's BCa jackknife is O(n^2), about 85 s at n = 1e5, so ``--quick`` runs the BCa
   comparison at n = 2e4 for both sides and says so);
2. 1e6 rows in 500 groups, about 2 rows per item (5e5 items): ``weighted_group_sums`` (Poisson)
   vs the RNG-only kernel ``replicate_weight_totals`` (same replicate-block loop, only generating
   and summing the weights).

A *draw* is one weight generation, w(b, item): a case makes ``B * n_items`` draws.
Times are wall-clock seconds of one call after a warm-up call (JIT compilation excluded); CPU
seconds of the process are shown too, since the machine's cores are shared. Peak memory is the
tracemalloc peak during the call (numpy and Python allocations; numba's per-thread scratch of
``n_groups * k * 16`` doubles is not traced).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from metrics.bootstrap import (  # noqa: E402
    bootstrap_mean,
    replicate_weight_totals,
    weighted_group_sums,
)


@dataclass
class Measure:
    """One timed call."""

    wall: float
    cpu: float
    peak_mb: float


def measure(fn: Callable[[], object]) -> Measure:
    """Wall time, process CPU time and tracemalloc peak of one call."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return Measure(wall, cpu, peak / 2**20)


def scipy_mean_ci(x: np.ndarray, method: str, n_boot: int, batch: int) -> object:
    """scipy.stats.bootstrap of the mean, with ``batch`` set (never the full index matrix)."""
    return stats.bootstrap(
        (x,), np.mean, n_resamples=n_boot, batch=batch, vectorized=True, method=method, rng=0
    )


def main() -> None:
    """Run the cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scipy BCa baseline at n = 2e4")
    parser.add_argument("--n-boot", type=int, default=10_000)
    parser.add_argument("--scipy-batch", type=int, default=100)
    parser.add_argument(
        "--full-items", type=int, default=23_000,
        help="items per (model, task) of case 3's scored run (23,000: ~1e7 sentence rows)",
    )  # fmt: skip
    parser.add_argument("--skip-full", action="store_true", help="skip case 3")
    args = parser.parse_args()
    n_boot = args.n_boot

    print("command:", shlex.join([sys.executable, *sys.argv]), f"(cwd {os.getcwd()})")
    print(
        f"numba threads: {numba.get_num_threads()}, cpu count: {os.cpu_count()}, "
        f"load average at start: {os.getloadavg()[0]:.2f} (cores shared with other jobs)"
    )
    rows: list[tuple[str, Measure, Measure | None, str, str]] = []
    g = np.random.default_rng(0)

    # ---------------------------------------------------------------- case 1: one group, n = 1e5
    n = 100_000
    x = g.lognormal(0.0, 1.0, n)
    bootstrap_mean(x[:100], n_boot=64, seed=1)  # warm-up (loads the JIT cache)
    draws = n * n_boot
    ours = measure(lambda: bootstrap_mean(x, n_boot=n_boot, seed=1, method="percentile"))
    base = measure(lambda: scipy_mean_ci(x, "percentile", n_boot, args.scipy_batch))
    rows.append(
        (f"mean n=1e5 B={n_boot} percentile vs scipy", ours, base, f"{draws / ours.wall:.3g}", "")
    )
    if args.quick:
        n_bca = 20_000
        xq = x[:n_bca]
        ours = measure(lambda: bootstrap_mean(xq, n_boot=n_boot, seed=1, method="bca"))
        base = measure(lambda: scipy_mean_ci(xq, "BCa", n_boot, args.scipy_batch))
        label = f"mean n=2e4 B={n_boot} BCa vs scipy (--quick)"
        rows.append((label, ours, base, f"{n_bca * n_boot / ours.wall:.3g}", ""))
        ours = measure(lambda: bootstrap_mean(x, n_boot=n_boot, seed=1, method="bca"))
        rows.append(
            (f"mean n=1e5 B={n_boot} BCa (ours only)", ours, None, f"{draws / ours.wall:.3g}", "")
        )
    else:
        ours = measure(lambda: bootstrap_mean(x, n_boot=n_boot, seed=1, method="bca"))
        base = measure(lambda: scipy_mean_ci(x, "BCa", n_boot, args.scipy_batch))
        rows.append(
            (f"mean n=1e5 B={n_boot} BCa vs scipy", ours, base, f"{draws / ours.wall:.3g}", "")
        )

    # ---------------------------------------------------------------- case 2: 1e6 rows, 500 groups
    n_items, n_groups = 500_000, 500
    rows_per_item = g.integers(1, 4, n_items)  # 1-3 rows, mean 2
    item_ptr = np.r_[0, np.cumsum(rows_per_item)]
    n_rows = int(item_ptr[-1])
    keys = g.choice(2**62, size=n_items, replace=False).astype(np.uint64)
    strata = (np.arange(n_items) % 7).astype(np.uint64)  # 7 tasks
    row_group = g.integers(0, n_groups, n_rows)
    row_values = np.column_stack([g.random(n_rows), np.ones(n_rows)])  # value, count
    small = int(item_ptr[100])
    weighted_group_sums(
        item_ptr[:101], keys[:100], strata[:100], row_group[:small], row_values[:small], 1, 64,
        n_groups=n_groups,
    )  # fmt: skip
    replicate_weight_totals(keys[:100], strata[:100], 1, 64)
    draws = n_items * n_boot
    ours = measure(
        lambda: weighted_group_sums(
            item_ptr, keys, strata, row_group, row_values, 1, n_boot, n_groups=n_groups
        )
    )
    rng_only = measure(lambda: replicate_weight_totals(keys, strata, 1, n_boot))
    share = (draws / ours.wall) / (draws / rng_only.wall)
    rows.append(
        (
            f"{n_rows / 1e6:.2f}e6 rows/500 groups/5e5 items B={n_boot} group sums vs RNG-only",
            ours,
            rng_only,
            f"{draws / ours.wall:.3g}",
            f"{share:.0%} of RNG-only draw rate (RNG-only {draws / rng_only.wall:.3g}/s)",
        )
    )

    if not args.skip_full:
        rows.append(full_run_case(args.full_items, 1000))

    header = (
        f"{'case':<58} {'ours s':>8} {'(cpu s)':>8} {'base s':>8} {'(cpu s)':>8} "
        f"{'ratio':>7} {'draws/s':>9} {'peak MB ours/base':>18}"
    )
    print()
    print(header)
    print("-" * len(header))
    for name, o, b, rate, note in rows:
        if b is None:
            base_s = base_c = ratio = "-"
            mem = f"{o.peak_mb:.0f}/-"
        else:
            base_s, base_c = f"{b.wall:.2f}", f"{b.cpu:.2f}"
            ratio = f"{b.wall / o.wall:.1f}x"
            mem = f"{o.peak_mb:.0f}/{b.peak_mb:.0f}"
        print(
            f"{name:<58} {o.wall:>8.2f} {o.cpu:>8.2f} {base_s:>8} {base_c:>8} {ratio:>7} "
            f"{rate:>9} {mem:>18}"
        )
        if note:
            print(f"{'':<58} {note}")
    print()
    print(
        "draws = B x n_items weight generations; ratio = baseline wall / ours wall; peak memory = "
        "tracemalloc peak during the call (numba's per-thread scratch not traced)."
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


def full_run_case(n_items: int, n_boot: int) -> tuple[str, Measure, None, str, str]:
    """Case 3: `mic analyze --bootstrap B` on a ~1e7-row scored run, in a child process.

    Wall time and the child's peak RSS (VmHWM, the whole process: data, polars, numba).
    The numba cache is warmed first by a small run, as after any first use of the tool.
    """
    import resource
    import subprocess
    import tempfile
    from pathlib import Path

    from metrics.synthetic import make_scored_run

    with tempfile.TemporaryDirectory(prefix="mic-boot-") as tmp:
        data = Path(tmp) / "run"
        data.mkdir()
        resp, sent = make_scored_run(
            n_models=20, n_tasks=10, n_items=n_items, n_markers=40, seed=1,
            tasks_without_test=0, test_fraction=0.5,
        )  # fmt: skip
        resp.write_parquet(data / "responses.parquet")
        sent.write_parquet(data / "sentences.parquet")
        n_rows = sent.height
        del resp, sent
        example = Path(__file__).resolve().parents[1] / "metrics" / "data" / "example"
        # The child reports its own VmHWM: ru_maxrss survives exec on Linux, so it would show
        # this (data-generating) parent's peak instead.
        code = (
            "import sys; from pathlib import Path; from engine.cli import main; "
            "code = main(sys.argv[1:]); "
            "hwm = [l for l in Path('/proc/self/status').read_text().splitlines() "
            "if l.startswith('VmHWM:')][0].split()[1]; "
            "print('VMHWM_KB', hwm); sys.exit(code)"
        )
        cli = [sys.executable, "-c", code, "analyze"]
        subprocess.run([*cli, str(example), "--out", f"{tmp}/warm", "--bootstrap", "20"],
                       check=True, capture_output=True)  # fmt: skip
        t0 = time.perf_counter()
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            [*cli, str(data), "--out", f"{tmp}/out", "--bootstrap", str(n_boot)],
            capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    hwm = [x for x in proc.stdout.splitlines() if x.startswith("VMHWM_KB")][-1].split()[1]
    peak_mb = int(hwm) / 1024
    label = f"{n_rows / 1e6:.1f}e6-row run, all MICs + 7 metrics, B={n_boot} (mic analyze)"
    return (
        label,
        Measure(wall, cpu, peak_mb),
        None,
        "-",
        "targets: <= 60 s wall, peak RSS <= 3 GB",
    )


if __name__ == "__main__":
    main()
