"""The `mic` command: one dispatcher, each subcommand a thin call into a library function.

Every subcommand is callable from Python with the same arguments (see the function each calls).
User mistakes raise `engine.errors.UserError`; they are printed on one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence

from engine.cli import metrics as metrics_cli
from engine.cli import run as run_cli
from engine.cli import study as study_cli
from engine.cli import verify as verify_cli
from engine.errors import UserError


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (a test's capture, a redirected stream)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it; the property wins
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """The one log handler: `engine` and `metrics` messages as plain lines on stderr.

    The library only logs (`logging.getLogger(__name__)`); the command line decides where the
    lines go. Calling it again (tests run `main` many times) replaces the handler.
    """
    for name in ("engine", "metrics"):
        log = logging.getLogger(name)
        for handler in [h for h in log.handlers if isinstance(h, _StderrHandler)]:
            log.removeHandler(handler)
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(level)
        log.propagate = False  # one line per message, not again through a root handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mic",
        description="MIC engine: do LLMs' epistemic markers reflect their intrinsic confidence?",
        epilog=metrics_cli.example("mic analyze metrics/data/example --out results/example"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # One module per command group; the order is the order of `mic --help`.
    metrics_cli.add_analysis_commands(sub)
    run_cli.add_subcommands(sub)
    study_cli.add_subcommands(sub)
    verify_cli.add_subcommands(sub)
    metrics_cli.add_output_commands(sub)
    return parser


def run() -> int:
    """The console script (`mic`, `python -m engine.cli`): `main` in a process that ends with it.

    Commands may then skip work a process that goes on would need (`metrics_cli.settle_heap`).
    """
    metrics_cli.PROCESS_ENDS_WITH_COMMAND = True
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        # One line, whatever the wrapped parser message holds (YAML errors span several).
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"mic {args.command}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`mic verify --json | head`): no traceback, and none at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        from engine.generate.store import is_storage_error

        if not is_storage_error(exc):
            raise
        # Disk full or quota (exit 1: free space, re-run) / not writable (exit 2: fix the path).
        where = f" {exc.filename}" if exc.filename else ""
        print(f"mic {args.command}: error: cannot write{where}: {exc.strerror}", file=sys.stderr)
        return 1 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 2
    except KeyboardInterrupt:
        print(
            f"mic {args.command}: interrupted; re-run the same command to resume", file=sys.stderr
        )
        return 130
