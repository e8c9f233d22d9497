"""The `mic` command line: one parser, one module per command group, each a thin call into a library
function. `main` is the console script (`mic = engine.cli:main`)."""

from engine.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
