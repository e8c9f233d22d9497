"""`mic score`, `mic study` and `mic demo`: thin calls into `engine.score` and `engine.study`."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from engine.contract import RunLayout
from engine.errors import UserError
from engine.study import DEMO_NOTE, check_study_spec, plan_study

if TYPE_CHECKING:
    # engine.api imports the scoring pipeline (polars, pyarrow): only when a study runs, so
    # that `mic --help` stays fast.
    from engine.api import StudyResult


def _judge_flags(p: argparse.ArgumentParser) -> None:
    from engine.config.judges import (
        CONFIDENCE_MODES,
        CORRECTNESS_MODES,
        DECISIVENESS_MODES,
        EXTRACT_MODES,
    )

    p.add_argument("--extract", choices=EXTRACT_MODES, default=None, help="marker extraction")
    p.add_argument(
        "--canonical", choices=("rules", "llm"), default=None, help="marker canonicalization"
    )
    p.add_argument(
        "--confidence", choices=CONFIDENCE_MODES, default=None, help="intrinsic confidence"
    )
    p.add_argument("--correctness", choices=CORRECTNESS_MODES, default=None)
    p.add_argument("--decisiveness", choices=DECISIVENESS_MODES, default=None)
    p.add_argument(
        "--judge", default=None, metavar="MODEL", help="judge model (default builtin:tiny)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="judge prompts per resumable batch")
    p.add_argument(
        "--judge-url",
        default=None,
        metavar="URL",
        help="OpenAI-compatible server of the judge (key from $OPENAI_API_KEY or judges.api_key_env)",
    )
    p.add_argument(
        "--max-failed-share",
        type=float,
        default=None,
        metavar="F",
        help="a judge stage with a larger share of failed calls is not done (default 0.5)",
    )


def _judges_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "extract": args.extract,
        "canonical": args.canonical,
        "confidence": args.confidence,
        "correctness": args.correctness,
        "decisiveness": args.decisiveness,
        "model": args.judge,
        "batch_size": args.batch_size,
        "base_url": args.judge_url,
        "max_failed_share": args.max_failed_share,
    }


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add `score`, `study` and `demo` to the `mic` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "score",
        help="score a generation run: sentences, markers, confidence, correctness, decisiveness",
        description=(
            "Turn a run's generations into a scored run (RUN_DIR/scored/responses.parquet and "
            "sentences.parquet). Each stage is resumable and skipped when done; per-item failures "
            "go to RUN_DIR/stages/<stage>/errors.jsonl."
        ),
        epilog="example:\n  mic score runs/tiny --confidence consistency-logprob --decisiveness llm",
        formatter_class=fmt,
    )
    p.add_argument("run_dir", help="a directory written by mic run / mic study")
    p.add_argument(
        "--redo",
        action="append",
        default=[],
        metavar="STAGE",
        help="run this stage again although it is done (repeatable): sentences, markers, "
        "canonical, confidence, correctness, decisiveness",
    )
    _judge_flags(p)
    p.set_defaults(handler=_score)

    p = sub.add_parser(
        "study",
        help="generate -> score -> analyze -> report, resumable at every stage",
        description=(
            "Run a study spec end to end into DIR. Tasks may be sample:NAME (bundled) or "
            "registry:NAME (Hugging Face hub). Re-running the same command resumes."
        ),
        epilog=(
            "examples:\n  mic study configs/demo.toml --out runs/demo\n"
            "  mic study configs/seed_study.toml --check"
        ),
        formatter_class=fmt,
    )
    p.add_argument("spec", help="study spec (.toml or .yaml)")
    p.add_argument("--out", default=None, help="study directory (required unless --check)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--check", action="store_true", help="validate the spec offline; run nothing")
    p.add_argument(
        "--plan",
        action="store_true",
        help="prepare the tasks into --out and print the generation plan (mic plan); run nothing",
    )
    p.add_argument("--ray-address", default=None, help="join this Ray cluster for generation")
    p.add_argument("--new-run", action="store_true", help="replace a run of a different spec")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--local",
        action="store_true",
        help="generate in this process without Ray; a judge on the same model reuses its engine",
    )
    _judge_flags(p)
    p.set_defaults(handler=_study)

    p = sub.add_parser(
        "demo",
        help="the offline demo: planted-behaviour models x their synthetic tasks, a few minutes on CPU",
        description=(
            "Run configs/demo.toml (two planted-behaviour models over their synthetic tasks) through "
            "generate -> score -> analyze -> report, fully offline, and print the report's path."
        ),
        epilog="example:\n  mic demo --out mic-demo",
        formatter_class=fmt,
    )
    p.add_argument("--out", default="mic-demo", help="output directory (default mic-demo)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_demo)


def _score(args: argparse.Namespace) -> int:
    from engine.score.pipeline import score_run

    result = score_run(args.run_dir, _judges_of(args), redo=args.redo)
    ledger = sum(result.errors.values())
    print(
        f"scored {result.responses} responses, {result.sentence_rows} sentence-marker rows in "
        f"{result.seconds:.1f} s -> {result.scored_dir} ({ledger} items without a value, "
        f"listed in {args.run_dir}/stages/*/errors.jsonl)"
    )
    print(result.failure_summary())
    return 0


def _print_study(result: StudyResult) -> None:
    times = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"study done ({times})")
    print(f"  scored run: {result.scored_dir} ({result.judge_failures})")
    print(f"  analysis:   {result.analysis_dir}/metrics.json, mic.parquet")
    if result.report:
        print(f"  report:     {result.report}")


def _study(args: argparse.Namespace) -> int:
    if args.check:
        print(json.dumps(check_study_spec(args.spec, args.overrides), indent=2))
        return 0
    if not args.out:
        raise UserError(
            "mic study needs --out DIR", "e.g. mic study configs/demo.toml --out runs/demo"
        )
    if args.plan:
        from engine.generate.runner import format_plan

        print(format_plan(plan_study(args.spec, args.out, args.overrides)))
        return 0
    from engine.api import run_study

    result = run_study(
        args.spec,
        args.out,
        overrides=args.overrides,
        judges=_judges_of(args),
        ray_address=args.ray_address,
        new_run=args.new_run,
        report=not args.no_report,
        progress=not args.quiet,
        local=args.local,
    )
    _print_study(result)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from engine.planted import format_summary as planted_summary
    from metrics.summary import format_summary

    started = time.perf_counter()
    from engine.api import run_demo

    result = run_demo(args.out, progress=not args.quiet)
    doc = json.loads((result.analysis_dir / RunLayout.METRICS).read_text())
    print(format_summary(doc))
    print()
    print(planted_summary(result.analysis_dir))
    print()
    _print_study(result)
    print(f"  wall time:  {time.perf_counter() - started:.0f} s\n")
    print(DEMO_NOTE)
    final = result.report or f"{result.analysis_dir}/metrics.json"
    print(f"\n{final}")
    return 0
