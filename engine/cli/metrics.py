"""The metrics' `mic` subcommands: analyze, compare, power, report, export.

Each handler is a thin call into a `metrics` library function with the same arguments
(`metrics.analyze.analyze`, `metrics.power.power_plan`, `metrics.report.build_report`,
`metrics.export.export_run`).
"""

from __future__ import annotations

import argparse
import gc
import os

from engine.contract import RunLayout


def example(text: str) -> str:
    """An epilog with one example command (shared by every subcommand's help)."""
    return "example:\n  " + text


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="MIC tables and the seven metrics from one or more scored runs",
        description=(
            "Read scored runs (a directory with `responses` + `sentences` tables, or one long "
            "table; Parquet, Arrow IPC, CSV or JSONL), compute MICs and the seven metrics, and "
            "write DIR/metrics.json and DIR/mic.parquet."
        ),
        epilog=example("mic analyze metrics/data/example --out results/example"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_scored_options(p)
    p.add_argument("--preset", choices=["mic", "marcon"], default="mic")
    p.add_argument("--json", action="store_true", help="print metrics.json instead of a table")
    _add_bootstrap_options(p)
    p.add_argument(
        "--compare", action="store_true", help="paired tests of every two models/prompts"
    )
    p.set_defaults(handler=_run_analyze)


def _add_scored_options(p: argparse.ArgumentParser) -> None:
    """Inputs and analysis settings shared by `analyze` and `compare`."""
    p.add_argument("scored", nargs="+", help="scored-run directories or files")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--mode", choices=["heldout", "parity"], default="heldout")
    p.add_argument("--threshold", type=int, default=10, help="marker count threshold tau")
    p.add_argument("--ignore-no-hedge", action="store_true", help="drop <no_hedge> rows")
    p.add_argument("--seed", type=int, default=0, help="seed of the 50/50 split and bootstrap")
    p.add_argument("--ref-split", default="train", help="split that builds MICs (heldout)")
    p.add_argument("--eval-split", default="test", help="split scored for MAE (heldout)")
    p.add_argument(
        "--pool",
        action="store_true",
        help="merge runs from different directories that share a (model, prompt) name",
    )


def _add_rank_resolution(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rank-resolution",
        type=float,
        default=None,
        metavar="H",
        help=(
            "rank resolution of the MRC/MAC/MCC Spearman intervals, in confidence units: "
            "markers closer than about H count as partly tied (default 0.05; 0: the ordinary "
            "Spearman, see docs/statistics.md)"
        ),
    )


def _add_bootstrap_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap", type=int, default=0, metavar="B", help="bootstrap replicates (0: none)"
    )
    p.add_argument("--ci-method", choices=["bca", "percentile"], default="bca")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (0, 1)")
    p.add_argument("--scheme", choices=["poisson", "multinomial"], default="poisson")
    _add_rank_resolution(p)
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="bootstrap sums as Ray tasks over item shards (local Ray, or a cluster address)",
    )


def _analysis_kwargs(args: argparse.Namespace) -> dict:
    group_sums = None
    if args.ray is not None:
        from engine.cluster import ray_group_sums
        from metrics.bootstrap import weighted_group_sums

        group_sums = ray_group_sums(weighted_group_sums, None if args.ray == "local" else args.ray)
    extra = {} if args.rank_resolution is None else {"rank_resolution": args.rank_resolution}
    return dict(
        **extra,
        out=args.out,
        mode=args.mode,
        threshold=args.threshold,
        ignore_no_hedge=args.ignore_no_hedge,
        preset=args.preset,
        seed=args.seed,
        ref_split=args.ref_split,
        eval_split=args.eval_split,
        bootstrap=args.bootstrap,
        ci_method=args.ci_method,
        level=args.level,
        scheme=args.scheme,
        group_sums=group_sums,
        pool=args.pool,
    )


