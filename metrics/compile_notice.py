"""One progress line when numba compiles a kernel at run time (the first run after install).

scripts/install.sh warms numba's on-disk cache by analyzing the bundled example, so a later run
loads every kernel it needs from the cache. Whatever is still compiled at run time (a kernel the
example did not reach, a cache that was cleared, a new numba) takes seconds per kernel with no
output, which looks like a hang; this module prints one line the first time that happens.

It listens to numba's event API (``numba.core.event``, the "numba:compile" event), which fires
only when a function is actually compiled: a kernel loaded from the cache fires nothing, so a
warmed run prints nothing.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

__all__ = ["COMPILE_MESSAGE", "announce_compiles", "compile_notice"]

#: The line printed (once) when a kernel is compiled at run time.
COMPILE_MESSAGE = "compiling the analysis kernels (first run only)..."

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def compile_notice(stream: TextIO | None = None) -> Iterator[None]:
    """Print `COMPILE_MESSAGE` once to `stream` (stderr) if numba compiles inside the block.

    Args:
        stream: Where to print; stderr (looked up when the line is printed) by default.

    Yields:
        Nothing; the listener is removed when the block ends.
    """
    from numba.core import event as ev

    class _Notice(ev.Listener):
        said = False

        def on_start(self, event: ev.Event) -> None:
            if not self.said:
                self.said = True
                out = stream if stream is not None else sys.stderr
                print(COMPILE_MESSAGE, file=out, flush=True)

        def on_end(self, event: ev.Event) -> None:
            pass

    with ev.install_listener("numba:compile", _Notice()):
        yield


def announce_compiles(fn: F) -> F:
    """Decorator: run `fn` inside :func:`compile_notice`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with compile_notice():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
