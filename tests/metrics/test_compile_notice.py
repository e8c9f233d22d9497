"""The one progress line for kernels compiled at run time, and silence when they come from cache."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np

from metrics.compile_notice import COMPILE_MESSAGE, announce_compiles, compile_notice

ROOT = Path(__file__).resolve().parents[2]


def test_a_compile_prints_one_line_and_a_compiled_signature_none():
    @numba.njit
    def add_one(x):
        return x + 1

    out = io.StringIO()
    with compile_notice(out):
        add_one(1)  # compiles (int64)
        add_one(1.5)  # compiles again (float64): still one line
    assert out.getvalue() == COMPILE_MESSAGE + "\n"

    again = io.StringIO()
    with compile_notice(again):
        assert add_one(np.int64(2)) == 3  # already compiled: no line
    assert again.getvalue() == ""


def test_the_decorator_announces_and_returns(capsys):
    @numba.njit
    def twice(x):
        return 2 * x

    @announce_compiles
    def run(x):
        return twice(x)

    assert run(4) == 8
    assert run(5) == 10
    assert capsys.readouterr().err == COMPILE_MESSAGE + "\n"


def _twice_on_one_cache(tmp_path: Path, module: str, source: str, script: str):
    """Write `module` into tmp_path and run `script` in two fresh interpreters on one numba cache
    directory there: the first compiles (and writes the cache), the second loads from it."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
    }
    return [
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
        )
        for _ in range(2)
    ]


def test_a_kernel_loaded_from_numba_cache_prints_nothing(tmp_path):
    # As a run after scripts/install.sh does: the second interpreter loads the kernel.
    source = """
        import numba

        @numba.njit(cache=True)
        def total(a):
            s = 0.0
            for v in a:
                s += v
            return s
        """
    script = (
        "import numpy as np, kern\n"
        "from metrics.compile_notice import announce_compiles\n"
        "print(announce_compiles(kern.total)(np.arange(4.0)))\n"
    )
    first, second = _twice_on_one_cache(tmp_path, "kern", source, script)
    assert first.stdout.strip() == second.stdout.strip() == "6.0"
    assert COMPILE_MESSAGE in first.stderr
    assert COMPILE_MESSAGE not in second.stderr


def test_the_blas_probe_keeps_numba_and_scipy_working() -> None:
    # load_blas_probe loads scipy's BLAS table without scipy.linalg: numba must still find BLAS
    # (np.dot in a kernel) and scipy.linalg / scipy.stats, imported later, must work as usual.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from metrics.compile_notice import load_blas_probe\n"
        "assert load_blas_probe() and 'scipy.linalg' not in sys.modules\n"
        "import numba, numpy as np\n"
        "dot = numba.njit(lambda a, b: np.dot(a, b))\n"
        "a = np.arange(9.0).reshape(3, 3)\n"
        "assert np.array_equal(dot(a, a), a @ a)\n"
        "assert 'scipy.linalg' not in sys.modules\n"
        "import scipy.linalg, scipy.stats\n"
        "from scipy.linalg import cython_blas\n"
        "assert cython_blas is sys.modules['scipy.linalg.cython_blas']\n"
        "assert np.allclose(scipy.linalg.solve(a + np.eye(3), np.ones(3)), "
        "np.linalg.solve(a + np.eye(3), np.ones(3)))\n"
        "print(scipy.stats.spearmanr([1, 2, 3, 4], [1, 3, 2, 4])[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert abs(float(out.stdout) - 0.8) < 1e-12


def test_numba_without_cffi_keeps_kernels_and_cffi_working() -> None:
    # The command line's bypass: numba starts without cffi support (no cffi parser built), its
    # kernels still compile and run, and cffi itself stays importable.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from metrics.compile_notice import numba_without_cffi\n"
        "assert numba_without_cffi() and 'cffi' not in sys.modules\n"
        "import numba, numpy as np\n"
        "total = numba.njit(lambda a: a.sum())\n"
        "assert total(np.arange(4.0)) == 6.0 and 'cffi' not in sys.modules\n"
        "assert numba_without_cffi()  # a second call changes nothing\n"
        "try:\n"
        "    import cffi\n"
        "except ImportError:\n"
        "    print('absent')\n"
        "else:\n"
        "    print(cffi.FFI().sizeof('int'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # cffi is not a dependency of this package; where it is installed, it still imports.
    installed = importlib.util.find_spec("cffi") is not None
    assert out.stdout.strip() == ("4" if installed else "absent")


def test_kernels_compile_and_reload_with_cache_loads_without_refresh(tmp_path):
    # The command line loads cached kernels without numba's registry refresh: a kernel missing
    # from the cache still compiles (numba's compiler refreshes by itself), and the next process
    # loads it: one that allocates (the runtime, NRT), builds a typed dict and calls BLAS, none
    # of which the loads prepared.
    source = """
        import numba
        import numpy as np

        @numba.njit(cache=True)
        def build(n):
            d = numba.typed.Dict.empty(numba.types.int64, numba.types.float64)
            out = np.empty(n)
            for i in range(n):
                d[i] = i * 0.5
                out[i] = d[i] + np.sqrt(i) + np.linalg.norm(np.ones(3))
            return out
        """
    script = (
        "import numpy as np\n"
        "from metrics.compile_notice import cache_loads_without_refresh\n"
        "assert cache_loads_without_refresh()\n"
        "import kern_mod\n"
        "got = kern_mod.build(5)\n"
        "want = np.arange(5) * 0.5 + np.sqrt(np.arange(5)) + np.sqrt(3)\n"
        "stats = kern_mod.build.stats\n"
        "print(bool(np.allclose(got, want, rtol=1e-15, atol=0)), "
        "sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n"
    )
    runs = _twice_on_one_cache(tmp_path, "kern_mod", source, script)
    assert [r.stdout.split() for r in runs] == [["True", "0", "1"], ["True", "1", "0"]]