def quiet_thread_pools() -> None:
    """Thread settings of the analysis commands, unless the user set them.

    * ``OPENBLAS_NUM_THREADS=1``: OpenBLAS starts a thread per core, with its buffers, when
      numpy loads (~70 ms of every `mic analyze`), for BLAS calls the analysis barely makes
      (products of a few tasks x markers per replicate, one 601 x 1801 table-vector product;
      1e7 rows at B = 1,000 took 62.7 s with one BLAS thread and 62.5 s with two).
    * ``OMP_WAIT_POLICY=PASSIVE``: the parallel kernels run on numba's OpenMP threads, which by
      default spin for a while after every parallel region (~0.3 s of CPU per
      `mic analyze --bootstrap 2000` on 2e5 rows, taken from the main thread's serial work on a
      two-core machine); passive threads sleep until the next region, which the kernels' few,
      coarse regions do not notice.

    Neither changes a result (metrics.json byte-identical with and without them on the example
    and on a 2e5-row run at B = 2,000). Both act only before numpy's and numba's thread pools
    load, which the CLI defers to the command (tests/test_startup.py); local child processes
    inherit them.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


#: True when the process ends as soon as the command returns: set by the console script
#: (`engine.cli.run`, also `python -m engine.cli`); False when `main` is called from Python.
PROCESS_ENDS_WITH_COMMAND = False


def settle_heap() -> None:
    """Move every object alive now out of the garbage collector's sight (`gc.freeze`), in a
    process that ends with the command; elsewhere nothing.

    An analysis process holds ~130,000 objects the collector tracks (over half from numba) that
    live until it exits. Every full collection walks them all: during the analysis, and several
    times while the interpreter shuts down (~0.2 s after the results are written). Frozen
    objects are never walked; they are freed with the process. The analysis commands call this
    after their imports and again once their results are written (`mic analyze --bootstrap
    2000` on 2e5 rows: 1.83 s against 2.00 s, docs/performance.md). A library caller's process
    goes on, so it keeps its collector as it was.
    """
    if PROCESS_ENDS_WITH_COMMAND:
        gc.freeze()


def _start_analysis_process() -> None:
    """What `mic analyze` and `mic compare` do before anything imports numpy or numba: the
    thread settings, numba without cffi support, and cached kernels loaded without the
    compiler's registries (`metrics.compile_notice`)."""
    quiet_thread_pools()
    from metrics.compile_notice import cache_loads_without_refresh, numba_without_cffi

    numba_without_cffi()
    cache_loads_without_refresh()


