"""`python -m engine.cli ...` runs the `mic` command line."""

import sys

from engine.cli.main import run

sys.exit(run())
