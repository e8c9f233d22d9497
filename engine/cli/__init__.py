"""The `mic` command line: one parser, one module per command group, each a thin call into a library
function. `run` is the console script (`mic = engine.cli:run`); `main(argv)` is the same command
line for callers in Python (tests, notebooks)."""

from engine.cli.main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
