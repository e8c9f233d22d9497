"""One progress line when numba compiles a kernel at run time (the first run after install).

scripts/install.sh warms numba's on-disk cache by analyzing the bundled example, so a later run
loads every kernel it needs from the cache. Whatever is still compiled at run time (a kernel the
example did not reach, a cache that was cleared, a new numba) takes seconds per kernel with no
output, which looks like a hang; this module prints one line the first time that happens.

It listens to numba's event API (``numba.core.event``, the "numba:compile" event), which fires
only when a function is actually compiled: a kernel loaded from the cache fires nothing, so a
warmed run prints nothing.

:func:`load_blas_probe` also lives here, as it runs at the same moment (before the first kernel
is dispatched): it spares every analysis scipy.linalg's import, which numba's start-up triggers
only to check that BLAS exists. For the command line only, :func:`numba_without_cffi` spares
it the cffi parser that numba's start-up builds for kernels calling cffi functions (none here),
and :func:`cache_loads_without_refresh` the compiler's registries when every kernel comes from
the cache.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

__all__ = [
    "COMPILE_MESSAGE",
    "announce_compiles",
    "cache_loads_without_refresh",
    "compile_notice",
    "load_blas_probe",
    "numba_without_cffi",
]

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
    load_blas_probe()
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


def load_blas_probe() -> bool:
    """Load scipy's BLAS table without importing the rest of scipy.linalg.

    The first kernel a process dispatches makes numba import ``numba.np.arraymath``, which probes
    for BLAS with ``import scipy.linalg.cython_blas``; importing that module imports the whole of
    ``scipy.linalg`` first (its array-API layer, ``numpy.f2py``, ``cffi``): 0.2-0.35 s of every
    analysis' start-up, for a check. Loading the extension module by its file under its own name
    gives numba the same module (``np.dot`` in a kernel still gets its BLAS), and a later
    ``import scipy.linalg`` reuses it. Anything unexpected (another scipy layout, scipy.linalg
    already imported) leaves the normal import to happen. One difference remains: the module is
    not set as an attribute of ``scipy.linalg`` (``from scipy.linalg import cython_blas`` and
    ``import scipy.linalg.cython_blas as m`` work; the attribute ``scipy.linalg.cython_blas``
    does not), which nothing in an analysis reads.

    Returns:
        Whether the module is in ``sys.modules`` now (by this call or earlier).
    """
    name = "scipy.linalg.cython_blas"
    if name in sys.modules or "scipy.linalg" in sys.modules:
        return name in sys.modules
    try:
        import scipy

        folder = Path(scipy.__file__).parent / "linalg"
        files = sorted(folder.glob("cython_blas.*.so")) + sorted(folder.glob("cython_blas.*.pyd"))
        if len(files) != 1:
            return False
        spec = importlib.util.spec_from_file_location(name, files[0])
        if spec is None or spec.loader is None:
            return False
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    except Exception:  # the normal import (numba's) still works
        return False
    return True


def numba_without_cffi() -> bool:
    """Load numba's cffi support switched off, so its start-up does not import cffi (CLI only).

    The first kernel a process dispatches makes numba import ``numba.core.typing.cffi_utils``,
    which imports cffi and builds a ``cffi.FFI()`` (its C parser, pycparser): 40-60 ms of
    every `mic` analysis, for typing kernels that call cffi functions, which no kernel of this
    package does. Importing that module while ``import cffi`` fails leaves numba without cffi
    support for the rest of the process (numba's own fallback when cffi is not installed);
    cffi itself is importable again afterwards. Only the command line calls this: a library
    user's own kernels in the same process may use cffi.

    Returns:
        Whether numba's cffi support is off (by this call or earlier); False when numba had
        already loaded it, or cffi was already imported.
    """
    name = "numba.core.typing.cffi_utils"
    if name not in sys.modules and "cffi" not in sys.modules:
        sys.modules["cffi"] = None  # type: ignore[assignment]  # makes `import cffi` fail
        try:
            importlib.import_module(name)
        finally:
            del sys.modules["cffi"]
    module = sys.modules.get(name)
    return module is not None and not module.SUPPORTED


def cache_loads_without_refresh() -> bool:
    """Load kernels from numba's cache without first loading the compiler's registries (CLI only).

    numba's cache refreshes the target context before every load (``Cache.load_overload``): the
    first refresh imports the implementations of everything a kernel could be compiled from
    (unicode, typed containers, linalg, np.random, polynomials, jitclass, ...) and installs them
    for typing and lowering, ~0.17 s of every analysis process, for machine code that is
    already compiled. A cached kernel needs only numba's runtime (NRT), whose symbols its code
    calls; this load initializes that and loads. A kernel that must be compiled still gets the
    refresh: numba's compiler refreshes both contexts before it compiles anything. Results are
    the same (tests/test_startup.py: the command line's metrics.json equals the library's).

    Returns:
        Whether loads now skip the refresh (False when numba's cache or runtime does not have
        the shape this relies on, which leaves numba as it was).
    """
    try:
        from numba.core import caching
        from numba.core.runtime import rtsys
    except ImportError:
        return False
    cache = getattr(caching, "Cache", None)
    load = getattr(cache, "_load_overload", None)
    guard = getattr(cache, "_guard_against_spurious_io_errors", None)
    if load is None or guard is None or not callable(getattr(rtsys, "initialize", None)):
        return False
    if getattr(cache.load_overload, "_skips_refresh", False):
        return True

    def load_overload(self: Any, sig: Any, target_context: Any) -> Any:
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)
        return None  # the guard swallowed an I/O error: a miss, as in numba

    load_overload._skips_refresh = True  # type: ignore[attr-defined]
    cache.load_overload = load_overload
    return True
