"""`mic score`, `mic study` and `mic demo`: thin calls into `engine.score` and `engine.study`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
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
            "  mic study configs/seed_study.toml --check\n"
            "  mic study configs/demo.toml --out runs/demo-w --local --target-width 0.5"
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
    g = p.add_argument_group(
        "precision stopping",
        "generate in waves of items and stop each task when its intervals are narrow enough "
        "(DIR/waves.json; re-running resumes at the wave it was in)",
    )
    g.add_argument(
        "--target-width",
        default=None,
        metavar="W",
        help="stop a task when its chosen 95%% intervals are at most W wide (or its items run out)",
    )
    g.add_argument(
        "--metric",
        default=None,
        metavar="NAME",
        help="decide by this metric's interval, e.g. I-AvgMAE (default: per task, the widest "
        "MIC interval of its shared markers)",
    )
    g.add_argument(
        "--wave-items",
        default=None,
        metavar="N",
        help="items per task each wave adds, half per split (default 80; fixed once started)",
    )
    g.add_argument(
        "--max-waves",
        default=None,
        metavar="K",
        help="stop after K waves in all (re-run without it to continue)",
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
    if result.waves and result.stopping:
        states = ", ".join(
            f"{task} {s['items']} items {s['status']}"
            for task, s in result.stopping["final"].items()
        )
        print(f"  waves:      {len(result.waves)} ({states}); log in {result.study_dir}/waves.json")
    if result.report:
        print(f"  report:     {result.report}")


def _number(value: str | None, option: str, kind: type, example: str) -> Any:
    """An option's value as `kind`, or one clear line (argparse's own error spans two)."""
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise UserError(f"{option} {value!r} is not a number", f"e.g. {option} {example}") from None


def _wave_options(args: argparse.Namespace) -> dict[str, Any]:
    """`--target-width` and its companions, checked before anything runs."""
    from engine.study import check_wave_options

    options = {
        "target_width": _number(args.target_width, "--target-width", float, "0.1"),
        "metric": args.metric,
        "wave_items": _number(args.wave_items, "--wave-items", int, "80"),
        "max_waves": _number(args.max_waves, "--max-waves", int, "3"),
    }
    if options["target_width"] is None:
        given = [k for k in ("metric", "wave_items", "max_waves") if options[k] is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise UserError(f"{flag} needs --target-width", "e.g. --target-width 0.1")
        return {}
    check_wave_options(**options)
    return options


def _study(args: argparse.Namespace) -> int:
    waves = _wave_options(args)
    if args.check:
        print(json.dumps(check_study_spec(args.spec, args.overrides), indent=2))
        return 0
    if not args.out:
        raise UserError(
            "mic study needs --out DIR", "e.g. mic study configs/demo.toml --out runs/demo"
        )
    if args.plan:
        from engine.generate.runner import format_plan

        report = plan_study(args.spec, args.out, args.overrides)
        print(format_plan(report))
        if waves:
            from engine.study.waves import wave_preview

            print("\n".join(wave_preview(report, **waves, out_dir=Path(args.out))))
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
        **waves,
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
