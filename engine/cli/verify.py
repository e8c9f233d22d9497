"""`mic verify`: the state of every unit of a run directory (`engine.generate.verify.verify_run`)."""

from __future__ import annotations

import argparse
import json
import sys


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add `mic verify` to the `mic` parser."""
    p = sub.add_parser(
        "verify",
        help="report the state of every unit of a run directory (changes nothing)",
        description=(
            "Check every planned unit of a run: done, missing, torn temp file, truncated, "
            "checksum mismatch, bad record, wrong schema, orphan shard; per-unit row counts; "
            "duplicate rows; a damaged manifest or directory. Read-only. Exit 0 when all units "
            "are done and consistent, 1 otherwise (the first finding on stderr), 2 when the "
            "directory holds no readable run.json."
        ),
        epilog="example:\n  mic verify runs/tiny --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (the --out of mic run)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--all", action="store_true", help="list done units too")
    p.add_argument(
        "--no-duplicates", action="store_true", help="skip the duplicate-row scan (large runs)"
    )
    p.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    # Imported here: engine.generate.verify reads Arrow files (pyarrow, ~0.25 s to import),
    # which building the parser for `mic --help` does not need.
    from engine.generate.verify import format_report, verify_run

    report = verify_run(args.run_dir, check_duplicates=not args.no_duplicates)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report, show_done=args.all))
    findings = report.findings()
    if findings:
        more = f" (+{len(findings) - 1} more in the report)" if len(findings) > 1 else ""
        print(
            f"mic verify: {args.run_dir} is not complete and consistent: {findings[0]}{more}",
            file=sys.stderr,
        )
    return 0 if report.ok else 1
