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


def _last_line(code: str) -> str:
    """Run `code` in a fresh interpreter on this checkout; the last line it printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def _probe() -> dict:
    return json.loads(_last_line(_PROBE.replace("HEAVY", repr(HEAVY))))


def _same_metrics(a: Path, b: Path) -> bool:
    return (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()


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
    assert _last_line(probe) == "[]"
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
    assert _last_line(probe) == "0 0 0 True"
    assert _same_metrics(tmp_path / "a", tmp_path / "b")


def test_cli_loads_cached_kernels_without_the_compiler_registries(tmp_path):
    # The library's analysis (numba as it ships: a refresh before every cache load) also warms
    # the cache; the command line then loads the same kernels without the refresh, never
    # importing what only compiling needs, and writes the same metrics.json.
    example = str(ROOT / "metrics" / "data" / "example")
    library = (
        "from metrics import analyze\n"
        f"analyze({example!r}, out={str(tmp_path / 'lib')!r}, bootstrap=50)\n"
        "print('done')\n"
    )
    assert _last_line(library) == "done"
    only_for_compiling = ("numba.np.polynomial.polynomial_core", "numba.np.random.generator_core")
    probe = (
        "import sys\n"
        "from engine.cli.main import main\n"
        f"code = main(['analyze', {example!r}, '--out', {str(tmp_path / 'cli')!r}, "
        "'--bootstrap', '50'])\n"
        f"print(code, [m for m in {only_for_compiling!r} if m in sys.modules])\n"
    )
    assert _last_line(probe) == "0 []"
    assert _same_metrics(tmp_path / "lib", tmp_path / "cli")