def _run_analyze(args: argparse.Namespace) -> int:
    _start_analysis_process()
    from metrics.analyze import analyze
    from metrics.summary import format_summary

    settle_heap()
    result = analyze(args.scored, compare=args.compare, **_analysis_kwargs(args))
    if args.json:
        import json

        print(json.dumps(result.metrics_json, indent=2))
    else:
        print(format_summary(result.metrics_json))
        if result.comparisons is not None:
            from metrics.summary import format_comparisons

            print("\n" + format_comparisons(result.comparisons))
        written = [RunLayout.METRICS, RunLayout.MIC]
        if result.comparisons is not None:
            written.append(RunLayout.COMPARISONS)
        print(f"\nwrote {', '.join(f'{result.out_dir}/{name}' for name in written)}")
    settle_heap()
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="paired bootstrap comparisons of models / prompts on shared items",
        description=(
            "`mic analyze --compare` under its own name: for each pair of (model, prompt) and "
            "each metric, the bootstrap distribution of the difference on shared items (the "
            "same item draws for both), its interval, a two-sided p-value, Holm and "
            "Benjamini-Hochberg adjusted p-values; McNemar's exact test for paired accuracy. "
            "Writes DIR/comparisons.parquet beside metrics.json and mic.parquet."
        ),
        epilog=example("mic compare runs/llama runs/qwen --out results/cmp --bootstrap 1000"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_scored_options(p)
    _add_bootstrap_options(p)
    p.set_defaults(handler=_run_compare, preset="mic", bootstrap=1000)


def _run_compare(args: argparse.Namespace) -> int:
    _start_analysis_process()
    from metrics.analyze import analyze
    from metrics.summary import format_comparisons

    settle_heap()
    result = analyze(args.scored, compare=True, **_analysis_kwargs(args))
    print(format_comparisons(result.comparisons))
    print(f"\nwrote {result.out_dir}/comparisons.parquet")
    settle_heap()
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page of an analysis: metrics, MIC plots, throughput",
        description=(
            "Write one self-contained HTML file (images embedded, no network needed) from an "
            "analysis directory (`mic analyze --out DIR`) or a study directory holding "
            "analysis/metrics.json: the seven metrics with intervals, MIC heatmap, forest plot, "
            "densities, rank and frequency charts, comparisons, throughput and provenance."
        ),
        epilog=example("mic report results/example --out results/example/report.html"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="analysis or study directory")
    p.add_argument("--out", default=None, help="HTML file to write (default RUN_DIR/report.html)")
    p.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from metrics.report import build_report

    print(f"wrote {build_report(args.run_dir, out=args.out)}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="a run's tables (generations, scores, MICs) as JSONL or Parquet for other tools",
        description=(
            "Convert every Arrow / Parquet table of a run directory (generation shards, scoring "
            "stages, the scored run, mic.parquet) to JSONL or Parquet under --out, with "
            "export.json listing tables, rows and metadata."
        ),
        epilog=example("mic export runs/tiny --to jsonl --out runs/tiny-jsonl"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run, study or analysis directory")
    p.add_argument("--to", choices=["jsonl", "parquet"], required=True, help="output format")
    p.add_argument("--out", default=None, help="output directory (default RUN_DIR/export)")
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from metrics.export import export_run

    result = export_run(args.run_dir, to=args.to, out=args.out)
    for name, t in result.tables.items():
        print(f"{t['rows']:>10,} rows  {result.out_dir / t['path']}  ({name})")
    print(f"wrote {len(result.tables)} tables; index in {result.out_dir / 'export.json'}")
    return 0


def add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    """Add `analyze`, `compare` and `power` to the `mic` parser."""
    _add_analyze(sub)
    _add_compare(sub)
    _add_power(sub)


def add_output_commands(sub: argparse._SubParsersAction) -> None:
    """Add `report` and `export` to the `mic` parser."""
    _add_report(sub)
    _add_export(sub)


def _add_power(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "power",
        help="plan a study from a pilot: standard errors, items for a width, detectable differences",
        description=(
            "From a pilot (scored runs, or a study directory), per metric and per shared "
            "marker's MIC: the standard error as a function of items per task (the pilot's "
            "bootstrap, subsampled and repeated by item), the items per task a target interval "
            "width needs, and the minimum detectable difference between two models / prompts "
            "(paired) at the pilot's size and at --items. From a study directory also K "
            "(consistency samples) against N (items) for a budget. Writes DIR/power.json and "
            "DIR/power.parquet."
        ),
        epilog=example(
            "mic power metrics/data/example --out results/plan --width 0.02 --items 1000"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scored", nargs="+", help="pilot scored-run or study directories, or files")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--width", type=float, default=None, help="target interval width")
    p.add_argument("--alpha", type=float, default=0.05, help="two-sided test level (0.05)")
    p.add_argument("--power", type=float, default=0.8, help="power of the paired test (0.8)")
    p.add_argument("--items", type=int, default=None, help="planned items per task (5x pilot)")
    p.add_argument("--bootstrap", type=int, default=400, metavar="B", help="replicates (400)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and resizing")
    p.add_argument("--level", type=float, default=0.95, help="interval level of --width")
    p.add_argument("--threshold", type=int, default=10, help="marker count threshold tau")
    p.add_argument("--mode", choices=["heldout", "parity"], default="heldout")
    p.add_argument("--metric", default="I-AvgMAE", help="metric K vs N minimises the width of")
    _add_rank_resolution(p)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-tokens", type=float, default=None, metavar="T",
                        help="budget in generated tokens (K vs N)")  # fmt: skip
    budget.add_argument("--budget-gpu-hours", type=float, default=None, metavar="H",
                        help="budget in GPU-hours, at the pilot's throughput (K vs N)")  # fmt: skip
    p.set_defaults(handler=_run_power)


def _run_power(args: argparse.Namespace) -> int:
    from metrics.power import format_plan, power_plan

    result = power_plan(
        args.scored, out=args.out, width=args.width, alpha=args.alpha, power=args.power,
        items=args.items, bootstrap=args.bootstrap, seed=args.seed, level=args.level,
        threshold=args.threshold, mode=args.mode, budget_tokens=args.budget_tokens,
        budget_gpu_hours=args.budget_gpu_hours, kn_metric=args.metric,
        **({} if args.rank_resolution is None else {"rank_resolution": args.rank_resolution}),
    )  # fmt: skip
    print(format_plan(result))
    print(f"\nwrote {result.out_dir}/power.json and {result.out_dir}/power.parquet")
    return 0
