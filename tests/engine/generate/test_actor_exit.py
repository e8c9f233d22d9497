"""A retired generation actor ends quietly: `quiet_sigterm` (set by `GenerationActor.exit`).

Ray's worker turns SIGTERM into SystemExit raised wherever the main thread is; inside a weakref
or garbage-collection callback Python prints it as "Exception ignored ... Traceback" on the
driver's console (seen in CI: a resumed run's output carried one). Once an actor's engine is
closed, a SIGTERM (the driver removing its placement group while it exits) ends it at once.
The Ray side — every retired actor ends its own process — is checked in test_scheduler.py and
test_vllm_engine.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from helpers.reliability_helpers import driver_env

# SIGTERM arrives while a weakref callback runs, under a handler that raises SystemExit (as
# Ray's does): Python prints a traceback — unless quiet_sigterm replaced the handler.
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time, weakref
    from engine.generate.actors import quiet_sigterm

    def ray_like(signum, frame):
        sys.exit(1)

    signal.signal(signal.SIGTERM, ray_like)
    if sys.argv[1] == "quiet":
        quiet_sigterm()

    class Thing:
        pass

    def callback(_ref):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler runs here, inside the callback

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing
    time.sleep(1)
    print("still running")
    """
)


def _run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True, text=True, timeout=120, env=driver_env(),
    )  # fmt: skip


def test_a_sigterm_after_quiet_sigterm_ends_the_process_silently() -> None:
    loud = _run("loud")  # the situation the CI saw: a traceback from a callback
    assert "Traceback" in loud.stderr and "SystemExit" in loud.stderr, loud.stderr
    quiet = _run("quiet")
    assert quiet.returncode == 0
    assert quiet.stdout == "" and quiet.stderr == "", quiet.stdout + quiet.stderr
