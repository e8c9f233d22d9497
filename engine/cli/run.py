"""The engine's `mic` subcommands: run, plan, tiny-model, bench.

Registered by `engine.cli.main` through `add_subcommands`; each handler is a thin call into a
library function with the same arguments (`engine.generate.runner.run_sweep`, `engine.generate.runner.plan_report`,
`engine.generate.tiny_model.build_tiny_model`, `engine.generate.bench.run_bench`).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add the engine subcommands to the `mic` parser."""
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "run",
        help="generate a sweep into Arrow shards (resumable)",
        description=(
            "Run a sweep spec: one Ray actor per model replica wraps vLLM; each finished work unit "
            "becomes one Arrow shard in DIR/shards. Re-running the same command resumes."
        ),
        epilog="example:\n  mic run configs/tiny.toml --out runs/tiny",
        formatter_class=fmt,
    )
    p.add_argument("spec", help="sweep spec (.toml or .yaml)")
    p.add_argument("--out", required=True, help="output directory or filesystem URI")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: local Ray)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--new-run", action="store_true", help="replace a run of a different spec in --out"
    )
    p.add_argument("--actors", type=int, default=None, help="actors per model (overrides replicas)")
    p.add_argument(
        "--schedule",
        choices=("fill", "sequential"),
        default="fill",
        help="fill: models side by side, idle GPUs go to models with work left (default); "
        "sequential: one model after another",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_run)

    p = sub.add_parser(
        "plan",
        help="show a sweep's work units and tokens, GPU-hours per open model, API cost",
        description=(
            "Expand a sweep spec into work units and estimate its cost; runs nothing. Open "
            "models: GPU-hours from the token counts and an assumed throughput by model size "
            "(80,000 / billions of parameters generated tokens/s per GPU, at most 30,000; "
            "--tokens-per-second replaces it with your measurement). API models: requests, "
            "tokens and the cost at models.price_in / price_out (USD per 1M tokens). Tokens "
            "are upper bounds: every sample runs to max_tokens."
        ),
        epilog="example:\n  mic plan configs/tiny.toml --set sampling.n=21",
        formatter_class=fmt,
    )
    p.add_argument("spec", help="sweep spec (.toml or .yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="measured generated tokens/s per replica of every open model (mic bench); "
        "default: the size rule",
    )
    p.add_argument(
        "--node-gpus",
        type=int,
        default=8,
        help="GPUs of the node the open models' makespan is simulated on (default 8)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(handler=_plan)

    p = sub.add_parser(
        "tiny-model",
        help="build the deterministic tiny Llama model and tokenizer into DIR",
        description="Build the tiny test model (no hub needed); idempotent.",
        epilog="example:\n  mic tiny-model /tmp/tiny",
        formatter_class=fmt,
    )
    p.add_argument("dir", help="target directory")
    p.set_defaults(handler=_tiny_model)

    p = sub.add_parser(
        "bench",
        help="throughput of each model of a spec and the cost curve of the logprobs setting",
        description=(
            "Generate N prompts from the spec's tasks per model and logprobs setting; print "
            "requests/s, prompt and generated tokens/s and latency percentiles, and save JSON."
        ),
        epilog=(
            "examples:\n  mic bench configs/tiny.toml --prompts 500 --logprobs 0,5,20\n"
            "  mic bench configs/tiny.toml --determinism --prompts 1000"
        ),
        formatter_class=fmt,
    )
    p.add_argument("spec", help="sweep spec (.toml or .yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--prompts", type=int, default=500, help="prompts per measurement")
    p.add_argument("--logprobs", default="0,1,5,20", help="comma-separated top-k settings")
    p.add_argument("--out", default="bench.json", help="JSON file to write")
    p.add_argument(
        "--determinism",
        action="store_true",
        help="instead: generated tok/s of each seed mode with chunked prefill off and on "
        "(where the vLLM build allows it), with ratios to the fastest",
    )
    p.add_argument(
        "--seed-modes",
        default="per-sample,per-request,none",
        help="with --determinism: comma-separated seed modes",
    )
    p.add_argument(
        "--chunked-prefill",
        default="off,on",
        help="with --determinism: comma-separated values of enable_chunked_prefill (off, on)",
    )
    p.add_argument("--rounds", type=int, default=2, help="with --determinism: rounds (best counts)")
    p.set_defaults(handler=_bench)


def _run(args: argparse.Namespace) -> int:
    from engine.api import load_spec, run_sweep
    from engine.generate.runner import RunIncomplete

    spec = load_spec(args.spec, args.overrides)
    try:
        result = run_sweep(
            spec,
            args.out,
            ray_address=args.ray_address,
            new_run=args.new_run,
            actors=args.actors,
            progress=not args.quiet,
            schedule=args.schedule,
        )
    except RunIncomplete as exc:
        print(f"mic run: {exc}", file=sys.stderr)
        return 1
    for name, m in result.models.items():
        print(
            f"{name}: {m['rows']} rows ({m['error_rows']} error rows), "
            f"{m['generated_tokens_per_second']:,.0f} generated tok/s, "
            f"{m['prompt_tokens_per_second']:,.0f} prompt tok/s, {m['wall_seconds']:.1f} s"
        )
    from engine.errors import shown_location

    shown = shown_location(args.out)
    print(
        f"{result.units_finished}/{result.units_planned} units, {result.rows} rows in "
        f"{shown}/shards ({result.seconds:.1f} s); read with "
        f"polars.scan_ipc('{shown}/shards/*.arrow')"
    )
    return 0


def _plan(args: argparse.Namespace) -> int:
    from engine.errors import UserError
    from engine.generate.runner import format_plan
    from engine.study import plan_study

    if args.node_gpus < 1:
        raise UserError(f"--node-gpus is {args.node_gpus}", "give the node's GPU count (>= 1)")
    report = plan_study(
        args.spec, None, args.overrides, args.tokens_per_second, node_gpus=args.node_gpus
    )
    print(json.dumps(report, indent=2) if args.json else format_plan(report))
    return 0


def _tiny_model(args: argparse.Namespace) -> int:
    from engine.generate.tiny_model import build_tiny_model

    print(build_tiny_model(args.dir))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from engine.config.sweep import load_spec
    from engine.errors import UserError
    from engine.generate.bench import format_bench, run_bench

    if args.determinism:
        return _bench_determinism(args)
    try:
        ks = [int(k) for k in args.logprobs.split(",") if k.strip()]
    except ValueError:
        raise UserError(
            f"--logprobs {args.logprobs!r} is not a list of integers", "write e.g. 0,1,5,20"
        ) from None
    result = run_bench(load_spec(args.spec, args.overrides), prompts=args.prompts, logprobs=ks)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(format_bench(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _bench_determinism(args: argparse.Namespace) -> int:
    from engine.config.sweep import load_spec
    from engine.errors import UserError
    from engine.generate.bench import format_determinism, run_determinism_bench

    switch = {"on": True, "off": False, "true": True, "false": False}
    words = [w.strip().lower() for w in args.chunked_prefill.split(",") if w.strip()]
    if not words or any(w not in switch for w in words):
        raise UserError(f"--chunked-prefill {args.chunked_prefill!r}", "write off, on or off,on")
    result = run_determinism_bench(
        load_spec(args.spec, args.overrides),
        prompts=args.prompts,
        seed_modes=[m.strip() for m in args.seed_modes.split(",") if m.strip()],
        chunked_prefill=[switch[w] for w in words],
        rounds=args.rounds,
    )
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(format_determinism(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
