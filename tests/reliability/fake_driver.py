"""`mic run` with the fake engine: the real CLI and driver, `FakeBackend` actors instead of vLLM.

Used by the reliability tests and `scripts/soak.py --fake` to run the real driver in a subprocess
(so it can be SIGKILLed) without paying for vLLM start-ups::

    python tests/reliability/fake_driver.py SPEC OUT [mic run options...]

Exit codes are those of `mic run` (0 done, 1 incomplete, 2 user error).
"""

from __future__ import annotations

import functools
import sys

import engine.generate.runner
from engine.cli import main
from engine.generate.actors import fake_backend_factory


def run(argv: list[str]) -> int:
    """Run `mic run SPEC --out OUT ...` with `fake_backend_factory` on a 2-CPU local Ray."""
    spec, out, *extra = argv
    engine.generate.runner.run_sweep = functools.partial(
        engine.generate.runner.run_sweep, backend_factory=fake_backend_factory, ray_num_cpus=2
    )
    return main(["run", spec, "--out", out, *extra])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
