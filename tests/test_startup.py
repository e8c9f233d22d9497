"""Start-up stays cheap: the CLI and `metrics` import no heavy library until a command needs it.

A structural check (what is in ``sys.modules``), not a timing: the timings are in
benchmarks/startup_scale.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numba", "scipy", "matplotlib", "ray", "vllm", "torch", "polars", "pyarrow")

_PROBE = """
import contextlib, io, json, sys
import engine.cli
import metrics
from metrics import analyze
with contextlib.redirect_stdout(io.StringIO()) as help_text:
    try:
        engine.cli.main(["--help"])
    except SystemExit:
        pass
print(json.dumps({
    "loaded": sorted(m for m in HEAVY if m in sys.modules),
    "help": help_text.getvalue(),
    "analyze": callable(analyze) and analyze.__module__ == "metrics",
}))
"""


def _probe() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.replace("HEAVY", repr(HEAVY))],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_help_and_metrics_import_no_heavy_library():
    probe = _probe()
    assert probe["loaded"] == [], f"imported at start-up: {probe['loaded']}"
    assert "analyze" in probe["help"]  # the help really was built, subcommands included
    assert probe["analyze"]


def test_lazy_analyze_is_the_function_after_the_submodule_loads():
    # Loading metrics.analyze binds the submodule on the package; the package keeps the function.
    import metrics
    import metrics.analyze as _  # noqa: F401
    from metrics import analyze
    from metrics.analyze import AnalysisResult

    assert callable(analyze) and not isinstance(analyze, type(sys))
    assert metrics.AnalysisResult is AnalysisResult


def test_analyze_of_a_parquet_run_imports_no_pandas(tmp_path):
    # pyarrow's Array.to_numpy (even zero-copy) imports pandas to check for pandas types (~0.7 s
    # of a fresh `mic analyze`), pl.from_arrow pyarrow.compute (~0.1 s): the keyed reader reads
    # the dictionary indices' buffer and hands polars an Arrow stream instead.
    probe = (
        "import sys\n"
        "from metrics import analyze\n"
        f"analyze({str(ROOT / 'metrics' / 'data' / 'example')!r}, out={str(tmp_path)!r})\n"
        "print(sorted(m for m in ('pandas', 'pyarrow.compute') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "metrics.json").exists()  # the analysis really ran


def test_analyze_command_quiets_thread_pools_and_starts_numba_without_cffi(tmp_path):
    # OpenBLAS reads OPENBLAS_NUM_THREADS once, when numpy loads (~70 ms of start-up for a thread
    # per core), libgomp OMP_WAIT_POLICY when numba's first parallel kernel loads it: the command
    # must set both before anything imports numpy.
    probe = (
        "import os, sys\n"
        "seen = []\n"
        "class Hook:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numpy' and not seen:\n"
        "            seen.extend(os.environ.get(k) for k in ('OPENBLAS_NUM_THREADS', 'OMP_WAIT_POLICY'))\n"
        "sys.meta_path.insert(0, Hook())\n"
        "from engine.cli.main import main\n"
        f"code = main(['analyze', {str(ROOT / 'metrics' / 'data' / 'example')!r}, "
        f"'--out', {str(tmp_path)!r}])\n"
        "print(code, seen, 'cffi' in sys.modules)\n"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")
    }
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    # ... and numba starts without building cffi's parser (metrics.compile_notice).
    assert out.stdout.strip().splitlines()[-1] == "0 ['1', 'PASSIVE'] False"
    assert (tmp_path / "metrics.json").exists()


def test_thread_settings_keep_the_users_own(monkeypatch):
    from engine.cli.metrics import quiet_thread_pools

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    quiet_thread_pools()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    quiet_thread_pools()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_console_script_freezes_the_heap_and_main_from_python_does_not(tmp_path):
    # The console script's process ends with the command, so the analysis takes its long-lived
    # objects out of the collector's walks (engine.cli.metrics.settle_heap); `main` called from
    # Python leaves the caller's collector alone. Neither changes a result.
    example = str(ROOT / "metrics" / "data" / "example")
    probe = (
        "import gc, sys\n"
        "from engine.cli import main, run\n"
        f"code = main(['analyze', {example!r}, '--out', {str(tmp_path / 'a')!r}, '--bootstrap', '50'])\n"
        "kept = gc.get_freeze_count()\n"
        f"sys.argv = ['mic', 'analyze', {example!r}, '--out', {str(tmp_path / 'b')!r}, "
        "'--bootstrap', '50']\n"
        "code2 = run()\n"
        "print(code, kept, code2, gc.get_freeze_count() > 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "0 0 0 True"
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (
        tmp_path / "b" / "metrics.json"
    ).read_bytes()


def test_cli_loads_cached_kernels_without_the_compiler_registries(tmp_path):
    # The library's analysis (numba as it ships: a refresh before every cache load) also warms
    # the cache; the command line then loads the same kernels without the refresh, never
    # importing what only compiling needs, and writes the same metrics.json.
    example = str(ROOT / "metrics" / "data" / "example")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    library = (
        "from metrics import analyze\n"
        f"analyze({example!r}, out={str(tmp_path / 'lib')!r}, bootstrap=50)\n"
    )
    subprocess.run([sys.executable, "-c", library], env=env, cwd=ROOT, check=True)
    only_for_compiling = ("numba.np.polynomial.polynomial_core", "numba.np.random.generator_core")
    probe = (
        "import sys\n"
        "from engine.cli.main import main\n"
        f"code = main(['analyze', {example!r}, '--out', {str(tmp_path / 'cli')!r}, "
        "'--bootstrap', '50'])\n"
        f"print(code, [m for m in {only_for_compiling!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    assert (tmp_path / "lib" / "metrics.json").read_bytes() == (
        tmp_path / "cli" / "metrics.json"
    ).read_bytes()


_KERNEL = """
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


def test_kernels_compile_and_reload_with_cache_loads_without_refresh(tmp_path):
    # With the refresh skipped on loads, a kernel missing from the cache still compiles (numba's
    # compiler refreshes by itself), and the next process loads it: a kernel that allocates (the
    # runtime, NRT), builds a typed dict and calls BLAS, none of which the loads prepared.
    (tmp_path / "kern_mod.py").write_text(_KERNEL)
    probe = (
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
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
    }
    runs = [
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs == [["True", "0", "1"], ["True", "1", "0"]]  # compiled, then loaded
